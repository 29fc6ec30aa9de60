package directfs

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"golang.org/x/sys/unix"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

const upload = "/docker/registry/v2/repositories/p/r/_uploads/0c6e1b4f/data"

// payload returns n pseudo-random bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b
}

// writeIn writes data to w in slices of the given sizes, cycling, so
// that aligned whole-buffer writes, small unaligned ones and a buffer
// left partly full all occur.
func writeIn(t *testing.T, w io.Writer, data []byte, sizes ...int) {
	t.Helper()
	for i := 0; len(data) > 0; i++ {
		k := min(sizes[i%len(sizes)], len(data))
		if n, err := w.Write(data[:k]); err != nil || n != k {
			t.Fatalf("write %d bytes: %d, %v", k, n, err)
		}
		data = data[k:]
	}
}

func openDriver(t *testing.T, root string) *Driver {
	t.Helper()
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The file a direct writer commits holds exactly the bytes written, in
// every mix of write sizes, including lengths that are not a multiple
// of the block size; Size counts them all along.
func TestWriterCommitsExactBytes(t *testing.T) {
	direct := hasDirect(t)
	root := t.TempDir()
	d := openDriver(t, root)
	ctx := context.Background()
	cases := []struct {
		name  string
		size  int
		sizes []int
	}{
		{"whole buffers", 4 * fsutil.DirectBufferSize, []int{fsutil.DirectBufferSize}},
		{"one large slice", 3*fsutil.DirectBufferSize + 123, []int{3*fsutil.DirectBufferSize + 123}},
		{"small unaligned writes", fsutil.DirectBufferSize + 4097, []int{1, 4095, 32 << 10, 7}},
		{"large after small", 2*fsutil.DirectBufferSize + 1, []int{100, 2 * fsutil.DirectBufferSize}},
		{"shorter than a block", 10, []int{3}},
		{"empty", 0, []int{1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := payload(tc.size)
			w, err := d.Writer(ctx, upload, false)
			if err != nil {
				t.Fatal(err)
			}
			writeIn(t, w, data, tc.sizes...)
			if dw, ok := w.(*writer); !ok || (direct && !dw.dw.Direct()) {
				t.Fatalf("the upload's data was not written directly (writer %T) on a file system that takes O_DIRECT", w)
			}
			if w.Size() != int64(tc.size) {
				t.Errorf("Size() = %d before commit, want %d", w.Size(), tc.size)
			}
			if err := w.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := d.GetContent(ctx, upload)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("committed file: %d bytes, differs from the %d written", len(got), len(data))
			}
		})
	}
}

// Close without Commit keeps what was written (a chunked push closes
// its writer between requests), and an append to it goes through the
// wrapped driver and lands after it.
func TestWriterCloseThenAppend(t *testing.T) {
	d := openDriver(t, t.TempDir())
	ctx := context.Background()
	first, second := payload(fsutil.DirectBufferSize+5000), payload(777)
	w, err := d.Writer(ctx, upload, false)
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, first, 64<<10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("a write after Close was accepted")
	}
	a, err := d.Writer(ctx, upload, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.(*writer); ok {
		t.Fatal("an append got a direct writer: its offset need not be aligned")
	}
	if a.Size() != int64(len(first)) {
		t.Fatalf("append starts at %d, want %d", a.Size(), len(first))
	}
	writeIn(t, a, second, 100)
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	got, _ := d.GetContent(ctx, upload)
	if !bytes.Equal(got, append(first, second...)) {
		t.Fatalf("after the append: %d bytes, not the %d written", len(got), len(first)+len(second))
	}
}

// Cancel removes the file; writes after it are refused.
func TestWriterCancel(t *testing.T) {
	root := t.TempDir()
	d := openDriver(t, root)
	ctx := context.Background()
	w, err := d.Writer(ctx, upload, false)
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, payload(3*4096), 4096)
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(upload))); !os.IsNotExist(err) {
		t.Errorf("after Cancel the upload's data file is still there (stat: %v)", err)
	}
	if err := w.Commit(ctx); err == nil {
		t.Error("Commit after Cancel succeeded")
	}
}

// Only a new upload's data file is written directly; every other path
// (links, small files) gets the filesystem driver's writer.
func TestOnlyUploadDataIsDirect(t *testing.T) {
	if !hasDirect(t) {
		t.Skip("the file system under the test's temporary folder does not take O_DIRECT")
	}
	d := openDriver(t, t.TempDir())
	ctx := context.Background()
	for p, direct := range map[string]bool{
		upload: true,
		"/docker/registry/v2/repositories/p/r/_uploads/0c6e1b4f/startedat": false,
		"/docker/registry/v2/blobs/sha256/ab/abcd/data":                    false,
		"/docker/registry/v2/repositories/p/r/_layers/sha256/abcd/link":    false,
		"/docker/registry/v2/repositories/p/data":                          false,
	} {
		w, err := d.Writer(ctx, p, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := w.(*writer); ok != direct {
			t.Errorf("%s: direct writer %v, want %v", p, ok, direct)
		}
		_ = w.Cancel(ctx)
	}
}

func hasDirect(t *testing.T) bool {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "probe"), os.O_CREATE|os.O_WRONLY|unix.O_DIRECT, 0o600)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// On tmpfs (which takes O_DIRECT only since Linux 6.6) the writes land
// whole either way. The fallback itself is fsutil's TestDirectWriterFallsBack.
func TestWritesOnTmpfs(t *testing.T) {
	shm := "/dev/shm"
	if fi, err := os.Stat(shm); err != nil || !fi.IsDir() {
		t.Skip("no /dev/shm (tmpfs) here")
	}
	root, err := os.MkdirTemp(shm, "directfs-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	d := openDriver(t, root)
	ctx := context.Background()
	data := payload(fsutil.DirectBufferSize + 3)
	w, err := d.Writer(ctx, upload, false)
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, data, fsutil.DirectBufferSize)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	got, _ := d.GetContent(ctx, upload)
	if !bytes.Equal(got, data) {
		t.Fatal("content differs on tmpfs")
	}
}

var _ storagedriver.StorageDriver = (*Driver)(nil)
