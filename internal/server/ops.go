package server

import (
	"context"
	"net"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
)

// The lifecycle (mode, promotions, the standby's follower, the Supervisor
// hand-over) and maintenance (fsck, gc): opened here, their routes served
// by internal/server/opsapi, their errors mapped in errors.go.

// openLifecycle opens the mode, the promotions and the follower. A
// standby comes back read-only, whatever happened before the restart.
func (s *Server) openLifecycle() error {
	var err error
	dir := s.cfg.DataDir
	if s.life, err = bootstrap.OpenLifecycle(dir, s.reg, s.log); err != nil {
		return err
	}
	if s.promoter, err = promote.NewPromoter(s.reg, s.reg, visibility{s}, dir,
		promote.WithPromoterLogger(s.log), promote.WithSkip(isStaging)); err != nil {
		return err
	}
	if s.follower, err = bootstrap.NewFollower(s.life, s.reg, followImporter{s}, dir,
		bootstrap.WithFollowerLogger(s.log), bootstrap.WithFollowerSkip(isStaging)); err != nil {
		return err
	}
	s.handover, err = bootstrap.NewHandover(s.reg, s.promoter, dir, s.log)
	return err
}

func (s *Server) openMaintenance() error {
	var err error
	s.maint, err = maintenance.New(s.reg, maintenance.WithFiles(s.files), maintenance.WithApt(s.apt),
		maintenance.WithHistory(s.history), maintenance.WithLogger(s.log))
	return err
}

// visibility adapts the project policy to promote.Visibility.
type visibility struct{ s *Server }

func (v visibility) Public(project string) bool { return v.s.projects.Get(project).Public }

func isStaging(repo string) bool {
	return repo == importer.StagingProject || strings.HasPrefix(repo, importer.StagingProject+"/")
}

// opsRoutes registers the lifecycle's and maintenance's routes on api.
func (s *Server) opsRoutes(api *echo.Group) error {
	_, p, _ := net.SplitHostPort(s.HTTPSAddr())
	port, _ := strconv.Atoi(p)
	return opsapi.Register(api, opsapi.Deps{
		Lifecycle: s.life, Promoter: s.promoter, Follower: s.follower, Handover: s.handover, Maintainer: s.maint,
		Registry: s.reg, Log: s.log,
		Appliance: opsapi.Appliance{Hostnames: s.cfg.Hostnames, CertNames: s.pki.Names, CAPEM: s.pki.CAPEM,
			CAFingerprint: s.caFingerprint, HTTPSPort: port, Started: s.started, DataDir: s.cfg.DataDir, Role: s.cfg.Role},
		Followed: func() (opsapi.Followed, bool) {
			m, writer, ok := s.replication.Followed()
			return opsapi.Followed{Lifecycle: m.Lifecycle, ReadOnly: m.ReadOnly, Reason: m.Reason, Writer: writer}, ok
		},
		Principal: principal,
		Bind:      bind,
		Note:      func(c echo.Context, target string, kv ...string) { auditNote(c, target, kv...) },
		NoteAction: func(c echo.Context, action string) {
			auditNote(c, "").action = action
		},
		PromotionStarted: s.watchPromotion,
		RequireUser:      s.requireUser,
		RequireWide:      s.requireWide,
		RequireAdmin:     s.requireAdmin,
		MayPull:          func(c echo.Context, repo string) bool { return s.authz.MayPull(principal(c), repo) },
	})
}

// shutdownLifecycle stops a running promotion so that its record says how
// it ended.
func (s *Server) shutdownLifecycle(ctx context.Context) error {
	return s.promoter.Shutdown(ctx)
}
