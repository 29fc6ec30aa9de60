package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// ErrReplica marks a write a read-only replica's driver refused.
var ErrReplica = errors.New("read-only replica")

// ReadOnlyDriver is a replica's storage driver: reads go to the object
// store, writes are refused.
type ReadOnlyDriver struct{ storagedriver.StorageDriver }

func refusedWrite(op, p string) error {
	return fmt.Errorf("%w: %s %s refused: a replica never writes the bucket", ErrReplica, op, p)
}

// PutContent is refused.
func (ReadOnlyDriver) PutContent(_ context.Context, p string, _ []byte) error {
	return refusedWrite("put", p)
}

// Writer is refused.
func (ReadOnlyDriver) Writer(_ context.Context, p string, _ bool) (storagedriver.FileWriter, error) {
	return nil, refusedWrite("write", p)
}

// Move is refused.
func (ReadOnlyDriver) Move(_ context.Context, src, _ string) error { return refusedWrite("move", src) }

// Delete is refused.
func (ReadOnlyDriver) Delete(_ context.Context, p string) error { return refusedWrite("delete", p) }

// StateKey is the driver key of the folder of small objects through which
// a writer publishes its state to its replicas (under the prefix).
const StateKey = "/appliance/state"

// Objects are the small objects under StateKey in the object store.
// Get of a missing object is an error matching fs.ErrNotExist. On a
// replica every Put and Delete is refused.
type Objects struct{ d storagedriver.StorageDriver }

// NewObjects returns the state's objects in d.
func NewObjects(d storagedriver.StorageDriver) Objects { return Objects{d: d} }

func objectKey(name string) (string, error) {
	if name == "" || strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("state object %q: want a plain name", name)
	}
	return path.Join(StateKey, name), nil
}

// Get reads one object.
func (o Objects) Get(ctx context.Context, name string) ([]byte, error) {
	k, err := objectKey(name)
	if err != nil {
		return nil, err
	}
	data, err := o.d.GetContent(ctx, k)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil, fmt.Errorf("state object %s: %w", name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("state object %s: %w", name, err)
	}
	return data, nil
}

// Put writes one object whole (an S3 PUT appears whole or not at all).
func (o Objects) Put(ctx context.Context, name string, data []byte) error {
	k, err := objectKey(name)
	if err != nil {
		return err
	}
	if err := o.d.PutContent(ctx, k, data); err != nil {
		return fmt.Errorf("state object %s: %w", name, err)
	}
	return nil
}

// Delete removes one object; a missing one is no error.
func (o Objects) Delete(ctx context.Context, name string) error {
	k, err := objectKey(name)
	if err != nil {
		return err
	}
	err = o.d.Delete(ctx, k)
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return fmt.Errorf("state object %s: %w", name, err)
	}
	return nil
}
