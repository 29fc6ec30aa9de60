package importer_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
)

// tarEntry is one entry of a hand-made archive.
type tarEntry struct {
	name     string
	body     []byte
	typeflag byte
	link     string
	size     int64 // when set, overrides len(body) in the header
}

func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: e.typeflag, Linkname: e.link, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if e.size != 0 {
			h.Size = e.size
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.size != 0 {
			// A header that lies about its size: stop here, as a real
			// malicious or damaged archive would.
			break
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Closing would fail for entries whose header claims more than was
	// written; write the end-of-archive marker by hand instead.
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// imgpkgTar builds a valid one-image imgpkg tar from a layer, and lets a
// test change it on the way.
func imgpkgTar(t testing.TB, layer []byte, change func(manifest *[]map[string]any, entries *[]tarEntry)) []byte {
	t.Helper()
	config := `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + sha(layer) + `"]},"config":{}}`
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":"%s"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":%d,"digest":"%s"}]}`,
		len(config), sha([]byte(config)), len(layer), sha(layer))
	mj := []map[string]any{{"ImageIndex": nil, "Image": map[string]any{
		"Refs":     []string{"src.example/app@" + sha([]byte(manifest))},
		"Layers":   []map[string]any{{"MediaType": "application/vnd.oci.image.layer.v1.tar", "Digest": sha(layer), "Size": len(layer)}},
		"Config":   map[string]any{"Digest": sha([]byte(config)), "Raw": config},
		"Manifest": map[string]any{"MediaType": "application/vnd.oci.image.manifest.v1+json", "Digest": sha([]byte(manifest)), "Raw": manifest},
		"Tag":      "v1", "OrigRef": "src.example/app:v1", "Labels": nil,
	}}}
	entries := []tarEntry{{name: "sha256-" + strings.TrimPrefix(sha(layer), "sha256:") + ".tar.gz", body: layer}}
	if change != nil {
		change(&mj, &entries)
	}
	data, err := json.Marshal(mj)
	if err != nil {
		t.Fatal(err)
	}
	return makeTar(t, append([]tarEntry{{name: "manifest.json", body: data}}, entries...)...)
}

// TestImportRejectsBadInput feeds each kind of bad input named by issue 3
// and checks that the error names the entry and the problem, that nothing
// is tagged, and that no repository (staging included) is left behind.
func TestImportRejectsBadInput(t *testing.T) {
	t.Parallel()
	layer := []byte("layer bytes of a test image")
	layerName := "sha256-" + strings.TrimPrefix(sha(layer), "sha256:") + ".tar.gz"
	good := imgpkgTar(t, layer, nil)
	for _, tc := range []struct {
		name      string
		input     []byte
		wantErr   error
		wantEntry string
	}{
		{"dot-dot path", makeTar(t, tarEntry{name: "../escape", body: []byte("x")}), importer.ErrUnsafePath, "../escape"},
		{"dot-dot inside", makeTar(t, tarEntry{name: "blobs/../../x", body: []byte("x")}), importer.ErrUnsafePath, "blobs/../../x"},
		{"absolute path", makeTar(t, tarEntry{name: "/etc/passwd", body: []byte("x")}), importer.ErrUnsafePath, "/etc/passwd"},
		{"symlink as manifest", makeTar(t, tarEntry{name: "manifest.json", typeflag: tar.TypeSymlink, link: "other.json"}), importer.ErrUnsafeLink, "manifest.json"},
		{"symlink out of the archive", makeTar(t, tarEntry{name: "abc/layer.tar", typeflag: tar.TypeSymlink, link: "../../../etc/shadow"}), importer.ErrUnsafePath, "abc/layer.tar"},
		{"absolute symlink", makeTar(t, tarEntry{name: "abc/layer.tar", typeflag: tar.TypeSymlink, link: "/etc/shadow"}), importer.ErrUnsafePath, "abc/layer.tar"},
		{"hard link as blob", imgpkgTar(t, layer, func(_ *[]map[string]any, es *[]tarEntry) {
			*es = []tarEntry{{name: layerName, typeflag: tar.TypeLink, link: "manifest.json"}}
		}), importer.ErrUnsafeLink, layerName},
		{"device entry", makeTar(t, tarEntry{name: "dev", typeflag: tar.TypeChar}), importer.ErrUnsupported, "dev"},
		{"blob bytes do not match name", imgpkgTar(t, layer, func(_ *[]map[string]any, es *[]tarEntry) {
			(*es)[0].body = []byte("layer bytes of a test imagE")
		}), importer.ErrDigestMismatch, layerName},
		{"manifest references a missing blob", imgpkgTar(t, layer, func(_ *[]map[string]any, es *[]tarEntry) {
			*es = nil
		}), importer.ErrMissingBlob, ""},
		{"manifest raw does not match digest", imgpkgTar(t, layer, func(mj *[]map[string]any, _ *[]tarEntry) {
			img := (*mj)[0]["Image"].(map[string]any)
			m := img["Manifest"].(map[string]any)
			m["Raw"] = strings.Replace(m["Raw"].(string), `"schemaVersion":2`, `"schemaVersion":2 `, 1)
		}), importer.ErrDigestMismatch, "manifest.json"},
		{"invalid JSON", makeTar(t, tarEntry{name: "manifest.json", body: []byte(`[{"Image": {`)}), importer.ErrInvalidJSON, "manifest.json"},
		{"same entry twice, different content", makeTar(t,
			tarEntry{name: "manifest.json", body: []byte(`[]`)}, tarEntry{name: "manifest.json", body: []byte(`[{}]`)}), importer.ErrDuplicate, "manifest.json"},
		{"absurd size", makeTar(t, tarEntry{name: "blobs/sha256/" + strings.Repeat("a", 64), size: 1 << 50}), importer.ErrAbsurdSize, "blobs/sha256/" + strings.Repeat("a", 64)},
		{"truncated file", good[:len(good)/2+100], importer.ErrTruncated, ""},
		{"empty file", nil, importer.ErrEmpty, ""},
		{"not a tar", []byte("this is a text file, not an archive, and it is long enough to fill a tar header block of 512 bytes. " + strings.Repeat("x", 600)), importer.ErrNotArchive, ""},
		{"an empty tar", make([]byte, 1024), importer.ErrEmpty, ""},
		{"a tar of something else", makeTar(t, tarEntry{name: "README.md", body: []byte("hello")}), importer.ErrUnknownFormat, ""},
		{"unexpected entry in an imgpkg tar", imgpkgTar(t, layer, func(_ *[]map[string]any, es *[]tarEntry) {
			*es = append(*es, tarEntry{name: "notes.txt", body: []byte("x")})
		}), importer.ErrUnexpected, "notes.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rec, err := e.imp.Import(context.Background(), importer.Request{Source: "bad.tar", Reader: bytes.NewReader(tc.input), ToRepo: "enclave/app"})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Import = %v, want %v", err, tc.wantErr)
			}
			var ie *importer.Error
			if !errors.As(err, &ie) || ie.Source != "bad.tar" {
				t.Fatalf("error %v is not an *importer.Error naming the source", err)
			}
			if tc.wantEntry != "" && ie.Entry != tc.wantEntry {
				t.Fatalf("error names entry %q, want %q (%v)", ie.Entry, tc.wantEntry, err)
			}
			if rec.Outcome != history.OutcomeFailed || rec.Error == "" || len(rec.Tags) != 0 {
				t.Fatalf("record = %+v", rec)
			}
			if repos := e.leftovers(t); len(repos) != 0 {
				t.Fatalf("a refused import left repositories behind: %v", repos)
			}
		})
	}
	// And the good archive the cases were made from imports.
	e := newEnv(t)
	if _, err := e.imp.Import(context.Background(), importer.Request{Source: "good.tar", Reader: bytes.NewReader(good), ToRepo: "enclave/app"}); err != nil {
		t.Fatalf("the unmodified archive: %v", err)
	}
	if tags := e.tags(t, "enclave/app"); len(tags) != 2 {
		t.Fatalf("tags = %v, want v1 and sha256-….imgpkg", tags)
	}
}

// failingReader delivers n bytes, then fails like a medium that went away.
type failingReader struct {
	r io.Reader
	n int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("read error: the medium went away")
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// TestInterruptedImportLeavesNothingAndResumes cuts the input at many
// points: no cut leaves a tag or repository behind, and importing the whole
// file afterwards completes, reusing what the cut imports had written.
func TestInterruptedImportLeavesNothingAndResumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	data, err := os.ReadFile(fixture(t, "bundle.tar"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int64{0, 100, 2048, int64(len(data)) / 3, int64(len(data)) / 2, int64(len(data)) - 5000} {
		_, err := e.imp.Import(context.Background(), importer.Request{Source: "bundle.tar", Reader: &failingReader{r: bytes.NewReader(data), n: cut}, ToRepo: "enclave/bundle"})
		if err == nil {
			t.Fatalf("cut at %d: import succeeded", cut)
		}
		if repos := e.leftovers(t); len(repos) != 0 {
			t.Fatalf("cut at %d left repositories: %v", cut, repos)
		}
	}
	rec, err := e.imp.Import(context.Background(), importer.Request{Source: "bundle.tar", Reader: bytes.NewReader(data), ToRepo: "enclave/bundle"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.BlobsExisting == 0 {
		t.Fatalf("the complete import wrote everything again: %+v", rec)
	}
	if tags := e.tags(t, "enclave/bundle"); len(tags) < 7 {
		t.Fatalf("tags after completing = %v", tags)
	}
}
