// Package storage is the registry's storage on disk, as the appliance
// reads and maintains it beneath distribution: distribution's filesystem
// layout (layout.go), what each stored manifest references and which
// blobs a tag makes visible (graph.go, visible.go), fsck (Check, Repair)
// and garbage collection (GC), and the bytes stored (Used). It also names
// the layout's places for the registry above it: BlobDataPath, the file
// the blob fast path serves; Revisions, the manifests the referrers API is
// computed from; and the driver keys of the registry's own writes
// (LayerLinkKey, RevisionLinkKey, BlobDataKey). For an object store it
// opens distribution's S3 driver and checks the store before anything is
// written, and keeps the writer's lock object (OpenS3, s3.go).
//
// It reads the layout straight from disk rather than through
// distribution's storage driver (a stat per file, and no modification
// times, which gc's grace period is measured on), save when the content
// is in an object store (Options.Driver; tree.go): then it reads and
// removes through the driver (gc's grace period measured on the objects'
// modification times, and its removals in the same crash-safe order:
// links before data). Of distribution it
// needs only the layout and its rule for repository names (the
// reference module); its tests write content through distribution's own
// storage. Writing content (uploads, manifests, tags) is the registry's,
// above it, through distribution or its own verified direct writes, save
// one file operation this package does for it (LinkData: verified data
// kept under a second digest, as a hard link); what this package
// removes, it removes only while the registry lets it.
//
// The seam is three small interfaces the registry provides and this
// package owns: Turns (gc takes the store alone, fsck beside writers),
// Changes (the manifest cache's per-repository generations: which
// repositories were written since the visible set was last computed, and
// how gc and repair invalidate what is cached of a repository they
// change), and Asked (the blobs clients found present with a HEAD, which
// gc keeps). Everything that knows about HTTP, distribution's App and
// the caches stays in package registry.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// Errors of reading and naming stored content. Package registry answers
// its own callers with these same values.
var (
	// ErrDigestMismatch: stored or written bytes do not hash to the digest
	// they are named by.
	ErrDigestMismatch = errors.New("content does not match its digest")
	// ErrInvalidName: a repository name or tag the registry does not accept.
	ErrInvalidName = errors.New("invalid repository name or tag")
)

// Turns is how fsck, repair and gc take turns with everything that writes
// (the registry's turns): Hold beside writers, Exclusive alone.
type Turns interface {
	// Hold takes a shared turn, waiting while a sweep runs.
	Hold(ctx context.Context, who string) (release func(), err error)
	// Exclusive waits until nothing holds a turn, then holds it alone; it
	// fails (wrapping the registry's ErrBusy) when ctx ends first.
	Exclusive(ctx context.Context) (release func(), err error)
}

// Changes is the registry's record of which repositories were written:
// the manifest cache's generation per repository, which every write, over
// /v2/ or through the direct methods, moves on.
type Changes interface {
	// Generations returns every repository's generation.
	Generations() map[string]uint64
	// Invalidate moves repo's generation on and drops what is cached of
	// it. The store calls it before and after each change it makes to a
	// repository, so that nothing read before the change outlives it.
	Invalidate(repo string)
}

// Asked is what clients asked about with HEAD: a client that found a blob
// present goes on to push a manifest naming it, so gc keeps the blob,
// however old it is.
type Asked interface {
	// AskedSince lists the blobs asked about after t.
	AskedSince(t time.Time) map[digest.Digest]bool
}

// Options configure a Store.
type Options struct {
	// Turns is required.
	Turns Turns
	// Changes is required.
	Changes Changes
	// Asked may be nil: then gc keeps only what the grace period protects.
	Asked Asked
	// Logger receives what gc and repair removed; discarded when nil.
	Logger *slog.Logger
	// Driver, when set, is where the layout is read from and removed
	// (an object store): root is then ignored. Unset, the layout is read
	// from disk under root.
	Driver storagedriver.StorageDriver
}

// Store is the registry's storage under one root folder (the root of
// distribution's filesystem driver).
type Store struct {
	root    string
	tree    tree // the local filesystem, or the driver (tree.go)
	log     *slog.Logger
	turns   Turns
	changes Changes
	asked   Asked

	visible visibleIndex    // which blobs a tag reaches (visible.go)
	parsed  referencesCache // what each manifest references (graph.go)

	// stopAt, when set (by this package's tests only), is asked at every
	// step of gc's sweep and stops it there with its error, as a kill
	// would.
	stopAt func(step string) error

	usageMu   sync.Mutex
	usage     int64
	usageTime time.Time
}

// New returns the store of the storage under root.
func New(root string, opts Options) (*Store, error) {
	if (root == "" && opts.Driver == nil) || opts.Turns == nil || opts.Changes == nil {
		return nil, errors.New("new storage: root (or a Driver), Turns and Changes are required")
	}
	var t tree = osTree{}
	if opts.Driver != nil {
		root, t = "/", driverTree{opts.Driver}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Asked == nil {
		opts.Asked = askedNothing{}
	}
	return &Store{root: root, tree: t, log: opts.Logger, turns: opts.Turns, changes: opts.Changes, asked: opts.Asked}, nil
}

type askedNothing struct{}

func (askedNothing) AskedSince(time.Time) map[digest.Digest]bool { return map[digest.Digest]bool{} }

// step is one point of gc's sweep.
func (s *Store) step(format string, args ...any) error {
	if s.stopAt == nil {
		return nil
	}
	return s.stopAt(fmt.Sprintf(format, args...))
}

// usageTTL bounds how often Used walks the storage tree.
const usageTTL = 30 * time.Second

// Used returns the bytes stored under the root, computed at most every 30
// seconds.
func (s *Store) Used() (int64, error) {
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	if time.Since(s.usageTime) < usageTTL {
		return s.usage, nil
	}
	total, err := s.tree.used(context.Background(), s.root)
	if err != nil {
		return 0, fmt.Errorf("storage used: %w", err)
	}
	s.usage, s.usageTime = total, time.Now()
	return total, nil
}
