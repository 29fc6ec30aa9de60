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
// Where the file system does not take O_DIRECT (tmpfs, some network or
// FUSE file systems), the writer falls back to ordinary writes, at open
// or at the first refused write.
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
	"unsafe"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"golang.org/x/sys/unix"
)

// Name is the driver's name in distribution's driver factory, for an
// App built from a configuration (Register).
const Name = "appliance-directfs"

const (
	// align is the alignment O_DIRECT asks of offsets, lengths and
	// memory: the largest logical block size of the disks in use.
	align = 4096
	// bufSize is the unit of a direct write: large enough that the
	// device, not the syscall, sets the pace.
	bufSize = 1 << 20
)

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
	if err := os.MkdirAll(filepath.Dir(full), 0o777); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o666)
	if errors.Is(err, unix.EINVAL) {
		return d.Driver.Writer(ctx, subPath, appendTo)
	}
	if err != nil {
		return nil, err
	}
	return newWriter(f), nil
}

// writer writes a file with O_DIRECT: whole aligned blocks from an
// aligned buffer (or straight from the caller's slice, when that is
// aligned and at least a buffer long), the last partial block padded and
// the file then cut to its length.
type writer struct {
	f      *os.File
	buf    *[]byte // aligned, bufSize long; nil once released
	n      int     // bytes in buf
	size   int64   // bytes accepted
	direct bool    // false once the file system refused a direct write

	closed, committed, cancelled bool
}

var bufPool = sync.Pool{New: func() any {
	raw := make([]byte, bufSize+align)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % align); r != 0 {
		off = align - r
	}
	b := raw[off : off+bufSize : off+bufSize]
	return &b
}}

func newWriter(f *os.File) *writer {
	return &writer{f: f, buf: bufPool.Get().(*[]byte), direct: true}
}

func aligned(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%align == 0
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
	total := len(p)
	for len(p) > 0 {
		if w.n == 0 && len(p) >= bufSize && aligned(p) {
			k := len(p) / bufSize * bufSize
			if err := w.writeOut(p[:k]); err != nil {
				return total - len(p), err
			}
			w.size += int64(k)
			p = p[k:]
			continue
		}
		k := copy((*w.buf)[w.n:], p)
		w.n += k
		w.size += int64(k)
		p = p[k:]
		if w.n == bufSize {
			if err := w.flush(); err != nil {
				return total - len(p), err
			}
		}
	}
	return total, nil
}

// writeOut writes whole aligned blocks; where the file system refuses a
// direct write, it turns O_DIRECT off for the rest of the file.
func (w *writer) writeOut(p []byte) error {
	if w.direct {
		_, err := w.f.Write(p)
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		if err := w.buffered(); err != nil {
			return err
		}
	}
	_, err := w.f.Write(p)
	return err
}

// buffered turns O_DIRECT off on the open file.
func (w *writer) buffered() error {
	flags, err := unix.FcntlInt(w.f.Fd(), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(w.f.Fd(), unix.F_SETFL, flags&^unix.O_DIRECT)
	}
	if err != nil {
		return fmt.Errorf("write %s: turn off direct writes: %w", w.f.Name(), err)
	}
	w.direct = false
	return nil
}

// flush writes the buffer's whole blocks, and with last, its partial
// block too: padded to a block under O_DIRECT, then cut back.
func (w *writer) flush() error {
	whole := w.n / align * align
	if whole > 0 {
		if err := w.writeOut((*w.buf)[:whole]); err != nil {
			return err
		}
		w.n = copy(*w.buf, (*w.buf)[whole:w.n])
	}
	return nil
}

func (w *writer) finish() error {
	if err := w.flush(); err != nil {
		return err
	}
	if w.n > 0 {
		tail := (*w.buf)[:w.n]
		if w.direct {
			clear((*w.buf)[w.n:align])
			tail = (*w.buf)[:align]
		}
		if err := w.writeOut(tail); err != nil {
			return err
		}
		w.n = 0
		if err := w.f.Truncate(w.size); err != nil {
			return err
		}
	}
	return w.f.Sync()
}

func (w *writer) release() {
	if w.buf != nil {
		bufPool.Put(w.buf)
		w.buf = nil
	}
}

func (w *writer) Size() int64 { return w.size }

// Close makes what was written durable, as the filesystem driver's
// writer does, so that an upload can be resumed.
func (w *writer) Close() error {
	if w.closed {
		return errors.New("already closed")
	}
	w.closed = true
	defer w.release()
	var err error
	if !w.committed && !w.cancelled {
		err = w.finish()
	}
	return errors.Join(err, w.f.Close())
}

func (w *writer) Cancel(context.Context) error {
	if w.closed {
		return errors.New("already closed")
	}
	w.cancelled, w.closed = true, true
	w.release()
	_ = w.f.Close()
	return os.Remove(w.f.Name())
}

func (w *writer) Commit(context.Context) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.finish(); err != nil {
		return err
	}
	w.committed = true
	return nil
}
