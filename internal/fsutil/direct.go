package fsutil

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// directAlign is the alignment O_DIRECT asks of file offsets, lengths
	// and memory: the largest logical block size of the disks in use.
	directAlign = 4096
	// DirectBufferSize is the unit of a direct write: large enough that
	// the device, not the syscall, sets the pace.
	DirectBufferSize = 1 << 20
)

// DirectWriter writes a new file, from its start, with O_DIRECT: the
// bytes go from the writer's aligned buffer (or straight from the
// caller's slice, when that is aligned and at least a buffer long) to the
// disk, without being copied into the page cache.
//
// Gigabytes of layers are written once and read later, by other machines
// or another run, so caching them is wasted; on a virtual machine whose
// memory the host has not backed yet, filling the page cache also costs
// more CPU than anything else a large write does (a fault per page).
//
// Where the file system does not take O_DIRECT (tmpfs, some network or
// FUSE file systems), at the start or at any write, the writer goes on
// with ordinary writes. Finish writes the last partial block (padded
// under O_DIRECT, the file then cut to its length) and syncs the file.
type DirectWriter struct {
	f      *os.File
	buf    *[]byte // aligned, DirectBufferSize long; nil once released
	n      int     // bytes in buf
	size   int64   // bytes accepted
	direct bool
}

var directBufs = sync.Pool{New: func() any {
	raw := make([]byte, DirectBufferSize+directAlign)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % directAlign); r != 0 { //nolint:gosec // O_DIRECT asks for an aligned buffer: only the address is read
		off = directAlign - r
	}
	b := raw[off : off+DirectBufferSize : off+DirectBufferSize]
	return &b
}}

// NewDirectWriter turns O_DIRECT on for f, an empty file open for
// writing at offset 0, and returns a writer for it (with ordinary writes
// where the file system refuses O_DIRECT). The caller still closes f.
func NewDirectWriter(f *os.File) *DirectWriter {
	w := &DirectWriter{f: f, buf: directBufs.Get().(*[]byte)}
	w.direct = setDirect(f, true) == nil
	return w
}

// setDirect turns O_DIRECT on or off for the open file f.
func setDirect(f *os.File, on bool) error {
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		flags |= unix.O_DIRECT
	} else {
		flags &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, flags)
	return err
}

// Direct tells whether the writes so far went around the page cache.
func (w *DirectWriter) Direct() bool { return w.direct }

// Size is the number of bytes accepted so far.
func (w *DirectWriter) Size() int64 { return w.size }

func aligned(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%directAlign == 0 //nolint:gosec // only the address is read, for O_DIRECT alignment
}

func (w *DirectWriter) Write(p []byte) (int, error) {
	if w.buf == nil {
		return 0, errors.New("write after finish")
	}
	total := len(p)
	for len(p) > 0 {
		if w.n == 0 && len(p) >= DirectBufferSize && aligned(p) {
			k := len(p) / DirectBufferSize * DirectBufferSize
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
		if w.n == DirectBufferSize {
			if err := w.flush(); err != nil {
				return total - len(p), err
			}
		}
	}
	return total, nil
}

// writeOut writes whole aligned blocks; where the file system refuses a
// direct write, it turns O_DIRECT off for the rest of the file.
func (w *DirectWriter) writeOut(p []byte) error {
	if w.direct {
		_, err := w.f.Write(p)
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		if err := setDirect(w.f, false); err != nil {
			return fmt.Errorf("write %s: turn off direct writes: %w", w.f.Name(), err)
		}
		w.direct = false
	}
	_, err := w.f.Write(p)
	return err
}

// flush writes the buffer's whole blocks and keeps the rest.
func (w *DirectWriter) flush() error {
	whole := w.n / directAlign * directAlign
	if whole > 0 {
		if err := w.writeOut((*w.buf)[:whole]); err != nil {
			return err
		}
		w.n = copy(*w.buf, (*w.buf)[whole:w.n])
	}
	return nil
}

// Finish writes what is buffered and syncs the file; the writer takes no
// more writes. It does not close the file.
func (w *DirectWriter) Finish() error {
	if w.buf == nil {
		return errors.New("finish twice")
	}
	defer w.release()
	if err := w.flush(); err != nil {
		return err
	}
	if w.n > 0 {
		tail := (*w.buf)[:w.n]
		if w.direct {
			clear((*w.buf)[w.n:directAlign])
			tail = (*w.buf)[:directAlign]
		}
		if err := w.writeOut(tail); err != nil {
			return err
		}
		if err := w.f.Truncate(w.size); err != nil {
			return err
		}
	}
	return w.f.Sync()
}

// Release gives the buffer back without writing it (the file is being
// abandoned). Finish releases it too.
func (w *DirectWriter) Release() { w.release() }

func (w *DirectWriter) release() {
	if w.buf != nil {
		directBufs.Put(w.buf)
		w.buf = nil
	}
}
