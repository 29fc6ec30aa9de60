package server

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/registry"
)

// fsck and gc: routes over internal/maintenance, admins only.

func (s *Server) maintenanceRoutes(api *echo.Group) {
	api.POST("/fsck", s.postFsck, s.requireAdmin)
	api.POST("/gc", s.postGC, s.requireAdmin)
}

func (s *Server) openMaintenance() error {
	var err error
	s.maint, err = maintenance.New(s.reg, maintenance.WithFiles(s.files), maintenance.WithApt(s.apt),
		maintenance.WithHistory(s.history), maintenance.WithLogger(s.log))
	return err
}

// FsckRequest is the body of POST /api/v1/fsck (an empty body: no repair).
type FsckRequest struct {
	Repair bool `json:"repair"`
}

// GCRequest is the body of POST /api/v1/gc (an empty body: a real run).
type GCRequest struct {
	DryRun bool `json:"dry_run"`
}

// bindOptional is bind for bodies that may be left out.
func bindOptional(c echo.Context, v any) error {
	if c.Request().ContentLength == 0 {
		return nil
	}
	return bind(c, v)
}

func (s *Server) postFsck(c echo.Context) error {
	var req FsckRequest
	if err := bindOptional(c, &req); err != nil {
		return err
	}
	rep, err := s.maint.Fsck(c.Request().Context(), maintenance.FsckOptions{Repair: req.Repair})
	if err != nil {
		return err
	}
	s.log.Info("fsck run through the API", "by", principal(c).Name, "repair", req.Repair, "problems", len(rep.Problems), "removed", len(rep.Removed))
	return c.JSON(http.StatusOK, rep)
}

func (s *Server) postGC(c echo.Context) error {
	var req GCRequest
	if err := bindOptional(c, &req); err != nil {
		return err
	}
	rep, err := s.maint.GC(c.Request().Context(), maintenance.GCOptions{DryRun: req.DryRun})
	if err != nil {
		return err
	}
	s.log.Info("gc run through the API", "by", principal(c).Name, "dry_run", req.DryRun, "blobs", rep.Blobs, "bytes", rep.Bytes)
	return c.JSON(http.StatusOK, rep)
}

// maintenanceStatus maps fsck's and gc's errors; used by statusOf.
func maintenanceStatus(err error) (int, string, bool) {
	if errors.Is(err, maintenance.ErrBusy) || errors.Is(err, registry.ErrBusy) {
		return http.StatusConflict, "BUSY", true
	}
	return 0, "", false
}
