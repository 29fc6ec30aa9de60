package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// TestFsckAndGCOfSHA512Content: an image pushed by sha512 digests and
// tagged is checked clean and kept by gc, with its blobs; an untagged one
// is collected, with its blobs and their sha256 twins; fsck is clean after.
func TestFsckAndGCOfSHA512Content(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	c := newClient(t, r.Handler())
	ctx := context.Background()
	const repo = "p/five12"
	kept, keptDigest := sha512Image(t, c, repo, "kept")
	if resp, body := c.pushManifest(repo, keptDigest.String(), "application/vnd.oci.image.manifest.v1+json", kept); resp.StatusCode != http.StatusCreated { //nolint:bodyclose // closed by do
		t.Fatalf("PUT = %d %s", resp.StatusCode, body)
	}
	if err := r.Tag(ctx, repo, "v1", keptDigest); err != nil {
		t.Fatal(err)
	}
	orphan, orphanDigest := sha512Image(t, c, repo, "orphan")
	if resp, body := c.pushManifest(repo, orphanDigest.String(), "application/vnd.oci.image.manifest.v1+json", orphan); resp.StatusCode != http.StatusCreated { //nolint:bodyclose // closed by do
		t.Fatalf("PUT = %d %s", resp.StatusCode, body)
	}
	rep, err := r.Check(ctx, CheckOptions{})
	if err != nil || len(rep.Problems) != 0 || len(rep.Warnings) != 0 {
		t.Fatalf("fsck of sha512 content: %+v %+v (%v)", rep.Problems, rep.Warnings, err)
	}
	gc, err := r.GC(ctx, GCOptions{Now: time.Now().Add(3 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if gc.Manifests != 1 || gc.Removed[0].Digest != orphanDigest.String() {
		t.Fatalf("gc removed %+v, want the untagged sha512 manifest", gc.Removed)
	}
	for _, rm := range gc.Removed {
		if rm.Digest == keptDigest.String() {
			t.Fatalf("gc removed the tagged manifest: %+v", gc.Removed)
		}
	}
	if rep, err := r.Check(ctx, CheckOptions{}); err != nil || len(rep.Problems) != 0 || len(rep.Warnings) != 0 {
		t.Fatalf("fsck after gc: %+v %+v (%v)", rep.Problems, rep.Warnings, err)
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(kept, &m); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v2/" + repo + "/manifests/v1", "/v2/" + repo + "/blobs/" + m.Config.Digest, "/v2/" + repo + "/blobs/" + m.Layers[0].Digest} {
		if resp, _ := c.do(http.MethodGet, path, http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}, nil); resp.StatusCode != http.StatusOK { //nolint:bodyclose // closed by do
			t.Fatalf("GET %s after gc = %d", path, resp.StatusCode)
		}
	}
	again, err := r.GC(ctx, GCOptions{DryRun: true, Now: time.Now().Add(3 * time.Hour)})
	if err != nil || len(again.Removed) != 0 {
		t.Fatalf("a second gc would remove %+v (%v)", again.Removed, err)
	}
}
