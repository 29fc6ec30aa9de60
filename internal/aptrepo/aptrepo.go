// Package aptrepo is the appliance's local apt repository: repositories by
// name (say "ubuntu"), each with any number of distributions ("noble",
// "jammy") and components ("main", "universe"), signed with the
// appliance's own OpenPGP key, and served to apt over HTTP. It is the only
// package that imports aptly, which it uses as a library: aptly's goleveldb
// database, its package pool, its snapshots and its publishing code, which
// writes Packages, Release, InRelease and Release.gpg.
//
// # Every change is a new publish
//
// Add, Remove and Rollback never touch what clients are being served. Each
// makes a new set of aptly snapshots from the current package set (one per
// component), publishes them into a folder of their own,
// Dir/public/<publish id>/{dists,pool}, signs the Release, syncs it all to
// disk, and only then switches the distribution's pointer to it. The
// pointer is the "current" field of Dir/state.json, written atomically
// (temp file, fsync, rename) and mirrored by an in-memory routing table
// that Handler reads. A client therefore never sees the Release of one
// publish with the Packages of another: every file of a publish is in
// place before any client can be sent there. aptly's own publish switch
// was not used: it rewrites the index files of one tree in place, one
// rename at a time, which leaves moments where Release and Packages
// disagree. Index files are also published by hash (Acquire-By-Hash), and
// Handler looks by-hash and pool requests up in the kept publishes too, so
// a client that read the previous InRelease just before a switch still
// gets the files it names. A folder per publish costs little: pool files
// are hard links to aptly's package pool, and only the index files are
// written anew. aptly's local repositories are not used: the working set
// of a component is the snapshot of its current publish, from which the
// next one is made.
//
// # Snapshots kept and rollback
//
// The KeepSnapshots newest publishes of each distribution (the current one
// included) stay on disk with their snapshots; older ones are dropped, and
// packages and pool files no snapshot refers to any more are deleted.
// Rollback publishes the package set of a kept publish again, as a new
// publish with a fresh Date and signature; the history records every
// publish (add, remove, rollback), by whom and what it changed.
//
// # Signing key
//
// The first Open makes an RSA-4096 OpenPGP key and writes it under
// Dir/keys: secring.gpg (mode 0600), pubring.gpg (binary, for apt's
// signed-by and gpgv --keyring) and pubring.asc (armored). Later opens
// reuse it; a secret keyring that cannot be read, or a public keyring
// whose secret keyring is gone, is an error naming the file — a new key is
// never made silently, since every client trusts the old one. Signatures
// are always armored with the CRC24 line that Debian 12's gpgv requires.
//
// # Refused input
//
// A file that is not a .deb, a .deb whose control file is broken, a
// package larger than MaxDebSize, or a package whose name, version and
// architecture are already in the repository (any distribution, since they
// share /<repo>/pool/) with different content is refused with an *Error
// naming the file and the problem, and nothing is published. The same
// package with the same content again is not an error: it is skipped, and
// an Add of nothing new publishes nothing.
package aptrepo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/aptly-dev/aptly/aptly"
	"github.com/aptly-dev/aptly/database"
	"github.com/aptly-dev/aptly/database/goleveldb"
	"github.com/aptly-dev/aptly/deb"
	"github.com/aptly-dev/aptly/files"
)

// Defaults for Options.
const (
	DefaultKeepSnapshots       = 10
	DefaultOrigin              = "appliance"
	DefaultMaxDebSize    int64 = 2 << 30 // 2 GiB
)

// maxDebsPerAdd bounds one Add.
const maxDebsPerAdd = 10000

// Options configure Repos.
type Options struct {
	// Dir holds everything: aptly's database (db/), its package pool
	// (pool/), the published trees (public/), the signing key (keys/), the
	// history (state.json) and staging space (tmp/). Required.
	Dir string
	// Logger receives what happens; discarded when nil.
	Logger *slog.Logger
	// KeepSnapshots is how many publishes of each distribution are kept
	// for rollback, the current one included; DefaultKeepSnapshots when 0.
	KeepSnapshots int
	// Origin and Label go into every Release file. Origin defaults to
	// DefaultOrigin; Label defaults to the repository name.
	Origin, Label string
	// MaxDebSize bounds one package file; DefaultMaxDebSize when 0.
	MaxDebSize int64
}

// Repos is the set of apt repositories under one directory. It is safe for
// concurrent use: changes take turns behind one mutex, while Handler serves
// without waiting for them.
type Repos struct {
	dir, public, tmp, statePath string
	log                         *slog.Logger
	keep                        int
	maxDeb                      int64
	origin, label               string
	signer                      *signer
	root                        *os.Root // the published trees, for Handler

	mu      sync.Mutex
	closed  bool
	db      database.Storage
	factory *deb.CollectionFactory
	pool    *files.PackagePool
	storage storageProvider
	st      *state

	routes atomic.Pointer[routes]
}

// storageProvider hands aptly the one published storage.
type storageProvider struct{ s *files.PublishedStorage }

func (p storageProvider) GetPublishedStorage(string) aptly.PublishedStorage { return p.s }

// Open opens (creating) the repositories under o.Dir. The first open makes
// the signing key; later opens reuse it and repair what a crash in the
// middle of a change left behind (a publish that was never switched in,
// unreferenced packages and pool files).
func Open(ctx context.Context, o Options) (*Repos, error) {
	if o.Dir == "" {
		return nil, &Error{Op: "open", Err: fmt.Errorf("%w: no directory", ErrInvalid)}
	}
	if o.KeepSnapshots < 0 || o.KeepSnapshots > maxHistory || o.MaxDebSize < 0 {
		return nil, &Error{Op: "open", Err: fmt.Errorf("%w: KeepSnapshots must be within 0…%d and MaxDebSize not negative", ErrInvalid, maxHistory)}
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, &Error{Op: "open", File: o.Dir, Err: err}
	}
	r := &Repos{
		dir:       dir,
		public:    filepath.Join(dir, "public"),
		tmp:       filepath.Join(dir, "tmp"),
		statePath: filepath.Join(dir, stateFile),
		log:       o.Logger,
		keep:      o.KeepSnapshots,
		maxDeb:    o.MaxDebSize,
		origin:    o.Origin,
		label:     o.Label,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.keep == 0 {
		r.keep = DefaultKeepSnapshots
	}
	if r.maxDeb == 0 {
		r.maxDeb = DefaultMaxDebSize
	}
	if r.origin == "" {
		r.origin = DefaultOrigin
	}
	for _, d := range []string{dir, filepath.Join(dir, "pool"), r.public} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, &Error{Op: "open", File: d, Err: err}
		}
	}
	// The database's lock keeps a second process (or Repos) off Dir: take
	// it before touching anything else.
	dbPath := filepath.Join(dir, "db")
	if r.db, err = goleveldb.NewOpenDB(dbPath); err != nil {
		return nil, &Error{Op: "open", File: dbPath, Err: fmt.Errorf("open aptly database (is another process using it?): %w", err)}
	}
	ok := false
	defer func() {
		if !ok {
			if r.root != nil {
				_ = r.root.Close()
			}
			_ = r.db.Close()
		}
	}()
	// Staging space: whatever a crash left there is garbage.
	if err := os.RemoveAll(r.tmp); err != nil {
		return nil, &Error{Op: "open", File: r.tmp, Err: err}
	}
	if err := os.MkdirAll(r.tmp, 0o700); err != nil {
		return nil, &Error{Op: "open", File: r.tmp, Err: err}
	}
	if r.signer, err = loadOrCreateKey(dir, r.origin+" apt repository"); err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	if r.st, err = loadState(r.statePath); err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	r.factory = deb.NewCollectionFactory(r.db)
	r.pool = files.NewPackagePool(filepath.Join(dir, "pool"), false)
	r.storage = storageProvider{files.NewPublishedStorage(r.public, "hardlink", "")}
	if r.root, err = os.OpenRoot(r.public); err != nil {
		return nil, &Error{Op: "open", File: r.public, Err: err}
	}
	if err := r.recover(ctx); err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	ok = true
	r.rebuildRoutes()
	r.log.Info("apt repositories open", "dir", dir, "key", fmt.Sprintf("%X", r.signer.entity.PrimaryKey.Fingerprint))
	return r, nil
}

// Close closes the database. Handler answers 503 afterwards.
func (r *Repos) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.routes.Store(nil)
	err := errors.Join(r.db.Close(), r.root.Close())
	if err != nil {
		return fmt.Errorf("close apt repositories: %w", err)
	}
	return nil
}

// PublicKey returns the signing key's public part, binary (for apt's
// signed-by= and gpgv --keyring) and ASCII-armored.
func (r *Repos) PublicKey() (binary, armored []byte) {
	return append([]byte(nil), r.signer.public...), append([]byte(nil), r.signer.armored...)
}

// lock takes the mutex, refusing if Repos are closed.
func (r *Repos) lock() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	return nil
}
