package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/version"
)

// The lifecycle's API: status, promotions and their parity reports,
// standby and activate.

func (s *Server) lifecycleRoutes(api *echo.Group) {
	api.GET("/status", s.getStatus)
	api.POST("/promotions", s.postPromotion, s.requireAdmin)
	api.GET("/promotions", s.listPromotions, s.requireUser)
	api.GET("/promotions/:id", s.getPromotion, s.requireUser)
	api.POST("/promotions/:id/cancel", s.cancelPromotion, s.requireAdmin)
	api.GET("/parity", s.getParity, s.requireUser)
	api.GET("/standby", s.getStandby)
	api.POST("/standby", s.postStandby, s.requireAdmin)
	api.POST("/standby/sync", s.postSync, s.requireAdmin)
	api.POST("/activate", s.postActivate, s.requireAdmin)
	s.supervisorRoutes(api)
}

// visibility adapts the project policy to promote.Visibility.
type visibility struct{ s *Server }

func (v visibility) Public(project string) bool { return v.s.projects.Get(project).Public }

func isStaging(repo string) bool {
	return repo == importer.StagingProject || strings.HasPrefix(repo, importer.StagingProject+"/")
}

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
	Started          time.Time             `json:"started"`
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

func (s *Server) getStatus(c echo.Context) error {
	used, err := s.reg.StorageUsed()
	if err != nil {
		return err
	}
	ls := s.life.State()
	st := Status{Mode: ls.Mode, Since: ls.Since, ReadOnly: s.reg.Mode(), Primary: ls.Primary, History: ls.History,
		Version: version.Get(), Hostnames: s.pki.Names, CAFingerprint: s.caFingerprint, StorageUsedBytes: used, Started: s.started}
	if ls.Primary != nil {
		sync := s.follower.Status()
		st.Standby = &sync
	}
	if recs, err := s.promoter.List(); err == nil {
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

// PromotionFailure is the answer to a refused promotion: the error, and
// the record (with every problem found).
type PromotionFailure struct {
	APIError
	Promotion *promote.Promotion `json:"promotion,omitempty"`
}

// postPromotion checks and plans a promotion; a dry run answers 200 with
// the plan, a real one 202 and goes on in the background (GET
// /promotions/:id shows how far it got).
func (s *Server) postPromotion(c echo.Context) error {
	var req PromoteRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Target) == "" {
		return fmt.Errorf("%w: target (https://HOST of the registry to promote into) is required", errBadRequest)
	}
	if n := auditNote(c, redactURL(req.Target), "projects", strings.Join(req.Projects, " "), "all", strconv.FormatBool(req.All)); req.DryRun {
		n.action = "promotion.plan"
	}
	rec, err := s.promoter.Start(c.Request().Context(), promote.Request{
		Target:   promote.Target{URL: req.Target, CAPEM: []byte(req.TargetCA), Username: req.TargetUsername, Password: req.TargetPassword},
		Projects: req.Projects, All: req.All, DryRun: req.DryRun, Parallel: req.Parallel, By: principal(c).Name,
	})
	if err != nil {
		status, code := statusOf(err)
		if status >= 500 && status != http.StatusBadGateway {
			return err
		}
		var f PromotionFailure
		f.Error.Code, f.Error.Message = code, err.Error()
		auditNote(c, "").reason = err.Error()
		if rec.ID != "" {
			f.Promotion = &rec
		}
		return c.JSON(status, f)
	}
	auditNote(c, "", "id", rec.ID)
	if req.DryRun {
		return c.JSON(http.StatusOK, rec)
	}
	s.watchPromotion(c, rec.ID)
	return c.JSON(http.StatusAccepted, rec)
}

func (s *Server) listPromotions(c echo.Context) error {
	recs, err := s.promoter.List()
	if err != nil {
		return err
	}
	if recs == nil {
		recs = []promote.Promotion{}
	}
	return c.JSON(http.StatusOK, recs)
}

func (s *Server) getPromotion(c echo.Context) error {
	rec, err := s.promoter.Get(c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rec)
}

func (s *Server) cancelPromotion(c echo.Context) error {
	if err := s.promoter.Cancel(c.Param("id")); err != nil {
		return err
	}
	rec, err := s.promoter.Get(c.Param("id"))
	if err != nil {
		return err
	}
	s.log.Info("promotion canceled", "id", rec.ID, "by", principal(c).Name)
	return c.JSON(http.StatusOK, rec)
}

// getParity answers the newest parity report.
func (s *Server) getParity(c echo.Context) error {
	rec, ok, err := s.promoter.LastParity()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no promotion has reached its parity check yet: %w", errNotFound)
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
func (s *Server) postStandby(c echo.Context) error {
	var req StandbyRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	sr := bootstrap.StandbyRequest{By: principal(c).Name, Reason: req.Reason}
	if req.Primary != "" {
		interval := time.Duration(0)
		if req.Interval != "" {
			d, err := time.ParseDuration(req.Interval)
			if err != nil || d < 10*time.Second || d > 7*24*time.Hour {
				return fmt.Errorf("%w: interval %q: want a duration between 10s and 168h, such as 5m", errBadRequest, req.Interval)
			}
			interval = d
		}
		for _, p := range req.Projects {
			if !regclient.ValidHarborProject(p) {
				return fmt.Errorf("%w: project %q is not a valid project name", errBadRequest, p)
			}
		}
		sr.Primary = &bootstrap.Primary{URL: strings.TrimRight(req.Primary, "/"), Projects: req.Projects, Interval: interval}
		sr.Credentials = bootstrap.PrimaryCredentials{Username: req.PrimaryUsername, Password: req.PrimaryPassword, CAPEM: req.PrimaryCA}
		if err := bootstrap.CheckPrimary(ctx, sr.Primary.URL, sr.Credentials); err != nil {
			return fmt.Errorf("%w: nothing changed: %w", errBadRequest, err)
		}
	} else if req.PrimaryUsername != "" || req.PrimaryPassword != "" || req.PrimaryCA != "" || len(req.Projects) > 0 || req.Interval != "" {
		return fmt.Errorf("%w: primary settings need the primary's URL", errBadRequest)
	}
	st, err := s.life.Standby(sr)
	if err != nil {
		return err
	}
	if st.Primary != nil {
		auditNote(c, redactURL(st.Primary.URL), "mode", string(st.Mode))
	}
	ans := StandbyAnswer{Lifecycle: st}
	sync, err := s.follower.SyncNow(ctx)
	ans.Sync = &sync
	if err != nil {
		ans.SyncError = err.Error()
	}
	return c.JSON(http.StatusOK, ans)
}

func (s *Server) getStandby(c echo.Context) error {
	if s.life.State().Primary == nil {
		return fmt.Errorf("this appliance has never been a standby: %w", errNotFound)
	}
	return c.JSON(http.StatusOK, s.follower.Status())
}

// postSync runs a sync now (a standby only).
func (s *Server) postSync(c echo.Context) error {
	st, err := s.follower.SyncNow(c.Request().Context())
	if err != nil && errors.Is(err, bootstrap.ErrBadTransition) {
		return err
	}
	return c.JSON(http.StatusOK, StandbyAnswer{Lifecycle: s.life.State(), Sync: &st, SyncError: errString(err)})
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

func (s *Server) postActivate(c echo.Context) error {
	var req ActivateRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	auditNote(c, "", "mode", string(bootstrap.ModeActive), "reason", req.Reason)
	st, err := s.life.Activate(principal(c).Name, strings.TrimSpace(req.Reason))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// lifecycleStatus maps the lifecycle's errors; used by statusOf.
func lifecycleStatus(err error) (int, string, bool) {
	var (
		refused   *promote.RefusedError
		targetErr *regclient.Error
	)
	switch {
	case errors.As(err, &refused):
		return http.StatusUnprocessableEntity, "PROMOTION_REFUSED", true
	case errors.As(err, &targetErr):
		// The other registry failed (or refused): not the appliance's fault.
		return http.StatusBadGateway, "REMOTE_REGISTRY_ERROR", true
	case errors.Is(err, bootstrap.ErrInvalid), errors.Is(err, promote.ErrInvalid):
		return http.StatusBadRequest, "BAD_REQUEST", true
	case errors.Is(err, promote.ErrBusy), errors.Is(err, bootstrap.ErrBadTransition), errors.Is(err, bootstrap.ErrStandby):
		return http.StatusConflict, "CONFLICT", true
	case errors.Is(err, promote.ErrNotFound):
		return http.StatusNotFound, "NOT_FOUND", true
	}
	return 0, "", false
}

// lifecycleMetrics are the mode and the standby's lag.
func lifecycleMetrics(life *bootstrap.Lifecycle, f *bootstrap.Follower) []prometheus.Collector {
	modes := prometheus.NewDesc("appliance_mode", "1 for the lifecycle mode the appliance is in (bootstrap, standby, active), 0 for the others.", []string{"mode"}, nil)
	return []prometheus.Collector{
		collectorFunc{desc: modes, collect: func(ch chan<- prometheus.Metric) {
			cur := life.Mode()
			for _, m := range bootstrap.Modes {
				v := 0.0
				if m == cur {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(modes, prometheus.GaugeValue, v, string(m))
			}
		}},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "appliance_standby_lag_seconds",
			Help: "Seconds since the standby's last clean sync with its primary (since it became a standby, before the first); 0 when not a standby.",
		}, func() float64 {
			lag, _ := f.Lag()
			return lag.Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "appliance_standby_last_sync_timestamp_seconds",
			Help: "Unix time of the standby's last clean sync with its primary; 0 before the first.",
		}, func() float64 {
			t := f.Status().LastCleanSync
			if t.IsZero() {
				return 0
			}
			return float64(t.Unix())
		}),
	}
}

// collectorFunc is a collector of one metric family computed on scrape.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// shutdownLifecycle stops a running promotion so that its record says how
// it ended.
func (s *Server) shutdownLifecycle(ctx context.Context) error {
	return s.promoter.Shutdown(ctx)
}
