package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

var errKilled = errors.New("killed")

// TestGCStoppedAtEveryStep stops gc at each step of its sweep in turn, as
// a kill would: after every stop the store is consistent (Check finds
// nothing wrong, every tag pulls), and a gc run to the end finishes the
// work, with the same result as one never stopped.
func TestGCStoppedAtEveryStep(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	push := func(ref string) {
		t.Helper()
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		n, err := name.ParseReference(host+"/"+ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(n, img); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		push(fmt.Sprintf("p/app:v%d", i))
		push(fmt.Sprintf("p/app:v%d", i)) // the tag moves: the first is an orphan
	}
	push("p/kept:v1")
	if _, err := r.WriteBlob(ctx, StagingProject+"/killed", Descriptor{}, strings.NewReader("staged")); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(3 * time.Hour)
	plan, err := r.GC(ctx, GCOptions{DryRun: true, Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Manifests != 2 || plan.Blobs != 7 || plan.StagingRepos != 1 {
		t.Fatalf("plan = %+v", plan)
	}
	for stop := 1; ; stop++ {
		n := 0
		r.maint.stopAt = func(step string) error {
			if n++; n == stop {
				return fmt.Errorf("%w after: %s", errKilled, step)
			}
			return nil
		}
		_, err := r.GC(ctx, GCOptions{Now: later})
		r.maint.stopAt = nil
		rep, cerr := r.Check(ctx, CheckOptions{})
		if cerr != nil {
			t.Fatal(cerr)
		}
		if len(rep.Problems) != 0 || len(rep.Warnings) != 0 {
			t.Fatalf("gc stopped at step %d (%v) left: %+v %+v", stop, err, rep.Problems, rep.Warnings)
		}
		for _, ref := range []string{"p/app:v0", "p/app:v1", "p/kept:v1"} {
			nref, _ := name.ParseReference(host+"/"+ref, name.Insecure)
			img, err := remote.Image(nref)
			if err != nil {
				t.Fatalf("after a stop at step %d: %s: %v", stop, ref, err)
			}
			ls, _ := img.Layers()
			for _, l := range ls {
				if _, err := l.Compressed(); err != nil {
					t.Fatalf("after a stop at step %d: %s: %v", stop, ref, err)
				}
			}
		}
		if err == nil {
			break // ran to the end: every step has been a stopping point
		}
		if !errors.Is(err, errKilled) {
			t.Fatal(err)
		}
		// A restart and a whole gc finish the work.
		if _, err := r.GC(ctx, GCOptions{Now: later}); err != nil {
			t.Fatal(err)
		}
		total, err := r.GC(ctx, GCOptions{DryRun: true, Now: later})
		if err != nil || len(total.Removed) != 0 {
			t.Fatalf("after the finishing gc, still to remove: %+v (%v)", total.Removed, err)
		}
		// Put the garbage back for the next stopping point.
		for i := range 2 {
			push(fmt.Sprintf("p/app:v%d", i))
			push(fmt.Sprintf("p/app:v%d", i))
		}
		if _, err := r.WriteBlob(ctx, StagingProject+"/killed", Descriptor{}, strings.NewReader("staged")); err != nil {
			t.Fatal(err)
		}
		if stop > 200 {
			t.Fatal("gc never ran to the end")
		}
	}
}

// TestTurns: holders wait while gc sweeps, gc waits for holders without
// keeping new ones out, and gives up naming them when its wait ends.
func TestTurns(t *testing.T) {
	t.Parallel()
	tu := newTurns()
	ctx := context.Background()
	release, err := tu.hold(ctx, "import 1")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = tu.exclusive(short)
	cancel()
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "import 1") {
		t.Fatalf("exclusive while held = %v", err)
	}
	got := make(chan func(), 1)
	go func() {
		rel, err := tu.exclusive(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	time.Sleep(20 * time.Millisecond)
	// A newcomer is not kept out while gc waits.
	second, err := tu.hold(ctx, "push")
	if err != nil {
		t.Fatal(err)
	}
	release()
	second()
	exclusive := <-got
	// While gc holds the registry, a holder waits.
	waited := make(chan struct{})
	go func() {
		rel, err := tu.hold(ctx, "late push")
		if err != nil {
			t.Error(err)
		}
		close(waited)
		rel()
	}()
	select {
	case <-waited:
		t.Fatal("a write went on while gc swept")
	case <-time.After(50 * time.Millisecond):
	}
	exclusive()
	<-waited
}

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
