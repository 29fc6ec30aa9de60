// Package directfs is distribution's filesystem storage driver with one
// change: the data of a blob upload is written with O_DIRECT, in large
// aligned writes, instead of through the page cache.
//
// On the machines the appliance runs on (virtual machines, where a page
// of the guest's cache the host has not backed yet costs a fault to
// touch), copying gigabytes of layers into the page cache costs more CPU
// than everything else an import does, and the cache holds bytes nobody
// reads back soon: a layer is written once and fetched later by other
// machines. Direct writes move the bytes from the import's buffers to the
// disk without that copy; the fsync at commit then has nothing left to
// write back. Everything else (links, manifests' revision files, the
// upload's small files, resumed uploads, reads) goes through the wrapped
// driver unchanged, so the layout on disk stays distribution's.
//
// The writing is fsutil.DirectWriter's, with its fallback to ordinary
// writes where the file system does not take O_DIRECT.
package directfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// Name is the driver's name in distribution's driver factory, for an
// App built from a configuration (Register).
const Name = "appliance-directfs"

// Driver is the filesystem driver with direct blob-data writes.
type Driver struct {
	*filesystem.Driver
	root string
}

// New returns the driver over the folder root, as distribution's
// filesystem driver with rootdirectory root.
func New(root string) (*Driver, error) {
	d, err := filesystem.FromParameters(map[string]any{"rootdirectory": root})
	if err != nil {
		return nil, fmt.Errorf("filesystem storage at %s: %w", root, err)
	}
	return &Driver{Driver: d, root: root}, nil
}

var registerOnce sync.Once

// Register adds the driver to distribution's driver factory under Name
// (once per process), with the filesystem driver's "rootdirectory"
// parameter.
func Register() {
	registerOnce.Do(func() { factory.Register(Name, driverFactory{}) })
}

type driverFactory struct{}

func (driverFactory) Create(_ context.Context, params map[string]any) (storagedriver.StorageDriver, error) {
	root, _ := params["rootdirectory"].(string)
	if root == "" {
		return nil, errors.New("directfs: rootdirectory is required")
	}
	return New(root)
}

// isUploadData tells whether subPath is the data file of a blob upload
// (…/_uploads/<id>/data in distribution's layout): the only large file
// the registry writes.
func isUploadData(subPath string) bool {
	return path.Base(subPath) == "data" && strings.Contains(subPath, "/_uploads/")
}

// Writer returns a direct writer for a new upload's data and the wrapped
// driver's writer for everything else, including an append to an upload
// (a resumed chunked push), whose offset need not be aligned.
func (d *Driver) Writer(ctx context.Context, subPath string, appendTo bool) (storagedriver.FileWriter, error) {
	if appendTo || !isUploadData(subPath) || !storagedriver.PathRegexp.MatchString(subPath) {
		return d.Driver.Writer(ctx, subPath, appendTo)
	}
	full := filepath.Join(d.root, filepath.FromSlash(subPath))
	if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return newWriter(f), nil
}

// writer is a distribution FileWriter over fsutil.DirectWriter.
type writer struct {
	f  *os.File
	dw *fsutil.DirectWriter

	closed, committed, cancelled bool
}

func newWriter(f *os.File) *writer {
	return &writer{f: f, dw: fsutil.NewDirectWriter(f)}
}

func (w *writer) check() error {
	switch {
	case w.closed:
		return errors.New("already closed")
	case w.committed:
		return errors.New("already committed")
	case w.cancelled:
		return errors.New("already cancelled")
	}
	return nil
}

func (w *writer) Write(p []byte) (int, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	return w.dw.Write(p)
}

func (w *writer) Size() int64 { return w.dw.Size() }

// Close makes what was written durable, as the filesystem driver's
// writer does, so that an upload can be resumed.
func (w *writer) Close() error {
	if w.closed {
		return errors.New("already closed")
	}
	w.closed = true
	var err error
	if !w.committed && !w.cancelled {
		err = w.dw.Finish()
	}
	return errors.Join(err, w.f.Close())
}

func (w *writer) Cancel(context.Context) error {
	if w.closed {
		return errors.New("already closed")
	}
	w.cancelled, w.closed = true, true
	w.dw.Release()
	_ = w.f.Close()
	return os.Remove(w.f.Name())
}

func (w *writer) Commit(context.Context) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.dw.Finish(); err != nil {
		return err
	}
	w.committed = true
	return nil
}
