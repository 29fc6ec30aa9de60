// Package fileobjects keeps the file store's index and content as objects
// in the registry's bucket (storage.backend s3), under the prefix's files/
// folder beside distribution's docker/ and the appliance/ folder of the
// lock and the replicas' state. It goes through the registry's own
// storage driver, so the same client, credentials and CA, and on a
// read-only replica that driver refuses every write. It provides
// filestore.Bucket; only packages under internal/registry import
// distribution.
package fileobjects

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// Key is the driver key of the folder that holds the file store's
// index and content on an object store (under the prefix, beside
// distribution's docker/ and the appliance/ folder of the lock and state).
const Key = "/files"

// smallObject is the size under which Objects.Upload writes an object
// in one PUT rather than a multipart upload.
const smallObject = 8 << 20

// Objects are the file store's objects under Key, through the registry's
// own driver. A missing object is an error matching fs.ErrNotExist; on a
// replica every write is refused.
type Objects struct{ d storagedriver.StorageDriver }

// New returns the file store's objects in d.
func New(d storagedriver.StorageDriver) Objects { return Objects{d: d} }

func fileKey(key string) (string, error) {
	clean := path.Clean("/" + key)
	if key == "" || clean != "/"+key || strings.Contains(key, "..") {
		return "", fmt.Errorf("file store object %q: want a clean relative key", key)
	}
	return Key + clean, nil
}

func notFound(key string, err error) error {
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return fmt.Errorf("file store object %s: %w", key, fs.ErrNotExist)
	}
	return fmt.Errorf("file store object %s: %w", key, err)
}

// Upload writes the object from r: in one PUT when it is small, else as a
// multipart upload that becomes the object only when it completes (a
// writer killed meanwhile leaves no object, only parts for the bucket's
// lifecycle rule to remove).
func (o Objects) Upload(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	k, err := fileKey(key)
	if err != nil {
		return err
	}
	if size < smallObject {
		data, err := io.ReadAll(io.LimitReader(r, size+1))
		if err != nil {
			return fmt.Errorf("file store object %s: %w", key, err)
		}
		if int64(len(data)) != size {
			return fmt.Errorf("file store object %s: %d bytes to upload, %d announced", key, len(data), size)
		}
		if err := o.d.PutContent(ctx, k, data); err != nil {
			return notFound(key, err)
		}
		return nil
	}
	w, err := o.d.Writer(ctx, k, false)
	if err != nil {
		return notFound(key, err)
	}
	defer func() {
		if err != nil {
			_ = w.Cancel(context.WithoutCancel(ctx))
		}
	}()
	n, err := io.Copy(w, r)
	if err != nil {
		return fmt.Errorf("file store object %s: %w", key, err)
	}
	if n != size {
		return fmt.Errorf("file store object %s: %d bytes to upload, %d announced", key, n, size)
	}
	if err := w.Commit(ctx); err != nil {
		return fmt.Errorf("file store object %s: %w", key, err)
	}
	return w.Close()
}

// Open reads the object from offset.
func (o Objects) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	k, err := fileKey(key)
	if err != nil {
		return nil, err
	}
	if offset == 0 && key == path.Base(key) {
		// Small objects at the top (the index): one GET, read whole.
		data, err := o.d.GetContent(ctx, k)
		if err != nil {
			return nil, notFound(key, err)
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	rc, err := o.d.Reader(ctx, k, offset)
	if err != nil {
		return nil, notFound(key, err)
	}
	return rc, nil
}

// Size is the object's length.
func (o Objects) Size(ctx context.Context, key string) (int64, error) {
	k, err := fileKey(key)
	if err != nil {
		return 0, err
	}
	fi, err := o.d.Stat(ctx, k)
	if err != nil {
		return 0, notFound(key, err)
	}
	if fi.IsDir() {
		return 0, fmt.Errorf("file store object %s: a folder", key)
	}
	return fi.Size(), nil
}

// Delete removes the object; a missing one is no error.
func (o Objects) Delete(ctx context.Context, key string) error {
	k, err := fileKey(key)
	if err != nil {
		return err
	}
	err = o.d.Delete(ctx, k)
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return fmt.Errorf("file store object %s: %w", key, err)
	}
	return nil
}

// List names the objects directly under the folder dir.
func (o Objects) List(ctx context.Context, dir string) ([]string, error) {
	k, err := fileKey(dir)
	if err != nil {
		return nil, err
	}
	keys, err := o.d.List(ctx, k)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("file store folder %s: %w", dir, err)
	}
	names := make([]string, 0, len(keys))
	for _, key := range keys {
		names = append(names, path.Base(key))
	}
	return names, nil
}
