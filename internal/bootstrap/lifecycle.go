// Package bootstrap is the appliance's lifecycle after its first job: it
// is the registry production Harbor is installed from, then it hands
// everything over and stands by.
//
//	bootstrap ──promote──► (production has everything, parity proven)
//	    │
//	    └──standby──► standby (read-only, following the primary) ⇄ active (writable after a failover)
//
// Lifecycle keeps the mode and every change of it (who, when, why) in the
// data directory and holds the registry read-only while in standby.
// Follower keeps a standby's content in step with its primary, through the
// importer, so that what it pulls is verified like an import and recorded
// in the history. Handover registers the appliance and its Supervisor
// Services with a vSphere Supervisor and re-points them at Harbor once a
// promotion proved parity. The promote sub-package pushes the appliance's
// content, read from its own storage, into another registry and proves
// parity; the vsphere sub-package talks to vCenter and is the only
// importer of govmomi.
package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/registry"
)

// Mode is where the appliance stands in its lifecycle.
type Mode string

// The modes.
const (
	// ModeBootstrap is the first registry of the enclave, writable.
	ModeBootstrap Mode = "bootstrap"
	// ModeStandby is read-only, following production (the primary).
	ModeStandby Mode = "standby"
	// ModeActive is writable again after a failover.
	ModeActive Mode = "active"
)

// Modes lists every mode, in lifecycle order (for metrics).
var Modes = []Mode{ModeBootstrap, ModeStandby, ModeActive}

// Files in the data directory.
const (
	LifecycleFile   = "lifecycle.json"
	PrimarySecret   = "primary-credentials.json"
	maxHistoryKept  = 1000
	defaultInterval = 5 * time.Minute
)

// Errors of mode changes.
var (
	// ErrBadTransition: a change the lifecycle does not allow.
	ErrBadTransition = errors.New("mode change not allowed")
	// ErrStandby: refused because the appliance is a standby.
	ErrStandby = errors.New("the appliance is a standby")
	// ErrInvalid: a request that names something impossible.
	ErrInvalid = errors.New("invalid request")
)

// Change is one recorded change of mode.
type Change struct {
	From    Mode      `json:"from"`
	To      Mode      `json:"to"`
	At      time.Time `json:"at"`
	By      string    `json:"by"`
	Reason  string    `json:"reason,omitempty"`
	Primary string    `json:"primary,omitempty"`
}

// Primary is the production registry a standby follows, as shown to
// anyone (the credentials are kept apart, never shown).
type Primary struct {
	URL string `json:"url"`
	// Projects are the projects followed; empty means those the appliance holds.
	Projects []string `json:"projects,omitempty"`
	// Interval between syncs.
	Interval time.Duration `json:"interval"`
	Username string        `json:"username,omitempty"`
	// HasCA tells whether a CA was given for the primary's TLS.
	HasCA bool `json:"has_ca"`
}

// PrimaryCredentials are what the follower needs to reach the primary:
// kept in their own 0600 file, never in an API answer or a log.
type PrimaryCredentials struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	CAPEM    string `json:"ca_pem,omitempty"`
}

// State is the lifecycle as persisted and shown.
type State struct {
	Mode    Mode      `json:"mode"`
	Since   time.Time `json:"since"`
	Primary *Primary  `json:"primary,omitempty"`
	History []Change  `json:"history"`
}

// ReadOnlySwitch is the registry's read-only mode, which a standby holds on.
type ReadOnlySwitch interface {
	SetReadOnly(on bool, reason string) (registry.Mode, error)
	Mode() registry.Mode
}

// Lifecycle is the persisted mode of the appliance.
type Lifecycle struct {
	dir string
	ro  ReadOnlySwitch
	log *slog.Logger

	mu    sync.Mutex
	state State
	creds PrimaryCredentials
	// changed is closed and replaced on every change, for the follower.
	changed chan struct{}
}

// OpenLifecycle loads the lifecycle from dir (a new appliance starts in
// bootstrap mode) and makes the registry's read-only mode agree with it: a
// standby is read-only, whatever happened before the restart.
func OpenLifecycle(dir string, ro ReadOnlySwitch, log *slog.Logger) (*Lifecycle, error) {
	if ro == nil {
		return nil, errors.New("open lifecycle: a read-only switch is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Lifecycle{dir: dir, ro: ro, log: log, changed: make(chan struct{})}
	data, err := os.ReadFile(l.path(LifecycleFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.state = State{Mode: ModeBootstrap, Since: time.Now().UTC(), History: []Change{}}
	case err != nil:
		return nil, fmt.Errorf("open lifecycle: %w", err)
	default:
		if err := json.Unmarshal(data, &l.state); err != nil {
			return nil, fmt.Errorf("open lifecycle: %s is corrupt: %w", l.path(LifecycleFile), err)
		}
		if !slices.Contains(Modes, l.state.Mode) {
			return nil, fmt.Errorf("open lifecycle: %s names the unknown mode %q", l.path(LifecycleFile), l.state.Mode)
		}
	}
	data, err = os.ReadFile(l.path(PrimarySecret))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open lifecycle: %w", err)
	default:
		if err := json.Unmarshal(data, &l.creds); err != nil {
			return nil, fmt.Errorf("open lifecycle: %s is corrupt: %w", l.path(PrimarySecret), err)
		}
	}
	if l.state.Mode == ModeStandby {
		if _, err := ro.SetReadOnly(true, standbyReason(l.state.Primary)); err != nil {
			return nil, fmt.Errorf("open lifecycle: hold the standby read-only: %w", err)
		}
	}
	return l, nil
}

func (l *Lifecycle) path(name string) string { return l.dir + string(os.PathSeparator) + name }

// standbyReason is what every refused push of a standby says.
func standbyReason(p *Primary) string {
	if p == nil {
		return "this appliance is a standby"
	}
	return "this appliance is a standby of " + p.URL + "; push to the primary"
}

// State returns a copy of the lifecycle.
func (l *Lifecycle) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.copyLocked()
}

// Mode returns the current mode.
func (l *Lifecycle) Mode() Mode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.Mode
}

// Changed returns a channel closed at the next change of mode or primary.
func (l *Lifecycle) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// primary returns the primary and its credentials (for the follower).
func (l *Lifecycle) primary() (*Primary, PrimaryCredentials, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state.Mode != ModeStandby || l.state.Primary == nil {
		return nil, PrimaryCredentials{}, false
	}
	p := *l.state.Primary
	p.Projects = slices.Clone(p.Projects)
	return &p, l.creds, true
}

// StandbyRequest switches the appliance to standby.
type StandbyRequest struct {
	// Primary is the production registry to follow. Empty means the one
	// followed before (to return to following after an activate).
	Primary     *Primary
	Credentials PrimaryCredentials
	By, Reason  string
}

// Standby makes the appliance a read-only standby of a primary. The
// change is recorded and persisted before the registry turns read-only; a
// crash in between leaves it in standby, and the next start turns it
// read-only.
func (l *Lifecycle) Standby(req StandbyRequest) (State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	primary, creds := req.Primary, req.Credentials
	if primary == nil {
		if l.state.Primary == nil {
			return State{}, fmt.Errorf("%w: no primary was followed before: give the primary's URL", ErrInvalid)
		}
		primary, creds = l.state.Primary, l.creds
	}
	if primary.Interval <= 0 {
		primary.Interval = defaultInterval
	}
	primary.Username = creds.Username
	primary.HasCA = creds.CAPEM != ""
	next := l.state
	next.History = slices.Clone(l.state.History)
	ch := Change{From: l.state.Mode, To: ModeStandby, At: time.Now().UTC(), By: req.By, Reason: req.Reason, Primary: primary.URL}
	next.Mode, next.Since, next.Primary = ModeStandby, ch.At, primary
	next.History = appendChange(next.History, ch)
	if err := l.saveCreds(creds); err != nil {
		return State{}, err
	}
	if err := l.save(next); err != nil {
		return State{}, err
	}
	l.state, l.creds = next, creds
	if _, err := l.ro.SetReadOnly(true, standbyReason(primary)); err != nil {
		return State{}, fmt.Errorf("standby: turn the registry read-only: %w", err)
	}
	l.log.Info("mode changed", "from", ch.From, "to", ch.To, "by", ch.By, "reason", ch.Reason, "primary", ch.Primary)
	l.notify()
	return l.copyLocked(), nil
}

// Activate makes a standby writable again (a failover): the registry
// accepts pushes before the change is recorded, so that a crash in
// between leaves a standby that the next start holds read-only again.
func (l *Lifecycle) Activate(by, reason string) (State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state.Mode != ModeStandby {
		return State{}, fmt.Errorf("%w: only a standby can be activated; the appliance is in %s mode", ErrBadTransition, l.state.Mode)
	}
	if reason == "" {
		return State{}, fmt.Errorf("%w: an activation needs a reason (it is recorded)", ErrInvalid)
	}
	if _, err := l.ro.SetReadOnly(false, ""); err != nil {
		return State{}, fmt.Errorf("activate: make the registry writable: %w", err)
	}
	next := l.state
	next.History = slices.Clone(l.state.History)
	ch := Change{From: ModeStandby, To: ModeActive, At: time.Now().UTC(), By: by, Reason: reason}
	if next.Primary != nil {
		ch.Primary = next.Primary.URL
	}
	next.Mode, next.Since = ModeActive, ch.At
	next.History = appendChange(next.History, ch)
	if err := l.save(next); err != nil {
		// Still a standby on disk: hold it read-only as it says.
		_, _ = l.ro.SetReadOnly(true, standbyReason(l.state.Primary))
		return State{}, err
	}
	l.state = next
	l.log.Info("mode changed", "from", ch.From, "to", ch.To, "by", by, "reason", reason)
	l.notify()
	return l.copyLocked(), nil
}

// CheckReadOnlySwitch refuses a manual read-only switch in standby: a
// standby is held read-only by the lifecycle, with a reason that names its
// primary, and leaves it only by activation.
func (l *Lifecycle) CheckReadOnlySwitch() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state.Mode == ModeStandby {
		url := ""
		if l.state.Primary != nil {
			url = " of " + l.state.Primary.URL
		}
		return fmt.Errorf("%w%s: it stays read-only until `appliance activate` (a recorded failover)", ErrStandby, url)
	}
	return nil
}

func (l *Lifecycle) copyLocked() State {
	s := l.state
	s.History = slices.Clone(s.History)
	if s.Primary != nil {
		p := *s.Primary
		p.Projects = slices.Clone(p.Projects)
		s.Primary = &p
	}
	return s
}

func (l *Lifecycle) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func appendChange(h []Change, c Change) []Change {
	h = append(h, c)
	if len(h) > maxHistoryKept {
		h = h[len(h)-maxHistoryKept:]
	}
	return h
}

func (l *Lifecycle) save(s State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("save lifecycle: %w", err)
	}
	if err := fsutil.WriteFileAtomic(l.path(LifecycleFile), data, 0o640); err != nil {
		return fmt.Errorf("save lifecycle: %w", err)
	}
	return nil
}

func (l *Lifecycle) saveCreds(c PrimaryCredentials) error {
	// The credentials are this file's whole point: written 0600, never shown.
	data, err := json.MarshalIndent(c, "", "  ") //nolint:gosec // G117: see above
	if err != nil {
		return fmt.Errorf("save primary credentials: %w", err)
	}
	if err := fsutil.WriteFileAtomic(l.path(PrimarySecret), data, 0o600); err != nil {
		return fmt.Errorf("save primary credentials: %w", err)
	}
	return nil
}
