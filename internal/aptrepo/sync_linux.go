package aptrepo

import (
	"fmt"
	"os"

	"github.com/aptly-dev/aptly/files"
	"golang.org/x/sys/unix"
)

// syncFS makes a publish durable before it is switched in: the staged
// package files now in the pool, the published tree and its folders. On
// Linux one syncfs(2) of the file system holding dir does it all (a
// thousand packages would otherwise cost a few thousand fsyncs).
func syncFS(dir, _ string, _ *files.PackagePool, _ lists) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
