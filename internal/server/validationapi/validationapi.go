// Package validationapi serves the validation gate (internal/validate)
// under /api/v1/validation: a run asked for (POST), the last result (GET),
// kept on disk atomically and exported as metrics, and the schedule that
// re-runs the last request. It knows the server only through Deps, and
// returns errors without picking statuses (internal/server does).
package validationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/validate"
	"github.com/appliance-dev/appliance/internal/validate/evidence"
)

// Files in the data directory.
const (
	ResultFile  = "validation.json"         // the last result
	RequestFile = "validation-request.json" // the last request, which the schedule re-runs
	// MaxBody bounds a request: the input files travel in it.
	MaxBody = 64 << 20
)

// Request is the body of POST /api/v1/validation.
type Request struct {
	validate.Request
	// Report asks for the signed evidence report in the answer.
	Report bool `json:"report,omitempty"`
}

// Answer is the answer of POST and GET /api/v1/validation.
type Answer struct {
	Result *validate.Result `json:"result"`
	// By is who asked for the run ("schedule" for a scheduled one).
	By       string             `json:"by,omitempty"`
	Evidence *evidence.Evidence `json:"evidence,omitempty"`
}

// Errors the server maps to statuses.
var (
	ErrBusy    = errors.New("a validation is running; try again when it has finished")
	ErrNoneYet = errors.New("no validation has run yet (POST /api/v1/validation)")
	ErrBody    = errors.New("invalid validation request")
)

// Deps is what the routes need; every field is required.
type Deps struct {
	// DataDir keeps the last result and request.
	DataDir string
	// Validator builds the gate for one run (the appliance's advertised
	// address, CA, trust and what it holds) pulling with the credentials
	// of caller, a user's name; "" is the appliance itself (a scheduled
	// run).
	Validator func(caller string) (*validate.Validator, error)
	// MayPull says which repositories a caller may read about: nil when
	// the caller sees every project, else whether it may pull from a
	// repository (what the last result shows it follows this).
	MayPull func(c echo.Context) func(repo string) bool
	// Signer signs evidence: the appliance's receipt key.
	Signer evidence.Signer
	Log    *slog.Logger
	// Caller names who makes a request; Note adds to its audit entry.
	Caller func(c echo.Context) string
	Note   func(c echo.Context, target string, kv ...string)
	// RequireUser refuses anonymous callers (reading the last result);
	// RequireAdmin anyone but an admin (a run replaces the result the
	// metrics show and the request the schedule re-runs).
	RequireUser, RequireAdmin echo.MiddlewareFunc
}

// API is the validation gate of a running appliance: one run at a time.
type API struct {
	d       Deps
	running sync.Mutex
	mu      sync.Mutex
	last    kept
	gateOK  *prometheus.GaugeVec
	success prometheus.Gauge
}

type kept struct {
	Result      *validate.Result `json:"result"`
	By          string           `json:"by,omitempty"`
	LastSuccess time.Time        `json:"last_success"`
}

// New reads the last result kept, if any.
func New(d Deps) (*API, error) {
	var missing []string
	for name, ok := range map[string]bool{"DataDir": d.DataDir != "", "Validator": d.Validator != nil, "MayPull": d.MayPull != nil, "Signer": d.Signer != nil,
		"Log": d.Log != nil, "Caller": d.Caller != nil, "Note": d.Note != nil, "RequireUser": d.RequireUser != nil, "RequireAdmin": d.RequireAdmin != nil} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("validationapi: missing %s", strings.Join(missing, ", "))
	}
	a := &API{d: d,
		gateOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "appliance_validation_gate_ok",
			Help: "1 when the validation gate's last run passed this gate (ok or warning), 0 when it failed; absent when not run (skipped).",
		}, []string{"gate"}),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "appliance_validation_last_success_timestamp_seconds",
			Help: "Unix time of the last validation run in which every gate passed; 0 before the first.",
		}),
	}
	st, err := a.read()
	if err != nil {
		return nil, err
	}
	a.last = st
	a.setMetrics(st)
	return a, nil
}

func (a *API) read() (kept, error) {
	path := filepath.Join(a.d.DataDir, ResultFile)
	var st kept
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return st, nil
	case err != nil:
		return st, fmt.Errorf("validation: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("validation: %s is corrupt: %w", path, err)
	}
	return st, nil
}

// Collectors are the gate's metrics.
func (a *API) Collectors() []prometheus.Collector { return []prometheus.Collector{a.gateOK, a.success} }

func (a *API) setMetrics(st kept) {
	if st.Result == nil {
		return
	}
	a.gateOK.Reset()
	for _, g := range st.Result.Gates {
		switch g.Status {
		case validate.StatusOK, validate.StatusWarning:
			a.gateOK.WithLabelValues(g.Gate).Set(1)
		case validate.StatusFailed:
			a.gateOK.WithLabelValues(g.Gate).Set(0)
		}
	}
	if !st.LastSuccess.IsZero() {
		a.success.Set(float64(st.LastSuccess.Unix()))
	}
}

// Run runs the gate once for the user by, with by's credentials, and
// keeps its result (and the request, for the schedule). ErrBusy while
// another run goes on.
func (a *API) Run(ctx context.Context, req Request, by string) (*Answer, error) {
	return a.run(ctx, req, by, by)
}

// run runs the gate with the credentials of caller ("": the appliance's).
func (a *API) run(ctx context.Context, req Request, by, caller string) (*Answer, error) {
	if !a.running.TryLock() {
		return nil, ErrBusy
	}
	defer a.running.Unlock()
	val, err := a.d.Validator(caller)
	if err != nil {
		return nil, err
	}
	defer val.Close()
	res, err := val.Run(ctx, req.Request)
	if err != nil {
		return nil, err
	}
	ans := &Answer{Result: res, By: by}
	if req.Report {
		if ans.Evidence, err = evidence.Make(res, a.d.Signer, time.Now()); err != nil {
			return nil, err
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st, err := a.read()
	if err != nil {
		st = kept{} // a corrupt file is replaced by this run
	}
	st.Result, st.By = res, by
	if res.OK {
		st.LastSuccess = res.Finished
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(a.d.DataDir, ResultFile), data, 0o600); err != nil {
		return nil, fmt.Errorf("validation: keep the result: %w", err)
	}
	reqData, err := json.Marshal(req.Request)
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(a.d.DataDir, RequestFile), reqData, 0o600); err != nil {
		return nil, fmt.Errorf("validation: keep the request: %w", err)
	}
	a.last = st
	a.setMetrics(st)
	a.d.Log.Info("validation ran", "ok", res.OK, "failed_gate", res.FailedGate(), "checked", len(res.Checked))
	return ans, nil
}

// Last is the last result and who asked for it; nil before the first run.
func (a *API) Last() (*validate.Result, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last.Result, a.last.By
}

// Schedule re-runs the last request every interval until ctx ends, as
// the appliance itself (its pulls of private projects use its own
// rights).
func (a *API) Schedule(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var req validate.Request
		if data, err := os.ReadFile(filepath.Join(a.d.DataDir, RequestFile)); err == nil {
			if err := json.Unmarshal(data, &req); err != nil {
				a.d.Log.Warn("scheduled validation: the kept request is unreadable; running without inputs", "error", err)
				req = validate.Request{}
			}
		}
		if _, err := a.run(ctx, Request{Request: req}, "schedule", ""); err != nil && ctx.Err() == nil {
			a.d.Log.Warn("scheduled validation did not run", "error", err)
		}
	}
}

// Register adds the routes to the /api/v1 group.
func (a *API) Register(g *echo.Group) {
	g.GET("/validation", a.get, a.d.RequireUser)
	g.POST("/validation", a.post, a.d.RequireAdmin)
}

func (a *API) get(c echo.Context) error {
	last, by := a.Last()
	if last == nil {
		return fmt.Errorf("validation: %w", ErrNoneYet)
	}
	if mayPull := a.d.MayPull(c); mayPull != nil {
		// A member of some projects: nothing about the others.
		last = last.Visible(mayPull)
	}
	return c.JSON(http.StatusOK, Answer{Result: last, By: by})
}

func (a *API) post(c echo.Context) error {
	r := c.Request()
	if r.ContentLength > MaxBody {
		return &http.MaxBytesError{Limit: MaxBody}
	}
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), r.Body, MaxBody))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return tooLarge
		}
		return fmt.Errorf("%w: invalid JSON body: %w", ErrBody, err)
	}
	a.d.Note(c, "", "inputs", fmt.Sprint(len(req.Inputs)), "report", fmt.Sprint(req.Report))
	ans, err := a.Run(r.Context(), req, a.d.Caller(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ans)
}
