package importer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// entry is one regular file of an archive, or a link to one.
type entry struct {
	name   string // cleaned, relative, slash-separated
	size   int64
	r      io.Reader // the content; nil for links
	link   string    // for links: the cleaned target inside the archive
	isLink bool
}

// entryReader yields the entries of what crosses the gap.
type entryReader interface {
	next() (*entry, error) // io.EOF at the end
}

// decompress recognises gzip and zstd by their magic numbers and returns a
// reader of the plain stream, and the compression's name ("" for none).
func decompress(br *bufio.Reader) (io.Reader, string, func(), error) {
	magic, err := br.Peek(4)
	if err != nil && len(magic) == 0 {
		if errors.Is(err, io.EOF) {
			return nil, "", nil, ErrEmpty
		}
		return nil, "", nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, "", nil, fmt.Errorf("%w: gzip: %w", ErrNotArchive, err)
		}
		return zr, "gzip", func() { _ = zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, "", nil, fmt.Errorf("%w: zstd: %w", ErrNotArchive, err)
		}
		return zr, "zstd", zr.Close, nil
	}
	return br, "", func() {}, nil
}

// tarEntries reads a tar stream safely: relative paths only, regular files
// and links only, links resolved inside the archive, sizes bounded.
type tarEntries struct {
	tr      *tar.Reader
	maxSize int64
	started bool
}

func newTarEntries(r io.Reader, maxSize int64) *tarEntries {
	return &tarEntries{tr: tar.NewReader(r), maxSize: maxSize}
}

func (t *tarEntries) next() (*entry, error) {
	for {
		h, err := t.tr.Next()
		switch {
		case errors.Is(err, io.EOF):
			if !t.started {
				return nil, ErrEmpty
			}
			return nil, io.EOF
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, ErrTruncated
		case errors.Is(err, tar.ErrHeader):
			if !t.started {
				return nil, ErrNotArchive
			}
			return nil, fmt.Errorf("%w: %w", ErrTruncated, err)
		case err != nil:
			if !t.started {
				return nil, fmt.Errorf("%w: %w", ErrNotArchive, err)
			}
			return nil, err
		}
		t.started = true
		name, err := cleanName(h.Name)
		if err != nil {
			return nil, &entryError{name: h.Name, err: err}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeXGlobalHeader:
			continue
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives use TypeRegA
			if isSparse(h) {
				// Sparse entries expand holes into zeros: a tiny archive
				// could claim terabytes. Transfer formats never use them.
				return nil, &entryError{name: name, err: fmt.Errorf("%w: sparse file", ErrUnsupported)}
			}
			if h.Size < 0 || h.Size > t.maxSize {
				return nil, &entryError{name: name, err: fmt.Errorf("%w: %d bytes (limit %d)", ErrAbsurdSize, h.Size, t.maxSize)}
			}
			return &entry{name: name, size: h.Size, r: t.tr}, nil
		case tar.TypeSymlink:
			// A symlink's target is relative to the link's folder.
			if path.IsAbs(h.Linkname) {
				return nil, &entryError{name: name, err: fmt.Errorf("%w: symlink to absolute path %q", ErrUnsafePath, h.Linkname)}
			}
			target, err := cleanName(path.Join(path.Dir(name), h.Linkname)) //nolint:gosec // G305: cleanName refuses anything that leaves the archive; nothing is written to disk

			if err != nil {
				return nil, &entryError{name: name, err: fmt.Errorf("%w: symlink to %q points outside the archive", ErrUnsafePath, h.Linkname)}
			}
			return &entry{name: name, link: target, isLink: true}, nil
		case tar.TypeLink:
			// A hard link's target is relative to the archive's root.
			target, err := cleanName(h.Linkname)
			if err != nil {
				return nil, &entryError{name: name, err: fmt.Errorf("%w: hard link to %q points outside the archive", ErrUnsafePath, h.Linkname)}
			}
			return &entry{name: name, link: target, isLink: true}, nil
		default:
			return nil, &entryError{name: name, err: fmt.Errorf("%w: type %q", ErrUnsupported, string(h.Typeflag))}
		}
	}
}

func isSparse(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// entryError carries the entry's name up to where the source is known.
type entryError struct {
	name string
	err  error
}

func (e *entryError) Error() string { return e.name + ": " + e.err.Error() }
func (e *entryError) Unwrap() error { return e.err }

// cleanName refuses absolute paths and any ".." component, and returns the
// cleaned relative name.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrUnsafePath)
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return "", fmt.Errorf("%w: absolute or non-portable path %q", ErrUnsafePath, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q contains \"..\"", ErrUnsafePath, name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", fmt.Errorf("%w: %q names the archive's root", ErrUnsafePath, name)
	}
	return strings.TrimPrefix(clean, "./"), nil
}
