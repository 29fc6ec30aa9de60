package registry_test

import (
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/registry"
)

// TestS3Replica proves a replica of a real Ceph bucket: it refuses to
// start before a writer holds the bucket; then it serves what the writer
// pushed, refuses a crane push with an OCI DENIED naming the writer,
// never writes a state object, and serves a tag the writer moved once
// ReplicaTick ran (and not the stale one it had cached).
func TestS3Replica(t *testing.T) {
	c := ceph.Get(t)
	c.CreateBucket(t, "replica")
	ro := s3Options(c, "replica", "replica-one-000000")
	ro.Replica = true
	if _, err := openS3(t, ro); !errors.Is(err, registry.ErrNoWriter) || !strings.Contains(err.Error(), "site-a/appliance/writer.lock") {
		t.Fatalf("a replica before its writer: %v, want ErrNoWriter naming the lock object", err)
	}
	w, err := openS3(t, s3Options(c, "replica", "writer-one-0000000"))
	if err != nil {
		t.Fatal(err)
	}
	if w.IsReplica() || w.RefusedOnReplica() != nil {
		t.Fatal("the writer calls itself a replica")
	}
	r, err := openS3(t, ro)
	if err != nil {
		t.Fatal(err)
	}
	if !r.IsReplica() || !strings.Contains(r.Writer(), "appliance writer-one-0000000") {
		t.Fatalf("replica: IsReplica %v, Writer %q", r.IsReplica(), r.Writer())
	}
	ws, rs := httptest.NewServer(w.Handler()), httptest.NewServer(r.Handler())
	defer ws.Close()
	defer rs.Close()
	wh, rh := strings.TrimPrefix(ws.URL, "http://"), strings.TrimPrefix(rs.URL, "http://")
	src := t.TempDir()
	img := func(tag string) string {
		layout := src + "/" + tag + ".tar"
		run(t, "crane", "append", "--platform", "linux/amd64", "-f", writeTarOf(t, t.TempDir(), "the layer of "+tag), "-t", "scratch/"+tag+":1", "-o", layout)
		return layout
	}
	first := img("first")
	run(t, "crane", "push", "--insecure", first, wh+"/proj/app:1.0")
	want := run(t, "crane", "digest", "--insecure", wh+"/proj/app:1.0")
	if got := run(t, "crane", "digest", "--insecure", rh+"/proj/app:1.0"); got != want {
		t.Fatalf("the replica serves %s, the writer %s", got, want)
	}

	out, err := craneOut(t, "push", "--insecure", img("second"), rh+"/proj/app:2.0")
	if err == nil || !strings.Contains(out, "DENIED") || !strings.Contains(out, "read-only replica") || !strings.Contains(out, "writer-one-0000000") {
		t.Fatalf("a push to the replica: %v\n%s\nwant DENIED naming the writer", err, out)
	}
	req, _ := http.NewRequest(http.MethodDelete, rs.URL+"/v2/proj/app/manifests/"+want, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("DELETE on the replica: HTTP %d, want 403", resp.StatusCode)
	}
	objects, _ := r.StateObjects()
	if err := objects.Put(t.Context(), "probe", []byte("x")); !errors.Is(err, registry.ErrReplica) {
		t.Fatalf("a replica's Put: %v, want ErrReplica", err)
	}
	if _, err := objects.Get(t.Context(), "probe"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after a refused Put: %v, want fs.ErrNotExist", err)
	}

	// The tag moves on the writer; the replica's cache has the old one
	// until its next tick.
	run(t, "crane", "push", "--insecure", img("third"), wh+"/proj/app:1.0")
	moved := run(t, "crane", "digest", "--insecure", wh+"/proj/app:1.0")
	if got := run(t, "crane", "digest", "--insecure", rh+"/proj/app:1.0"); got != want {
		t.Fatalf("before its tick the replica serves %s, not the cached %s: this test no longer reaches the cache", got, want)
	}
	if err := r.ReplicaTick(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := run(t, "crane", "digest", "--insecure", rh+"/proj/app:1.0"); got != moved {
		t.Fatalf("after ReplicaTick the replica serves %s, the writer %s", got, moved)
	}
}

func craneOut(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "crane", args...).CombinedOutput() //nolint:gosec // G204: the test's own tool
	return string(out), err
}
