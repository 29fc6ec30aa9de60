package importer_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	ab "github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/filestore"
	"github.com/appliance-dev/appliance/internal/importer"
)

type memBlobs map[string][]byte

func (m memBlobs) Open(d string) (io.ReadCloser, error) {
	b, ok := m[d]
	if !ok {
		return nil, fmt.Errorf("no blob %s", d)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// testBundle writes a signed bundle of one random image (tagged
// enclave/app:1.0) and one file, and returns it with the trust to accept it.
func testBundle(t *testing.T) ([]byte, ab.Trust, v1.Hash) {
	t.Helper()
	dir := t.TempDir()
	if err := ab.GenerateKey(filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")); err != nil {
		t.Fatal(err)
	}
	signer, err := ab.LoadSigner(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ab.LoadTrustedKeys([]string{filepath.Join(dir, "k.pub")})
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(32<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	blobs := memBlobs{}
	inv := &ab.Inventory{SchemaVersion: 1, Name: "unit", Created: time.Unix(1_700_000_000, 0).UTC()}
	add := func(d string, b []byte) {
		blobs[d] = b
		inv.Blobs = append(inv.Blobs, ab.Blob{Digest: d, Size: int64(len(b))})
	}
	raw, _ := img.RawManifest()
	md, _ := img.Digest()
	mt, _ := img.MediaType()
	add(md.String(), raw)
	cfg, _ := img.RawConfigFile()
	cd, _ := img.ConfigName()
	add(cd.String(), cfg)
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		rc, _ := l.Compressed()
		b, _ := io.ReadAll(rc)
		add(d.String(), b)
	}
	file := bytes.Repeat([]byte("driver"), 4096)
	fd := fmt.Sprintf("sha256:%x", sha256sum(file))
	add(fd, file)
	inv.Artifacts = []ab.Artifact{
		{Kind: ab.KindImage, Source: "example.org/enclave/app:1.0", Destination: "enclave/app:1.0", Digest: md.String(), Size: int64(len(raw)), MediaType: string(mt)},
		{Kind: ab.KindFile, FileKind: "driver", Source: "./driver.run", Destination: "drivers/driver.run", Digest: fd, Size: int64(len(file)), Version: "550"},
	}
	var buf bytes.Buffer
	if err := ab.WriteArchive(&buf, inv, []byte(`{"schemaVersion":2,"manifests":[]}`), signer, blobs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), ab.Trust{Keys: keys}, md
}

func withFiles(t *testing.T, e *env) *filestore.Store {
	t.Helper()
	fs, err := filestore.Open(t.Context(), filepath.Join(e.dir, "files"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	imp, err := importer.New(e.reg, e.hist, importer.WithFiles(fs))
	if err != nil {
		t.Fatal(err)
	}
	e.imp = imp
	return fs
}

// TestBundleImport: a signed bundle lands as one import — image tagged,
// file in the file store — recorded with its signer and inventory; cut
// anywhere, it leaves nothing visible, and the whole bundle then imports.
func TestBundleImport(t *testing.T) {
	t.Parallel()
	data, trust, md := testBundle(t)
	e := newEnv(t)
	fs := withFiles(t, e)
	ctx := context.Background()

	for _, cut := range []int{1, 700, len(data) / 3, len(data) / 2, len(data) - 2000} {
		_, err := e.imp.Import(ctx, importer.Request{Source: "cut.bundle", Reader: bytes.NewReader(data[:cut]), Trust: trust, User: "t"})
		if err == nil {
			t.Fatalf("a bundle cut at %d of %d bytes was imported", cut, len(data))
		}
		if left := e.leftovers(t); len(left) != 0 {
			t.Fatalf("cut at %d: repositories left: %v", cut, left)
		}
		if len(fs.List()) != 0 {
			t.Fatalf("cut at %d: files visible: %v", cut, fs.List())
		}
		if ents, _ := os.ReadDir(filepath.Join(e.dir, "files", ".staging")); len(ents) != 0 {
			t.Fatalf("cut at %d: file staging left: %v", cut, ents)
		}
	}

	rec, err := e.imp.Import(ctx, importer.Request{Source: "good.bundle", Reader: bytes.NewReader(data), Trust: trust, User: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Format != importer.FormatBundle || rec.Bundle == nil || !rec.Bundle.Signed || !strings.Contains(string(rec.Bundle.Inventory), `"unit"`) || len(rec.Bundle.Files) != 1 {
		t.Fatalf("record = %+v", rec)
	}
	if tags := e.tags(t, "enclave/app"); len(tags) != 1 || tags[0] != "1.0" {
		t.Fatalf("tags = %v", tags)
	}
	ent, ok := fs.Get("drivers/driver.run")
	if !ok || ent.Kind != "driver" || ent.Version != "550" || ent.ImportID != rec.ID {
		t.Fatalf("file entry = %+v %v", ent, ok)
	}
	_, got, err := e.reg.GetManifest(ctx, "enclave/app", digestOf(md))
	if err != nil || len(got) == 0 {
		t.Fatalf("manifest: %v", err)
	}
}

// TestBundleRefusals: a bundle is refused before anything is written when
// its signature is missing or untrusted, or when the importer has nowhere
// to put its files; a tar that is not a bundle still needs --to-repo.
func TestBundleRefusals(t *testing.T) {
	t.Parallel()
	data, trust, _ := testBundle(t)
	other, _, _ := testBundle(t)
	e := newEnv(t)
	ctx := context.Background()
	// No file store.
	_, err := e.imp.Import(ctx, importer.Request{Source: "b", Reader: bytes.NewReader(data), Trust: trust})
	if !errors.Is(err, importer.ErrInvalidRequest) || !strings.Contains(err.Error(), "file store") {
		t.Fatalf("without a file store: %v", err)
	}
	withFiles(t, e)
	_, err = e.imp.Import(ctx, importer.Request{Source: "b", Reader: bytes.NewReader(other), Trust: trust})
	if !errors.Is(err, importer.ErrSignature) || !strings.Contains(err.Error(), "not among the 1 trusted keys") {
		t.Fatalf("untrusted: %v", err)
	}
	_, err = e.imp.Import(ctx, importer.Request{Source: "b", Reader: bytes.NewReader(data)})
	if !errors.Is(err, importer.ErrSignature) {
		t.Fatalf("no trusted keys: %v", err)
	}
	if left := e.leftovers(t); len(left) != 0 {
		t.Fatalf("repositories left: %v", left)
	}
	_, err = e.imp.Import(ctx, importer.Request{Source: "x.tar", Reader: bytes.NewReader(fixtureBytes(t))})
	if !errors.Is(err, importer.ErrInvalidRequest) || !strings.Contains(err.Error(), "--to-repo") {
		t.Fatalf("an OCI tar without --to-repo: %v", err)
	}
}

func sha256sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func digestOf(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }

// fixtureBytes is a tar whose first entry is not inventory.json.
func fixtureBytes(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	_ = tw.WriteHeader(&tar.Header{Name: "oci-layout", Size: int64(len(body)), Mode: 0o644, Typeflag: tar.TypeReg})
	_, _ = tw.Write(body)
	_ = tw.Close()
	return buf.Bytes()
}
