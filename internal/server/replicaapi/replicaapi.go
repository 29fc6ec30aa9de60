// Package replicaapi is the part of the server that makes an appliance on
// an object store a writer or a read-only replica (docs/architecture.md,
// "Writer and read-only replicas"): it starts the state's way between
// them (internal/replica: a writer's Publisher, a replica's Follower),
// puts a gate in front of the JSON API that refuses every change on a
// replica (naming the writer) and publishes the state after every change
// on a writer, and answers GET /api/v1/replication.
//
// Like opsapi, it returns errors and never chooses a status: the gate's
// refusal wraps registry.ErrReplica, which internal/server maps in its
// statusOf.
package replicaapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/replica"
)

// TokenKeyFile is, on a writer on S3, the key its read-only replicas
// sign their tokens with (published to them, never trusted by the writer).
const TokenKeyFile = "replica-token.key"

// Registry is what this package needs of the registry.
type Registry interface {
	StateObjects() (registry.Objects, bool)
	IsReplica() bool
	Writer() string
	RefusedOnReplica() error
	ReplicaTick(ctx context.Context) error
}

// Deps are what the API is built from.
type Deps struct {
	Registry Registry
	Users    *auth.Users
	Projects *auth.Projects
	Tokens   *auth.Tokens
	// Mode reports the lifecycle mode and the registry's read-only switch.
	Mode     func() replica.Mode
	DataDir  string
	TokenTTL time.Duration
	Interval time.Duration
	Role     string
	// Files, when set, is the file store a replica reads again at every
	// poll (its writer's commits).
	Files  Files
	Logger *slog.Logger
}

// Files is what a replica needs of the file store.
type Files interface {
	Refresh(ctx context.Context) error
}

// API is one appliance's part in replication.
type API struct {
	d         Deps
	run       func(context.Context) error // nil on the filesystem
	publisher *replica.Publisher
	follower  *replica.Follower
}

// New starts replication: on the filesystem there is nothing to do; a
// writer on S3 publishes its state now; a replica reads it and is
// refused without it.
func New(ctx context.Context, d Deps) (*API, error) {
	if d.Registry == nil || d.Users == nil || d.Projects == nil || d.Tokens == nil || d.Mode == nil {
		return nil, errors.New("replicaapi: registry, users, projects, tokens and mode are required")
	}
	a := &API{d: d}
	objects, ok := d.Registry.StateObjects()
	if !ok {
		return a, nil
	}
	if d.Registry.IsReplica() {
		tick := d.Registry.ReplicaTick
		if d.Files != nil {
			tick = func(ctx context.Context) error {
				return errors.Join(d.Registry.ReplicaTick(ctx), d.Files.Refresh(ctx))
			}
		}
		f, err := replica.NewFollower(objects, replica.Target{Users: d.Users, Projects: d.Projects, Tokens: d.Tokens}.Apply,
			tick, d.Interval, d.Logger)
		if err != nil {
			return nil, err
		}
		if err := f.Sync(ctx); err != nil {
			return nil, fmt.Errorf("replica of %s: %w", d.Registry.Writer(), err)
		}
		a.follower, a.run = f, f.Run
		return a, nil
	}
	shared, err := auth.OpenTokens(filepath.Join(d.DataDir, TokenKeyFile), d.TokenTTL)
	if err != nil {
		return nil, err
	}
	keys, err := replica.Keys(d.Tokens.Key(), shared.Key())
	if err != nil {
		return nil, err
	}
	p, err := replica.NewPublisher(objects, func() (replica.State, error) {
		return replica.State{Projects: d.Projects.List(), Users: d.Users.Export(), TokenKeys: keys, Mode: d.Mode()}, nil
	}, d.Interval, d.Logger)
	if err != nil {
		return nil, err
	}
	if _, err := p.Publish(ctx); err != nil {
		return nil, err
	}
	a.publisher, a.run = p, p.Run
	return a, nil
}

// Run publishes or follows until ctx ends.
func (a *API) Run(ctx context.Context) error {
	if a.run == nil {
		return nil
	}
	return a.run(ctx)
}

// Gate sits in front of every API route: it refuses a change on a replica (an
// error wrapping registry.ErrReplica, naming the writer) and, on a
// writer, publishes the state after one.
func (a *API) Gate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch c.Request().Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			return next(c)
		}
		if err := a.d.Registry.RefusedOnReplica(); err != nil {
			return err
		}
		err := next(c)
		if a.publisher != nil {
			a.publisher.Kick()
		}
		return err
	}
}

// Followed returns, on a replica, the mode of the writer in the state in
// force and that writer; false on a writer or the filesystem.
func (a *API) Followed() (replica.Mode, string, bool) {
	if a.follower == nil {
		return replica.Mode{}, "", false
	}
	return a.follower.Status().Mode, a.d.Registry.Writer(), true
}

// Replication is the answer of GET /api/v1/replication.
type Replication struct {
	Role   string          `json:"role"`
	Writer string          `json:"writer,omitempty"`
	State  *replica.Status `json:"state,omitempty"`
}

// Register adds GET /replication to the API group.
func (a *API) Register(g *echo.Group) {
	g.GET("/replication", func(c echo.Context) error {
		out := Replication{Role: a.d.Role, Writer: a.d.Registry.Writer()}
		if a.follower != nil {
			st := a.follower.Status()
			out.State = &st
		}
		return c.JSON(http.StatusOK, out)
	})
}
