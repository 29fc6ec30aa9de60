package server

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/replica"
)

// replicaTokenKeyFile is, on a writer on S3, the key its read-only
// replicas sign their tokens with (published to them, never trusted here).
const replicaTokenKeyFile = "replica-token.key"

// openReplication starts the state's way between a writer and its
// replicas (internal/replica): a writer on S3 publishes its state now and
// after every change; a replica reads it (and refuses to start without
// it). On the filesystem there is nothing to do.
func (s *Server) openReplication(ctx context.Context) error {
	objects, ok := s.reg.StateObjects()
	if !ok {
		return nil
	}
	every := s.cfg.Replica.PollInterval
	if s.reg.IsReplica() {
		f, err := replica.NewFollower(objects, replica.Target{Users: s.users, Projects: s.projects, Tokens: s.tokens}.Apply, s.reg.ReplicaTick, every, s.log)
		if err != nil {
			return err
		}
		if err := f.Sync(ctx); err != nil {
			return fmt.Errorf("replica of %s: %w", s.reg.Writer(), err)
		}
		s.replication, s.replicaStatus = f, f.Status
		return nil
	}
	shared, err := auth.OpenTokens(filepath.Join(s.cfg.DataDir, replicaTokenKeyFile), s.cfg.Auth.TokenTTL)
	if err != nil {
		return err
	}
	keys, err := replica.Keys(s.tokens.Key(), shared.Key())
	if err != nil {
		return err
	}
	p, err := replica.NewPublisher(objects, func() (replica.State, error) {
		m := s.reg.Mode()
		return replica.State{Projects: s.projects.List(), Users: s.users.Export(), TokenKeys: keys,
			Mode: replica.Mode{Lifecycle: string(s.life.Mode()), ReadOnly: m.ReadOnly, Reason: m.Reason}}, nil
	}, every, s.log)
	if err != nil {
		return err
	}
	if _, err := p.Publish(ctx); err != nil {
		return err
	}
	s.replication, s.publisher = p, p
	return nil
}

// replicaGate, in front of every API route, refuses a change on a
// replica (with the writer's name) and, on a writer, publishes the state
// after one.
func (s *Server) replicaGate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch c.Request().Method {
		case "GET", "HEAD", "OPTIONS":
			return next(c)
		}
		if err := s.reg.RefusedOnReplica(); err != nil {
			return err
		}
		err := next(c)
		if s.publisher != nil {
			s.publisher.Kick()
		}
		return err
	}
}

// getReplication answers GET /api/v1/replication: this appliance's role,
// its writer, and on a replica the state in force.
func (s *Server) getReplication(c echo.Context) error {
	out := Replication{Role: s.cfg.Role, Writer: s.reg.Writer()}
	if s.replicaStatus != nil {
		st := s.replicaStatus()
		out.State = &st
	}
	return c.JSON(200, out)
}

// Replication is the answer of GET /api/v1/replication.
type Replication struct {
	Role   string          `json:"role"`
	Writer string          `json:"writer,omitempty"`
	State  *replica.Status `json:"state,omitempty"`
}
