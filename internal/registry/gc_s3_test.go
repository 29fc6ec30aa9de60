package registry_test

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/registry/storage"
)

// TestS3GCRepair proves gc and fsck --repair on a real Ceph: gc removes
// the manifest no tag reaches and the blobs only it referenced, objects
// and links, after a dry run that removes nothing; what a tag reaches
// still pulls and checks clean. A blob corrupted in the bucket is found
// by fsck and removed by repair with its links. A read-only replica of
// the bucket refuses both, naming its writer.
func TestS3GCRepair(t *testing.T) {
	c := ceph.Get(t)
	c.CreateBucket(t, "gcbucket")
	r, err := openS3(t, s3Options(c, "gcbucket", "gc-writer-00000000"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	push := func(name, ref string) {
		layout := t.TempDir() + "/" + name + ".tar"
		run(t, "crane", "append", "--platform", "linux/amd64", "-f", writeTarOf(t, t.TempDir(), "the "+name+" image's layer"), "-t", "scratch/"+name+":1", "-o", layout)
		run(t, "crane", "push", "--insecure", layout, host+"/"+ref)
	}
	push("kept", "proj/app:1.0")
	push("dropped", "proj/app:2.0")
	dropped := digest.Digest(run(t, "crane", "digest", "--insecure", host+"/proj/app:2.0"))
	var m struct {
		Config struct{ Digest digest.Digest }   `json:"config"`
		Layers []struct{ Digest digest.Digest } `json:"layers"`
	}
	if err := json.Unmarshal([]byte(run(t, "crane", "manifest", "--insecure", host+"/proj/app:2.0")), &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest of 2.0: %+v, %v", m, err)
	}
	// 2.0 now names the kept image: the dropped manifest, its config and
	// its layer are what no tag reaches.
	run(t, "crane", "tag", "--insecure", host+"/proj/app:1.0", "2.0")
	gone := []digest.Digest{dropped, m.Config.Digest, m.Layers[0].Digest}
	object := func(d digest.Digest) string { return "site-a" + storage.BlobDataKey(d) }

	later := time.Now().Add(3 * time.Hour) // everything is past the grace period
	rep, err := r.GC(t.Context(), registry.GCOptions{DryRun: true, Now: later})
	if err != nil || rep.Manifests != 1 || rep.Blobs != 3 {
		t.Fatalf("gc dry run on s3: %+v, %v; want 1 manifest and 3 blobs", rep, err)
	}
	for _, d := range gone {
		if !c.ObjectExists(t, "gcbucket", object(d)) {
			t.Fatalf("a dry run removed %s", d)
		}
	}
	rep, err = r.GC(t.Context(), registry.GCOptions{Now: later})
	if err != nil || rep.Manifests != 1 || rep.Blobs != 3 || rep.LayerLinks < 2 {
		t.Fatalf("gc on s3: %+v, %v", rep, err)
	}
	for _, d := range gone {
		if c.ObjectExists(t, "gcbucket", object(d)) {
			t.Errorf("gc left %s in the bucket", d)
		}
	}
	if _, err := craneOut(t, "manifest", "--insecure", host+"/proj/app@"+dropped.String()); err == nil {
		t.Error("the collected manifest still pulls by digest")
	}
	run(t, "crane", "validate", "--insecure", "--remote", host+"/proj/app:1.0")
	if chk, err := r.Check(t.Context(), registry.CheckOptions{}); err != nil || len(chk.Problems) != 0 {
		t.Fatalf("fsck after gc: %+v, %v", chk.Problems, err)
	}
	if rep, err := r.GC(t.Context(), registry.GCOptions{Now: later}); err != nil || rep.Manifests+rep.Blobs != 0 {
		t.Fatalf("a second gc: %+v, %v; want nothing to remove", rep, err)
	}

	// A layer of the kept image corrupted in the bucket behind the
	// appliance's back: fsck finds it, repair removes it and its links.
	var kept struct {
		Layers []struct{ Digest digest.Digest } `json:"layers"`
	}
	if err := json.Unmarshal([]byte(run(t, "crane", "manifest", "--insecure", host+"/proj/app:1.0")), &kept); err != nil || len(kept.Layers) != 1 {
		t.Fatalf("manifest of 1.0: %+v, %v", kept, err)
	}
	bad := kept.Layers[0].Digest
	c.PutObject(t, "gcbucket", object(bad), []byte("not the layer any more"))
	chk, err := r.Check(t.Context(), registry.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range chk.Problems {
		found = found || (p.Kind == registry.ProblemCorruptBlob && p.Digest == bad.String())
	}
	if !found {
		t.Fatalf("fsck on s3 did not find the corrupt layer %s: %+v", bad, chk.Problems)
	}
	removed, err := r.Repair(t.Context(), chk.Problems)
	if err != nil {
		t.Fatal(err)
	}
	var blob, links bool
	for _, rm := range removed {
		blob = blob || (rm.What == "blob" && rm.Digest == bad.String())
		links = links || (rm.What == "layer-link" && rm.Digest == bad.String())
	}
	if !blob || !links {
		t.Fatalf("repair on s3 removed %+v; want the blob %s and its layer link", removed, bad)
	}
	if c.ObjectExists(t, "gcbucket", object(bad)) {
		t.Error("repair left the corrupt blob in the bucket")
	}
	if chk, err := r.Check(t.Context(), registry.CheckOptions{}); err != nil || len(chk.Problems) == 0 {
		t.Fatalf("fsck after repair: %+v, %v; want the manifest that lacks the layer named", chk.Problems, err)
	}

	ro := s3Options(c, "gcbucket", "gc-replica-0000000")
	ro.Replica = true
	rr, err := openS3(t, ro)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rr.GC(t.Context(), registry.GCOptions{}); !errors.Is(err, registry.ErrReplica) || !strings.Contains(err.Error(), "gc-writer-00000000") {
		t.Fatalf("gc on a replica: %v, want ErrReplica naming the writer", err)
	}
	if _, err := rr.Repair(t.Context(), chk.Problems); !errors.Is(err, registry.ErrReplica) || !strings.Contains(err.Error(), "gc-writer-00000000") {
		t.Fatalf("repair on a replica: %v, want ErrReplica naming the writer", err)
	}
}
