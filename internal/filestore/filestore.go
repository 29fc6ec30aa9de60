// Package filestore keeps the files that transfer bundles carry (NIM
// model-profile cache archives, drivers, ISOs) and serves them under
// /files/ with their SHA-256 hashes.
//
// An import is all or nothing. Its files are written to a staging folder
// while the bundle is read, each checked against its digest and size as it
// streams in, and they become visible together when Commit switches the
// index.
//
// On disk, in the store's folder:
//
//	index.json            the name → Entry map; replacing it (temporary
//	                      file, fsync, rename) is the only switch point
//	blobs/sha256/<hex>    the content, one file per digest, shared by every
//	                      name that holds it
//	.staging/<id>/<hex>   the blobs of an import not yet committed
//
// A crash at any point leaves the previous index intact and readable. Open
// removes what a crash leaves behind: staging folders, temporary index files
// and blobs no name refers to. One Store owns its folder: two processes must
// not open the same one.
//
// With InBucket (storage.backend s3) the index and the content are objects
// in a bucket instead, index.json and blobs/sha256/<hex> under the
// bucket's files/ prefix, and the folder holds only the staging area. A
// commit uploads the staged blobs (each verified as it streamed in, and
// its size checked in the bucket), then replaces index.json, which is the
// switch point there: a PUT appears whole. A read-only replica opens the
// same bucket read-only and follows the writer's index with Refresh.
package filestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

const (
	indexFile  = "index.json"
	stagingDir = ".staging"
	dirPerm    = 0o750
	filePerm   = 0o600
)

// Entry is one file in the store.
type Entry struct {
	// Name is where the file is served: /files/<name>. It may contain '/'
	// (subfolders); see Commit for what is refused.
	Name string `json:"name"`
	// Digest is "sha256:<hex>" of the content.
	Digest string `json:"digest"`
	// Size is the content's length in bytes; Commit fills it in.
	Size int64 `json:"size"`
	// Kind says what the file is: nim-profile, driver, iso, file…
	Kind    string `json:"kind"`
	Version string `json:"version,omitempty"`
	Refresh string `json:"refresh,omitempty"`
	// Source is where the file came from: a URL or a path on the
	// connected side.
	Source   string            `json:"source,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// ImportID is the id of the stage that committed the entry.
	ImportID string `json:"import_id,omitempty"`
	// Added is when the name first held this content; Commit fills it in.
	Added time.Time `json:"added"`
	// Previous is the digest this name held before it was replaced;
	// Commit fills it in.
	Previous string `json:"previous,omitempty"`
}

func (e Entry) clone() Entry {
	e.Metadata = maps.Clone(e.Metadata)
	return e
}

// snapshot is one committed index. It is never changed once published, so
// readers use it without a lock.
type snapshot struct {
	byName map[string]Entry
	sorted []Entry          // by name
	sizes  map[string]int64 // digest → size, for every digest a name holds
}

func newSnapshot(byName map[string]Entry) *snapshot {
	s := &snapshot{byName: byName, sizes: map[string]int64{}}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		e := byName[name]
		s.sorted = append(s.sorted, e)
		s.sizes[e.Digest] = e.Size
	}
	return s
}

// Store is the file store. Its methods are safe for concurrent use; commits
// take turns.
type Store struct {
	dir     string
	blobs   string // <dir>/blobs/sha256
	staging string // <dir>/.staging
	log     *slog.Logger
	// bucket, when set, holds the content and the index (InBucket);
	// readOnly stores never write it.
	bucket   Bucket
	readOnly bool

	mu  sync.Mutex // held by Commit
	cur atomic.Pointer[snapshot]
}

// Open opens the store in dir, creating the folder if needed. It removes
// what a crash may have left behind: staging folders, temporary index files
// and blobs that no name refers to. A nil log discards. With InBucket the
// index and content are read from the bucket (a read-only store cleans
// nothing there).
func Open(ctx context.Context, dir string, log *slog.Logger, opts ...Option) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir == "" {
		return nil, &Error{Op: "open", Err: errors.New("no folder given")}
	}
	s := &Store{
		dir:     dir,
		blobs:   filepath.Join(dir, "blobs", "sha256"),
		staging: filepath.Join(dir, stagingDir),
		log:     log,
	}
	for _, o := range opts {
		o(s)
	}
	dirs := []string{s.blobs, s.staging}
	if s.bucket != nil {
		dirs = []string{s.staging}
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, dirPerm); err != nil {
			return nil, &Error{Op: "open", Err: err}
		}
	}
	if err := s.cleanStaging(); err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	if s.bucket != nil {
		idx, err := s.readBucketIndex(ctx)
		if err != nil {
			return nil, &Error{Op: "open", Err: err}
		}
		snap := newSnapshot(idx)
		s.cur.Store(snap)
		if !s.readOnly {
			if err := s.removeUnreferencedObjects(ctx, snap); err != nil {
				return nil, &Error{Op: "open", Err: err}
			}
		}
		return s, nil
	}
	if err := s.removeTempIndexes(); err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	idx, err := readIndex(filepath.Join(dir, indexFile))
	if err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	snap := newSnapshot(idx)
	s.cur.Store(snap)
	if err := s.removeUnreferenced(snap); err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	for _, e := range snap.sorted {
		if _, err := os.Stat(s.blobPath(e.Digest)); err != nil {
			s.log.Error("file content missing", "name", e.Name, "digest", e.Digest, "err", err)
		}
	}
	return s, nil
}

// cleanStaging removes every staging folder: at Open no import is running.
func (s *Store) cleanStaging() error {
	ents, err := os.ReadDir(s.staging)
	if err != nil {
		return fmt.Errorf("clean staging: %w", err)
	}
	for _, d := range ents {
		if err := os.RemoveAll(filepath.Join(s.staging, d.Name())); err != nil {
			return fmt.Errorf("clean staging: %w", err)
		}
		s.log.Info("stale staging folder removed", "import", d.Name())
	}
	return nil
}

// removeTempIndexes removes index files a crash left half written.
func (s *Store) removeTempIndexes() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("clean temporary index files: %w", err)
	}
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), "."+indexFile+".tmp-") {
			if err := os.Remove(filepath.Join(s.dir, d.Name())); err != nil {
				return fmt.Errorf("clean temporary index files: %w", err)
			}
			s.log.Info("temporary index file removed", "file", d.Name())
		}
	}
	return nil
}

// removeUnreferenced removes the files in blobs/sha256 that no entry of
// snap holds: blobs moved in by a commit that crashed before its index
// switch. Only safe while no stage exists (at Open).
func (s *Store) removeUnreferenced(snap *snapshot) error {
	ents, err := os.ReadDir(s.blobs)
	if err != nil {
		return fmt.Errorf("clean blobs: %w", err)
	}
	for _, d := range ents {
		if !d.Type().IsRegular() {
			continue
		}
		if _, ok := snap.sizes["sha256:"+d.Name()]; ok {
			continue
		}
		if err := os.Remove(filepath.Join(s.blobs, d.Name())); err != nil {
			return fmt.Errorf("clean blobs: %w", err)
		}
		s.log.Info("unreferenced blob removed", "blob", d.Name())
	}
	return nil
}

func readIndex(path string) (map[string]Entry, error) {
	data, err := os.ReadFile(path) //nolint:gosec // G304: the store's own index
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]Entry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return parseIndex(data, path)
}

// parseIndex reads an index's JSON and checks every entry; where names it.
func parseIndex(data []byte, where string) (map[string]Entry, error) {
	var idx map[string]Entry
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("read %s: %w: %w", where, ErrCorrupt, err)
	}
	if idx == nil {
		idx = map[string]Entry{}
	}
	for name, e := range idx {
		if e.Name != name {
			return nil, fmt.Errorf("read %s: %w: entry %q names itself %q", where, ErrCorrupt, name, e.Name)
		}
		if err := validateName(name); err != nil {
			return nil, fmt.Errorf("read %s: %w: %w", where, ErrCorrupt, err)
		}
		if _, err := parseDigest(e.Digest); err != nil {
			return nil, fmt.Errorf("read %s: %w: %q: %w", where, ErrCorrupt, name, err)
		}
		if e.Size < 0 {
			return nil, fmt.Errorf("read %s: %w: %q: negative size", where, ErrCorrupt, name)
		}
	}
	return idx, nil
}

// writeIndex replaces index.json: temporary file, fsync, rename, fsync of
// the folder. switched tells whether the rename happened, after which the
// new index is what a restart reads even when the error is not nil.
func (s *Store) writeIndex(ctx context.Context, idx map[string]Entry) (switched bool, err error) {
	path := filepath.Join(s.dir, indexFile)
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if s.bucket != nil {
		if err := s.writeBucketIndex(ctx, append(data, '\n')); err != nil {
			return false, err
		}
		return true, nil
	}
	tmp, err := os.CreateTemp(s.dir, "."+indexFile+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if !switched {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, fsutil.SyncDir(s.dir)
}

// blobPath is where the content of digest lives once committed.
func (s *Store) blobPath(digest string) string {
	return filepath.Join(s.blobs, strings.TrimPrefix(digest, "sha256:"))
}

// List returns every entry, sorted by name.
func (s *Store) List() []Entry {
	snap := s.cur.Load()
	out := make([]Entry, len(snap.sorted))
	for i, e := range snap.sorted {
		out[i] = e.clone()
	}
	return out
}

// Get returns the entry served at /files/<name>.
func (s *Store) Get(name string) (Entry, bool) {
	e, ok := s.cur.Load().byName[name]
	return e.clone(), ok
}

// HasDigest reports whether some name holds content with this digest, so an
// import can leave it out or commit a new name for it without staging it.
func (s *Store) HasDigest(digest string) bool {
	_, ok := s.cur.Load().sizes[digest]
	return ok
}

// Commit makes the entries visible, all at once. Every entry's digest must
// be staged in st or already held by some name; a name is refused when it
// is empty, absolute, has an empty, "." or ".." segment, a segment over 255
// bytes or a character that is not printable (or a backslash). Nothing
// changes when an entry is refused, and st stays open.
//
// Commit moves the staged blobs the entries hold into blobs/sha256, then
// replaces the index (temporary file, fsync, rename). It fills in Size,
// Added and Previous (ImportID and Kind when empty: the stage's id and
// "file"), returns the entries as stored, removes the blobs no name holds
// any more, and discards st. A name given the content it already held keeps
// its Added and Previous.
func (s *Store) Commit(ctx context.Context, st *Stage, entries []Entry) ([]Entry, error) {
	if st == nil || st.s != s {
		return nil, &Error{Op: "commit", Err: ErrStageClosed}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	fail := func(e Entry, err error) ([]Entry, error) {
		return nil, &Error{Op: "commit", Import: st.id, Name: e.Name, Digest: e.Digest, Err: err}
	}
	if st.closed {
		return fail(Entry{}, ErrStageClosed)
	}
	if err := ctx.Err(); err != nil {
		return fail(Entry{}, err)
	}
	old := s.cur.Load()

	// Check everything before touching anything.
	out := make([]Entry, 0, len(entries))
	seen := map[string]bool{}
	var move []string // staged digests to move into blobs/, each once
	for _, e := range entries {
		if err := validateName(e.Name); err != nil {
			return fail(e, err)
		}
		if seen[e.Name] {
			return fail(e, ErrDuplicateName)
		}
		seen[e.Name] = true
		if _, err := parseDigest(e.Digest); err != nil {
			return fail(e, err)
		}
		size, staged := st.blobs[e.Digest]
		if staged {
			if !slices.Contains(move, e.Digest) {
				move = append(move, e.Digest)
			}
		} else {
			var stored bool
			size, stored = old.sizes[e.Digest]
			if stored {
				stored = s.holds(ctx, e.Digest, size)
			}
			if !stored {
				return fail(e, ErrMissingBlob)
			}
		}
		if e.Size != 0 && e.Size != size {
			return fail(e, fmt.Errorf("%w: entry says %d bytes, content has %d", ErrSizeMismatch, e.Size, size))
		}
		e = e.clone()
		e.Size = size
		if e.Kind == "" {
			e.Kind = "file"
		}
		if e.ImportID == "" {
			e.ImportID = st.id
		}
		out = append(out, e)
	}

	// Move the staged blobs in. They are not visible yet: only names in
	// the index are served. On failure they go back to the stage.
	moved, undo, err := s.moveIn(ctx, st, move)
	if err != nil {
		return nil, err // an *Error naming the import and the digest
	}
	if err := ctx.Err(); err != nil {
		undo()
		return fail(Entry{}, err)
	}

	now := time.Now().UTC()
	next := make(map[string]Entry, len(old.byName)+len(out))
	maps.Copy(next, old.byName)
	for i, e := range out {
		switch prev, had := old.byName[e.Name]; {
		case had && prev.Digest == e.Digest:
			e.Added, e.Previous = prev.Added, prev.Previous
		case had:
			e.Added, e.Previous = now, prev.Digest
		default:
			e.Added, e.Previous = now, ""
		}
		out[i] = e
		next[e.Name] = e
	}
	switched, err := s.writeIndex(ctx, next)
	if !switched {
		undo()
		return fail(Entry{}, err)
	}
	if err != nil {
		// The new index is in place and a restart reads it; only the
		// folder's fsync failed. Going back is no safer than going on.
		s.log.Error("index folder not synced", "import", st.id, "err", err)
	}
	snap := newSnapshot(next)
	s.cur.Store(snap)

	st.closed = true
	st.blobs = nil
	if err := os.RemoveAll(st.dir); err != nil {
		s.log.Warn("staging folder not removed", "import", st.id, "err", err)
	}
	removed := 0
	for d := range old.sizes {
		if _, ok := snap.sizes[d]; ok {
			continue
		}
		if err := s.removeBlob(ctx, d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("unreferenced blob not removed", "digest", d, "err", err)
			continue
		}
		removed++
	}
	s.log.Info("files committed", "import", st.id, "files", len(out), "new_blobs", len(moved), "removed_blobs", removed)

	res := make([]Entry, len(out))
	for i, e := range out {
		res[i] = e.clone()
	}
	return res, nil
}

// holds tells whether the stored content of digest is there, with size
// bytes in a bucket.
func (s *Store) holds(ctx context.Context, digest string, size int64) bool {
	if s.bucket != nil {
		have, err := s.bucket.Size(ctx, blobKey(digest))
		return err == nil && have == size
	}
	_, err := os.Stat(s.blobPath(digest))
	return err == nil
}

// moveIn puts the staged blobs of digests where the store keeps content:
// renamed into blobs/sha256 (and the folder synced), or uploaded to the
// bucket. It returns the digests moved and how to take them back out.
func (s *Store) moveIn(ctx context.Context, st *Stage, digests []string) (moved []string, undo func(), err error) {
	if s.bucket != nil {
		undo = func() {
			for _, d := range moved {
				if err := s.bucket.Delete(context.WithoutCancel(ctx), blobKey(d)); err != nil {
					s.log.Warn("uploaded blob not removed", "import", st.id, "digest", d, "err", err)
				}
			}
		}
		for _, d := range digests {
			uploaded, err := s.uploadBlob(ctx, st, d, st.blobs[d])
			if uploaded {
				moved = append(moved, d)
			}
			if err != nil {
				undo()
				return nil, nil, &Error{Op: "commit", Import: st.id, Digest: d, Err: err}
			}
		}
		return moved, undo, nil
	}
	undo = func() {
		for _, d := range moved {
			if err := os.Rename(s.blobPath(d), st.path(d)); err != nil {
				s.log.Warn("blob not moved back to its stage", "import", st.id, "digest", d, "err", err)
			}
		}
	}
	for _, d := range digests {
		dst := s.blobPath(d)
		if _, err := os.Lstat(dst); err == nil {
			continue // already stored (the same content: it has the same digest)
		} else if !errors.Is(err, fs.ErrNotExist) {
			undo()
			return nil, nil, &Error{Op: "commit", Import: st.id, Digest: d, Err: err}
		}
		if err := os.Rename(st.path(d), dst); err != nil {
			undo()
			return nil, nil, &Error{Op: "commit", Import: st.id, Digest: d, Err: err}
		}
		moved = append(moved, d)
	}
	if len(moved) > 0 {
		// The renames must be durable before an index names them.
		if err := fsutil.SyncDir(s.blobs); err != nil {
			undo()
			return nil, nil, &Error{Op: "commit", Import: st.id, Err: err}
		}
	}
	return moved, undo, nil
}

// removeBlob removes the stored content of digest.
func (s *Store) removeBlob(ctx context.Context, digest string) error {
	if s.bucket != nil {
		return s.bucket.Delete(context.WithoutCancel(ctx), blobKey(digest))
	}
	return os.Remove(s.blobPath(digest))
}
