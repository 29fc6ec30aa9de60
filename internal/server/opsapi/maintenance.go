package opsapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/maintenance"
)

// fsck and gc: routes over internal/maintenance, admins only.

// FsckRequest is the body of POST /api/v1/fsck (an empty body: no repair).
type FsckRequest struct {
	Repair bool `json:"repair"`
}

// GCRequest is the body of POST /api/v1/gc (an empty body: a real run).
type GCRequest struct {
	DryRun bool `json:"dry_run"`
}

func (a *api) postFsck(c echo.Context) error {
	var req FsckRequest
	if err := a.bindOptional(c, &req); err != nil {
		return err
	}
	rep, err := a.Maintainer.Fsck(c.Request().Context(), maintenance.FsckOptions{Repair: req.Repair})
	if err != nil {
		return err
	}
	a.Log.Info("fsck run through the API", "by", a.Principal(c).Name, "repair", req.Repair, "problems", len(rep.Problems), "removed", len(rep.Removed))
	return c.JSON(http.StatusOK, rep)
}

func (a *api) postGC(c echo.Context) error {
	var req GCRequest
	if err := a.bindOptional(c, &req); err != nil {
		return err
	}
	rep, err := a.Maintainer.GC(c.Request().Context(), maintenance.GCOptions{DryRun: req.DryRun})
	if err != nil {
		return err
	}
	a.Log.Info("gc run through the API", "by", a.Principal(c).Name, "dry_run", req.DryRun, "blobs", rep.Blobs, "bytes", rep.Bytes)
	return c.JSON(http.StatusOK, rep)
}
