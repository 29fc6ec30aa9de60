package server

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/audit"
	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/server/httpmetrics"
)

// The audit trail (internal/audit does the work, see docs/audit.md): a
// middleware on /v2/, one on the API that writes an entry for every write
// request (handlers add the target and details with auditNote), refused
// token requests, the standby's pulls, the end of promotions, and the two
// read endpoints.

const auditDir = "audit"

// auditor is the server's side of the trail.
type auditor struct {
	log     *audit.Log
	trusted []netip.Prefix
	stop    chan struct{}  // closed at shutdown: promotion watchers record and end
	wg      sync.WaitGroup // the watchers
}

func (s *Server) openAudit() error {
	trusted, err := audit.ParseTrusted(s.cfg.Audit.TrustedProxies)
	if err != nil {
		return fmt.Errorf("audit.trusted_proxies: %w", err)
	}
	l, err := audit.Open(filepath.Join(s.cfg.DataDir, auditDir), audit.WithLogger(s.log),
		audit.WithMaxSegmentBytes(s.cfg.Audit.MaxSegmentBytes), audit.WithKeepSegments(s.cfg.Audit.KeepSegments))
	if err != nil {
		return err
	}
	s.audit = &auditor{log: l, trusted: trusted, stop: make(chan struct{})}
	return nil
}

// closeAudit lets the promotion watchers record how their promotions
// ended, then closes the log. The listeners are closed by then.
func (s *Server) closeAudit() error {
	close(s.audit.stop)
	s.audit.wg.Wait()
	return s.audit.log.Close()
}

func (s *Server) remote(r *http.Request) string { return audit.RemoteAddr(r, s.audit.trusted) }

// record writes e; a lost entry is logged (the write it describes is done).
func (s *Server) record(ctx context.Context, e audit.Entry) {
	if err := s.audit.log.Record(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit entry lost", "action", e.Action, "target", e.Target, "actor", e.Actor, "error", err)
	}
}

// who names the caller of a /v2/ request: the user, the token's subject,
// or anonymous with the user name that credentials which did not verify
// claimed.
func (s *Server) who(r *http.Request) (string, map[string]string) {
	h := r.Header.Get("Authorization")
	if p, err := s.authz.Authenticate(h); err == nil {
		return actorOf(p.Name, p.Anonymous), nil
	}
	return audit.Anonymous, audit.Claimed(h)
}

func actorOf(name string, anonymous bool) string {
	if anonymous || name == "" {
		return audit.Anonymous
	}
	return name
}

// auditRegistry records the writes on /v2/.
func (s *Server) auditRegistry(h http.Handler) http.Handler {
	return audit.Registry(s.audit.log, h, audit.RegistryOptions{Who: s.who, Remote: s.remote, Route: httpmetrics.RegistryRoute, Log: s.log,
		TagDigest: func(ctx context.Context, repo, tag string) (string, bool) {
			d, ok, err := s.reg.TagDigest(ctx, repo, tag)
			return d.String(), ok && err == nil
		}})
}

// apiActions names the API's writes. A write route missing here is still
// recorded, as "api.write" with its route.
var apiActions = map[string]string{
	"PUT /api/v1/system/read-only":                        "readonly.switch",
	"POST /api/v1/users":                                  "user.add",
	"PATCH /api/v1/users/:name":                           "user.change",
	"DELETE /api/v1/users/:name":                          "user.remove",
	"POST /api/v1/imports":                                "import",
	"PUT /api/v1/projects/:name":                          "project.visibility",
	"POST /api/v1/promotions":                             "promotion.start",
	"POST /api/v1/promotions/:id/cancel":                  "promotion.cancel",
	"POST /api/v1/standby":                                "mode.change",
	"POST /api/v1/standby/sync":                           "standby.sync",
	"POST /api/v1/activate":                               "mode.change",
	"POST /api/v1/supervisor/registry":                    "supervisor.registry",
	"POST /api/v1/supervisor/services":                    "supervisor.services",
	"POST /api/v1/supervisor/repoint":                     "supervisor.repoint",
	"POST /api/v1/apt/repos/:repo/:dist/packages":         "apt.publish",
	"DELETE /api/v1/apt/repos/:repo/:dist/packages/:name": "apt.remove",
	"POST /api/v1/apt/repos/:repo/:dist/rollback":         "apt.rollback",
	"POST /api/v1/fsck":                                   "maintenance.fsck",
	"POST /api/v1/gc":                                     "maintenance.gc",
	"POST /api/v1/validation":                             "validation.run",
}

const auditKey = "audit"

// apiNote is the entry the API middleware writes for a request; handlers
// fill in what only they know.
type apiNote struct {
	action, target, reason string
	details                map[string]string
}

// auditNote sets the target of the request's entry (unless empty) and
// adds details as key, value pairs. Outside a write request it does nothing.
func auditNote(c echo.Context, target string, kv ...string) *apiNote {
	n, ok := c.Get(auditKey).(*apiNote)
	if !ok {
		n = &apiNote{details: map[string]string{}}
	}
	if target != "" {
		n.target = target
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			n.details[kv[i]] = kv[i+1]
		}
	}
	return n
}

// auditAPI records every write request of the API with its outcome, the
// refused ones (bad credentials, missing rights) too. The target defaults
// to the route's parameters, and the query string is kept.
func (s *Server) auditAPI(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		route := c.Path()
		if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions || strings.HasSuffix(route, "/*") || route == "/api/v1" {
			return next(c) // reads, and paths that are no route at all
		}
		action, known := apiActions[r.Method+" "+route]
		n := &apiNote{action: action, target: strings.Join(c.ParamValues(), "/"), details: map[string]string{}}
		if !known {
			n.action, n.details["route"] = "api.write", r.Method+" "+route
		}
		if r.URL.RawQuery != "" {
			n.details["query"] = r.URL.RawQuery
		}
		c.Set(auditKey, n)
		err := next(c)
		status, reason := c.Response().Status, n.reason
		if err != nil {
			status, _ = statusOf(err)
			reason = err.Error()
		}
		actor := audit.Anonymous
		if p, ok := c.Get(principalKey).(auth.Principal); ok {
			actor = actorOf(p.Name, p.Anonymous)
		} else if r.Header.Get("Authorization") != "" {
			for k, v := range audit.Claimed(r.Header.Get("Authorization")) {
				n.details[k] = v
			}
		}
		s.record(r.Context(), audit.Entry{Actor: actor, Remote: s.remote(r), Action: n.action, Target: n.target,
			Outcome: audit.OutcomeOf(status), Status: status, Reason: reason, Details: n.details})
		return err
	}
}

func redactURL(s string) string { return audit.RedactURL(s) }

// auditToken records a token request refused for its credentials.
func (s *Server) auditToken(c echo.Context, scopes []string, err error) {
	r := c.Request()
	d := audit.Claimed(r.Header.Get("Authorization"))
	if u := r.PostForm.Get("username"); u != "" {
		d["user"] = u
	}
	s.record(r.Context(), audit.Entry{Actor: audit.Anonymous, Remote: s.remote(r), Action: audit.ActionToken, Target: strings.Join(scopes, " "),
		Outcome: audit.Refused, Status: http.StatusUnauthorized, Reason: err.Error(), Details: d})
}

// auditImport notes an import's record in its entry.
func auditImport(c echo.Context, rec *history.Record, err error) {
	if rec == nil {
		return
	}
	n := auditNote(c, rec.Source, "import_id", rec.ID, "to_repo", rec.ToRepo, "format", rec.Format,
		"repositories", strings.Join(rec.Repositories, " "), "tags", strconv.Itoa(len(rec.Tags)), "bytes_new", strconv.FormatInt(rec.BytesNew, 10))
	if err != nil {
		n.reason = err.Error()
	}
}

// followImporter is the importer as the standby's follower uses it: each
// import is one pulled repository, and one entry.
type followImporter struct{ s *Server }

func (f followImporter) Import(ctx context.Context, req importer.Request) (*history.Record, error) {
	rec, err := f.s.importer.Import(ctx, req)
	repo, _, _ := strings.Cut(strings.TrimPrefix(req.Source, "standby sync of "), " from ")
	e := audit.Entry{Actor: actorOf(req.User, false), Action: "standby.pull", Target: repo, Outcome: audit.OK, Details: map[string]string{}}
	if p := f.s.life.State().Primary; p != nil {
		e.Details["primary"] = redactURL(p.URL)
	}
	if rec != nil {
		if len(rec.Repositories) > 0 {
			e.Target = strings.Join(rec.Repositories, " ")
		}
		e.Details["import_id"] = rec.ID
		var tags []string
		for _, t := range rec.Tags {
			tags = append(tags, t.Tag+"@"+t.Digest)
		}
		e.Details["tags"] = strings.Join(tags, " ")
	}
	if err != nil {
		status, _ := statusOf(err)
		e.Outcome, e.Status, e.Reason = audit.OutcomeOf(status), status, err.Error()
		if e.Outcome == audit.OK {
			e.Outcome = audit.Failed
		}
	}
	f.s.record(ctx, e)
	return rec, err
}

// watchPromotion records how a started promotion ends.
func (s *Server) watchPromotion(c echo.Context, id string) {
	actor, remote := actorOf(principal(c).Name, false), s.remote(c.Request())
	a := s.audit
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			stopping := false
			select {
			case <-t.C:
			case <-a.stop:
				stopping = true
			}
			rec, err := s.promoter.Get(id)
			if err == nil && rec.State == promote.StateRunning && !stopping {
				continue
			}
			e := audit.Entry{Actor: actor, Remote: remote, Action: "promotion.end", Target: redactURL(rec.Target), Outcome: audit.Failed,
				Reason: rec.Error, Details: map[string]string{"id": id, "state": rec.State, "bytes": strconv.FormatInt(rec.Progress.BytesDone, 10)}}
			switch {
			case err != nil:
				e.Reason = err.Error()
			case rec.State == promote.StateSucceeded:
				e.Outcome = audit.OK
			case rec.State == promote.StateRunning:
				e.Reason = "still running when the appliance stopped"
			}
			if rec.Parity != nil {
				e.Details["parity_ok"], e.Details["differences"] = strconv.FormatBool(rec.Parity.OK), strconv.Itoa(rec.Parity.Differences)
			}
			s.record(context.Background(), e)
			return
		}
	}()
}

func (s *Server) auditRoutes(api *echo.Group) {
	api.GET("/audit", s.getAudit, s.requireAdmin)
	api.GET("/audit/verify", s.verifyAudit, s.requireAdmin)
}

// AuditAnswer is the answer of GET /api/v1/audit: entries newest first,
// and whether more matched than the limit let through.
type AuditAnswer struct {
	Entries []audit.Entry `json:"entries"`
	More    bool          `json:"more"`
}

func (s *Server) getAudit(c echo.Context) error {
	f, err := audit.ParseFilter(c.QueryParams(), time.Now())
	if err != nil {
		return fmt.Errorf("%w: %w", errBadRequest, err)
	}
	entries, more, err := s.audit.log.Query(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, AuditAnswer{Entries: entries, More: more})
}

func (s *Server) verifyAudit(c echo.Context) error {
	rep, err := s.audit.log.Verify(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rep)
}
