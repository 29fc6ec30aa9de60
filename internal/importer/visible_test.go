package importer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
)

// ociImage is a one-layer OCI image as the entries of a layout tar.
type ociImage struct {
	layer, config, manifest []byte
}

func newOCIImage(layer string) ociImage {
	l := []byte(layer)
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + sha(l) + `"]}}`)
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":"%s"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":%d,"digest":"%s"}]}`,
		len(config), sha(config), len(l), sha(l))
	return ociImage{layer: l, config: config, manifest: []byte(manifest)}
}

func blobEntry(b []byte) tarEntry {
	return tarEntry{name: "blobs/sha256/" + strings.TrimPrefix(sha(b), "sha256:"), body: b}
}

// layoutTar is an OCI layout of img tagged tag; withLayer says whether it
// carries the layer; extra entries go after the layer and config.
func layoutTar(t *testing.T, img ociImage, tag string, withLayer bool, extra ...tarEntry) []byte {
	t.Helper()
	index := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":%d,"digest":"%s","annotations":{"org.opencontainers.image.ref.name":"%s"}}]}`,
		len(img.manifest), sha(img.manifest), tag)
	entries := []tarEntry{{name: "oci-layout", body: []byte(`{"imageLayoutVersion":"1.0.0"}`)}}
	if withLayer {
		entries = append(entries, blobEntry(img.layer))
	}
	entries = append(entries, blobEntry(img.config))
	entries = append(entries, extra...)
	entries = append(entries, blobEntry(img.manifest), tarEntry{name: "index.json", body: []byte(index)})
	return makeTar(t, entries...)
}

// TestImportCountsOnlyVisibleBlobs: a blob that an archive leaves out
// counts as present only when a visible manifest references it. One that
// a refused import left in storage does not, so an archive lacking it is
// refused as missing the blob; once a tagged image references it, the
// same archive imports.
func TestImportCountsOnlyVisibleBlobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	img := newOCIImage("the layer a refused import leaves behind")
	imp := func(data []byte, repo string) (*history.Record, error) {
		return e.imp.Import(ctx, importer.Request{Source: "layout.tar", Reader: bytes.NewReader(data), ToRepo: repo})
	}

	// 1. Refused for a digest mismatch in another entry, after the layer
	// was written.
	bad := tarEntry{name: "blobs/sha256/" + strings.Repeat("ab", 32), body: []byte("bytes that do not hash to their name")}
	if _, err := imp(layoutTar(t, img, "v1", true, bad), "enclave/refused"); !errors.Is(err, importer.ErrDigestMismatch) {
		t.Fatalf("import with a tampered entry = %v, want ErrDigestMismatch", err)
	}
	if _, ok, err := e.reg.StatBlob(ctx, digest.Digest(sha(img.layer))); err != nil || !ok {
		t.Fatalf("the refused import's layer is not in storage (%v, %v): the test proves nothing", ok, err)
	}

	// 2. An archive without the layer: refused, naming it.
	_, err := imp(layoutTar(t, img, "v1", false), "enclave/incomplete")
	if !errors.Is(err, importer.ErrMissingBlob) || !strings.Contains(err.Error(), sha(img.layer)) {
		t.Fatalf("import lacking a blob only garbage holds = %v, want ErrMissingBlob naming %s", err, sha(img.layer))
	}
	if tags := e.leftovers(t); len(tags) != 0 {
		t.Fatalf("the refused import left repositories: %v", tags)
	}

	// 3. Once a tagged image references the layer, an archive may leave
	// it out (a delta, a standby's follow).
	if _, err := imp(layoutTar(t, img, "v1", true), "enclave/whole"); err != nil {
		t.Fatalf("whole archive: %v", err)
	}
	rec, err := imp(layoutTar(t, img, "v2", false), "enclave/delta")
	if err != nil {
		t.Fatalf("archive leaving out a visible blob: %v", err)
	}
	if len(rec.Tags) != 1 || rec.Tags[0].Repository != "enclave/delta" {
		t.Fatalf("record tags = %+v", rec.Tags)
	}

	// 4. When the tag goes (here: moves to another image), the layer is
	// garbage again, and an archive lacking it is refused again.
	other := newOCIImage("another layer")
	for _, repo := range []string{"enclave/whole", "enclave/delta"} {
		if _, err := imp(layoutTar(t, other, map[string]string{"enclave/whole": "v1", "enclave/delta": "v2"}[repo], true), repo); err != nil {
			t.Fatalf("moving the tag of %s: %v", repo, err)
		}
	}
	if _, err := imp(layoutTar(t, img, "v3", false), "enclave/late"); !errors.Is(err, importer.ErrMissingBlob) {
		t.Fatalf("import lacking a blob no tag reaches any more = %v, want ErrMissingBlob", err)
	}
}
