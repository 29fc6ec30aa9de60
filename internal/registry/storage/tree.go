package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// tree is where the layout is read from: the local filesystem under the
// store's root (the fast path: a stat per file), or distribution's
// storage driver for an object store. Paths are the layout's, joined with
// filepath under the store's root; for a driver the root is "/", so they
// are the driver's keys.
type tree interface {
	// readDir lists dir's entries; fs.ErrNotExist when it has none.
	readDir(ctx context.Context, dir string) ([]entry, error)
	// stat describes one file; fs.ErrNotExist when it is absent.
	stat(ctx context.Context, p string) (fileInfo, error)
	// open reads one file from its start.
	open(ctx context.Context, p string) (io.ReadCloser, error)
	// used sums the sizes of every file under root.
	used(ctx context.Context, root string) (int64, error)
	// remove removes the folder (or file) p and everything under it; on
	// the local filesystem also the parents it leaves empty, up to (not
	// including) stop. An object store has no folders: removing the
	// objects under p is all. Absent, it is an fs.ErrNotExist.
	remove(ctx context.Context, p, stop string) error
}

type entry struct {
	name string
	dir  bool
}

type fileInfo struct {
	size  int64
	mtime time.Time
}

// osTree is the layout on the local filesystem.
type osTree struct{}

func (osTree) readDir(_ context.Context, dir string) ([]entry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]entry, len(ents))
	for i, e := range ents {
		out[i] = entry{name: e.Name(), dir: e.IsDir()}
	}
	return out, nil
}

func (osTree) stat(_ context.Context, p string) (fileInfo, error) {
	info, err := os.Stat(p)
	if err != nil {
		return fileInfo{}, err
	}
	return fileInfo{size: info.Size(), mtime: info.ModTime()}, nil
}

func (osTree) open(_ context.Context, p string) (io.ReadCloser, error) { return os.Open(p) } //nolint:gosec // G304: a path of the layout

func (osTree) used(_ context.Context, root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total, err
}

func (osTree) remove(_ context.Context, p, stop string) error { return removeDir(p, stop) }

// driverTree is the layout read through distribution's storage driver.
type driverTree struct{ d storagedriver.StorageDriver }

// layoutFiles are the names distribution's layout gives files; every
// other name is a folder. An object store lists both alike, and a stat
// of each entry to tell them apart would cost a request apiece.
var layoutFiles = map[string]bool{"link": true, "data": true, "startedat": true}

func (t driverTree) readDir(ctx context.Context, dir string) ([]entry, error) {
	keys, err := t.d.List(ctx, filepath.ToSlash(dir))
	if err != nil {
		return nil, notExist(err)
	}
	out := make([]entry, 0, len(keys))
	for _, k := range keys {
		n := path.Base(k)
		out = append(out, entry{name: n, dir: !layoutFiles[n]})
	}
	return out, nil
}

func (t driverTree) stat(ctx context.Context, p string) (fileInfo, error) {
	info, err := t.d.Stat(ctx, filepath.ToSlash(p))
	if err != nil {
		return fileInfo{}, notExist(err)
	}
	if info.IsDir() {
		return fileInfo{}, fmt.Errorf("%s: a folder, not a file", p)
	}
	return fileInfo{size: info.Size(), mtime: info.ModTime()}, nil
}

func (t driverTree) open(ctx context.Context, p string) (io.ReadCloser, error) {
	rc, err := t.d.Reader(ctx, filepath.ToSlash(p), 0)
	if err != nil {
		return nil, notExist(err)
	}
	return rc, nil
}

func (t driverTree) used(ctx context.Context, root string) (int64, error) {
	var total int64
	err := t.d.Walk(ctx, filepath.ToSlash(root), func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() {
			total += fi.Size()
		}
		return nil
	})
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return 0, nil
	}
	return total, err
}

// remove deletes every object under p (the driver lists and deletes them
// in batches). An object store has no rename, so a folder goes object by
// object: a removal stopped half-way leaves part of it, which is why gc
// and repair remove a blob's links before its data, and a link's
// folder's objects before nothing else needs them.
func (t driverTree) remove(ctx context.Context, p, _ string) error {
	return notExist(t.d.Delete(ctx, filepath.ToSlash(p)))
}

// notExist makes the driver's "path not found" an fs.ErrNotExist, which
// the layout's readers test for.
func notExist(err error) error {
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return fmt.Errorf("%w: %s", fs.ErrNotExist, nf.Path)
	}
	return err
}

// readFile reads a whole small file of the layout, at most limit bytes.
func (s *Store) readFile(ctx context.Context, p string, limit int64) ([]byte, error) {
	f, err := s.tree.open(ctx, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", p, limit)
	}
	return data, nil
}
