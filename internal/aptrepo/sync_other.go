//go:build !linux

package aptrepo

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/aptly-dev/aptly/deb"
	"github.com/aptly-dev/aptly/files"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// syncFS makes a publish durable before it is switched in: every pool file
// of the published packages, then every file and folder of the tree.
func syncFS(_ string, tree string, pool *files.PackagePool, ls lists) error {
	for _, l := range ls {
		err := l.ForEach(func(p *deb.Package) error {
			for _, f := range p.Files() {
				if err := syncFile(pool.FullPath(f.PoolPath)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("sync pool: %w", err)
		}
	}
	err := filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir():
			return fsutil.SyncDir(path)
		case d.Type().IsRegular():
			return syncFile(path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sync %s: %w", tree, err)
	}
	return fsutil.SyncDir(filepath.Dir(tree))
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
