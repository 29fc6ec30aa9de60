package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/maintenance"
)

// TestFsckAndGCThroughCLI runs `appliance fsck` and `appliance gc` on
// the built binary: a sound store passes; a corrupt blob is named (table
// and JSON) and fails the command; --repair removes it and a re-import
// makes fsck pass again; gc --dry-run names what a refused import left
// and removes nothing; gc removes it; only admins may run either.
func TestFsckAndGCThroughCLI(t *testing.T) {
	a := startAppliance(t, t.TempDir())
	admin := []string{"--username", "admin", "--password-stdin"}
	in := a.password + "\n"
	cli := func(args ...string) (string, error) {
		return a.cliLong(in, append(args, admin...)...)
	}

	layoutDir, _ := ociLayout(t, 8<<10, 2)
	out, err := cli("import", "--to-repo", "enclave/app", layoutDir)
	mustOK(t, "import", out, err)
	out, err = cli("fsck")
	mustOK(t, "fsck of a sound store", out, err)
	if !strings.Contains(out, "no problems") || !strings.Contains(out, "checked 1 repository (") {
		t.Fatalf("fsck output:\n%s", out)
	}

	// A refused import: a good layer goes in, then an entry that does
	// not hash to its name is refused. Its blobs are garbage.
	refusedDir, _ := ociLayout(t, 8<<10, 1)
	refusedLayers := layoutBlobs(t, refusedDir)
	if err := os.WriteFile(filepath.Join(refusedDir, "blobs", "sha256", strings.Repeat("f", 64)), []byte("not what its name says"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = cli("import", "--to-repo", "enclave/refused", refusedDir)
	mustFail(t, "import of a tampered layout", out, err, "does not match its digest")

	out, err = cli("gc", "--dry-run")
	mustOK(t, "gc --dry-run", out, err)
	if !strings.HasPrefix(out, "would remove 0 manifests, ") || strings.Contains(out, "would remove 0 manifests, 0 blobs") {
		t.Fatalf("gc --dry-run output:\n%s", out)
	}
	out, err = cli("gc", "--dry-run", "--json")
	mustOK(t, "gc --dry-run --json", out, err)
	var dry maintenance.GCReport
	if err := json.Unmarshal([]byte(out), &dry); err != nil {
		t.Fatalf("gc --json: %v\n%s", err, out)
	}
	left := 0
	for _, r := range dry.Removed {
		for _, l := range refusedLayers {
			if r.What == "blob" && r.Digest == l {
				left++
			}
		}
	}
	if !dry.DryRun || left == 0 {
		t.Fatalf("gc --dry-run does not name the refused import's blobs %v: %+v", refusedLayers, dry.Removed)
	}
	out, err = cli("gc")
	mustOK(t, "gc", out, err)
	if !strings.HasPrefix(out, "removed ") {
		t.Fatalf("gc output:\n%s", out)
	}
	for _, r := range dry.Removed {
		if r.What == "blob" {
			if blobStored(t, a, r.Digest) {
				t.Errorf("blob %s survived gc", r.Digest)
			}
		}
	}
	out, err = cli("gc", "--dry-run")
	mustOK(t, "second gc --dry-run", out, err)
	if !strings.HasPrefix(out, "would remove 0 manifests, 0 blobs") {
		t.Fatalf("after gc, gc --dry-run says:\n%s", out)
	}

	// A corrupt blob: named, and the command fails.
	layers := layoutBlobs(t, layoutDir)
	corruptBlob(t, a, layers[0])
	out, err = cli("fsck")
	mustFail(t, "fsck of a corrupt blob", out, err, "corrupt-blob", layers[0], "enclave/app@", "--repair")
	out, err = cli("fsck", "--json")
	mustFail(t, "fsck --json of a corrupt blob", out, err)
	var rep maintenance.FsckReport
	if jerr := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &rep); jerr != nil {
		t.Fatalf("fsck --json: %v\n%s", jerr, out)
	}
	if rep.OK || len(rep.Problems) != 1 || rep.Problems[0].Kind != "corrupt-blob" || rep.Problems[0].Digest != layers[0] {
		t.Fatalf("fsck --json problems = %+v", rep.Problems)
	}

	// --repair removes it, and says so; the image then lacks the layer.
	out, err = cli("fsck", "--repair")
	mustFail(t, "fsck --repair", out, err, "removed:", "blob", layers[0], "remaining:", "missing-blob", "1 problem remains")
	if blobStored(t, a, layers[0]) {
		t.Fatal("the corrupt blob is still there")
	}
	// Importing the image again brings the layer back: fsck passes.
	out, err = cli("import", "--to-repo", "enclave/app", layoutDir)
	mustOK(t, "re-import", out, err)
	out, err = cli("fsck")
	mustOK(t, "fsck after repair and re-import", out, err)

	// Admins only.
	if code, _, _ := status(t, a, http.MethodPost, "/api/v1/gc", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("anonymous gc = %d", code)
	}
	pw := writeTemp(t, "developer-password-42\n")
	out, err = cli("user", "add", "dev", "--role", "developer", "--new-password-file", pw)
	mustOK(t, "user add dev", out, err)
	out, err = a.cli("developer-password-42\n", "fsck", "--username", "dev", "--password-stdin")
	mustFail(t, "fsck by a developer", out, err, "not an admin")
}

// layoutBlobs lists the layer digests of the first image of a layout.
func layoutBlobs(t *testing.T, dir string) []string {
	t.Helper()
	var index struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	readJSON(t, filepath.Join(dir, "index.json"), &index)
	var m struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	readJSON(t, filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")), &m)
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

func flip(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
