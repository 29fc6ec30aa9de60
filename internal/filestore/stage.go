package filestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// copyBuffer is the buffer size Write streams with.
const copyBuffer = 256 << 10

// Stage is the staging folder of one import: <dir>/.staging/<id>. Its
// blobs become visible only through Store.Commit. Its methods are safe for
// concurrent use.
type Stage struct {
	s   *Store
	id  string
	dir string

	mu     sync.Mutex
	blobs  map[string]int64 // digest → size of the blobs in dir
	closed bool
}

// Stage creates the staging folder of one import. The id ([a-z0-9-]+, at
// most 128 bytes) names the import in errors, logs and Entry.ImportID; it
// is refused while another stage of that id is open.
func (s *Store) Stage(id string) (*Stage, error) {
	if err := validateID(id); err != nil {
		return nil, &Error{Op: "stage", Err: err}
	}
	if s.readOnly {
		return nil, &Error{Op: "stage", Import: id, Err: ErrReadOnly}
	}
	dir := filepath.Join(s.staging, id)
	if err := os.Mkdir(dir, dirPerm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = ErrStageExists
		}
		return nil, &Error{Op: "stage", Import: id, Err: err}
	}
	return &Stage{s: s, id: id, dir: dir, blobs: map[string]int64{}}, nil
}

// path is where the blob of digest lives in the stage.
func (st *Stage) path(digest string) string {
	return filepath.Join(st.dir, strings.TrimPrefix(digest, "sha256:"))
}

func (st *Stage) fail(digest string, err error) error {
	return &Error{Op: "write", Import: st.id, Digest: digest, Err: err}
}

// Write streams r into the stage, checking its SHA-256 and its size as it
// goes, and fsyncs it. Content that does not match is refused with an error
// naming the digest (ErrDigestMismatch, ErrSizeMismatch) and nothing of it
// is kept.
//
// A digest already staged, or already in the store, is not written again
// and r is not read. Content already in the store is linked into the stage,
// so it stays available to this import even if another commit meanwhile
// replaces the last name that held it. A store in a bucket has no links:
// there r is streamed into the stage again, and Commit uploads only what
// the bucket does not hold.
func (st *Stage) Write(ctx context.Context, digest string, size int64, r io.Reader) error {
	if _, err := parseDigest(digest); err != nil {
		return st.fail(digest, err)
	}
	if size < 0 {
		return st.fail(digest, fmt.Errorf("%w: negative size %d", ErrSizeMismatch, size))
	}
	st.mu.Lock()
	closed := st.closed
	have, staged := st.blobs[digest]
	st.mu.Unlock()
	switch {
	case closed:
		return st.fail(digest, ErrStageClosed)
	case staged && have != size:
		return st.fail(digest, fmt.Errorf("%w: staged with %d bytes, now announced with %d", ErrSizeMismatch, have, size))
	case staged:
		return nil
	}
	if err := ctx.Err(); err != nil {
		return st.fail(digest, err)
	}
	if have, stored := st.s.cur.Load().sizes[digest]; stored && st.s.bucket == nil {
		if have != size {
			return st.fail(digest, fmt.Errorf("%w: stored with %d bytes, announced with %d", ErrSizeMismatch, have, size))
		}
		err := os.Link(st.s.blobPath(digest), st.path(digest))
		if err == nil || errors.Is(err, fs.ErrExist) {
			return st.record(digest, size)
		}
		// The blob went away (its last name was replaced) or the file
		// system has no hard links: take the content from r.
	}
	return st.stream(ctx, digest, size, r)
}

// stream copies r into a temporary file, verifies it and renames it to the
// blob's name in the stage.
func (st *Stage) stream(ctx context.Context, digest string, size int64, r io.Reader) error {
	hexd := strings.TrimPrefix(digest, "sha256:")
	tmp, err := os.CreateTemp(st.dir, "."+hexd+".tmp-*")
	if err != nil {
		if st.isClosed() {
			err = ErrStageClosed
		}
		return st.fail(digest, err)
	}
	kept := false
	defer func() {
		if !kept {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	limit := size
	if limit < math.MaxInt64 {
		limit++ // one byte more than announced is enough to tell
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), io.LimitReader(fsutil.ContextReader(ctx, r), limit), make([]byte, copyBuffer))
	switch {
	case err != nil:
		return st.fail(digest, fmt.Errorf("copy: %w", err))
	case n > size:
		return st.fail(digest, fmt.Errorf("%w: more than the announced %d bytes", ErrSizeMismatch, size))
	case n < size:
		return st.fail(digest, fmt.Errorf("%w: %d bytes, %d announced", ErrSizeMismatch, n, size))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hexd {
		return st.fail(digest, fmt.Errorf("%w: content is sha256:%s", ErrDigestMismatch, got))
	}
	if err := tmp.Sync(); err != nil {
		return st.fail(digest, fmt.Errorf("sync: %w", err))
	}
	if err := tmp.Close(); err != nil {
		return st.fail(digest, err)
	}
	if err := os.Rename(tmp.Name(), st.path(digest)); err != nil {
		if st.isClosed() {
			err = ErrStageClosed
		}
		return st.fail(digest, err)
	}
	kept = true
	return st.record(digest, size)
}

// record notes a blob now in the stage's folder; when the stage was closed
// meanwhile the blob is removed again.
func (st *Stage) record(digest string, size int64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		_ = os.Remove(st.path(digest))
		_ = os.Remove(st.dir) // emptied by Discard or Commit; Open removes what is left
		return st.fail(digest, ErrStageClosed)
	}
	st.blobs[digest] = size
	return nil
}

func (st *Stage) isClosed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.closed
}

// Has reports whether an entry with this digest could be committed now: the
// content is staged, or already in the store.
func (st *Stage) Has(digest string) bool {
	_, ok := st.Path(digest)
	return ok
}

// Path returns the local path of the content of digest, staged or already
// in the store, for callers that need a file (the apt repository). Staged
// paths are valid until the stage is committed or discarded. Content of a
// store in a bucket has a local path only once staged.
func (st *Stage) Path(digest string) (string, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return "", false
	}
	if _, ok := st.blobs[digest]; ok {
		return st.path(digest), true
	}
	if _, ok := st.s.cur.Load().sizes[digest]; ok && st.s.bucket == nil {
		return st.s.blobPath(digest), true
	}
	return "", false
}

// Discard removes the staging folder and what it holds. Discarding a stage
// already committed or discarded does nothing, so callers may defer it.
func (st *Stage) Discard() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	st.blobs = nil
	st.mu.Unlock()
	if err := os.RemoveAll(st.dir); err != nil {
		return &Error{Op: "discard", Import: st.id, Err: err}
	}
	return nil
}
