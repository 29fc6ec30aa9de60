package importer_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
)

// ociFixture writes an OCI layout holding: an image named by a bare tag,
// an image named by a full reference, a two-platform index, and a
// referrer (an artifact whose subject is the first image).
type ociFixture struct {
	dir                  string
	tagged, named, index v1.Hash
	referrer             v1.Hash
	namedRef             string
}

func makeOCI(t *testing.T) ociFixture {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := func() v1.Image {
		i, err := random.Image(2048, 2)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	f := ociFixture{dir: dir, namedRef: "registry.example.org:5000/enclave/alpha:1.0"}
	a, b := img(), img()
	if err := p.AppendImage(a, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(b, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": f.namedRef})); err != nil {
		t.Fatal(err)
	}
	idx, err := random.Index(1024, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "multi"})); err != nil {
		t.Fatal(err)
	}
	f.tagged, _ = a.Digest()
	f.named, _ = b.Digest()
	f.index, _ = idx.Digest()
	// A referrer: an OCI artifact manifest with a subject.
	subjDesc, err := partialDescriptor(a)
	if err != nil {
		t.Fatal(err)
	}
	art := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	art = mutate.ConfigMediaType(art, "application/vnd.example.sbom.config")
	art, err = mutate.Append(art, mutate.Addendum{Layer: static.NewLayer([]byte(`{"sbom":true}`), "application/vnd.example.sbom")})
	if err != nil {
		t.Fatal(err)
	}
	art = mutate.Subject(art, subjDesc).(v1.Image)
	if err := p.AppendImage(art); err != nil {
		t.Fatal(err)
	}
	f.referrer, _ = art.Digest()
	return f
}

func partialDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	sz, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	return v1.Descriptor{Digest: d, Size: sz, MediaType: mt}, err
}

// tarDir makes a tar of a folder, optionally compressed.
func tarDir(t *testing.T, dir, compression string) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch compression {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "zstd":
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	default:
		w = nopCloser{&buf}
	}
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// TestImportOCILayout imports the same layout as a folder and as plain,
// gzip and zstd tars; each keeps every digest, maps names under --to-repo,
// and carries the referrer under the fallback tag clients look for.
func TestImportOCILayout(t *testing.T) {
	t.Parallel()
	f := makeOCI(t)
	for _, form := range []string{"folder", "tar", "gzip", "zstd"} {
		t.Run(form, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			req := importer.Request{Source: "layout-" + form, ToRepo: "enclave/mixed"}
			var rec *history.Record
			var err error
			if form == "folder" {
				rec, err = e.imp.ImportDir(context.Background(), f.dir, req)
			} else {
				comp := form
				if form == "tar" {
					comp = ""
				}
				req.Reader = bytes.NewReader(tarDir(t, f.dir, comp))
				rec, err = e.imp.Import(context.Background(), req)
				if rec.Compression != comp {
					t.Errorf("compression recorded %q, want %q", rec.Compression, comp)
				}
			}
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			if rec.Format != importer.FormatOCILayout {
				t.Fatalf("format = %s", rec.Format)
			}
			for tag, want := range map[string]v1.Hash{"v1": f.tagged, "1.0": f.named, "multi": f.index} {
				got, err := remote.Head(e.ref(t, "enclave/mixed:"+tag))
				if err != nil {
					t.Fatalf("head %s: %v", tag, err)
				}
				if got.Digest != want {
					t.Fatalf("%s: digest %s, want %s", tag, got.Digest, want)
				}
			}
			idx, err := remote.Index(e.ref(t, "enclave/mixed:multi"))
			if err != nil {
				t.Fatal(err)
			}
			im, _ := idx.IndexManifest()
			for _, c := range im.Manifests {
				if _, err := remote.Image(e.ref(t, "enclave/mixed@"+c.Digest.String())); err != nil {
					t.Fatalf("index child %s: %v", c.Digest, err)
				}
			}
			// The referrer is listed under the fallback tag sha256-<subject hex>.
			fb, err := remote.Index(e.ref(t, "enclave/mixed:sha256-"+f.tagged.Hex))
			if err != nil {
				t.Fatalf("referrers fallback tag: %v", err)
			}
			fm, _ := fb.IndexManifest()
			if len(fm.Manifests) != 1 || fm.Manifests[0].Digest != f.referrer || fm.Manifests[0].ArtifactType != "application/vnd.example.sbom.config" {
				t.Fatalf("fallback index = %+v, want the referrer %s", fm.Manifests, f.referrer)
			}
		})
	}
}

// TestImportOCIKeepNames keeps the repository path of full references,
// without their registry host.
func TestImportOCIKeepNames(t *testing.T) {
	t.Parallel()
	f := makeOCI(t)
	e := newEnv(t)
	rec, err := e.imp.ImportDir(context.Background(), f.dir, importer.Request{Source: "layout", ToRepo: "mirror", KeepNames: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Head(e.ref(t, "mirror/enclave/alpha:1.0"))
	if err != nil || got.Digest != f.named {
		t.Fatalf("mirror/enclave/alpha:1.0 = %v, %v", got, err)
	}
	if !slices.Contains(rec.Repositories, "mirror/enclave/alpha") || !slices.Contains(rec.Repositories, "mirror") {
		t.Fatalf("repositories = %v", rec.Repositories)
	}
	// Without --to-repo, bare tags have no repository to go to.
	_, err = e.imp.ImportDir(context.Background(), f.dir, importer.Request{Source: "layout", KeepNames: true})
	if err == nil || !strings.Contains(err.Error(), "give --to-repo") {
		t.Fatalf("keep-names without --to-repo on bare tags = %v", err)
	}
}

// TestImportOCIRefusesSymlinkOutOfFolder: a layout folder whose blob is a
// link to a file outside it is refused by name.
func TestImportOCIRefusesSymlinkOutOfFolder(t *testing.T) {
	t.Parallel()
	f := makeOCI(t)
	ents, _ := os.ReadDir(filepath.Join(f.dir, "blobs", "sha256"))
	victim := filepath.Join(f.dir, "blobs", "sha256", ents[0].Name())
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(victim); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, victim); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	_, err := e.imp.ImportDir(context.Background(), f.dir, importer.Request{Source: "layout", ToRepo: "enclave/x"})
	if err == nil || !strings.Contains(err.Error(), "blobs/sha256/"+ents[0].Name()) {
		t.Fatalf("import of a layout with an escaping link = %v", err)
	}
}
