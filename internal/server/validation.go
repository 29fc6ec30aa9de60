package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/validate"
	"github.com/appliance-dev/appliance/internal/validate/evidence"
)

// Files of the validation gate in the data directory.
const (
	validationFile        = "validation.json"         // the last result
	validationRequestFile = "validation-request.json" // the last request, which the schedule re-runs
	maxValidationBody     = 64 << 20
)

// ValidationRequest is the body of POST /api/v1/validation.
type ValidationRequest struct {
	validate.Request
	// Report asks for the signed evidence report in the answer.
	Report bool `json:"report,omitempty"`
}

// ValidationAnswer is the answer of POST /api/v1/validation and GET
// /api/v1/validation.
type ValidationAnswer struct {
	Result   *validate.Result   `json:"result"`
	Evidence *evidence.Evidence `json:"evidence,omitempty"`
}

// errValidationBusy refuses a second run while one runs.
var errValidationBusy = errors.New("a validation is running; try again when it has finished")

// validation is the server's gate: one run at a time, the last result on
// disk and in the metrics.
type validation struct {
	s       *Server
	running sync.Mutex
	mu      sync.Mutex
	last    *validate.Result
	gateOK  *prometheus.GaugeVec
	success prometheus.Gauge
}

func (s *Server) openValidation() error {
	v := &validation{s: s,
		gateOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "appliance_validation_gate_ok",
			Help: "1 when the validation gate's last run passed this gate (ok or warning), 0 when it failed; absent when not run (skipped).",
		}, []string{"gate"}),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "appliance_validation_last_success_timestamp_seconds",
			Help: "Unix time of the last validation run in which every gate passed; 0 before the first.",
		}),
	}
	data, err := os.ReadFile(filepath.Join(s.cfg.DataDir, validationFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("validation: %w", err)
	default:
		var st struct {
			Result      *validate.Result `json:"result"`
			LastSuccess time.Time        `json:"last_success"`
		}
		if err := json.Unmarshal(data, &st); err != nil {
			return fmt.Errorf("validation: %s is corrupt: %w", filepath.Join(s.cfg.DataDir, validationFile), err)
		}
		v.last = st.Result
		v.setMetrics(st.Result, st.LastSuccess)
	}
	s.validation = v
	return nil
}

func (v *validation) collectors() []prometheus.Collector {
	return []prometheus.Collector{v.gateOK, v.success}
}

func (v *validation) setMetrics(res *validate.Result, lastSuccess time.Time) {
	if res == nil {
		return
	}
	v.gateOK.Reset()
	for _, g := range res.Gates {
		switch g.Status {
		case validate.StatusOK, validate.StatusWarning:
			v.gateOK.WithLabelValues(g.Gate).Set(1)
		case validate.StatusFailed:
			v.gateOK.WithLabelValues(g.Gate).Set(0)
		}
	}
	if !lastSuccess.IsZero() {
		v.success.Set(float64(lastSuccess.Unix()))
	}
}

// advertised is the address the gate proves: the first configured host
// name on the HTTPS port, and every configured name (without one, the
// listener's address or localhost).
func (s *Server) advertised() (string, []string) {
	_, port, _ := net.SplitHostPort(s.HTTPSAddr())
	var names []string
	for _, n := range s.cfg.Hostnames {
		if !strings.HasPrefix(n, "*.") {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		// No name configured: the address the listener is bound to, when
		// it is one, else this machine's loopback.
		host, _, _ := net.SplitHostPort(s.cfg.HTTPSAddr)
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			names = []string{host}
		} else {
			names = []string{"localhost"}
		}
	}
	return "https://" + net.JoinHostPort(names[0], port), names
}

func (v *validation) validator() (*validate.Validator, error) {
	s := v.s
	pub, err := s.receiptKey.PublicKey()
	if err != nil {
		return nil, err
	}
	rk, err := bundle.ParsePublicKey(receiptPubFile, pub)
	if err != nil {
		return nil, err
	}
	u, names := s.advertised()
	return validate.New(validate.Options{URL: u, Names: names, CAPEM: s.pki.CAPEM, Trust: s.trust, ReceiptKeys: []bundle.TrustedKey{rk},
		Holdings: holdings{s}, History: historyView{s}, Standby: standbyView{s}, MaxAge: s.cfg.Validation.MaxAge, Log: s.log})
}

// run runs the gate once and keeps its result.
func (v *validation) run(ctx context.Context, req ValidationRequest) (*ValidationAnswer, error) {
	if !v.running.TryLock() {
		return nil, errValidationBusy
	}
	defer v.running.Unlock()
	val, err := v.validator()
	if err != nil {
		return nil, err
	}
	defer val.Close()
	res, err := val.Run(ctx, req.Request)
	if err != nil {
		return nil, err
	}
	ans := &ValidationAnswer{Result: res}
	if req.Report {
		if ans.Evidence, err = evidence.Make(res, v.s.receiptKey, time.Now()); err != nil {
			return nil, err
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	lastSuccess := time.Time{}
	if old, err := os.ReadFile(filepath.Join(v.s.cfg.DataDir, validationFile)); err == nil {
		var st struct {
			LastSuccess time.Time `json:"last_success"`
		}
		_ = json.Unmarshal(old, &st)
		lastSuccess = st.LastSuccess
	}
	if res.OK {
		lastSuccess = res.Finished
	}
	data, err := json.MarshalIndent(map[string]any{"result": res, "last_success": lastSuccess}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(v.s.cfg.DataDir, validationFile), data, 0o600); err != nil {
		return nil, fmt.Errorf("validation: keep the result: %w", err)
	}
	reqData, err := json.Marshal(req.Request)
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(v.s.cfg.DataDir, validationRequestFile), reqData, 0o600); err != nil {
		return nil, fmt.Errorf("validation: keep the request: %w", err)
	}
	v.last = res
	v.setMetrics(res, lastSuccess)
	s := v.s
	s.log.Info("validation ran", "ok", res.OK, "failed_gate", res.FailedGate(), "checked", len(res.Checked))
	return ans, nil
}

// schedule re-runs the last request every interval until ctx ends.
func (v *validation) schedule(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var req validate.Request
		if data, err := os.ReadFile(filepath.Join(v.s.cfg.DataDir, validationRequestFile)); err == nil {
			if err := json.Unmarshal(data, &req); err != nil {
				v.s.log.Warn("scheduled validation: the kept request is unreadable; running without inputs", "error", err)
				req = validate.Request{}
			}
		}
		if _, err := v.run(ctx, ValidationRequest{Request: req}); err != nil && ctx.Err() == nil {
			v.s.log.Warn("scheduled validation did not run", "error", err)
		}
	}
}

func (s *Server) validationRoutes(api *echo.Group) {
	api.GET("/validation", s.getValidation, s.requireUser)
	api.POST("/validation", s.postValidation, s.requireUser)
}

func (s *Server) getValidation(c echo.Context) error {
	s.validation.mu.Lock()
	last := s.validation.last
	s.validation.mu.Unlock()
	if last == nil {
		return fmt.Errorf("validation: %w: no validation has run yet (POST /api/v1/validation)", errNotFound)
	}
	return c.JSON(http.StatusOK, ValidationAnswer{Result: last})
}

func (s *Server) postValidation(c echo.Context) error {
	r := c.Request()
	if r.ContentLength > maxValidationBody {
		return &http.MaxBytesError{Limit: maxValidationBody}
	}
	var req ValidationRequest
	if err := jsonDecoder(http.MaxBytesReader(c.Response(), r.Body, maxValidationBody)).Decode(&req); err != nil {
		return fmt.Errorf("%w: invalid JSON body: %w", errBadRequest, err)
	}
	auditNote(c, "", "inputs", fmt.Sprint(len(req.Inputs)), "report", fmt.Sprint(req.Report))
	ans, err := s.validation.run(r.Context(), req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ans)
}

// holdings reads what the appliance holds for the gate: its receipt.
type holdings struct{ s *Server }

func (h holdings) Receipt(ctx context.Context) (*bundle.Receipt, error) { return h.s.receipt(ctx) }

// historyView gives the gate the import history.
type historyView struct{ s *Server }

func (h historyView) Imports(context.Context) ([]validate.ImportRecord, error) {
	recs, err := h.s.history.List()
	if err != nil {
		return nil, err
	}
	out := make([]validate.ImportRecord, 0, len(recs))
	for _, rec := range recs {
		ir := validate.ImportRecord{ID: rec.ID, Source: rec.Source, Outcome: rec.Outcome, Finished: rec.Finished, User: rec.User}
		for _, m := range rec.Manifests {
			ir.Digests = append(ir.Digests, m.Digest)
		}
		if b := rec.Bundle; b != nil {
			ir.Bundle, ir.Signer = b.Name, b.Fingerprint
			if len(b.Inventory) > 0 {
				if inv, err := bundle.ParseInventory(b.Inventory); err == nil {
					ir.Inventory = inv
					for _, a := range inv.Artifacts {
						ir.Digests = append(ir.Digests, a.Digest)
					}
				}
			}
		}
		out = append(out, ir)
	}
	return out, nil
}

// standbyView gives the gate a standby's drift from its primary.
type standbyView struct{ s *Server }

func (v standbyView) StandbyDrift(context.Context) ([]validate.Difference, bool) {
	if v.s.life.Mode() != bootstrap.ModeStandby {
		return nil, false
	}
	st := v.s.follower.Status()
	out := make([]validate.Difference, 0, len(st.Drift))
	for _, d := range st.Drift {
		kind := validate.DriftDifferent
		switch d.Kind {
		case bootstrap.DriftMissing:
			kind = validate.DriftMissing
		case bootstrap.DriftOnlyHere:
			kind = validate.DriftExtra
		}
		out = append(out, validate.Difference{Kind: kind, Artifact: "image", Name: d.Repository + ":" + d.Tag, Expected: d.Primary, Actual: d.Standby, Against: "primary", Detail: d.Error})
	}
	return out, true
}
