// Package validate is the validation gate: it proves, bottom-up and over
// the network, that every layer an air-gapped workload needs pulls from the
// appliance — the registry itself (names, TLS with the appliance's CA
// alone, anonymous pulls), the images manifests and pods name, the NIM
// model profiles, the apt packages a cloud-init file installs, and the
// certificates — and it reports staleness and drift against a signed
// inventory or receipt, and writes a signed evidence report. It stops
// climbing at the first red gate. It reads the appliance through its
// public endpoints (HTTPS with the CA only) and, for what only the
// appliance knows, through small interfaces it owns (Holdings, History,
// Standby). See docs/validation.md.
package validate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os/exec"
	"time"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/validate/nim"
)

// The gates, bottom-up.
const (
	GateRegistry     = "registry"
	GateImages       = "images"
	GateProfiles     = "profiles"
	GateApt          = "apt"
	GateCertificates = "certificates"
)

// Gates lists the gates in the order they run.
var Gates = []string{GateRegistry, GateImages, GateProfiles, GateApt, GateCertificates}

// Gate outcomes.
const (
	StatusOK      = "ok"
	StatusWarning = "warning" // passed, with something to act on soon
	StatusFailed  = "failed"
	StatusSkipped = "skipped" // not run: nothing to check, or a gate below failed
)

// Finding severities.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
	SeverityInfo    = "info"
)

// Input kinds, as `appliance validate` names them.
const (
	InputImages    = "images"     // one reference per line
	InputManifests = "manifests"  // Kubernetes YAML (multi-document)
	InputPods      = "pods"       // kubectl get pods -A -o json
	InputCloudInit = "cloud-init" // a #cloud-config whose packages apt must resolve
	InputProfiles  = "profiles"   // the NIM model profiles required
)

// ErrBadInput marks a request the gate cannot run on: unparsable YAML or
// JSON (the error names file and line), an unknown option, an unreadable,
// unsigned or untrusted inventory. It never yields a green gate.
var ErrBadInput = errors.New("bad validation input")

func badInput(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadInput, fmt.Sprintf(format, args...))
}

// Input is one file given to the gate.
type Input struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// Request is what one run checks.
type Request struct {
	Inputs []Input `json:"inputs,omitempty"`
	// Against is the connected side's signed inventory or receipt that
	// drift is measured against.
	Against *Against `json:"against,omitempty"`
	// Platforms are the platforms an index must carry ("linux/amd64",
	// the default).
	Platforms []string `json:"platforms,omitempty"`
	// ProfileIDs and ProfileTags select the required profiles of a NIM
	// model manifest (given as a profiles input, or carried by the
	// --against bundle): by id (or a prefix of 8 hex digits or more), and
	// every profile carrying all the tags ("gpu=H100"). Neither: every
	// profile of the manifest is required.
	ProfileIDs  []string `json:"profile_ids,omitempty"`
	ProfileTags []string `json:"profile_tags,omitempty"`
	// Anonymous pulls every image of gate 2 anonymously, as a cluster
	// without pull secrets does, even when the run has credentials: an
	// image in a private project is then red.
	Anonymous bool `json:"anonymous,omitempty"`
}

// Finding is one thing a gate found: a missing or stale artifact and what
// to do about it.
type Finding struct {
	Severity string `json:"severity"`
	What     string `json:"what"`
	Where    string `json:"where,omitempty"` // file:line
	Problem  string `json:"problem"`
	Action   string `json:"action,omitempty"`
	// Local is the appliance's reference replacing an outside one.
	Local  string `json:"local,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Repository is the appliance's repository the finding is about: who
	// may not pull from it does not see the finding (Result.Visible).
	Repository string `json:"repository,omitempty"`
}

// GateResult is one gate's outcome.
type GateResult struct {
	Gate     string    `json:"gate"`
	Status   string    `json:"status"`
	Summary  string    `json:"summary"`
	Checked  int       `json:"checked"`
	Findings []Finding `json:"findings"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
}

// Checked is one artifact proven present, with its digest.
type Checked struct {
	Gate   string `json:"gate"`
	What   string `json:"what"`
	Digest string `json:"digest"`
	// Repository is the appliance's repository of an image checked.
	Repository string `json:"repository,omitempty"`
}

// InputInfo names an input file of the run by its sha256.
type InputInfo struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Bytes  int    `json:"bytes"`
}

// Result is one run of the gate.
type Result struct {
	Started   time.Time    `json:"started"`
	Finished  time.Time    `json:"finished"`
	OK        bool         `json:"ok"`
	Appliance string       `json:"appliance"`
	Names     []string     `json:"names"`
	Platforms []string     `json:"platforms"`
	Inputs    []InputInfo  `json:"inputs"`
	Against   *AgainstInfo `json:"against,omitempty"`
	Gates     []GateResult `json:"gates"`
	Checked   []Checked    `json:"checked"`
	Drift     *Drift       `json:"drift,omitempty"`
	Staleness []Stale      `json:"staleness,omitempty"`
	Imports   []ImportRef  `json:"imports,omitempty"`
	// Withheld counts the entries left out for a reader who may not pull
	// every repository (see Visible).
	Withheld int `json:"withheld,omitempty"`
}

// Gate returns the result of one gate (nil when absent).
func (r *Result) Gate(name string) *GateResult {
	for i := range r.Gates {
		if r.Gates[i].Gate == name {
			return &r.Gates[i]
		}
	}
	return nil
}

// FailedGate is the first red gate, or "".
func (r *Result) FailedGate() string {
	for _, g := range r.Gates {
		if g.Status == StatusFailed {
			return g.Gate
		}
	}
	return ""
}

// Holdings is what the appliance holds (its receipt): tags, files, packages.
type Holdings interface {
	Receipt(ctx context.Context) (*bundle.Receipt, error)
}

// ImportRecord is an import of the history, as far as evidence needs it.
type ImportRecord struct {
	ID        string            `json:"id"`
	Source    string            `json:"source"`
	Outcome   string            `json:"outcome"`
	Finished  time.Time         `json:"finished"`
	User      string            `json:"user,omitempty"`
	Signer    string            `json:"signer,omitempty"`
	Bundle    string            `json:"bundle,omitempty"`
	Digests   []string          `json:"-"` // manifests, files and packages it stored
	Inventory *bundle.Inventory `json:"-"`
}

// History is the import history.
type History interface {
	Imports(ctx context.Context) ([]ImportRecord, error)
}

// Standby is a standby's last comparison with its primary.
type Standby interface {
	// StandbyDrift says whether the appliance is a standby and, if so,
	// what its last sync found different from the primary.
	StandbyDrift(ctx context.Context) ([]Difference, bool)
}

// Credentials are the rights a run pulls the images of gate 2 with, past
// an anonymous client's: the caller's own (an admin asking through the
// API) or the appliance's (a scheduled run). The pull itself stays a
// real one over the network: the token is presented to the registry like
// any client's.
type Credentials interface {
	// PullToken returns a registry bearer token granting pull on
	// repository, as far as these credentials may.
	PullToken(ctx context.Context, repository string) (string, error)
	// Who names the credentials in findings ("admin", "the appliance").
	Who() string
}

// Options configure a Validator.
type Options struct {
	// URL is the appliance's advertised HTTPS address (https://name:port).
	URL string
	// Names are the advertised host names to prove (resolve, TLS).
	Names []string
	// CAPEM is the appliance's CA, the only root trusted.
	CAPEM []byte
	// Trust holds the keys an --against inventory must be signed by;
	// ReceiptKeys those a receipt may be signed by (the appliance's own).
	Trust       []bundle.TrustedKey
	ReceiptKeys []bundle.TrustedKey
	Holdings    Holdings
	History     History
	Standby     Standby
	// Credentials pull images in private projects (gate 2); nil pulls
	// everything anonymously.
	Credentials Credentials
	// MaxAge is the age after which an artifact with a refresh trigger is
	// reported stale (default 90 days).
	MaxAge time.Duration
	Log    *slog.Logger
	Now    func() time.Time
}

// Validator runs the gates.
type Validator struct {
	o      Options
	base   *url.URL
	pool   *x509.CertPool
	tr     *http.Transport
	client *http.Client
	log    *slog.Logger
}

// New checks the options and returns a Validator.
func New(o Options) (*Validator, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("validate: the appliance's address %q is not an https URL", o.URL)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(o.CAPEM) {
		return nil, errors.New("validate: the appliance's CA holds no PEM certificate")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 90 * 24 * time.Hour
	}
	if len(o.Names) == 0 {
		o.Names = []string{u.Hostname()}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true,
		MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}
	return &Validator{o: o, base: u, pool: pool, tr: tr, client: &http.Client{Transport: tr, Timeout: 10 * time.Minute}, log: o.Log}, nil
}

// Close drops the validator's idle connections.
func (v *Validator) Close() { v.tr.CloseIdleConnections() }

// run is one run's state.
type run struct {
	v         *Validator
	req       Request
	res       *Result
	platforms []string
	parsed    *parsedInputs
	against   *against
	receipt   *bundle.Receipt
}

// Run checks the request, then runs the gates bottom-up, stopping at the
// first red one; every later gate is reported skipped. The error is for
// bad input only (ErrBadInput) or a context ended; a red gate is a Result
// with OK false.
func (v *Validator) Run(ctx context.Context, req Request) (*Result, error) {
	now := v.o.Now().UTC()
	platforms := req.Platforms
	if len(platforms) == 0 {
		platforms = []string{"linux/amd64"}
	}
	for _, p := range platforms {
		if _, err := parsePlatform(p); err != nil {
			return nil, err
		}
	}
	parsed, err := parseInputs(req.Inputs)
	if err != nil {
		return nil, err
	}
	sel := nim.Selection{IDs: req.ProfileIDs, Tags: req.ProfileTags}
	if err := sel.Check(); err != nil {
		return nil, badInput("%v", err)
	}
	if len(parsed.manifests) > 0 {
		if err := parsed.selectProfiles(sel); err != nil {
			return nil, err
		}
	}
	r := &run{v: v, req: req, platforms: platforms, parsed: parsed,
		res: &Result{Started: now, Appliance: v.base.String(), Names: v.o.Names, Platforms: platforms, Inputs: parsed.infos, Gates: []GateResult{}, Checked: []Checked{}}}
	if req.Against != nil {
		if r.against, err = v.checkAgainst(ctx, req.Against); err != nil {
			return nil, err
		}
		r.res.Against = &r.against.info
	}
	if !sel.Empty() && len(parsed.manifests) == 0 && len(r.manifestFiles()) == 0 {
		return nil, badInput("--profile-ids and --profile-tag select from a NIM model manifest: give --profiles model_manifest.yaml, or --against a bundle that carried one (a file of kind %s)", FileKindNIMManifest)
	}
	if v.o.Holdings != nil {
		if r.receipt, err = v.o.Holdings.Receipt(ctx); err != nil {
			return nil, fmt.Errorf("validate: read what the appliance holds: %w", err)
		}
	}
	gates := []struct {
		name string
		fn   func(context.Context, *GateResult)
	}{
		{GateRegistry, r.registryGate},
		{GateImages, r.imagesGate},
		{GateProfiles, r.profilesGate},
		{GateApt, r.aptGate},
		{GateCertificates, r.certificatesGate},
	}
	failed := ""
	for _, g := range gates {
		gr := GateResult{Gate: g.name, Findings: []Finding{}, Started: v.o.Now().UTC()}
		if failed != "" {
			gr.Status, gr.Summary = StatusSkipped, "not run: gate "+failed+" below failed"
		} else {
			g.fn(ctx, &gr)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if gr.Status == "" {
				gr.Status = statusOf(gr.Findings)
			}
		}
		gr.Finished = v.o.Now().UTC()
		if gr.Status == StatusFailed {
			failed = g.name
		}
		r.res.Gates = append(r.res.Gates, gr)
	}
	r.staleness(ctx)
	if err := r.drift(ctx); err != nil {
		return nil, err
	}
	r.imports(ctx)
	r.res.OK = failed == ""
	r.res.Finished = v.o.Now().UTC()
	return r.res, nil
}

func statusOf(fs []Finding) string {
	st := StatusOK
	for _, f := range fs {
		switch f.Severity {
		case SeverityError:
			return StatusFailed
		case SeverityWarning:
			st = StatusWarning
		}
	}
	return st
}

func (r *run) checked(gate, what, digest string) {
	r.res.Checked = append(r.res.Checked, Checked{Gate: gate, What: what, Digest: digest})
}

func (r *run) checkedImage(gate, what, digest, repo string) {
	r.res.Checked = append(r.res.Checked, Checked{Gate: gate, What: what, Digest: digest, Repository: repo})
}

// lookTool finds a program the gates run (apt-get, gpgv).
func lookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is not installed on the machine running the gate (apt-get install -y %s)", name, map[string]string{"apt-get": "apt", "gpgv": "gpgv"}[name])
	}
	return p, nil
}
