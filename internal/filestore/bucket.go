package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Bucket is an object store that holds the committed content and the
// index instead of the store's folder (storage.backend s3: the registry's
// bucket, under its own prefix). Keys are relative to that prefix
// ("index.json", "blobs/sha256/<hex>"). A missing object is an error
// matching fs.ErrNotExist.
type Bucket interface {
	// Upload writes the object from r, size bytes. It appears whole once
	// the upload completes, or not at all.
	Upload(ctx context.Context, key string, r io.Reader, size int64) error
	// Open reads the object from offset.
	Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error)
	// Size is the object's length.
	Size(ctx context.Context, key string) (int64, error)
	// Delete removes the object; a missing one is no error.
	Delete(ctx context.Context, key string) error
	// List names the objects directly under the folder dir ("blobs/sha256"),
	// without the folder; a missing folder lists nothing.
	List(ctx context.Context, dir string) ([]string, error)
}

// Option changes how Open opens a store.
type Option func(*Store)

// InBucket keeps the committed content and the index in b instead of the
// folder, which then holds only the staging area (imports are streamed and
// verified on local disk, then uploaded before the index names them). A
// readOnly store (a read-only replica) never writes b: Stage is refused,
// and Refresh follows the index its writer commits.
func InBucket(b Bucket, readOnly bool) Option {
	return func(s *Store) { s.bucket, s.readOnly = b, readOnly }
}

// ErrReadOnly is a stage asked of a read-only replica's store.
var ErrReadOnly = errors.New("read-only replica: files are imported on the writer")

const (
	indexKey = indexFile
	blobsKey = "blobs/sha256"
	// maxIndex bounds the index read from a bucket.
	maxIndex = 256 << 20
)

func blobKey(digest string) string { return blobsKey + "/" + strings.TrimPrefix(digest, "sha256:") }

// readBucketIndex reads the index object: empty when there is none.
func (s *Store) readBucketIndex(ctx context.Context) (map[string]Entry, error) {
	rc, err := s.bucket.Open(ctx, indexKey, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]Entry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s from the bucket: %w", indexKey, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxIndex+1))
	if err != nil {
		return nil, fmt.Errorf("read %s from the bucket: %w", indexKey, err)
	}
	if len(data) > maxIndex {
		return nil, fmt.Errorf("read %s from the bucket: %w: over %d bytes", indexKey, ErrCorrupt, maxIndex)
	}
	return parseIndex(data, "bucket object "+indexKey)
}

// writeBucketIndex replaces the index object, the switch point of a
// commit in a bucket: a PUT appears whole, so a reader sees the old index
// or the new one.
func (s *Store) writeBucketIndex(ctx context.Context, data []byte) error {
	if err := s.bucket.Upload(ctx, indexKey, bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("write %s to the bucket: %w", indexKey, err)
	}
	return nil
}

// uploadBlob copies a staged blob, verified as it streamed in, to the
// bucket and checks the object's size. Content the bucket already holds
// with the right size is not uploaded again.
func (s *Store) uploadBlob(ctx context.Context, st *Stage, digest string, size int64) (uploaded bool, err error) {
	if have, err := s.bucket.Size(ctx, blobKey(digest)); err == nil && have == size {
		return false, nil
	}
	f, err := os.Open(st.path(digest))
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := s.bucket.Upload(ctx, blobKey(digest), f, size); err != nil {
		return false, fmt.Errorf("upload: %w", err)
	}
	have, err := s.bucket.Size(ctx, blobKey(digest))
	if err != nil {
		return true, fmt.Errorf("upload: %w", err)
	}
	if have != size {
		return true, fmt.Errorf("upload: %w: the bucket holds %d bytes, %d were sent", ErrSizeMismatch, have, size)
	}
	return true, nil
}

// removeUnreferencedObjects removes the blobs in the bucket that no entry
// of snap holds (uploaded by a commit that stopped before its index
// switch). Only the writer does it, at Open.
func (s *Store) removeUnreferencedObjects(ctx context.Context, snap *snapshot) error {
	names, err := s.bucket.List(ctx, blobsKey)
	if err != nil {
		return fmt.Errorf("clean blobs in the bucket: %w", err)
	}
	for _, n := range names {
		if _, ok := snap.sizes["sha256:"+n]; ok {
			continue
		}
		if err := s.bucket.Delete(ctx, blobsKey+"/"+n); err != nil {
			return fmt.Errorf("clean blobs in the bucket: %w", err)
		}
		s.log.Info("unreferenced blob removed", "blob", n)
	}
	return nil
}

// Refresh reads the index again from the bucket and serves it from then
// on: a read-only replica follows its writer's commits this way (at every
// poll, and when a file it serves is gone). It does nothing for a store
// in a folder, whose index only this process changes.
func (s *Store) Refresh(ctx context.Context) error {
	if s.bucket == nil {
		return nil
	}
	idx, err := s.readBucketIndex(ctx)
	if err != nil {
		return &Error{Op: "refresh", Err: err}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Store(newSnapshot(idx))
	return nil
}

// objectReader is an io.ReadSeeker over an object of known size for
// http.ServeContent: a seek only moves the offset, and the object is
// opened at it by the next read.
type objectReader struct {
	ctx    context.Context
	b      Bucket
	key    string
	size   int64
	offset int64
	rc     io.ReadCloser
}

func (o *objectReader) Read(p []byte) (int, error) {
	if o.offset >= o.size {
		return 0, io.EOF
	}
	if o.rc == nil {
		rc, err := o.b.Open(o.ctx, o.key, o.offset)
		if err != nil {
			return 0, err
		}
		o.rc = rc
	}
	n, err := o.rc.Read(p)
	o.offset += int64(n)
	return n, err
}

func (o *objectReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += o.offset
	case io.SeekEnd:
		offset += o.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start")
	}
	if offset != o.offset && o.rc != nil {
		_ = o.rc.Close()
		o.rc = nil
	}
	o.offset = offset
	return offset, nil
}

func (o *objectReader) Close() error {
	if o.rc == nil {
		return nil
	}
	return o.rc.Close()
}
