package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/bundle"
)

const (
	filesDir       = "files"
	receiptKeyFile = "receipt.key"
	receiptPubFile = "receipt.pub"
)

// openReceiptKey loads, or on first start creates, the key the appliance
// signs its receipts with.
func openReceiptKey(dir string) (*bundle.Signer, error) {
	priv := filepath.Join(dir, receiptKeyFile)
	if _, err := os.Stat(priv); errors.Is(err, os.ErrNotExist) {
		if err := bundle.GenerateKey(priv, filepath.Join(dir, receiptPubFile)); err != nil {
			return nil, fmt.Errorf("receipt key: %w", err)
		}
	}
	sg, err := bundle.LoadSigner(priv)
	if err != nil {
		return nil, fmt.Errorf("receipt key: %w", err)
	}
	return sg, nil
}

// filesRoutes serves the file store at /files/ (both listeners, anonymous:
// like apt, the files are what machines in the enclave fetch).
func (s *Server) filesRoutes(e *echo.Echo) {
	h := echo.WrapHandler(http.StripPrefix("/files", s.files.Handler()))
	e.GET("/files", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, "/files/") })
	e.GET("/files/*", h)
	e.HEAD("/files/*", h)
}

// getReceipt answers GET /api/v1/receipt: a signed list of everything the
// appliance holds, for `bundle create --since`.
func (s *Server) getReceipt(c echo.Context) error {
	ctx := c.Request().Context()
	r, err := s.receipt(ctx)
	if err != nil {
		return err
	}
	data, err := bundle.SignReceipt(r, s.receiptKey)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "application/json", data)
}

func (s *Server) receipt(ctx context.Context) (*bundle.Receipt, error) {
	host, _ := os.Hostname()
	if len(s.pki.Names) > 0 {
		host = s.pki.Names[0]
	}
	r := &bundle.Receipt{Appliance: host, Created: time.Now().UTC().Truncate(time.Second)}
	blobs, err := s.reg.Blobs(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range blobs {
		r.Blobs = append(r.Blobs, bundle.Blob{Digest: b.Digest.String(), Size: b.Size})
	}
	repos, err := s.reg.Repositories(ctx)
	if err != nil {
		return nil, err
	}
	for _, repo := range repos {
		tags, err := s.reg.Tags(ctx, repo)
		if err != nil {
			return nil, err
		}
		for _, t := range tags {
			d, ok, err := s.reg.TagDigest(ctx, repo, t)
			if err != nil {
				return nil, err
			}
			if ok {
				r.Tags = append(r.Tags, bundle.ReceiptTag{Repository: repo, Tag: t, Digest: d.String()})
			}
		}
	}
	for _, f := range s.files.List() {
		r.Files = append(r.Files, bundle.ReceiptFile{Name: f.Name, Digest: f.Digest, Size: f.Size})
	}
	pkgs, err := s.apt.Search(ctx, "*")
	if err != nil {
		return nil, err
	}
	for _, p := range pkgs {
		r.Packages = append(r.Packages, bundle.ReceiptPackage{Repo: p.Repo, Distribution: p.Dist, Component: p.Component, Name: p.Name,
			Version: p.Version, Architecture: p.Architecture, SHA256: p.SHA256, Size: p.Size})
	}
	sort.Slice(r.Packages, func(i, j int) bool { return r.Packages[i].SHA256 < r.Packages[j].SHA256 })
	return r, nil
}

// aptImport adapts the apt repository to what bundle imports need.
type aptImport struct{ r *aptrepo.Repos }

func (a aptImport) AddFiles(ctx context.Context, repo, dist, component string, paths []string, by string) (func(context.Context) error, error) {
	prev, err := a.r.History(ctx, repo, dist)
	if err != nil && !errors.Is(err, aptrepo.ErrNotFound) {
		return nil, err
	}
	debs := make([]aptrepo.Deb, len(paths))
	for i, p := range paths {
		debs[i] = aptrepo.DebFile(p)
	}
	if _, err := a.r.Add(ctx, repo, dist, component, debs, by); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		if len(prev) == 0 {
			return fmt.Errorf("apt %s/%s was created by this import; remove its packages with `appliance apt rm`", repo, dist)
		}
		_, err := a.r.Rollback(ctx, repo, dist, prev[0].ID, by+" (undo of a failed bundle import)")
		return err
	}, nil
}

func (a aptImport) HeldDigests(ctx context.Context) (map[string]bool, error) {
	pkgs, err := a.r.Search(ctx, "*")
	if err != nil {
		return nil, err
	}
	held := make(map[string]bool, len(pkgs))
	for _, p := range pkgs {
		held[p.SHA256] = true
	}
	return held, nil
}

// listFiles answers GET /api/v1/files: the file store's entries.
func (s *Server) listFiles(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"files": s.files.List()})
}
