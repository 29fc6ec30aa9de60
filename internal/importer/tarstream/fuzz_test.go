package tarstream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzCleanName: no name that cleanName accepts may be absolute or climb
// out of the archive.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"manifest.json", "./blobs/sha256/ab", "../x", "/etc/passwd", "a/../../b", "a//b/./c", ".", "a\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := CleanName(name)
		if err != nil {
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("CleanName(%q) error %v is not ErrUnsafePath", name, err)
			}
			return
		}
		if strings.HasPrefix(clean, "/") || clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(clean, "/../") || clean == "" {
			t.Fatalf("CleanName(%q) = %q escapes the archive", name, clean)
		}
	})
}

// FuzzTarEntries: the safe tar reader never panics, never yields an unsafe
// name, and always stops.
func FuzzTarEntries(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := NewReader(bytes.NewReader(data), 1<<20)
		for range 10000 {
			e, err := tr.Next()
			if err != nil {
				return
			}
			if _, cerr := CleanName(e.Name); cerr != nil {
				t.Fatalf("yielded unsafe name %q", e.Name)
			}
			if e.IsLink {
				if _, cerr := CleanName(e.Link); cerr != nil {
					t.Fatalf("yielded unsafe link target %q", e.Link)
				}
				continue
			}
			if _, err := io.Copy(io.Discard, e.R); err != nil {
				return
			}
		}
		t.Fatal("more than 10000 entries from a fuzz input")
	})
}
