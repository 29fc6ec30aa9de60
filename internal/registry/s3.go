package registry

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/registry/storage"
)

// S3 is an S3-compatible object store (storage.S3).
type S3 = storage.S3

// LockKey is the driver key of the lock object naming the appliance that
// writes a bucket.
const LockKey = storage.LockKey

// Errors of an object store that is not usable, each named at start-up
// (storage's, named here for the registry's callers).
var (
	ErrStoreUnreachable = storage.ErrStoreUnreachable
	ErrStoreCredentials = storage.ErrStoreCredentials
	ErrNoBucket         = storage.ErrNoBucket
	ErrWriterLocked     = storage.ErrWriterLocked
	ErrNoWriter         = storage.ErrNoWriter
)

// copyData is LinkData in an object store, which has no hard links: the
// canonical data copied under want's key through the driver, appearing
// whole at Commit or not at all.
func (r *Registry) copyData(ctx context.Context, want, canonical digest.Digest) error {
	dst := storage.BlobDataKey(want)
	if _, err := r.driver.Stat(ctx, dst); err == nil {
		return nil
	}
	in, err := r.driver.Reader(ctx, storage.BlobDataKey(canonical), 0)
	if err != nil {
		return fmt.Errorf("copy blob data: %w", err)
	}
	defer in.Close()
	w, err := r.driver.Writer(ctx, dst, false)
	if err != nil {
		return fmt.Errorf("copy blob data: %w", err)
	}
	if _, err := io.Copy(w, in); err != nil {
		_ = w.Cancel(ctx)
		return fmt.Errorf("copy blob data: %w", err)
	}
	if err := w.Commit(ctx); err != nil {
		_ = w.Cancel(ctx)
		return fmt.Errorf("copy blob data: %w", err)
	}
	return w.Close()
}

// Ready tells whether the registry's storage answers: its root folder,
// or in an object store the lock object this writer holds.
func (r *Registry) Ready(ctx context.Context) error {
	if !r.onS3 {
		_, err := os.Stat(r.rootDir)
		return err
	}
	// The lock object: the writer's own, or on a replica the writer's.
	if _, err := r.driver.Stat(ctx, LockKey); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	return nil
}

// FileObjects are the objects of the file store (storage.FileObjects).
type FileObjects = storage.FileObjects

// FileObjects returns the file store's objects in the registry's bucket,
// through its own driver (read-only on a replica), and false on the
// filesystem backend.
func (r *Registry) FileObjects() (FileObjects, bool) {
	if !r.onS3 {
		return FileObjects{}, false
	}
	return storage.NewFileObjects(r.driver), true
}
