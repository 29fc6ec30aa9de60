package aptrepo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/aptly-dev/aptly/deb"
)

// Deb is one package file to add: a name for errors and the history (the
// file or upload name) and a way to read it. Open is called once.
type Deb struct {
	Name string
	Open func() (io.ReadCloser, error)
}

// DebFile is a Deb read from a file on disk.
func DebFile(path string) Deb {
	return Deb{Name: path, Open: func() (io.ReadCloser, error) { return os.Open(path) }}
}

// DebBytes is a Deb held in memory.
func DebBytes(name string, data []byte) Deb {
	return Deb{Name: name, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

var (
	namePattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)                  // repositories, distributions, components
	pkgNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]{1,127}$`)                        // Debian policy §5.6.1
	versionPattern = regexp.MustCompile(`^(?:[0-9]{1,9}:)?[A-Za-z0-9][A-Za-z0-9.+~-]{0,127}$`) // §5.6.12, without colons in the upstream part
	archPattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	sourcePattern  = regexp.MustCompile(`^([a-z0-9][a-z0-9.+-]{1,127})(?: \((?:[0-9]{1,9}:)?[A-Za-z0-9][A-Za-z0-9.+~-]{0,127}\))?$`)
)

func validName(kind, s string) error {
	if !namePattern.MatchString(s) || s == "dists" || s == "pool" {
		return fmt.Errorf("%w: %s %q: use letters, digits, '.', '_', '+' and '-', at most 64, starting with a letter or digit", ErrInvalid, kind, s)
	}
	return nil
}

// candidate is one staged, inspected package file.
type candidate struct {
	name     string // Deb.Name
	path     string // staged copy
	sha256   string
	size     int64
	pkg      *deb.Package
	filename string // canonical file name: name_version_arch.deb
}

func (c *candidate) key() string { return pkgKey(c.pkg.Name, c.pkg.Version, c.pkg.Architecture) }

func pkgKey(name, version, arch string) string { return name + " " + version + " " + arch }

// stage copies d into dir (at most maxSize bytes), hashes it and reads its
// control file. Errors wrap ErrNotDeb, ErrBadControl or ErrTooLarge and
// speak of d.Name, never of the staging path.
func stage(ctx context.Context, dir string, d Deb, maxSize int64) (*candidate, error) {
	if d.Open == nil {
		return nil, fmt.Errorf("%w: no content", ErrInvalid)
	}
	rc, err := d.Open()
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, "stage-*.deb")
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	c := &candidate{name: d.Name, path: f.Name()}
	h := sha256.New()
	// Not fsynced here: publish syncs the file system once before the
	// switch (syncFS), which covers every staged file.
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(fsutil.ContextReader(ctx, rc), maxSize+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if n > maxSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxSize)
	}
	c.size, c.sha256 = n, hex.EncodeToString(h.Sum(nil))
	if err := checkDebStructure(c.path, n); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotDeb, err)
	}
	stanza, err := deb.GetControlFileFromDeb(c.path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadControl, strings.ReplaceAll(err.Error(), c.path, d.Name))
	}
	if err := checkControl(stanza); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadControl, err)
	}
	c.pkg = deb.NewPackageFromControlFile(stanza)
	c.filename = c.pkg.Name + "_" + stripEpoch(c.pkg.Version) + "_" + c.pkg.Architecture + ".deb"
	return c, nil
}

func stripEpoch(v string) string {
	if i := strings.IndexByte(v, ':'); i >= 0 {
		return v[i+1:]
	}
	return v
}

// checkControl refuses control files apt could not use or that would make
// unsafe pool paths.
func checkControl(st deb.Stanza) error {
	if len(st) == 0 {
		return errors.New("empty control file")
	}
	for _, f := range []struct {
		field, what string
		re          *regexp.Regexp
	}{
		{"Package", "package name", pkgNamePattern},
		{"Version", "version", versionPattern},
		{"Architecture", "architecture", archPattern},
	} {
		v, ok := st[f.field]
		if !ok || v == "" {
			return fmt.Errorf("no %s field", f.field)
		}
		if !f.re.MatchString(v) {
			return fmt.Errorf("invalid %s %q", f.what, v)
		}
	}
	if a := st["Architecture"]; a == deb.ArchitectureSource || a == deb.ArchitectureAny {
		return fmt.Errorf("invalid architecture %q for a binary package", a)
	}
	if s, ok := st["Source"]; ok && !sourcePattern.MatchString(s) {
		return fmt.Errorf("invalid Source field %q", s)
	}
	return nil
}

// checkDebStructure checks the ar container of a .deb (deb(5)): the magic,
// debian-binary first with format 2.x, then control.tar* and data.tar*.
func checkDebStructure(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, 8)
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != "!<arch>\n" {
		return errors.New("no ar archive signature (a .deb starts with \"!<arch>\")")
	}
	off := int64(8)
	var control, data bool
	for i := 0; ; i++ {
		if off == size {
			break
		}
		if i == 16 {
			return errors.New("too many ar members")
		}
		hdr := make([]byte, 60)
		if _, err := io.ReadFull(f, hdr); err != nil {
			return errors.New("truncated ar member header")
		}
		if string(hdr[58:60]) != "`\n" {
			return errors.New("corrupt ar member header")
		}
		name := strings.TrimRight(strings.TrimSpace(string(hdr[0:16])), "/")
		msize, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || msize < 0 || msize > size-off-60 {
			return fmt.Errorf("ar member %q has a bad size", name)
		}
		switch {
		case i == 0:
			if name != "debian-binary" {
				return fmt.Errorf("first member is %q, not debian-binary", name)
			}
			v := make([]byte, min(msize, 16))
			if _, err := io.ReadFull(f, v); err != nil {
				return errors.New("truncated debian-binary")
			}
			if !bytes.HasPrefix(v, []byte("2.")) {
				return fmt.Errorf("unsupported format version %q", strings.TrimSpace(string(v)))
			}
			if _, err := f.Seek(msize-int64(len(v)), io.SeekCurrent); err != nil {
				return err
			}
			off += 60 + msize
			if msize%2 == 1 {
				if _, err := f.Seek(1, io.SeekCurrent); err != nil {
					return err
				}
				off++
			}
			continue
		case strings.HasPrefix(name, "control.tar"):
			control = true
		case strings.HasPrefix(name, "data.tar"):
			data = true
		}
		skip := msize + msize%2
		if off+60+skip > size {
			skip = size - off - 60
		}
		if _, err := f.Seek(skip, io.SeekCurrent); err != nil {
			return err
		}
		off += 60 + skip
	}
	if !control {
		return errors.New("no control.tar member")
	}
	if !data {
		return errors.New("no data.tar member")
	}
	return nil
}
