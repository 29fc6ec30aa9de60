package importer_test

import (
	"archive/tar"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/testkit"
)

const (
	app1   = "sha256:307717c59eb859dfcf7424483b2d62a2499c9ef73620f1006b2543084b3eaca7"
	app2   = "sha256:67a706359a8cc3b7299b6ecb308bb39c1cd619b8648d161ad3ee1fedaa683fe6"
	app3   = "sha256:0c55dcdd2cfe9664528a3660ad60349d228730306df9d5c0fbd8c3155e0602f2"
	bundle = "sha256:1a63919db6a9701b060d2d74652913f6f53e96aeb28b6d5399e1e5fbdd0bb24d"
)

func hexOf(d string) string { return strings.TrimPrefix(d, "sha256:") }

// TestImportImgpkgBundle imports the real imgpkg bundle tar and checks,
// through go-containerregistry, what `imgpkg copy --tar --to-repo` leaves:
// one repository, digests unchanged, every manifest tagged
// sha256-<hex>.imgpkg, the signature tag, and the locations image.
func TestImportImgpkgBundle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec, err := e.importFile(t, fixture(t, "bundle.tar"), "enclave/bundle")
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if rec.Format != importer.FormatImgpkg || rec.Outcome != history.OutcomeSucceeded || len(rec.SourceSHA256) != 64 {
		t.Fatalf("record = %+v", rec)
	}
	tags := e.tags(t, "enclave/bundle")
	for _, d := range []string{app1, app2, app3, bundle} {
		want := "sha256-" + hexOf(d) + ".imgpkg"
		if !slices.Contains(tags, want) {
			t.Errorf("tag %s missing; tags: %v", want, tags)
		}
		got, err := remote.Head(e.ref(t, "enclave/bundle@"+d))
		if err != nil {
			t.Fatalf("head %s: %v", d, err)
		}
		if got.Digest.String() != d {
			t.Fatalf("digest changed: %s → %s", d, got.Digest)
		}
	}
	// Index children are stored by digest and, as imgpkg does, not tagged.
	idx, err := remote.Index(e.ref(t, "enclave/bundle@"+app3))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	for _, c := range im.Manifests {
		if slices.Contains(tags, "sha256-"+c.Digest.Hex+".imgpkg") {
			t.Errorf("index child %s tagged; imgpkg tags only top-level entries", c.Digest)
		}
		if _, err := remote.Image(e.ref(t, "enclave/bundle@"+c.Digest.String())); err != nil {
			t.Errorf("index child %s: %v", c.Digest, err)
		}
	}
	// The cosign signature of app1.
	sigTag := "sha256-" + hexOf(app1) + ".sig"
	if !slices.Contains(tags, sigTag) {
		t.Fatalf("signature tag %s missing: %v", sigTag, tags)
	}
	sig, err := remote.Image(e.ref(t, "enclave/bundle:"+sigTag))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := sig.Layers()
	if len(layers) != 1 {
		t.Fatalf("signature image has %d layers", len(layers))
	}
	mt, _ := layers[0].MediaType()
	payload, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(payload)
	if string(mt) != "application/vnd.dev.cosign.simplesigning.v1+json" || !strings.Contains(string(body), hexOf(app1)) {
		t.Fatalf("signature payload %s: %s", mt, body)
	}
	sm, _ := sig.Manifest()
	if sm.Layers[0].Annotations["dev.cosignproject.cosign/signature"] == "" {
		t.Fatalf("signature annotation lost: %+v", sm.Layers[0].Annotations)
	}
	// The locations image, byte for byte the one imgpkg makes (digest
	// computed with imgpkg v0.43.1's own code; docs/research-imgpkg.md).
	const wantLocations = "sha256:485a54e7f6feea14973624b6dd91fc9418c57b7a623c2f93a366cf28d914540a"
	locTag := "sha256-" + hexOf(bundle) + ".image-locations.imgpkg"
	loc, err := remote.Image(e.ref(t, "enclave/bundle:"+locTag))
	if err != nil {
		t.Fatalf("locations image: %v", err)
	}
	if d, _ := loc.Digest(); d.String() != wantLocations {
		t.Errorf("locations image digest = %s, want imgpkg's %s", d, wantLocations)
	}
	if !slices.Contains(tags, "sha256-"+hexOf(wantLocations)+".imgpkg") {
		t.Errorf("the locations image lacks its own .imgpkg tag: %v", tags)
	}
	if len(tags) != 8 {
		t.Errorf("tags = %v, want 8: four top-level .imgpkg, .sig, the sig image's .imgpkg, the locations tag and its .imgpkg", tags)
	}
	ll, _ := loc.Layers()
	if len(ll) != 1 {
		t.Fatalf("locations image has %d layers", len(ll))
	}
	rc, err := ll[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err == nil && h.Name == "." {
		h, err = tr.Next()
	}
	if err != nil || h.Name != "image-locations.yml" {
		t.Fatalf("locations layer entry = %v, %v", h, err)
	}
	yml, _ := io.ReadAll(tr)
	for _, want := range []string{"kind: ImageLocations", "apiVersion: imgpkg.carvel.dev/v1alpha1",
		"image: 127.0.0.1:5001/fixtures/app1@" + app1, "image: 127.0.0.1:5001/fixtures/app3@" + app3, "isBundle: false"} {
		if !strings.Contains(string(yml), want) {
			t.Errorf("image-locations.yml lacks %q:\n%s", want, yml)
		}
	}
	// Nothing else: the staging repository is gone.
	if repos := e.leftovers(t); !slices.Equal(repos, []string{"enclave/bundle"}) {
		t.Fatalf("repositories after import = %v, want only enclave/bundle", repos)
	}
}

// TestImportImgpkgTwice proves that importing the same tar again writes no
// blob again and leaves the same tags.
func TestImportImgpkgTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first, err := e.importFile(t, fixture(t, "image.tar"), "enclave/app1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.importFile(t, fixture(t, "image.tar"), "enclave/app1")
	if err != nil {
		t.Fatal(err)
	}
	if first.BlobsNew == 0 || second.BlobsNew != 0 || second.BytesNew != 0 || second.BlobsExisting == 0 {
		t.Fatalf("first: %d new, second: %d new (%d bytes), %d existing; want nothing new the second time",
			first.BlobsNew, second.BlobsNew, second.BytesNew, second.BlobsExisting)
	}
	if first.SourceSHA256 != second.SourceSHA256 {
		t.Fatal("the same file hashed differently")
	}
	recs, err := e.hist.List()
	if err != nil || len(recs) != 2 || recs[0].ID != second.ID {
		t.Fatalf("history = %v, %v", recs, err)
	}
}

// TestImportedSignatureVerifies checks app1's cosign signature after an
// import the way `cosign verify --key cosign.pub --insecure-ignore-tlog`
// does: the .sig tag names a simple-signing payload that refers to app1's
// digest, and its signature annotation verifies with cosign.pub.
func TestImportedSignatureVerifies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.importFile(t, fixture(t, "image.tar"), "enclave/app1"); err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(fixture(t, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := remote.Image(e.ref(t, "enclave/app1:sha256-"+hexOf(app1)+".sig"))
	if err != nil {
		t.Fatal(err)
	}
	if err := testkit.VerifyCosign(sig, pemBytes, app1); err != nil {
		t.Fatalf("the imported signature: %v", err)
	}
	// And the signed image itself is there, by the digest the payload names.
	if _, err := remote.Image(e.ref(t, "enclave/app1@"+app1)); err != nil {
		t.Fatal(err)
	}
}
