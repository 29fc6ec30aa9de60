package server

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/registry"
)

// ImportPathRequest is the JSON body of POST /api/v1/imports that names a
// file or OCI layout folder on the appliance's own disk (mounted media).
type ImportPathRequest struct {
	Path      string `json:"path"`
	ToRepo    string `json:"to_repo"`
	KeepNames bool   `json:"keep_names"`
	// AllowUnsigned accepts an unsigned appliance bundle (recorded).
	AllowUnsigned bool `json:"allow_unsigned"`
}

// ImportFailure is the answer to an import that was refused: the error,
// and the record kept in the history.
type ImportFailure struct {
	APIError
	Record *history.Record `json:"record,omitempty"`
}

// postImport imports an archive streamed in the request body
// (?to_repo=…&keep_names=…&source=<file name>), or, with a JSON body, a
// path on the appliance's disk (admins only: it reads local files).
func (s *Server) postImport(c echo.Context) error {
	p := principal(c)
	if p.Anonymous {
		return errUnauthenticated
	}
	if !s.canImport(p) {
		return fmt.Errorf("%w: importing needs the developer or admin role", errForbidden)
	}
	if m := s.reg.Mode(); m.ReadOnly {
		return registry.RefusedReadOnly(m.Reason)
	}
	ctx := c.Request().Context()
	var (
		rec *history.Record
		err error
	)
	if strings.HasPrefix(c.Request().Header.Get("Content-Type"), "application/json") {
		var req ImportPathRequest
		if err := bind(c, &req); err != nil {
			return err
		}
		if !s.authz.IsAdmin(p) {
			return fmt.Errorf("%w: importing from the appliance's own disk needs the admin role", errForbidden)
		}
		if !filepath.IsAbs(req.Path) {
			return fmt.Errorf("%w: path %q must be absolute", errBadRequest, req.Path)
		}
		ir := importer.Request{Source: req.Path, ToRepo: req.ToRepo, KeepNames: req.KeepNames, User: p.Name,
			Trust: bundle.Trust{Keys: s.trust, AllowUnsigned: req.AllowUnsigned}}
		_, partsErr := os.Stat(req.Path + ".parts.json")
		info, statErr := os.Stat(req.Path)
		if statErr != nil && partsErr != nil {
			return fmt.Errorf("%w: %w", errBadRequest, statErr)
		}
		if partsErr == nil && (statErr != nil || !info.IsDir()) {
			// A bundle split for media: the parts are checked, then read as one.
			r, _, oerr := bundle.Open(req.Path, ir.Trust)
			if oerr != nil {
				return oerr
			}
			defer r.Close()
			ir.Reader = r
			rec, err = s.importer.Import(ctx, ir)
		} else if info.IsDir() {
			rec, err = s.importer.ImportDir(ctx, req.Path, ir)
		} else {
			f, openErr := os.Open(req.Path)
			if openErr != nil {
				return fmt.Errorf("%w: %w", errBadRequest, openErr)
			}
			defer f.Close()
			ir.Reader, ir.Size = f, info.Size()
			rec, err = s.importer.Import(ctx, ir)
		}
	} else {
		keep, _ := strconv.ParseBool(c.QueryParam("keep_names"))
		unsigned, _ := strconv.ParseBool(c.QueryParam("allow_unsigned"))
		source := c.QueryParam("source")
		if source == "" {
			source = "upload"
		}
		rec, err = s.importer.Import(ctx, importer.Request{
			Source: filepath.Base(source), Reader: c.Request().Body, Size: max(c.Request().ContentLength, 0),
			ToRepo: c.QueryParam("to_repo"), KeepNames: keep, User: p.Name,
			Trust: bundle.Trust{Keys: s.trust, AllowUnsigned: unsigned},
		})
	}
	auditImport(c, rec, err)
	if err != nil {
		status, code := statusOf(err)
		var f ImportFailure
		f.Error.Code, f.Error.Message, f.Record = code, err.Error(), rec
		if status >= 500 {
			s.log.Error("import failed", "error", err)
		}
		return c.JSON(status, f)
	}
	return c.JSON(http.StatusCreated, rec)
}

func (s *Server) canImport(p auth.Principal) bool {
	u, ok := s.users.Get(p.Name)
	return ok && p.Token == nil && (u.Role == auth.RoleAdmin || u.Role == auth.RoleDeveloper)
}

func (s *Server) listImports(c echo.Context) error {
	recs, err := s.history.List()
	if err != nil {
		return err
	}
	if recs == nil {
		recs = []history.Record{}
	}
	return c.JSON(http.StatusOK, recs)
}

func (s *Server) getImport(c echo.Context) error {
	rec, ok, err := s.history.Get(c.Param("id"))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("import %q: %w", c.Param("id"), errNotFound)
	}
	return c.JSON(http.StatusOK, rec)
}

// importStatus maps importer errors; used by statusOf.
func importStatus(err error) (int, string, bool) {
	switch {
	case errors.Is(err, registry.ErrReadOnly):
		return http.StatusForbidden, "READ_ONLY", true
	case errors.Is(err, registry.ErrReplica):
		return http.StatusForbidden, "READ_ONLY_REPLICA", true
	case errors.Is(err, importer.ErrInvalidRequest):
		return http.StatusBadRequest, "BAD_REQUEST", true
	}
	var ie *importer.Error
	if errors.As(err, &ie) {
		return http.StatusUnprocessableEntity, "IMPORT_REFUSED", true
	}
	return 0, "", false
}
