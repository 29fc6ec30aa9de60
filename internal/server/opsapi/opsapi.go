// Package opsapi is the part of the JSON API through which an operator
// acts on the appliance as a whole: its lifecycle (docs/lifecycle.md:
// status, promotions and their parity reports, standby, activate, the
// vSphere Supervisor hand-over) and its upkeep (docs/operations.md: fsck
// and gc).
//
// The seam: these routes sit over long-running, appliance-wide machinery
// (bootstrap.Lifecycle, promote.Promoter, bootstrap.Follower,
// bootstrap.Handover, maintenance.Maintainer) and need nothing else of
// the server but a few facts about the appliance and the API's
// conventions, which the server passes in Deps: who the caller is, how a
// JSON body is read, what the request's audit entry says, and the
// middleware that refuses anonymous callers and non-admins. They neither
// read users nor projects nor touch the registry's storage.
//
// Handlers return errors and never choose a status: internal/server maps
// the domain errors, and those of this package (ErrBadRequest,
// ErrNotFound, PromotionError), in its statusOf, which stays the one place
// where errors become HTTP statuses. The request and answer types here
// are the API's (cmd/appliance sends and reads them); their JSON is
// documented in docs/api.md.
package opsapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/registry"
)

// Errors of the routes themselves, before any domain package is called.
var (
	// ErrBadRequest marks a request refused for what it says: a missing
	// or invalid field, a primary or vCenter that cannot be reached with
	// what was given.
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound marks a report asked for that does not exist (yet).
	ErrNotFound = errors.New("not found")
)

// PromotionError is a promotion that did not start: the promoter's error
// (a *promote.RefusedError when its checks found problems, a remote
// registry's failure, …) and its record, when it has one, which the
// server answers beside the error.
type PromotionError struct {
	Err       error
	Promotion *promote.Promotion
}

func (e *PromotionError) Error() string { return e.Err.Error() }
func (e *PromotionError) Unwrap() error { return e.Err }

// Lifecycle is the mode (bootstrap.Lifecycle).
type Lifecycle interface {
	State() bootstrap.State
	Standby(bootstrap.StandbyRequest) (bootstrap.State, error)
	Activate(by, reason string) (bootstrap.State, error)
}

// Promoter runs promotions and keeps their records (promote.Promoter).
type Promoter interface {
	Start(ctx context.Context, req promote.Request) (promote.Promotion, error)
	List() ([]promote.Promotion, error)
	Get(id string) (promote.Promotion, error)
	Cancel(id string) error
	LastParity() (promote.Promotion, bool, error)
}

// Follower is a standby's sync (bootstrap.Follower).
type Follower interface {
	Status() bootstrap.SyncStatus
	SyncNow(ctx context.Context) (bootstrap.SyncStatus, error)
}

// Handover is the Supervisor hand-over (bootstrap.Handover).
type Handover interface {
	State() bootstrap.SupervisorState
	RegisterRegistry(ctx context.Context, req bootstrap.RegistryRequest) (bootstrap.SupervisorState, error)
	RegisterServices(ctx context.Context, req bootstrap.ServiceRequest) (bootstrap.SupervisorState, error)
	Repoint(ctx context.Context, req bootstrap.RepointRequest) (bootstrap.SupervisorState, error)
}

// Maintainer runs fsck and gc (maintenance.Maintainer).
type Maintainer interface {
	Fsck(ctx context.Context, opts maintenance.FsckOptions) (maintenance.FsckReport, error)
	GC(ctx context.Context, opts maintenance.GCOptions) (maintenance.GCReport, error)
}

// Registry is what the status reads of the registry.
type Registry interface {
	Mode() registry.Mode
	StorageUsed() (int64, error)
}

// Appliance holds facts about this appliance that answers carry.
type Appliance struct {
	// Hostnames are the configured host names; the first is the default
	// name a Supervisor reaches the appliance by.
	Hostnames []string
	// CertNames are the names the server certificate carries.
	CertNames []string
	// CAPEM is the CA certificate; CAFingerprint its SHA-256 in hex.
	CAPEM         []byte
	CAFingerprint string
	// HTTPSPort is the TLS listener's port.
	HTTPSPort int
	Started   time.Time
	// DataDir is the data directory, whose file system's free space the
	// status reports.
	DataDir string
	// Role is "writer" or "replica" (on an object store).
	Role string
}

// Followed is, on a read-only replica, the mode of the writer it follows
// as the state in force names it, and that writer.
type Followed struct {
	Lifecycle string
	ReadOnly  bool
	Reason    string
	Writer    string
}

// Deps is what the routes need. Every field is required.
type Deps struct {
	Lifecycle  Lifecycle
	Promoter   Promoter
	Follower   Follower
	Handover   Handover
	Maintainer Maintainer
	Registry   Registry
	Appliance  Appliance
	Log        *slog.Logger

	// Principal is the caller, as the group's middleware authenticated it.
	Principal func(echo.Context) auth.Principal
	// Bind decodes a JSON body strictly and bounded.
	Bind func(c echo.Context, v any) error
	// Note sets the target of the request's audit entry (unless empty)
	// and adds details as key, value pairs; NoteAction renames its action.
	Note       func(c echo.Context, target string, kv ...string)
	NoteAction func(c echo.Context, action string)
	// PromotionStarted is told of each promotion started in the
	// background (the server records how it ends).
	PromotionStarted func(c echo.Context, id string)
	// RequireUser refuses anonymous callers, RequireWide anyone who may
	// not read every project (what spans projects: promotion records and
	// parity reports), RequireAdmin anyone but an admin.
	RequireUser, RequireWide, RequireAdmin echo.MiddlewareFunc
	// MayPull tells whether the caller may pull from a repository: what
	// the status and the standby's state show of repositories follows it.
	MayPull func(c echo.Context, repo string) bool
	// Followed, when set, returns the writer's mode on a replica (false
	// on a writer): the status shows it in place of the replica's own.
	Followed func() (Followed, bool)
}

func (d Deps) check() error {
	var missing []string
	for name, ok := range map[string]bool{
		"Lifecycle": d.Lifecycle != nil, "Promoter": d.Promoter != nil, "Follower": d.Follower != nil,
		"Handover": d.Handover != nil, "Maintainer": d.Maintainer != nil, "Registry": d.Registry != nil,
		"Log": d.Log != nil, "Principal": d.Principal != nil, "Bind": d.Bind != nil, "Note": d.Note != nil,
		"NoteAction": d.NoteAction != nil, "PromotionStarted": d.PromotionStarted != nil,
		"RequireUser": d.RequireUser != nil, "RequireWide": d.RequireWide != nil, "RequireAdmin": d.RequireAdmin != nil,
		"MayPull": d.MayPull != nil,
	} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("opsapi: missing %v", missing)
	}
	return nil
}

// api is the routes' receiver.
type api struct{ Deps }

// Register adds the routes to g, the /api/v1 group (whose middleware
// authenticates callers and audits writes).
func Register(g *echo.Group, d Deps) error {
	if err := d.check(); err != nil {
		return err
	}
	a := &api{d}
	g.GET("/status", a.getStatus)
	g.POST("/promotions", a.postPromotion, d.RequireAdmin)
	g.GET("/promotions", a.listPromotions, d.RequireWide)
	g.GET("/promotions/:id", a.getPromotion, d.RequireWide)
	g.POST("/promotions/:id/cancel", a.cancelPromotion, d.RequireAdmin)
	g.GET("/parity", a.getParity, d.RequireWide)
	g.GET("/standby", a.getStandby)
	g.POST("/standby", a.postStandby, d.RequireAdmin)
	g.POST("/standby/sync", a.postSync, d.RequireAdmin)
	g.POST("/activate", a.postActivate, d.RequireAdmin)

	g.GET("/supervisor", a.getSupervisor, d.RequireUser)
	g.POST("/supervisor/registry", a.postSupervisorRegistry, d.RequireAdmin)
	g.POST("/supervisor/services", a.postSupervisorServices, d.RequireAdmin)
	g.POST("/supervisor/repoint", a.postSupervisorRepoint, d.RequireAdmin)

	g.POST("/fsck", a.postFsck, d.RequireAdmin)
	g.POST("/gc", a.postGC, d.RequireAdmin)
	return nil
}

// bindOptional is Bind for bodies that may be left out.
func (a *api) bindOptional(c echo.Context, v any) error {
	if c.Request().ContentLength == 0 {
		return nil
	}
	return a.Bind(c, v)
}
