package firstboot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// OwnData gives the data directory and everything in it (but lost+found)
// to the appliance's user when the directory belongs to another uid or
// gid. A new system disk (an upgrade) may number the appliance's user
// differently from the one that wrote the data disk; the appliance could
// not read its own data then. It tells whether it changed anything; with
// a negative UID it does nothing.
func OwnData(o Options) (bool, error) {
	if o.UID < 0 {
		return false, nil
	}
	dir := o.dataDir()
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("first boot: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == o.UID && int(st.Gid) == o.GID) {
		return false, nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false, fmt.Errorf("first boot: %w", err)
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == "lost+found" {
			return filepath.SkipDir
		}
		return root.Lchown(path, o.UID, o.GID)
	})
	if err != nil {
		return false, fmt.Errorf("first boot: give the data directory to uid %d: %w", o.UID, err)
	}
	if o.Log != nil {
		o.Log.Warn("the data directory belonged to another user id; gave it to the appliance's user", "was_uid", st.Uid, "was_gid", st.Gid, "uid", o.UID, "gid", o.GID)
	}
	return true, nil
}
