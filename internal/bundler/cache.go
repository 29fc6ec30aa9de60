package bundler

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// cache is the download cache: blobs/sha256/<hex>, each written to a
// temporary file, verified, then renamed, so a blob in the cache is always
// whole and right, and an interrupted run resumes where it stopped. Local
// files named in the spec are read in place, not copied.
type cache struct {
	dir string

	mu    sync.Mutex
	local map[string]string // digest -> local file (spec paths)
}

func openCache(dir string) (*cache, error) {
	for _, d := range []string{filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "tmp"), filepath.Join(dir, "apt")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("open cache: %w", err)
		}
	}
	return &cache{dir: dir, local: map[string]string{}}, nil
}

func (c *cache) path(d string) string {
	return filepath.Join(c.dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
}

// has tells whether the cache holds a whole, named blob of that size.
func (c *cache) has(d string, size int64) bool {
	c.mu.Lock()
	_, local := c.local[d]
	c.mu.Unlock()
	if local {
		return true
	}
	fi, err := os.Stat(c.path(d))
	return err == nil && fi.Mode().IsRegular() && (size < 0 || fi.Size() == size)
}

// put streams r into the cache, checking size (when >= 0) and digest.
func (c *cache) put(d string, size int64, r io.Reader, count func(int64)) error {
	return c.store(d, size, r, count, false, nil)
}

// putVerified is put for a reader that verifies the digest itself and
// fails at its end on a mismatch: the bytes are not hashed a second time.
func (c *cache) putVerified(d string, size int64, r io.Reader, count func(int64)) error {
	return c.store(d, size, r, count, true, nil)
}

// store streams r into the cache and, when also is set, into also as well
// (the blob's place in the archive): one pass over the bytes for both.
// Whatever also received is worthless unless store succeeds.
func (c *cache) store(d string, size int64, r io.Reader, count func(int64), verified bool, also io.Writer) error {
	hexDigest, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexDigest) != 64 {
		return fmt.Errorf("cache %s: only sha256 digests are supported", d)
	}
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), hexDigest[:12]+"-*")
	if err != nil {
		return fmt.Errorf("cache %s: %w", d, err)
	}
	defer func() { _ = os.Remove(f.Name()) }()
	h := sha256.New()
	src := r
	if size >= 0 {
		src = io.LimitReader(r, size+1)
	}
	// Direct writes: a layer goes to the disk without filling the page
	// cache (fsutil.DirectWriter), and is read once, into the archive.
	dw := fsutil.NewDirectWriter(f)
	defer dw.Release()
	dsts := []io.Writer{dw, counter(count)}
	if !verified {
		dsts = append(dsts, h)
	}
	if also != nil {
		dsts = append(dsts, also)
	}
	dst := io.MultiWriter(dsts...)
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(dst, src, buf)
	if err == nil {
		err = dw.Finish()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("download %s: %w", d, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("download %s: got %d bytes, want %d", d, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !verified && got != hexDigest {
		return fmt.Errorf("download %s: the bytes received hash to sha256:%s", d, got)
	}
	if err := os.Rename(f.Name(), c.path(d)); err != nil {
		return fmt.Errorf("cache %s: %w", d, err)
	}
	return nil
}

// putBytes stores small content (manifests) in the cache.
func (c *cache) putBytes(d string, data []byte) error {
	if c.has(d, int64(len(data))) {
		return nil
	}
	return c.put(d, int64(len(data)), strings.NewReader(string(data)), nil)
}

// addLocal names a local file as the source of a digest.
func (c *cache) addLocal(d, path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.local[d] = path
}

// Open implements bundle.BlobSource.
func (c *cache) Open(d string) (io.ReadCloser, error) {
	c.mu.Lock()
	p, local := c.local[d]
	c.mu.Unlock()
	if !local {
		p = c.path(d)
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is not in the cache %s", d, c.dir)
	}
	return f, err
}

type counter func(int64)

func (c counter) Write(p []byte) (int, error) {
	if c != nil {
		c(int64(len(p)))
	}
	return len(p), nil
}

func (c *cache) aptDir() string { return filepath.Join(c.dir, "apt") }
