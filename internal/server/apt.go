package server

import (
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
	"github.com/appliance-dev/appliance/internal/registry"
)

// The apt repository: served at /apt/ on both listeners (its metadata is
// signed, and a fresh VM may not trust the CA yet), with the signing key,
// ready cloud-init and deb822 snippets, and its JSON API.

// aptRoutes mounts /apt/ on e.
func (s *Server) aptRoutes(e *echo.Echo) {
	files := http.StripPrefix("/apt", s.apt.Handler())
	e.GET("/apt/key.gpg", func(c echo.Context) error {
		bin, _ := s.apt.PublicKey()
		return c.Blob(http.StatusOK, "application/pgp-keys", bin)
	})
	e.GET("/apt/key.asc", func(c echo.Context) error {
		_, armored := s.apt.PublicKey()
		return c.Blob(http.StatusOK, "application/pgp-keys", armored)
	})
	e.GET("/apt/cloud-init.yaml", s.cloudInit)
	e.GET("/apt/:sources", func(c echo.Context) error {
		if name, ok := strings.CutSuffix(c.Param("sources"), ".sources"); ok {
			return s.debSources(c, name)
		}
		files.ServeHTTP(c.Response(), c.Request())
		return nil
	})
	e.GET("/apt/*", echo.WrapHandler(files))
	e.HEAD("/apt/*", echo.WrapHandler(files))
}

// aptBaseURL is the URL of the apt tree under the host the client used,
// over plain HTTP when that listener exists (a VM that does not trust the
// CA yet can still install, since the metadata is signed).
func (s *Server) aptBaseURL(c echo.Context) string {
	host := c.Request().Host
	if s.httpLn != nil {
		h := host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			h = hh
		}
		_, port, _ := net.SplitHostPort(s.httpLn.Addr().String())
		return "http://" + net.JoinHostPort(strings.Trim(h, "[]"), port) + "/apt"
	}
	return "https://" + host + "/apt"
}

// selectedDists returns the repositories and distributions a snippet is
// for: ?repo=&dist= narrow it; by default, all of them.
func (s *Server) selectedDists(c echo.Context) ([]aptrepo.RepoInfo, error) {
	repos, err := s.apt.List(c.Request().Context())
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
		return nil, fmt.Errorf("%w: no apt repository %q with distribution %q", errNotFound, wantRepo, wantDist)
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
func (s *Server) cloudInit(c echo.Context) error {
	repos, err := s.selectedDists(c)
	if err != nil {
		return err
	}
	_, armored := s.apt.PublicKey()
	base := s.aptBaseURL(c)
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	b.WriteString("# Written by the appliance: apt from " + base + ", and its CA trusted.\n")
	b.WriteString("ca_certs:\n  trusted:\n    - |\n")
	writeIndented(&b, string(s.pki.CAPEM), "      ")
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
func (s *Server) debSources(c echo.Context, repo string) error {
	c.QueryParams().Set("repo", repo)
	repos, err := s.selectedDists(c)
	if err != nil {
		return err
	}
	if len(repos) == 0 {
		return fmt.Errorf("%w: no apt repository %q", errNotFound, repo)
	}
	_, armored := s.apt.PublicKey()
	var b strings.Builder
	for i, d := range repos[0].Dists {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "Types: deb\nURIs: %s/%s\nSuites: %s\nComponents: %s\nSigned-By:\n", s.aptBaseURL(c), repo, d.Name, strings.Join(componentNames(d), " "))
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

func (s *Server) aptAPI(api *echo.Group) {
	api.GET("/apt/repos", s.aptList)
	api.GET("/apt/search", s.aptSearch)
	api.GET("/apt/repos/:repo/:dist/packages", s.aptPackages)
	api.GET("/apt/repos/:repo/:dist/history", s.aptHistory)
	api.POST("/apt/repos/:repo/:dist/packages", s.aptAdd, s.requireDeveloper)
	api.DELETE("/apt/repos/:repo/:dist/packages/:name", s.aptRemove, s.requireDeveloper)
	api.POST("/apt/repos/:repo/:dist/rollback", s.aptRollback, s.requireDeveloper)
}

func (s *Server) aptList(c echo.Context) error {
	repos, err := s.apt.List(c.Request().Context())
	if err != nil {
		return err
	}
	if repos == nil {
		repos = []aptrepo.RepoInfo{}
	}
	return c.JSON(http.StatusOK, repos)
}

func (s *Server) aptPackages(c echo.Context) error {
	pkgs, err := s.apt.Packages(c.Request().Context(), c.Param("repo"), c.Param("dist"))
	if err != nil {
		return err
	}
	if pkgs == nil {
		pkgs = []aptrepo.Package{}
	}
	return c.JSON(http.StatusOK, pkgs)
}

func (s *Server) aptSearch(c echo.Context) error {
	q := c.QueryParam("q")
	if q == "" {
		return fmt.Errorf("%w: give the package name to search for as ?q=", errBadRequest)
	}
	pkgs, err := s.apt.Search(c.Request().Context(), q)
	if err != nil {
		return err
	}
	if pkgs == nil {
		pkgs = []aptrepo.Package{}
	}
	return c.JSON(http.StatusOK, pkgs)
}

func (s *Server) aptHistory(c echo.Context) error {
	h, err := s.apt.History(c.Request().Context(), c.Param("repo"), c.Param("dist"))
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
func (s *Server) aptAdd(c echo.Context) error {
	if m := s.reg.Mode(); m.ReadOnly {
		return registry.RefusedReadOnly(m.Reason)
	}
	mt, params, err := mime.ParseMediaType(c.Request().Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return fmt.Errorf("%w: send the packages as multipart/form-data, one \"file\" part each", errBadRequest)
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.cfg.DataDir, aptDir), ".upload-")
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
			return fmt.Errorf("%w: multipart body: %w", errBadRequest, err)
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
			return fmt.Errorf("%w: receive %s: %w", errBadRequest, name, err)
		}
		d := aptrepo.DebFile(path)
		d.Name = name
		debs = append(debs, d)
	}
	if len(debs) == 0 {
		return fmt.Errorf("%w: no \"file\" part in the upload", errBadRequest)
	}
	component := c.QueryParam("component")
	if component == "" {
		component = "main"
	}
	names := make([]string, len(debs))
	for i, d := range debs {
		names[i] = d.Name
	}
	auditNote(c, "", "packages", strings.Join(names, " "))
	pub, err := s.apt.Add(c.Request().Context(), c.Param("repo"), c.Param("dist"), component, debs, principal(c).Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, pub)
}

func (s *Server) aptRemove(c echo.Context) error {
	if m := s.reg.Mode(); m.ReadOnly {
		return registry.RefusedReadOnly(m.Reason)
	}
	pub, err := s.apt.Remove(c.Request().Context(), c.Param("repo"), c.Param("dist"), c.Param("name"), c.QueryParam("version"), principal(c).Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pub)
}

// RollbackRequest is the body of POST /api/v1/apt/repos/:repo/:dist/rollback.
type RollbackRequest struct {
	PublishID string `json:"publish_id"`
}

func (s *Server) aptRollback(c echo.Context) error {
	if m := s.reg.Mode(); m.ReadOnly {
		return registry.RefusedReadOnly(m.Reason)
	}
	var req RollbackRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if req.PublishID == "" {
		return fmt.Errorf("%w: publish_id is required (see the history)", errBadRequest)
	}
	auditNote(c, "", "publish_id", req.PublishID)
	pub, err := s.apt.Rollback(c.Request().Context(), c.Param("repo"), c.Param("dist"), req.PublishID, principal(c).Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pub)
}
