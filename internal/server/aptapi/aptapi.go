// Package aptapi serves the apt repository over HTTP: the signed tree at
// /apt/ on both listeners (a fresh VM may not trust the CA yet, and the
// metadata is signed), the signing key, ready cloud-init and deb822
// snippets, and the repository's JSON API under /api/v1/apt. It knows the
// server only through Deps.
package aptapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/registry"
)

// Repos is what the routes use of the apt repositories.
type Repos interface {
	Handler() http.Handler
	PublicKey() (binary, armored []byte)
	List(ctx context.Context) ([]aptrepo.RepoInfo, error)
	Packages(ctx context.Context, repo, dist string) ([]aptrepo.Package, error)
	Search(ctx context.Context, q string) ([]aptrepo.Package, error)
	History(ctx context.Context, repo, dist string) ([]aptrepo.Publish, error)
	Add(ctx context.Context, repo, dist, component string, debs []aptrepo.Deb, by string) (aptrepo.Publish, error)
	Remove(ctx context.Context, repo, dist, name, version, by string) (aptrepo.Publish, error)
	Rollback(ctx context.Context, repo, dist, publishID, by string) (aptrepo.Publish, error)
}

// Registry tells whether the appliance is read-only (apt writes follow it).
type Registry interface {
	Mode() registry.Mode
}

// Deps is what the routes need. Every field is required but HTTPPort's
// answer, which is "" when there is no plain listener.
type Deps struct {
	Repos    Repos
	Registry Registry
	// CAPEM is the appliance's CA, which cloud-init snippets trust.
	CAPEM []byte
	// HTTPPort is the plain listener's port, "" when there is none.
	HTTPPort func() string
	// UploadDir is where uploaded packages wait until they are published
	// (beside the repository, on the same file system).
	UploadDir string
	// Principal is the caller; Bind decodes a JSON body strictly and
	// bounded; Note adds to the request's audit entry.
	Principal func(echo.Context) auth.Principal
	Bind      func(c echo.Context, v any) error
	Note      func(c echo.Context, target string, kv ...string)
	// RequireDeveloper refuses callers who may not change content.
	RequireDeveloper echo.MiddlewareFunc
}

func (d Deps) check() error {
	var missing []string
	for name, ok := range map[string]bool{
		"Repos": d.Repos != nil, "Registry": d.Registry != nil, "CAPEM": len(d.CAPEM) > 0, "HTTPPort": d.HTTPPort != nil,
		"UploadDir": d.UploadDir != "", "Principal": d.Principal != nil, "Bind": d.Bind != nil, "Note": d.Note != nil,
		"RequireDeveloper": d.RequireDeveloper != nil,
	} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("aptapi: missing %v", missing)
	}
	return nil
}

// API is the apt repository's routes.
type API struct{ a *api }

type api struct{ Deps }

// New checks the dependencies and returns the routes, ready to mount.
func New(d Deps) (*API, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return &API{&api{d}}, nil
}

// Mount mounts the tree at /apt/ on e (both listeners).
func (x *API) Mount(e *echo.Echo) { x.a.routes(e) }

// Register mounts the JSON API on the /api/v1 group g.
func (x *API) Register(g *echo.Group) { x.a.apiRoutes(g) }

// routes mounts /apt/ on e.
func (a *api) routes(e *echo.Echo) {
	files := http.StripPrefix("/apt", a.Repos.Handler())
	e.GET("/apt/key.gpg", func(c echo.Context) error {
		bin, _ := a.Repos.PublicKey()
		return c.Blob(http.StatusOK, "application/pgp-keys", bin)
	})
	e.GET("/apt/key.asc", func(c echo.Context) error {
		_, armored := a.Repos.PublicKey()
		return c.Blob(http.StatusOK, "application/pgp-keys", armored)
	})
	e.GET("/apt/cloud-init.yaml", a.cloudInit)
	e.GET("/apt/:sources", func(c echo.Context) error {
		if name, ok := strings.CutSuffix(c.Param("sources"), ".sources"); ok {
			return a.debSources(c, name)
		}
		files.ServeHTTP(c.Response(), c.Request())
		return nil
	})
	e.GET("/apt/*", echo.WrapHandler(files))
	e.HEAD("/apt/*", echo.WrapHandler(files))
}

// baseURL is the URL of the apt tree under the host the client used,
// over plain HTTP when that listener exists (a VM that does not trust the
// CA yet can still install, since the metadata is signed).
func (a *api) baseURL(c echo.Context) string {
	host := c.Request().Host
	if port := a.HTTPPort(); port != "" {
		h := host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			h = hh
		}
		return "http://" + net.JoinHostPort(strings.Trim(h, "[]"), port) + "/apt"
	}
	return "https://" + host + "/apt"
}

// selectedDists returns the repositories and distributions a snippet is
// for: ?repo=&dist= narrow it; by default, all of them.
func (a *api) selectedDists(c echo.Context) ([]aptrepo.RepoInfo, error) {
	repos, err := a.Repos.List(c.Request().Context())
	if err != nil {
		return nil, err
	}
	wantRepo, wantDist := c.QueryParam("repo"), c.QueryParam("dist")
	var out []aptrepo.RepoInfo
	for _, r := range repos {
		if wantRepo != "" && r.Name != wantRepo {
			continue
		}
		var dists []aptrepo.DistInfo
		for _, d := range r.Dists {
			if wantDist == "" || d.Name == wantDist {
				dists = append(dists, d)
			}
		}
		if len(dists) > 0 {
			r.Dists = dists
			out = append(out, r)
		}
	}
	if len(out) == 0 && (wantRepo != "" || wantDist != "") {
		return nil, fmt.Errorf("%w: no apt repository %q with distribution %q", aptrepo.ErrNotFound, wantRepo, wantDist)
	}
	return out, nil
}

func componentNames(d aptrepo.DistInfo) []string {
	var names []string
	for _, c := range d.Components {
		names = append(names, c.Name)
	}
	sort.Strings(names)
	return names
}

// cloudInit returns a #cloud-config for deep-learning VMs: apt sources on
// this appliance with the key inline, the Ubuntu archive replaced so that
// cloud-init does not stall reaching for the internet, and the appliance's
// CA trusted so the same VM can pull images.
func (a *api) cloudInit(c echo.Context) error {
	repos, err := a.selectedDists(c)
	if err != nil {
		return err
	}
	_, armored := a.Repos.PublicKey()
	base := a.baseURL(c)
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	b.WriteString("# Written by the appliance: apt from " + base + ", and its CA trusted.\n")
	b.WriteString("ca_certs:\n  trusted:\n    - |\n")
	writeIndented(&b, string(a.CAPEM), "      ")
	b.WriteString("apt:\n  preserve_sources_list: false\n")
	for _, r := range repos {
		if r.Name == "ubuntu" || r.Name == "debian" {
			// Point the distribution's own archive here too.
			fmt.Fprintf(&b, "  primary:\n    - arches: [default]\n      uri: %s/%s\n  security:\n    - arches: [default]\n      uri: %s/%s\n", base, r.Name, base, r.Name)
			break
		}
	}
	b.WriteString("  sources:\n")
	for _, r := range repos {
		for _, d := range r.Dists {
			fmt.Fprintf(&b, "    appliance-%s-%s.list:\n", r.Name, d.Name)
			fmt.Fprintf(&b, "      source: \"deb [signed-by=$KEY_FILE] %s/%s %s %s\"\n", base, r.Name, d.Name, strings.Join(componentNames(d), " "))
			b.WriteString("      key: |\n")
			writeIndented(&b, string(armored), "        ")
		}
	}
	return c.Blob(http.StatusOK, "text/cloud-config; charset=utf-8", []byte(b.String()))
}

// debSources returns a deb822 .sources file for one repository, every
// distribution, with the key inline.
func (a *api) debSources(c echo.Context, repo string) error {
	c.QueryParams().Set("repo", repo)
	repos, err := a.selectedDists(c)
	if err != nil {
		return err
	}
	if len(repos) == 0 {
		return fmt.Errorf("%w: no apt repository %q", aptrepo.ErrNotFound, repo)
	}
	_, armored := a.Repos.PublicKey()
	var b strings.Builder
	for i, d := range repos[0].Dists {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "Types: deb\nURIs: %s/%s\nSuites: %s\nComponents: %s\nSigned-By:\n", a.baseURL(c), repo, d.Name, strings.Join(componentNames(d), " "))
		for _, line := range strings.Split(strings.TrimRight(string(armored), "\n"), "\n") {
			if strings.TrimSpace(line) == "" {
				line = "."
			}
			b.WriteString(" " + line + "\n")
		}
	}
	return c.Blob(http.StatusOK, "text/plain; charset=utf-8", []byte(b.String()))
}

func writeIndented(b *strings.Builder, text, indent string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		b.WriteString(indent + line + "\n")
	}
}

// --- API ---

func (a *api) apiRoutes(api *echo.Group) {
	api.GET("/apt/repos", a.list)
	api.GET("/apt/search", a.search)
	api.GET("/apt/repos/:repo/:dist/packages", a.packages)
	api.GET("/apt/repos/:repo/:dist/history", a.history)
	api.POST("/apt/repos/:repo/:dist/packages", a.add, a.RequireDeveloper)
	api.DELETE("/apt/repos/:repo/:dist/packages/:name", a.remove, a.RequireDeveloper)
	api.POST("/apt/repos/:repo/:dist/rollback", a.rollback, a.RequireDeveloper)
}

func (a *api) list(c echo.Context) error {
	repos, err := a.Repos.List(c.Request().Context())
	if err != nil {
		return err
	}
	if repos == nil {
		repos = []aptrepo.RepoInfo{}
	}
	return c.JSON(http.StatusOK, repos)
}

func (a *api) packages(c echo.Context) error {
	pkgs, err := a.Repos.Packages(c.Request().Context(), c.Param("repo"), c.Param("dist"))
	if err != nil {
		return err
	}
	if pkgs == nil {
		pkgs = []aptrepo.Package{}
	}
	return c.JSON(http.StatusOK, pkgs)
}

func (a *api) search(c echo.Context) error {
	q := c.QueryParam("q")
	if q == "" {
		return fmt.Errorf("%w: give the package name to search for as ?q=", aptrepo.ErrInvalid)
	}
	pkgs, err := a.Repos.Search(c.Request().Context(), q)
	if err != nil {
		return err
	}
	if pkgs == nil {
		pkgs = []aptrepo.Package{}
	}
	return c.JSON(http.StatusOK, pkgs)
}

func (a *api) history(c echo.Context) error {
	h, err := a.Repos.History(c.Request().Context(), c.Param("repo"), c.Param("dist"))
	if err != nil {
		return err
	}
	if h == nil {
		h = []aptrepo.Publish{}
	}
	return c.JSON(http.StatusOK, h)
}

// maxDebUpload bounds one multipart upload of packages.
const maxDebUpload = 16 << 30

// aptAdd takes one or more .deb files as multipart/form-data (field
// "file", repeatable) and publishes them as one change.
func (a *api) add(c echo.Context) error {
	if m := a.Registry.Mode(); m.ReadOnly {
		return registry.RefusedReadOnly(m.Reason)
	}
	mt, params, err := mime.ParseMediaType(c.Request().Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return fmt.Errorf("%w: send the packages as multipart/form-data, one \"file\" part each", aptrepo.ErrInvalid)
	}
	tmp, err := os.MkdirTemp(a.UploadDir, ".upload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	mr := multipart.NewReader(http.MaxBytesReader(c.Response(), c.Request().Body, maxDebUpload), params["boundary"])
	var debs []aptrepo.Deb
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: multipart body: %w", aptrepo.ErrInvalid, err)
		}
		name := filepath.Base(part.FileName())
		if part.FormName() != "file" || name == "." || name == "/" || name == "" {
			_ = part.Close()
			continue
		}
		path := filepath.Join(tmp, fmt.Sprintf("%04d-%s", i, name))
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		_, cerr := io.Copy(f, part)
		if err := errors.Join(cerr, f.Close()); err != nil {
			return fmt.Errorf("%w: receive %s: %w", aptrepo.ErrInvalid, name, err)
		}
		d := aptrepo.DebFile(path)
		d.Name = name
		debs = append(debs, d)
	}
	if len(debs) == 0 {
		return fmt.Errorf("%w: no \"file\" part in the upload", aptrepo.ErrInvalid)
	}
	component := c.QueryParam("component")
	if component == "" {
		component = "main"
	}
	names := make([]string, len(debs))
	for i, d := range debs {
		names[i] = d.Name
	}
	a.Note(c, "", "packages", strings.Join(names, " "))
	pub, err := a.Repos.Add(c.Request().Context(), c.Param("repo"), c.Param("dist"), component, debs, a.Principal(c).Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, pub)
}

func (a *api) remove(c echo.Context) error {
	if m := a.Registry.Mode(); m.ReadOnly {
		return registry.RefusedReadOnly(m.Reason)
	}
	pub, err := a.Repos.Remove(c.Request().Context(), c.Param("repo"), c.Param("dist"), c.Param("name"), c.QueryParam("version"), a.Principal(c).Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pub)
}

// RollbackRequest is the body of POST /api/v1/apt/repos/:repo/:dist/rollback.
type RollbackRequest struct {
	PublishID string `json:"publish_id"`
}

func (a *api) rollback(c echo.Context) error {
	if m := a.Registry.Mode(); m.ReadOnly {
		return registry.RefusedReadOnly(m.Reason)
	}
	var req RollbackRequest
	if err := a.Bind(c, &req); err != nil {
		return err
	}
	if req.PublishID == "" {
		return fmt.Errorf("%w: publish_id is required (see the history)", aptrepo.ErrInvalid)
	}
	a.Note(c, "", "publish_id", req.PublishID)
	pub, err := a.Repos.Rollback(c.Request().Context(), c.Param("repo"), c.Param("dist"), req.PublishID, a.Principal(c).Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pub)
}
