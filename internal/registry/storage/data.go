package storage

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// LinkData keeps the data of blob canonical under digest want too, when
// it is not there already: a hard link to the same file (a copy where the
// file system has none), appearing whole or not at all. It is the one
// write of the layout this package makes for the registry, whose sha512
// support keeps content under the digest it was pushed by (distribution
// stores it under its sha256); the caller has verified that the bytes
// hash to want, and links them into repositories itself.
func (s *Store) LinkData(want, canonical digest.Digest) error {
	if err := want.Validate(); err != nil {
		return err
	}
	if err := canonical.Validate(); err != nil {
		return err
	}
	dst := s.BlobDataPath(want)
	_, err := os.Stat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return linkOrCopy(s.BlobDataPath(canonical), dst)
	}
	return err
}

// linkOrCopy makes dst a hard link to src (a copy where the file system
// has none), appearing whole or not at all.
func linkOrCopy(src, dst string) error {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".data.tmp-"+hex.EncodeToString(b))
	if err := os.Link(src, tmp); err != nil {
		if err := copyFile(src, tmp); err != nil {
			_ = os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return fsutil.SyncDir(dir)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
