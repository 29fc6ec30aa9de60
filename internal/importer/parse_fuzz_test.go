package importer

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

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
