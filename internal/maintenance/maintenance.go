// Package maintenance checks and cleans the appliance's storage. Fsck
// reads everything the appliance keeps — the registry's blobs, manifests,
// tags and links, the file store, the apt pools, the import history —
// and reports every problem; with Repair it removes what is provably
// broken in the registry, and nothing else. GC removes from the registry
// what nothing visible references, taking turns with imports,
// promotions and pushes. Each store checks itself (registry.Check,
// filestore.Verify, aptrepo.VerifyPools, history.History.Check); this
// package runs them, one job at a time, and puts the answers together.
package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/filestore"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/registry"
)

// Registry is the registry's storage as maintenance uses it.
type Registry interface {
	Check(ctx context.Context, opts registry.CheckOptions) (registry.CheckReport, error)
	Repair(ctx context.Context, problems []registry.Problem) ([]registry.Removal, error)
	GC(ctx context.Context, opts registry.GCOptions) (registry.GCReport, error)
}

// Files is the file store.
type Files interface {
	Verify(ctx context.Context) (filestore.VerifyReport, error)
}

// Apt is the apt repository.
type Apt interface {
	VerifyPools(ctx context.Context) (aptrepo.PoolReport, error)
}

// History is the import history.
type History interface {
	Check() (history.Report, error)
}

// ErrBusy is returned while another fsck or gc runs.
var ErrBusy = errors.New("another fsck or gc is running")

// DefaultTurnWait bounds how long gc and a repair wait for a moment when
// nothing writes before they give up (registry.ErrBusy).
const DefaultTurnWait = 5 * time.Minute

// Maintainer runs fsck and gc, one at a time.
type Maintainer struct {
	reg      Registry
	files    Files
	apt      Apt
	history  History
	log      *slog.Logger
	turnWait time.Duration

	mu sync.Mutex // held by the running job
}

// Option configures a Maintainer.
type Option func(*Maintainer)

// WithFiles has fsck verify the file store.
func WithFiles(f Files) Option { return func(m *Maintainer) { m.files = f } }

// WithApt has fsck verify the apt pools.
func WithApt(a Apt) Option { return func(m *Maintainer) { m.apt = a } }

// WithHistory has fsck check the import history.
func WithHistory(h History) Option { return func(m *Maintainer) { m.history = h } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(m *Maintainer) { m.log = l } }

// WithTurnWait sets how long gc and a repair wait for their turn
// (DefaultTurnWait when not positive).
func WithTurnWait(d time.Duration) Option { return func(m *Maintainer) { m.turnWait = d } }

// New builds a Maintainer of reg and what the options add.
func New(reg Registry, opts ...Option) (*Maintainer, error) {
	if reg == nil {
		return nil, errors.New("new maintainer: the registry is required")
	}
	m := &Maintainer{reg: reg, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(m)
	}
	if m.turnWait <= 0 {
		m.turnWait = DefaultTurnWait
	}
	return m, nil
}

// Areas of a Problem.
const (
	AreaRegistry = "registry"
	AreaFiles    = "files"
	AreaApt      = "apt"
	AreaImports  = "imports"
)

// Problem is one thing fsck found wrong, wherever it was.
type Problem struct {
	Area       string `json:"area"`
	Kind       string `json:"kind"`
	Repository string `json:"repository,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Tag        string `json:"tag,omitempty"`
	// File is a file of the file store, an apt pool file
	// (<repo>/pool/…) or an import record.
	File   string `json:"file,omitempty"`
	Detail string `json:"detail"`
	// Repairable: fsck --repair removes it.
	Repairable bool `json:"repairable"`
}

// Checked counts what fsck read.
type Checked struct {
	Repositories int   `json:"repositories"`
	Manifests    int   `json:"manifests"`
	Tags         int   `json:"tags"`
	Blobs        int   `json:"blobs"`
	BlobBytes    int64 `json:"blob_bytes"`
	Files        int   `json:"files"`
	FileBytes    int64 `json:"file_bytes"`
	AptPublishes int   `json:"apt_publishes"`
	Packages     int   `json:"packages"`
	PackageBytes int64 `json:"package_bytes"`
	Imports      int   `json:"imports"`
}

// FsckOptions configure fsck.
type FsckOptions struct {
	// Repair removes what is provably broken in the registry: blobs whose
	// bytes do not hash to their name, tags naming a missing manifest,
	// dangling links.
	Repair bool
}

// FsckReport is what fsck checked, found and (with Repair) removed.
type FsckReport struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Repair   bool      `json:"repair"`
	Checked  Checked   `json:"checked"`
	// Problems is every problem found.
	Problems []Problem `json:"problems"`
	// Warnings are states that may be intended: an index whose platforms
	// the appliance holds in part, a referrer without its subject.
	Warnings []Problem `json:"warnings"`
	// Removed is what Repair removed.
	Removed []registry.Removal `json:"removed"`
	// Remaining is what is still wrong: Problems without Repair; after
	// it, what a second look at the registry (without hashing again) and
	// the other areas still report. Manifests whose blobs Repair removed
	// show up here, to be imported again.
	Remaining []Problem `json:"remaining"`
	// OK: nothing remains.
	OK bool `json:"ok"`
}

// Fsck checks everything and reports every problem; with Repair it then
// removes what is provably broken in the registry and looks again.
func (m *Maintainer) Fsck(ctx context.Context, opts FsckOptions) (FsckReport, error) {
	if !m.mu.TryLock() {
		return FsckReport{}, ErrBusy
	}
	defer m.mu.Unlock()
	rep := FsckReport{Started: time.Now().UTC(), Repair: opts.Repair, Problems: []Problem{}, Warnings: []Problem{}, Removed: []registry.Removal{}}
	rc, err := m.reg.Check(ctx, registry.CheckOptions{})
	if err != nil {
		return rep, fmt.Errorf("fsck: registry: %w", err)
	}
	rep.Checked.Repositories, rep.Checked.Manifests, rep.Checked.Tags = rc.Repositories, rc.Manifests, rc.Tags
	rep.Checked.Blobs, rep.Checked.BlobBytes = rc.Blobs, rc.BlobBytes
	rep.Problems = append(rep.Problems, fromRegistry(rc.Problems)...)
	rep.Warnings = append(rep.Warnings, fromRegistry(rc.Warnings)...)
	others, err := m.checkOthers(ctx, &rep.Checked)
	if err != nil {
		return rep, err
	}
	rep.Problems = append(rep.Problems, others...)
	rep.Remaining = rep.Problems
	if opts.Repair && anyRepairable(rc.Problems) {
		wait, cancel := context.WithTimeout(ctx, m.turnWait)
		removed, err := m.reg.Repair(wait, rc.Problems)
		cancel()
		rep.Removed = append(rep.Removed, removed...)
		if err != nil {
			return rep, fmt.Errorf("fsck: repair: %w", err)
		}
		again, err := m.reg.Check(ctx, registry.CheckOptions{SkipHashes: true})
		if err != nil {
			return rep, fmt.Errorf("fsck: registry after the repair: %w", err)
		}
		rep.Remaining = append(fromRegistry(again.Problems), others...)
		rep.Warnings = fromRegistry(again.Warnings)
	}
	rep.OK = len(rep.Remaining) == 0
	rep.Finished = time.Now().UTC()
	m.log.Info("fsck finished", "repair", opts.Repair, "problems", len(rep.Problems), "removed", len(rep.Removed),
		"remaining", len(rep.Remaining), "warnings", len(rep.Warnings), "blobs", rep.Checked.Blobs, "bytes", rep.Checked.BlobBytes,
		"files", rep.Checked.Files, "packages", rep.Checked.Packages, "imports", rep.Checked.Imports, "seconds", rep.Finished.Sub(rep.Started).Seconds())
	return rep, nil
}

// checkOthers checks the file store, the apt pools and the history.
func (m *Maintainer) checkOthers(ctx context.Context, c *Checked) ([]Problem, error) {
	var out []Problem
	if m.files != nil {
		fr, err := m.files.Verify(ctx)
		if err != nil {
			return nil, fmt.Errorf("fsck: file store: %w", err)
		}
		c.Files, c.FileBytes = fr.Files, fr.Bytes
		for _, p := range fr.Problems {
			out = append(out, Problem{Area: AreaFiles, Kind: "corrupt-file", File: p.Name, Digest: p.Digest, Detail: p.Detail})
		}
	}
	if m.apt != nil {
		ar, err := m.apt.VerifyPools(ctx)
		if err != nil {
			return nil, fmt.Errorf("fsck: apt: %w", err)
		}
		c.AptPublishes, c.Packages, c.PackageBytes = ar.Publishes, ar.Packages, ar.Bytes
		for _, p := range ar.Problems {
			file := p.Repo + "/" + p.File
			if p.File == "" {
				file = p.Repo + "/dists/" + p.Dist
			}
			detail := p.Detail + " (" + p.Dist + ", publish " + p.Publish
			if p.Package != "" {
				detail += ", package " + p.Package
			}
			out = append(out, Problem{Area: AreaApt, Kind: "corrupt-package", File: file, Detail: detail + ")"})
		}
	}
	if m.history != nil {
		hr, err := m.history.Check()
		if err != nil {
			return nil, fmt.Errorf("fsck: import history: %w", err)
		}
		c.Imports = hr.Records
		for _, p := range hr.Problems {
			detail := p.Detail
			if p.ID != "" {
				detail = "import " + p.ID + ": " + detail
			}
			out = append(out, Problem{Area: AreaImports, Kind: p.Kind, File: p.File, Detail: detail})
		}
	}
	return out, nil
}

func fromRegistry(ps []registry.Problem) []Problem {
	out := make([]Problem, 0, len(ps))
	for _, p := range ps {
		out = append(out, Problem{Area: AreaRegistry, Kind: p.Kind, Repository: p.Repository, Digest: p.Digest, Tag: p.Tag, Detail: p.Detail, Repairable: p.Repairable})
	}
	return out
}

func anyRepairable(ps []registry.Problem) bool {
	for _, p := range ps {
		if p.Repairable {
			return true
		}
	}
	return false
}

// GCOptions configure gc.
type GCOptions struct {
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// Grace and Now are registry.GCOptions' (zero: the defaults).
	Grace time.Duration
	Now   time.Time
}

// GCReport is what gc removed, or would.
type GCReport struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	registry.GCReport
}

// GC removes from the registry what nothing visible references
// (registry.GC), waiting at most the turn wait for a moment when nothing
// writes.
func (m *Maintainer) GC(ctx context.Context, opts GCOptions) (GCReport, error) {
	if !m.mu.TryLock() {
		return GCReport{}, ErrBusy
	}
	defer m.mu.Unlock()
	rep := GCReport{Started: time.Now().UTC()}
	wait, cancel := context.WithTimeout(ctx, m.turnWait)
	defer cancel()
	gr, err := m.reg.GC(wait, registry.GCOptions{DryRun: opts.DryRun, Grace: opts.Grace, Now: opts.Now})
	rep.GCReport = gr
	rep.Finished = time.Now().UTC()
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	m.log.Info("gc finished", "dry_run", opts.DryRun, "manifests", gr.Manifests, "blobs", gr.Blobs, "bytes", gr.Bytes,
		"staging_repositories", gr.StagingRepos, "kept_by_grace", gr.ProtectedByGrace, "warnings", len(gr.Warnings))
	return rep, nil
}
