// Package tarstream reads what crosses the gap as a stream of checked
// tar entries: gzip and zstd recognised by their magic numbers, relative
// names only, regular files and links only (links resolved inside the
// archive), sizes bounded, and the sha256 of the whole input computed on
// the side. It also writes a folder as such a stream (TarFolder). It knows
// nothing of image formats: the importer gives the entries their meaning.
package tarstream

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

// Errors callers test with errors.Is.
var (
	ErrEmpty       = errors.New("the input is empty")
	ErrNotArchive  = errors.New("not a tar archive")
	ErrTruncated   = errors.New("the archive is truncated")
	ErrUnsafePath  = errors.New("unsafe path")
	ErrUnsupported = errors.New("unsupported entry type")
	ErrAbsurdSize  = errors.New("entry claims an absurd size")
)

// Entry is one regular file of an archive, or a link to one.
type Entry struct {
	Name   string // cleaned, relative, slash-separated
	Size   int64
	R      io.Reader // the content, valid until the next call of Next; nil for links
	Link   string    // for links: the cleaned target inside the archive
	IsLink bool
}

// Decompress recognises gzip and zstd by their magic numbers and returns a
// reader of the plain stream, and the compression's name ("" for none).
func Decompress(br *bufio.Reader) (io.Reader, string, func(), error) {
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

// Reader reads a tar stream safely: relative paths only, regular files
// and links only, links resolved inside the archive, sizes bounded.
type Reader struct {
	tr      *tar.Reader
	maxSize int64
	started bool
}

// NewReader reads the tar stream r; no entry may claim more than maxSize
// bytes.
func NewReader(r io.Reader, maxSize int64) *Reader {
	return &Reader{tr: tar.NewReader(r), maxSize: maxSize}
}

// Next returns the next entry, io.EOF after the last. An error about one
// entry is an *EntryError naming it.
func (t *Reader) Next() (*Entry, error) {
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
		name, err := CleanName(h.Name)
		if err != nil {
			return nil, &EntryError{Name: h.Name, Err: err}
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
				return nil, &EntryError{Name: name, Err: fmt.Errorf("%w: sparse file", ErrUnsupported)}
			}
			if h.Size < 0 || h.Size > t.maxSize {
				return nil, &EntryError{Name: name, Err: fmt.Errorf("%w: %d bytes (limit %d)", ErrAbsurdSize, h.Size, t.maxSize)}
			}
			return &Entry{Name: name, Size: h.Size, R: t.tr}, nil
		case tar.TypeSymlink:
			// A symlink's target is relative to the link's folder.
			if path.IsAbs(h.Linkname) {
				return nil, &EntryError{Name: name, Err: fmt.Errorf("%w: symlink to absolute path %q", ErrUnsafePath, h.Linkname)}
			}
			target, err := CleanName(path.Join(path.Dir(name), h.Linkname)) //nolint:gosec // G305: cleanName refuses anything that leaves the archive; nothing is written to disk

			if err != nil {
				return nil, &EntryError{Name: name, Err: fmt.Errorf("%w: symlink to %q points outside the archive", ErrUnsafePath, h.Linkname)}
			}
			return &Entry{Name: name, Link: target, IsLink: true}, nil
		case tar.TypeLink:
			// A hard link's target is relative to the archive's root.
			target, err := CleanName(h.Linkname)
			if err != nil {
				return nil, &EntryError{Name: name, Err: fmt.Errorf("%w: hard link to %q points outside the archive", ErrUnsafePath, h.Linkname)}
			}
			return &Entry{Name: name, Link: target, IsLink: true}, nil
		default:
			return nil, &EntryError{Name: name, Err: fmt.Errorf("%w: type %q", ErrUnsupported, string(h.Typeflag))}
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

// EntryError carries the entry's name up to where the source is known.
type EntryError struct {
	Name string
	Err  error
}

func (e *EntryError) Error() string { return e.Name + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *EntryError) Unwrap() error { return e.Err }

// CleanName refuses absolute paths and any ".." component, and returns the
// cleaned relative name.
func CleanName(name string) (string, error) {
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
