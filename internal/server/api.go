package server

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/server/apidoc"
	"github.com/appliance-dev/appliance/internal/version"
)

// The JSON API under /api/v1. Every handler is small: decode, call the
// domain package, encode. Errors become statuses in errors.go.

const principalKey = "principal"

// authenticate reads Basic credentials (or none) into the context. Bad
// credentials are refused outright rather than downgraded to anonymous.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header.Get("Authorization")
		if h != "" && len(h) > 6 && !equalFoldPrefix(h, "basic ") {
			return fmt.Errorf("%w: the API accepts Basic credentials", errUnauthenticated)
		}
		p, err := s.login(c.Request(), h)
		if err != nil {
			setRetryAfter(c.Response().Header(), err)
			return err
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

func equalFoldPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && http.CanonicalHeaderKey(s[:len(prefix)-1]) == http.CanonicalHeaderKey(prefix[:len(prefix)-1])
}

func principal(c echo.Context) auth.Principal {
	p, ok := c.Get(principalKey).(auth.Principal)
	if !ok {
		return auth.Anonymous
	}
	return p
}

// requireUser refuses anonymous callers.
func (s *Server) requireUser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if principal(c).Anonymous {
			return errUnauthenticated
		}
		return next(c)
	}
}

// requireDeveloper refuses anyone who may not change content (guests,
// anonymous callers, token bearers).
func (s *Server) requireDeveloper(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := principal(c)
		if p.Anonymous {
			return errUnauthenticated
		}
		if !s.canImport(p) {
			return fmt.Errorf("%w: this needs the developer or admin role", errForbidden)
		}
		return next(c)
	}
}

// requireWide refuses anyone who may not read every project: what spans
// projects (the import history, the receipt, promotion reports) would
// name a private project's repositories and digests to a member of
// another project. A member of some projects reads those projects
// through the registry and GET /api/v1/projects.
func (s *Server) requireWide(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := principal(c)
		if p.Anonymous {
			return errUnauthenticated
		}
		if !s.authz.SeesAll(p) {
			return fmt.Errorf("%w: %s is a member of some projects only; this record spans every project", errForbidden, p.Name)
		}
		return next(c)
	}
}

// requireAdmin refuses anyone but an admin.
func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := principal(c)
		if p.Anonymous {
			return errUnauthenticated
		}
		if !s.authz.IsAdmin(p) {
			return fmt.Errorf("%w: %s is not an admin", errForbidden, p.Name)
		}
		return next(c)
	}
}

func (s *Server) routes(e *echo.Echo) error {
	e.GET(tokenPath, s.handleToken)
	e.POST(tokenPath, s.handleToken)

	api := e.Group("/api/v1", s.auditAPI, s.replication.Gate, s.authenticate)
	api.GET("/system", s.getSystem)
	s.replication.Register(api)
	api.GET("/whoami", s.whoami)
	api.GET("/system/read-only", s.getReadOnly)
	api.PUT("/system/read-only", s.putReadOnly, s.requireAdmin)

	api.GET("/users", s.listUsers, s.requireAdmin)
	api.POST("/users", s.addUser, s.requireAdmin)
	api.GET("/users/:name", s.getUser)
	api.PATCH("/users/:name", s.patchUser)
	api.DELETE("/users/:name", s.removeUser, s.requireAdmin)

	api.POST("/imports", s.postImport)
	api.GET("/imports", s.listImports, s.requireWide)
	api.GET("/imports/:id", s.getImport, s.requireWide)
	api.GET("/receipt", s.getReceipt, s.requireWide)
	api.GET("/files", s.listFiles)
	if err := apidoc.Register(api); err != nil {
		return err
	}

	s.aptAPI.Register(api)
	s.auditRoutes(api)
	s.validation.Register(api)

	api.GET("/projects", s.listProjects)
	api.GET("/projects/:name", s.getProject)
	api.PUT("/projects/:name", s.putProject, s.requireAdmin)
	return s.opsRoutes(api)
}

// SystemInfo is the answer of GET /api/v1/system.
type SystemInfo struct {
	Version          version.Info  `json:"version"`
	Mode             registry.Mode `json:"mode"`
	Hostnames        []string      `json:"hostnames"`
	CAFingerprint    string        `json:"ca_sha256"`
	StorageUsedBytes int64         `json:"storage_used_bytes"`
	Started          time.Time     `json:"started"`
}

func (s *Server) getSystem(c echo.Context) error {
	used, err := s.reg.StorageUsed()
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, SystemInfo{
		Version:          version.Get(),
		Mode:             s.reg.Mode(),
		Hostnames:        s.pki.Names,
		CAFingerprint:    s.caFingerprint,
		StorageUsedBytes: used,
		Started:          s.started,
	})
}

// WhoAmI is the answer of GET /api/v1/whoami.
type WhoAmI struct {
	Name      string    `json:"name"`
	Role      auth.Role `json:"role,omitempty"`
	Anonymous bool      `json:"anonymous"`
}

func (s *Server) whoami(c echo.Context) error {
	p := principal(c)
	return c.JSON(http.StatusOK, WhoAmI{Name: p.Name, Role: p.Role, Anonymous: p.Anonymous})
}

func (s *Server) getReadOnly(c echo.Context) error { return c.JSON(http.StatusOK, s.reg.Mode()) }

// ReadOnlyRequest is the body of PUT /api/v1/system/read-only.
type ReadOnlyRequest struct {
	ReadOnly *bool  `json:"read_only"`
	Reason   string `json:"reason"`
}

func (s *Server) putReadOnly(c echo.Context) error {
	var req ReadOnlyRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if req.ReadOnly == nil {
		return fmt.Errorf("%w: read_only (true or false) is required", errBadRequest)
	}
	auditNote(c, "registry", "read_only", strconv.FormatBool(*req.ReadOnly), "reason", req.Reason)
	if err := s.life.CheckReadOnlySwitch(); err != nil {
		return err
	}
	m, err := s.reg.SetReadOnly(*req.ReadOnly, req.Reason)
	if err != nil {
		return err
	}
	s.log.Info("read-only mode set through the API", "by", principal(c).Name, "read_only", m.ReadOnly, "reason", m.Reason)
	return c.JSON(http.StatusOK, m)
}

func (s *Server) listUsers(c echo.Context) error {
	return c.JSON(http.StatusOK, s.users.List(c.Request().Context()))
}

// UserRequest is the body of POST /api/v1/users and PATCH /api/v1/users/:name.
type UserRequest struct {
	Name     string `json:"name,omitempty"`
	Password string `json:"password,omitempty"`
	Role     string `json:"role,omitempty"`
	// Projects limits the role to these projects (membership, as in
	// Harbor); absent or empty on POST: appliance-wide. On PATCH, absent
	// keeps the user's projects and [] makes the role appliance-wide.
	Projects *[]string `json:"projects,omitempty"`
}

// projectsOf is what a request's projects say, "" for none.
func (req UserRequest) projectsOf() []string {
	if req.Projects == nil {
		return nil
	}
	return *req.Projects
}

func (s *Server) addUser(c echo.Context) error {
	var req UserRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if req.Role == "" {
		req.Role = string(auth.RoleDeveloper)
	}
	auditNote(c, req.Name, "role", req.Role, "projects", strings.Join(req.projectsOf(), ","))
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := s.users.Add(ctx, req.Name, req.Password, role, req.projectsOf()...); err != nil {
		return err
	}
	u, _ := s.users.Get(req.Name)
	s.log.Info("user added", "user", req.Name, "role", role, "projects", u.Projects, "by", principal(c).Name)
	return c.JSON(http.StatusCreated, u)
}

// selfOrAdmin allows admins, and users acting on their own account.
func (s *Server) selfOrAdmin(c echo.Context) error {
	p := principal(c)
	if p.Anonymous {
		return errUnauthenticated
	}
	if p.Name != c.Param("name") && !s.authz.IsAdmin(p) {
		return fmt.Errorf("%w: only an admin may manage other users", errForbidden)
	}
	return nil
}

func (s *Server) getUser(c echo.Context) error {
	if err := s.selfOrAdmin(c); err != nil {
		return err
	}
	u, ok := s.users.Get(c.Param("name"))
	if !ok {
		return fmt.Errorf("user %q: %w", c.Param("name"), auth.ErrUserNotFound)
	}
	return c.JSON(http.StatusOK, u)
}

func (s *Server) patchUser(c echo.Context) error {
	if err := s.selfOrAdmin(c); err != nil {
		return err
	}
	var req UserRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	name, ctx := c.Param("name"), c.Request().Context()
	if req.Password == "" && req.Role == "" && req.Projects == nil {
		return fmt.Errorf("%w: nothing to change: give password, role and/or projects", errBadRequest)
	}
	auditNote(c, "", "role", req.Role, "projects", strings.Join(req.projectsOf(), ","), "password_changed", strconv.FormatBool(req.Password != ""))
	if req.Role != "" || req.Projects != nil {
		if !s.authz.IsAdmin(principal(c)) {
			return fmt.Errorf("%w: only an admin may change roles and projects", errForbidden)
		}
		old, ok := s.users.Get(name)
		if !ok {
			return fmt.Errorf("user %q: %w", name, auth.ErrUserNotFound)
		}
		role, projects := old.Role, old.Projects
		if req.Role != "" {
			var err error
			if role, err = auth.ParseRole(req.Role); err != nil {
				return err
			}
		}
		if req.Projects != nil {
			projects = *req.Projects
		}
		if err := s.users.SetAccess(ctx, name, role, projects); err != nil {
			return err
		}
	}
	if req.Password != "" {
		if err := s.users.SetPassword(ctx, name, req.Password); err != nil {
			return err
		}
	}
	u, _ := s.users.Get(name)
	s.log.Info("user changed", "user", name, "role_changed", req.Role != "", "projects_changed", req.Projects != nil, "password_changed", req.Password != "", "by", principal(c).Name)
	return c.JSON(http.StatusOK, u)
}

func (s *Server) removeUser(c echo.Context) error {
	if err := s.users.Remove(c.Request().Context(), c.Param("name")); err != nil {
		return err
	}
	s.log.Info("user removed", "user", c.Param("name"), "by", principal(c).Name)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) listProjects(c echo.Context) error {
	names, err := s.reg.Projects(c.Request().Context())
	if err != nil {
		return err
	}
	p := principal(c)
	out := []auth.Project{}
	names = slices.DeleteFunc(names, func(n string) bool { return n == importer.StagingProject })
	for _, pr := range s.projects.List(names...) {
		// Private projects are listed only to those who may pull from them.
		if pr.Public || s.authz.Allowed(p, auth.Access{Type: "repository", Name: pr.Name + "/x", Action: auth.ActionPull}) {
			out = append(out, pr)
		}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getProject(c echo.Context) error {
	pr := s.projects.Get(c.Param("name"))
	if !pr.Public && !s.authz.Allowed(principal(c), auth.Access{Type: "repository", Name: pr.Name + "/x", Action: auth.ActionPull}) {
		return fmt.Errorf("project %q: %w", pr.Name, errNotFound)
	}
	return c.JSON(http.StatusOK, pr)
}

// ProjectRequest is the body of PUT /api/v1/projects/:name.
type ProjectRequest struct {
	Public *bool `json:"public"`
}

func (s *Server) putProject(c echo.Context) error {
	var req ProjectRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if req.Public == nil {
		return fmt.Errorf("%w: public (true or false) is required", errBadRequest)
	}
	auditNote(c, "", "public", strconv.FormatBool(*req.Public))
	pr, err := s.projects.Set(c.Param("name"), *req.Public)
	if err != nil {
		return err
	}
	s.log.Info("project visibility set", "project", pr.Name, "public", pr.Public, "by", principal(c).Name)
	return c.JSON(http.StatusOK, pr)
}

// bind decodes a JSON body strictly, unknown fields being errors, and
// reads at most maxAPIBodyLen of it. (Handlers that take streamed content,
// archives and packages, do not use bind and bound what they read.)
func bind(c echo.Context, v any) error {
	r := c.Request()
	if r.ContentLength > maxAPIBodyLen {
		return &http.MaxBytesError{Limit: maxAPIBodyLen}
	}
	dec := jsonDecoder(http.MaxBytesReader(c.Response(), r.Body, maxAPIBodyLen))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: invalid JSON body: %w", errBadRequest, err)
	}
	return nil
}
