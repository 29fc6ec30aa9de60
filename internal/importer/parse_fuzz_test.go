package importer

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzCleanName: no name that cleanName accepts may be absolute or climb
// out of the archive.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"manifest.json", "./blobs/sha256/ab", "../x", "/etc/passwd", "a/../../b", "a//b/./c", ".", "a\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := cleanName(name)
		if err != nil {
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("cleanName(%q) error %v is not ErrUnsafePath", name, err)
			}
			return
		}
		if strings.HasPrefix(clean, "/") || clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(clean, "/../") || clean == "" {
			t.Fatalf("cleanName(%q) = %q escapes the archive", name, clean)
		}
	})
}

// FuzzParseManifest: parsing a manifest never panics, and an accepted one
// has well-formed digests throughout.
func FuzzParseManifest(f *testing.F) {
	f.Add("", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:`+strings.Repeat("a", 64)+`","size":1},"layers":[]}`))
	f.Add(mtOCIIndex, []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:`+strings.Repeat("b", 64)+`","size":3}]}`))
	f.Add("", []byte(`{"schemaVersion":1}`))
	f.Fuzz(func(t *testing.T, mediaType string, raw []byte) {
		doc, mt, err := parseManifest(mediaType, raw)
		if err != nil {
			if !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("error %v is not ErrInvalidJSON", err)
			}
			return
		}
		if mt == "" {
			t.Fatal("accepted a manifest without a media type")
		}
		m := imageManifest("r/x", mt, raw, digest.Digest("sha256:"+strings.Repeat("c", 64)), doc)
		for _, b := range m.blobs {
			if err := b.Validate(); err != nil {
				t.Fatalf("accepted blob digest %q: %v", b, err)
			}
		}
	})
}

// FuzzImgpkgManifest: reading an imgpkg manifest.json never panics and
// never accepts an entry that is neither an image nor an index.
func FuzzImgpkgManifest(f *testing.F) {
	f.Add([]byte(`[{"Image":{"Manifest":{"Raw":"{}","Digest":"sha256:x"}},"ImageIndex":null}]`))
	f.Add([]byte(`[{"Config":"x.json","RepoTags":[],"Layers":[]}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if !isImgpkgManifest(data) {
			return
		}
		entries, err := parseImgpkgManifest(data)
		if err != nil {
			return
		}
		for _, e := range entries {
			if (e.Image == nil) == (e.ImageIndex == nil) {
				t.Fatalf("accepted an entry with %v image and %v index", e.Image != nil, e.ImageIndex != nil)
			}
		}
	})
}

// FuzzTarEntries: the safe tar reader never panics, never yields an unsafe
// name, and always stops.
func FuzzTarEntries(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := newTarEntries(bytes.NewReader(data), 1<<20)
		for range 10000 {
			e, err := tr.next()
			if err != nil {
				return
			}
			if _, cerr := cleanName(e.name); cerr != nil {
				t.Fatalf("yielded unsafe name %q", e.name)
			}
			if e.isLink {
				if _, cerr := cleanName(e.link); cerr != nil {
					t.Fatalf("yielded unsafe link target %q", e.link)
				}
				continue
			}
			if _, err := io.Copy(io.Discard, e.r); err != nil {
				return
			}
		}
		t.Fatal("more than 10000 entries from a fuzz input")
	})
}
