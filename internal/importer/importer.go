// Package importer turns what crosses the air gap — imgpkg `copy --to-tar`
// archives, OCI image layouts (folders or tars, plain, gzip or zstd) and
// docker-save archives — into registry content. It reads its input once, as
// a stream; checks every entry's path and type, every blob's digest and
// size, and every manifest's references; writes blobs straight into the
// registry's storage, into a per-import staging repository; and only when
// everything verified links the blobs into their destination, stores the
// manifests (children before parents) and applies the tags, last. An
// interrupted import leaves nothing visible, and running it again completes it.
package importer

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/importer/tarstream"
	"github.com/appliance-dev/appliance/internal/registry"
)

// Blobs is the blob side of the registry the importer writes to.
type Blobs interface {
	StatBlob(ctx context.Context, d digest.Digest) (registry.Descriptor, bool, error)
	// BlobVisible tells whether the registry holds a blob that a visible
	// manifest (one a tag reaches) references: the only blobs an archive
	// may leave out. Blobs a refused import left behind are not.
	BlobVisible(ctx context.Context, d digest.Digest) (bool, error)
	WriteBlob(ctx context.Context, repo string, want registry.Descriptor, src io.Reader) (registry.Descriptor, error)
	LinkBlob(ctx context.Context, repo string, d digest.Digest) error
	ReadBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, error)
}

// Manifests is the manifest and tag side of the registry.
type Manifests interface {
	PutManifest(ctx context.Context, repo, mediaType string, payload []byte) (digest.Digest, error)
	GetManifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error)
	Tag(ctx context.Context, repo, tag string, d digest.Digest) error
	TagDigest(ctx context.Context, repo, tag string) (digest.Digest, bool, error)
	RemoveRepository(ctx context.Context, repo string) error
}

// Store is what the importer needs of the registry.
type Store interface {
	Blobs
	Manifests
}

// StagingProject is the project of the per-import staging repositories.
// They hold blob links only while an import runs.
const StagingProject = registry.StagingProject

// GCTurns is how an import takes turns with garbage collection: the
// import holds a turn from its first byte until its staging repository
// is gone, and gc sweeps only when no import holds one. A Store that
// implements it (the registry does) is used for it.
type GCTurns interface {
	HoldGC(ctx context.Context, who string) (release func(), err error)
}

// DefaultMaxEntrySize bounds the size an archive entry may claim.
const DefaultMaxEntrySize int64 = 1 << 40 // 1 TiB

// Importer imports archives into a Store and records every import.
type Importer struct {
	store     Store
	syncStore Store // writes while read-only, for a standby's follow
	turns     GCTurns
	files     Files
	apt       Apt
	history   *history.History
	log       *slog.Logger
	maxSize   int64

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per destination repository
}

// Option configures an Importer.
type Option func(*Importer)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(i *Importer) { i.log = l } }

// WithFiles gives bundles a file store for the files they carry.
func WithFiles(f Files) Option { return func(i *Importer) { i.files = f } }

// WithApt gives bundles an apt repository for the packages they carry.
func WithApt(a Apt) Option { return func(i *Importer) { i.apt = a } }

// WithSyncStore gives the importer the store a standby's follow of its
// primary writes through (Request.Sync): the registry's storage, writable
// while the registry is read-only to everyone else.
func WithSyncStore(s Store) Option { return func(i *Importer) { i.syncStore = s } }

// WithMaxEntrySize bounds the size an entry may claim.
func WithMaxEntrySize(n int64) Option { return func(i *Importer) { i.maxSize = n } }

// New builds an Importer.
func New(store Store, history *history.History, opts ...Option) (*Importer, error) {
	if store == nil || history == nil {
		return nil, errors.New("new importer: store and history are required")
	}
	i := &Importer{store: store, history: history, log: slog.New(slog.DiscardHandler), maxSize: DefaultMaxEntrySize, locks: map[string]*sync.Mutex{}}
	if t, ok := store.(GCTurns); ok {
		i.turns = t
	}
	for _, o := range opts {
		o(i)
	}
	return i, nil
}

// errNoDestination refuses archives other than bundles without a destination.
var errNoDestination = fmt.Errorf("%w: a destination repository (--to-repo PROJECT/REPO) is required (only appliance bundles carry their own)", ErrInvalidRequest)

// Request describes one import.
type Request struct {
	// Source names the input in errors and the history (a file name).
	Source string
	// Reader is the input: a tar (plain, gzip or zstd). Use ImportDir for
	// an OCI layout folder.
	Reader io.Reader
	// Size is the input's length when known (a file, a Content-Length),
	// else 0. No entry of an uncompressed input may claim more.
	Size int64
	// ToRepo is the destination repository ("project/repo"). Required except
	// with KeepNames, where it becomes an optional prefix.
	ToRepo string
	// KeepNames keeps the repository paths the archive names (OCI layouts
	// and docker-save archives), without their registry host.
	KeepNames bool
	// User is who asked, for the history.
	User string
	// Trust decides which signed bundles are accepted (bundles only).
	Trust bundle.Trust
	// Sync marks a standby's follow of its primary, which writes while the
	// registry is read-only (through the store given WithSyncStore).
	Sync bool
}

func (r Request) validate() error {
	if r.Reader == nil {
		return fmt.Errorf("%w: no input", ErrInvalidRequest)
	}
	if r.ToRepo != "" && !validRepo(r.ToRepo) {
		return fmt.Errorf("%w: %q is not a valid repository name (lower-case path components such as project/repo)", ErrInvalidRequest, r.ToRepo)
	}
	if strings.HasPrefix(r.ToRepo, StagingProject+"/") || r.ToRepo == StagingProject {
		return fmt.Errorf("%w: %s is reserved", ErrInvalidRequest, StagingProject)
	}
	return nil
}

// Import reads one archive and imports it. The record is written to the
// history whatever the outcome, and returned with the error, if any.
func (imp *Importer) Import(ctx context.Context, req Request) (*history.Record, error) {
	rec := imp.begin(req)
	if err := req.validate(); err != nil {
		return imp.finish(rec, &Error{Op: "request", Source: req.Source, Err: err})
	}
	if imp.turns != nil {
		release, err := imp.turns.HoldGC(ctx, "import "+rec.ID+" of "+req.Source)
		if err != nil {
			return imp.finish(rec, &Error{Op: "store", Source: req.Source, Err: err})
		}
		defer release() // after cleanup: the staging repository is gone by then
	}
	s, err := imp.newSession(ctx, req, rec)
	if err != nil {
		return imp.finish(rec, err)
	}
	defer s.cleanup()
	counting := tarstream.NewHashingReader(req.Reader, chunkSize)
	hashed := false
	sourceSum := func() {
		if !hashed {
			hashed = true
			rec.SourceSHA256, rec.SourceBytes = counting.Sum()
		}
	}
	defer sourceSum()
	br := bufio.NewReaderSize(counting, 1<<20)
	plain, compression, closeFn, err := tarstream.Decompress(br)
	if err != nil {
		sourceSum()
		return imp.finish(rec, &Error{Op: "read", Source: req.Source, Err: err})
	}
	defer closeFn()
	rec.Compression = compression
	limit := imp.maxSize
	if compression == "" && req.Size > 0 {
		limit = min(limit, req.Size)
	}
	err = s.consume(tarstream.NewReader(plain, limit))
	if err == nil {
		// Read to the very end so the recorded sha256 covers the whole file.
		if _, derr := io.Copy(io.Discard, br); derr != nil {
			err = &Error{Op: "read", Source: req.Source, Err: derr}
		}
	}
	sourceSum()
	if err != nil {
		return imp.finish(rec, err)
	}
	return imp.finish(rec, s.complete())
}

func (imp *Importer) finish(rec *history.Record, err error) (*history.Record, error) {
	rec.Finished = time.Now().UTC()
	if err != nil {
		rec.Outcome, rec.Error = history.OutcomeFailed, err.Error()
		imp.log.Warn("import failed", "id", rec.ID, "source", rec.Source, "error", err)
	} else {
		rec.Outcome = history.OutcomeSucceeded
		imp.log.Info("import succeeded", "id", rec.ID, "source", rec.Source, "format", rec.Format,
			"manifests", len(rec.Manifests), "tags", len(rec.Tags), "bytes_new", rec.BytesNew, "bytes_existing", rec.BytesExisting)
	}
	if herr := imp.history.Save(rec); herr != nil {
		imp.log.Error("import history not saved", "id", rec.ID, "error", herr)
		if err == nil {
			err = herr
		}
	}
	return rec, err
}

// lockRepos serializes imports per destination repository, always in the
// same order so that two imports never deadlock.
func (imp *Importer) lockRepos(repos []string) func() {
	sorted := slices.Clone(repos)
	sort.Strings(sorted)
	sorted = slices.Compact(sorted)
	imp.mu.Lock()
	ms := make([]*sync.Mutex, len(sorted))
	for i, r := range sorted {
		if imp.locks[r] == nil {
			imp.locks[r] = &sync.Mutex{}
		}
		ms[i] = imp.locks[r]
	}
	imp.mu.Unlock()
	for _, m := range ms {
		m.Lock()
	}
	return func() {
		for i := len(ms) - 1; i >= 0; i-- {
			ms[i].Unlock()
		}
	}
}

// begin starts req's record in the history.
func (imp *Importer) begin(req Request) *history.Record {
	rec := &history.Record{ID: newID(), Source: req.Source, User: req.User, ToRepo: req.ToRepo, KeepNames: req.KeepNames,
		Started: time.Now().UTC(), Outcome: history.OutcomeRunning}
	_ = imp.history.Save(rec) // best effort: the final save reports errors
	return rec
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
