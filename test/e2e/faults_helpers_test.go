package e2e

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/maintenance"
)

// image is an image as a test knows it: its reference, its manifest's
// digest and the digests of its config and layers.
type image struct {
	ref    string // repository:tag
	digest string
	blobs  []string
}

// layoutImage reads the first image of an OCI layout.
func layoutImage(t *testing.T, dir, ref string) image {
	t.Helper()
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	if len(idx.Manifests) == 0 {
		t.Fatalf("the layout %s holds no image", dir)
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	d := idx.Manifests[0].Digest
	readJSON(t, filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")), &m)
	img := image{ref: ref, digest: d, blobs: []string{m.Config.Digest}}
	for _, l := range m.Layers {
		img.blobs = append(img.blobs, l.Digest)
	}
	return img
}

// seedImage pushes a random image (n layers of size bytes) with skopeo as
// the admin and returns it.
func seedImage(t *testing.T, a *appliance, ref string, size int64, n int) image {
	t.Helper()
	dir, _ := ociLayout(t, size, n)
	out, err := pushOCI(t, a, dir, ref, "admin:"+a.password)
	mustOK(t, "skopeo push of "+ref, out, err)
	return layoutImage(t, dir, ref)
}

// assertServed pulls img with skopeo as the admin and checks that the
// manifest and every blob have the digests they had when it was pushed
// (skopeo verifies each blob's bytes against its digest as it pulls).
func assertServed(t *testing.T, a *appliance, img image) {
	t.Helper()
	dir := t.TempDir()
	out, err := run(t, nil, "skopeo", "copy", "--src-cert-dir", a.certDir(), "--src-creds", "admin:"+a.password,
		"docker://"+a.host()+"/"+img.ref, "oci:"+dir+":pulled")
	mustOK(t, "skopeo pull of "+img.ref, out, err)
	got := layoutImage(t, dir, img.ref)
	if got.digest != img.digest || !slices.Equal(got.blobs, img.blobs) {
		t.Fatalf("%s pulls as %s %v, want %s %v", img.ref, got.digest, got.blobs, img.digest, img.blobs)
	}
	for _, b := range append([]string{got.digest}, got.blobs...) {
		if sum := "sha256:" + fileSHA(t, filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(b, "sha256:"))); sum != b {
			t.Fatalf("%s: the blob pulled as %s hashes to %s", img.ref, b, sum)
		}
	}
}

// assertTag checks that ref names the manifest digest.
func assertTag(t *testing.T, a *appliance, ref, digest string) {
	t.Helper()
	got, err := inspectDigest(t, a, ref, "admin:"+a.password)
	if err != nil || got != digest {
		t.Fatalf("%s = %s (%v), want %s", ref, got, err, digest)
	}
}

// assertNoTags checks that repo has no tag, by its tag list and the
// catalog.
func assertNoTags(t *testing.T, a *appliance, repo string) {
	t.Helper()
	code, _, body := status(t, a, http.MethodGet, "/v2/"+repo+"/tags/list", "admin", a.password)
	var list struct{ Tags []string }
	switch {
	case code == http.StatusNotFound:
	case code == http.StatusOK && json.Unmarshal([]byte(body), &list) == nil && len(list.Tags) == 0:
	default:
		t.Fatalf("%s after the fault: tags/list = %d %s, want no tags", repo, code, body)
	}
}

// assertSound runs `appliance fsck --json` and `appliance audit --verify`
// and fails on any problem. A warning fails too: the two kinds that
// docs/operations.md expects (an index holding some of its platforms, a
// referrer before its subject) never arise in these tests.
func assertSound(t *testing.T, a *appliance) maintenance.FsckReport {
	t.Helper()
	out, err := a.cliLong(a.password+"\n", "fsck", "--json", "--username", "admin", "--password-stdin")
	var rep maintenance.FsckReport
	// A failing fsck prints its verdict after the JSON.
	if jerr := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &rep); jerr != nil {
		t.Fatalf("appliance fsck --json: %v, %v\n%s", err, jerr, out)
	}
	if err != nil || !rep.OK || len(rep.Problems) != 0 || len(rep.Warnings) != 0 || len(rep.Remaining) != 0 {
		t.Fatalf("appliance fsck: %v, ok %v, problems %+v, warnings %+v", err, rep.OK, rep.Problems, rep.Warnings)
	}
	out, err = a.cli(a.password+"\n", "audit", "--verify", "--username", "admin", "--password-stdin")
	mustOK(t, "appliance audit --verify", out, err)
	return rep
}

// treeBytes adds up the sizes of the files under dir; files that go away
// while it walks count as nothing.
func treeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("size of %s: %v", dir, err)
	}
	return n
}

// smallDisk mounts a tmpfs of the size given (mount's notation: "64m") on
// a new folder, unmounted when the test ends. Mounting needs root: the
// test is skipped otherwise, and fails in CI, which runs as root.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	need := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	if os.Geteuid() != 0 {
		need("a full disk is a small tmpfs, and mounting one needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		need("mount a %s tmpfs: %v %s", size, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmount the tmpfs %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// freeBytes is what a filesystem has left for an unprivileged writer.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fill writes a file beside dir (on the same filesystem) that leaves
// about leave bytes free, and returns its path: removing it frees the
// space again.
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	p := filepath.Join(filepath.Dir(dir), "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i) // not that a tmpfs compresses, but no holes either
	}
	for left := freeBytes(t, dir) - leave; left > 0; {
		n, err := f.Write(chunk[:min(int64(len(chunk)), left)])
		if err != nil {
			t.Fatalf("write the filler: %v", err)
		}
		left -= int64(n)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return p
}

// cliResult is what a client command run in the background printed.
type cliResult struct {
	out string
	err error
}

// importOutcome is the outcome of the newest import of source ("" when
// there is none).
func importOutcome(t *testing.T, a *appliance, source string) string {
	t.Helper()
	var recs []history.Record
	if err := getJSON(a, "/api/v1/imports", &recs); err != nil {
		t.Fatalf("the import history: %v", err)
	}
	for _, r := range recs { // newest first
		if r.Source == source {
			return r.Outcome
		}
	}
	return ""
}

// assertImportRecorded checks the outcome of the newest import of source
// in the history, through the API and in `appliance imports`.
func assertImportRecorded(t *testing.T, a *appliance, source, outcome string) {
	t.Helper()
	if got := importOutcome(t, a, source); got != outcome {
		t.Errorf("the import of %s is recorded %q, want %q", source, got, outcome)
	}
	out, err := a.cli(a.password+"\n", "imports", "--username", "admin", "--password-stdin")
	mustOK(t, "appliance imports", out, err)
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); slices.Contains(f, source) && slices.Contains(f, outcome) {
			return
		}
	}
	t.Errorf("appliance imports does not show the import of %s %s:\n%s", source, outcome, out)
}

// waitFor polls cond every 20 ms until it holds, failing the test after d.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gcPlan is `appliance gc --dry-run --json`.
func gcPlan(t *testing.T, a *appliance) maintenance.GCReport {
	t.Helper()
	out, err := a.cliLong(a.password+"\n", "gc", "--dry-run", "--json", "--username", "admin", "--password-stdin")
	mustOK(t, "gc --dry-run", out, err)
	var rep maintenance.GCReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("gc --dry-run --json: %v\n%s", err, out)
	}
	return rep
}

// blobCount is how many blobs the registry stores.
func blobCount(t *testing.T, a *appliance) int {
	t.Helper()
	root := filepath.Join(a.dataDir, "registry", "docker", "registry", "v2", "blobs", "sha256")
	prefixes, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range prefixes {
		ents, err := os.ReadDir(filepath.Join(root, p.Name()))
		if err == nil { // a folder gc just emptied may be gone
			n += len(ents)
		}
	}
	return n
}
