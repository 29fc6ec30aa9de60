package opsapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sys/unix"

	"github.com/appliance-dev/appliance/internal/audit"
	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/version"
)

// The lifecycle's routes: status, promotions and their parity reports,
// standby and activate.

// Status is the answer of GET /api/v1/status: where the appliance stands.
type Status struct {
	Mode             bootstrap.Mode        `json:"mode"`
	Since            time.Time             `json:"since"`
	ReadOnly         registry.Mode         `json:"read_only"`
	Primary          *bootstrap.Primary    `json:"primary,omitempty"`
	History          []bootstrap.Change    `json:"history"`
	Standby          *bootstrap.SyncStatus `json:"standby,omitempty"`
	LastPromotion    *PromotionSummary     `json:"last_promotion,omitempty"`
	Version          version.Info          `json:"version"`
	Hostnames        []string              `json:"hostnames"`
	CAFingerprint    string                `json:"ca_sha256"`
	StorageUsedBytes int64                 `json:"storage_used_bytes"`
	// StorageFreeBytes is what the data directory's file system has left
	// for the appliance (0 when it cannot be read).
	StorageFreeBytes int64     `json:"storage_free_bytes"`
	Started          time.Time `json:"started"`
	// Role is "writer" or "replica". A read-only replica follows its
	// writer: Mode and ReadOnly are the writer's, as the state in force
	// names them, and Writer names it.
	Role   string `json:"role"`
	Writer string `json:"writer,omitempty"`
}

// PromotionSummary is the last promotion, in brief.
type PromotionSummary struct {
	ID          string    `json:"id"`
	Target      string    `json:"target"`
	State       string    `json:"state"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished,omitzero"`
	ParityOK    *bool     `json:"parity_ok,omitempty"`
	Differences int       `json:"differences"`
}

func (a *api) getStatus(c echo.Context) error {
	used, err := a.Registry.StorageUsed()
	if err != nil {
		return err
	}
	ls := a.Lifecycle.State()
	st := Status{Mode: ls.Mode, Since: ls.Since, ReadOnly: a.Registry.Mode(), Primary: ls.Primary, History: ls.History,
		Version: version.Get(), Hostnames: a.Appliance.CertNames, CAFingerprint: a.Appliance.CAFingerprint,
		StorageUsedBytes: used, StorageFreeBytes: freeBytes(a.Appliance.DataDir), Started: a.Appliance.Started, Role: a.Appliance.Role}
	if st.Role == "" {
		st.Role = "writer"
	}
	if a.Followed != nil {
		if f, ok := a.Followed(); ok {
			st.Mode, st.ReadOnly, st.Writer = bootstrap.Mode(f.Lifecycle), registry.Mode{ReadOnly: f.ReadOnly, Reason: f.Reason}, f.Writer
		}
	}
	if ls.Primary != nil {
		sync := a.visibleSync(c, a.Follower.Status())
		st.Standby = &sync
		// The followed projects, like GET /projects, name private
		// projects to those who may pull from them only.
		primary := *ls.Primary
		primary.Projects = slices.DeleteFunc(slices.Clone(primary.Projects), func(p string) bool { return !a.MayPull(c, p+"/") })
		st.Primary = &primary
	}
	if recs, err := a.Promoter.List(); err == nil {
		for _, r := range recs {
			if r.DryRun {
				continue
			}
			sum := &PromotionSummary{ID: r.ID, Target: r.Target, State: r.State, Started: r.Started, Finished: r.Finished}
			if r.Parity != nil {
				ok := r.Parity.OK
				sum.ParityOK, sum.Differences = &ok, r.Parity.Differences
			}
			st.LastPromotion = sum
			break
		}
	}
	return c.JSON(http.StatusOK, st)
}

// PromoteRequest is the body of POST /api/v1/promotions.
type PromoteRequest struct {
	Target         string   `json:"target"`
	TargetCA       string   `json:"target_ca,omitempty"` // PEM
	TargetUsername string   `json:"target_username,omitempty"`
	TargetPassword string   `json:"target_password,omitempty"`
	Projects       []string `json:"projects,omitempty"`
	All            bool     `json:"all,omitempty"`
	DryRun         bool     `json:"dry_run,omitempty"`
	Parallel       int      `json:"parallel,omitempty"`
}

// postPromotion checks and plans a promotion; a dry run answers 200 with
// the plan, a real one 202 and goes on in the background (GET
// /promotions/:id shows how far it got). A refusal is a *PromotionError.
func (a *api) postPromotion(c echo.Context) error {
	var req PromoteRequest
	if err := a.Bind(c, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Target) == "" {
		return fmt.Errorf("%w: target (https://HOST of the registry to promote into) is required", ErrBadRequest)
	}
	a.Note(c, audit.RedactURL(req.Target), "projects", strings.Join(req.Projects, " "), "all", strconv.FormatBool(req.All))
	if req.DryRun {
		a.NoteAction(c, "promotion.plan")
	}
	rec, err := a.Promoter.Start(c.Request().Context(), promote.Request{
		Target:   promote.Target{URL: req.Target, CAPEM: []byte(req.TargetCA), Username: req.TargetUsername, Password: req.TargetPassword},
		Projects: req.Projects, All: req.All, DryRun: req.DryRun, Parallel: req.Parallel, By: a.Principal(c).Name,
	})
	if err != nil {
		pe := &PromotionError{Err: err}
		if rec.ID != "" {
			pe.Promotion = &rec
		}
		return pe
	}
	a.Note(c, "", "id", rec.ID)
	if req.DryRun {
		return c.JSON(http.StatusOK, rec)
	}
	a.PromotionStarted(c, rec.ID)
	return c.JSON(http.StatusAccepted, rec)
}

func (a *api) listPromotions(c echo.Context) error {
	recs, err := a.Promoter.List()
	if err != nil {
		return err
	}
	if recs == nil {
		recs = []promote.Promotion{}
	}
	return c.JSON(http.StatusOK, recs)
}

func (a *api) getPromotion(c echo.Context) error {
	rec, err := a.Promoter.Get(c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rec)
}

func (a *api) cancelPromotion(c echo.Context) error {
	if err := a.Promoter.Cancel(c.Param("id")); err != nil {
		return err
	}
	rec, err := a.Promoter.Get(c.Param("id"))
	if err != nil {
		return err
	}
	a.Log.Info("promotion canceled", "id", rec.ID, "by", a.Principal(c).Name)
	return c.JSON(http.StatusOK, rec)
}

// getParity answers the newest parity report.
func (a *api) getParity(c echo.Context) error {
	rec, ok, err := a.Promoter.LastParity()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no promotion has reached its parity check yet: %w", ErrNotFound)
	}
	return c.JSON(http.StatusOK, rec.Parity)
}

// StandbyRequest is the body of POST /api/v1/standby. Without primary, the
// appliance returns to following the primary it followed before.
type StandbyRequest struct {
	Primary         string   `json:"primary,omitempty"`
	PrimaryCA       string   `json:"primary_ca,omitempty"` // PEM
	PrimaryUsername string   `json:"primary_username,omitempty"`
	PrimaryPassword string   `json:"primary_password,omitempty"`
	Projects        []string `json:"projects,omitempty"`
	Interval        string   `json:"interval,omitempty"` // a Go duration, e.g. "5m"
	Reason          string   `json:"reason,omitempty"`
}

// StandbyAnswer is the lifecycle after a switch to standby, and the
// outcome of the first sync.
type StandbyAnswer struct {
	Lifecycle bootstrap.State       `json:"lifecycle"`
	Sync      *bootstrap.SyncStatus `json:"sync,omitempty"`
	SyncError string                `json:"sync_error,omitempty"`
}

// postStandby makes the appliance a read-only standby of a primary, after
// proving the primary can be reached with the credentials given, and runs
// the first sync.
func (a *api) postStandby(c echo.Context) error {
	var req StandbyRequest
	if err := a.Bind(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	sr := bootstrap.StandbyRequest{By: a.Principal(c).Name, Reason: req.Reason}
	if req.Primary != "" {
		interval := time.Duration(0)
		if req.Interval != "" {
			d, err := time.ParseDuration(req.Interval)
			if err != nil || d < 10*time.Second || d > 7*24*time.Hour {
				return fmt.Errorf("%w: interval %q: want a duration between 10s and 168h, such as 5m", ErrBadRequest, req.Interval)
			}
			interval = d
		}
		for _, p := range req.Projects {
			if !regclient.ValidHarborProject(p) {
				return fmt.Errorf("%w: project %q is not a valid project name", ErrBadRequest, p)
			}
		}
		sr.Primary = &bootstrap.Primary{URL: strings.TrimRight(req.Primary, "/"), Projects: req.Projects, Interval: interval}
		sr.Credentials = bootstrap.PrimaryCredentials{Username: req.PrimaryUsername, Password: req.PrimaryPassword, CAPEM: req.PrimaryCA}
		if err := bootstrap.CheckPrimary(ctx, sr.Primary.URL, sr.Credentials); err != nil {
			return fmt.Errorf("%w: nothing changed: %w", ErrBadRequest, err)
		}
	} else if req.PrimaryUsername != "" || req.PrimaryPassword != "" || req.PrimaryCA != "" || len(req.Projects) > 0 || req.Interval != "" {
		return fmt.Errorf("%w: primary settings need the primary's URL", ErrBadRequest)
	}
	st, err := a.Lifecycle.Standby(sr)
	if err != nil {
		return err
	}
	if st.Primary != nil {
		a.Note(c, audit.RedactURL(st.Primary.URL), "mode", string(st.Mode))
	}
	ans := StandbyAnswer{Lifecycle: st}
	sync, err := a.Follower.SyncNow(ctx)
	ans.Sync = &sync
	if err != nil {
		ans.SyncError = err.Error()
	}
	return c.JSON(http.StatusOK, ans)
}

func (a *api) getStandby(c echo.Context) error {
	if a.Lifecycle.State().Primary == nil {
		return fmt.Errorf("this appliance has never been a standby: %w", ErrNotFound)
	}
	return c.JSON(http.StatusOK, a.visibleSync(c, a.Follower.Status()))
}

// visibleSync keeps of a standby's state the tags the caller may pull:
// drift and pulled tags name the repositories and digests of private
// projects, which the counts alone do not.
func (a *api) visibleSync(c echo.Context, st bootstrap.SyncStatus) bootstrap.SyncStatus {
	st.Pulled = slices.DeleteFunc(slices.Clone(st.Pulled), func(p bootstrap.PulledTag) bool { return !a.MayPull(c, p.Repository) })
	st.Drift = slices.DeleteFunc(slices.Clone(st.Drift), func(d bootstrap.Drift) bool { return !a.MayPull(c, d.Repository) })
	if st.Drift == nil {
		st.Drift = []bootstrap.Drift{}
	}
	return st
}

// postSync runs a sync now (a standby only).
func (a *api) postSync(c echo.Context) error {
	st, err := a.Follower.SyncNow(c.Request().Context())
	if err != nil && errors.Is(err, bootstrap.ErrBadTransition) {
		return err
	}
	return c.JSON(http.StatusOK, StandbyAnswer{Lifecycle: a.Lifecycle.State(), Sync: &st, SyncError: errString(err)})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ActivateRequest is the body of POST /api/v1/activate.
type ActivateRequest struct {
	Reason string `json:"reason"`
}

func (a *api) postActivate(c echo.Context) error {
	var req ActivateRequest
	if err := a.Bind(c, &req); err != nil {
		return err
	}
	a.Note(c, "", "mode", string(bootstrap.ModeActive), "reason", req.Reason)
	st, err := a.Lifecycle.Activate(a.Principal(c).Name, strings.TrimSpace(req.Reason))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// freeBytes is the space an unprivileged writer has left on dir's file
// system, 0 when it cannot be read.
func freeBytes(dir string) int64 {
	var st unix.Statfs_t
	if dir == "" || unix.Statfs(dir, &st) != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize //nolint:gosec // G115: a block count fits int64
}
