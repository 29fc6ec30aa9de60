package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/testkit"
)

func fixturePath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "fixtures", "imgpkg", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("fixture %s not available: %v", name, err)
	}
	return p
}

// TestImportThroughCLI imports with `appliance import` and reads the
// result with crane and skopeo: an imgpkg bundle lands as imgpkg would
// leave it, an OCI layout folder uploads, a path on the appliance's disk
// imports without upload, and bad input, missing rights and read-only mode
// are refused with a clear message and recorded.
func TestImportThroughCLI(t *testing.T) {
	testkit.Need(t, "skopeo", "crane")
	a := startAppliance(t, t.TempDir())
	admin := []string{"--username", "admin", "--password-stdin"}
	in := a.password + "\n"
	crane := func(args ...string) (string, error) {
		return run(t, []string{"SSL_CERT_FILE=" + filepath.Join(a.dataDir, "ca.crt")}, "crane", args...)
	}

	out, err := a.cli(in, append([]string{"import", "--to-repo", "enclave/bundle", fixturePath(t, "bundle.tar")}, admin...)...)
	mustOK(t, "appliance import bundle.tar", out, err)
	if !strings.Contains(out, "imported bundle.tar (imgpkg") {
		t.Fatalf("import output:\n%s", out)
	}
	out, err = crane("ls", a.host()+"/enclave/bundle")
	mustOK(t, "crane ls", out, err)
	for _, want := range []string{
		"sha256-1a63919db6a9701b060d2d74652913f6f53e96aeb28b6d5399e1e5fbdd0bb24d.imgpkg",
		"sha256-1a63919db6a9701b060d2d74652913f6f53e96aeb28b6d5399e1e5fbdd0bb24d.image-locations.imgpkg",
		"sha256-307717c59eb859dfcf7424483b2d62a2499c9ef73620f1006b2543084b3eaca7.sig",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("crane ls lacks %s:\n%s", want, out)
		}
	}
	out, err = crane("digest", a.host()+"/enclave/bundle:sha256-1a63919db6a9701b060d2d74652913f6f53e96aeb28b6d5399e1e5fbdd0bb24d.image-locations.imgpkg")
	mustOK(t, "crane digest of the locations image", out, err)
	if strings.TrimSpace(out) != "sha256:485a54e7f6feea14973624b6dd91fc9418c57b7a623c2f93a366cf28d914540a" {
		t.Errorf("locations image digest = %s, want imgpkg's", out)
	}
	got, err := inspectDigest(t, a, "enclave/bundle@sha256:307717c59eb859dfcf7424483b2d62a2499c9ef73620f1006b2543084b3eaca7", "")
	mustOK(t, "anonymous pull of app1 by digest", got, err)

	// An OCI layout folder, uploaded as a tar on the fly.
	layoutDir, digest := ociLayout(t, 16<<10, 2)
	out, err = a.cli(in, append([]string{"import", "--to-repo", "enclave/oci", layoutDir}, admin...)...)
	mustOK(t, "appliance import of a layout folder", out, err)
	if got, err := inspectDigest(t, a, "enclave/oci:latest", ""); err != nil || got != digest.String() {
		t.Fatalf("enclave/oci:latest = %s, %v; want %s", got, err, digest)
	}

	// A path on the appliance's own disk.
	out, err = a.cli(in, append([]string{"import", "--on-server", "--to-repo", "enclave/app1", fixturePath(t, "image.tar")}, admin...)...)
	mustOK(t, "appliance import --on-server", out, err)

	// Bad input: refused, non-zero exit, recorded.
	junk := writeTemp(t, strings.Repeat("not an archive\n", 100))
	out, err = a.cli(in, append([]string{"import", "--to-repo", "enclave/junk", junk}, admin...)...)
	mustFail(t, "import of a text file", out, err, "not a tar archive")

	// A guest may not import.
	pw := writeTemp(t, "guest-password-42\n")
	out, err = a.cli(in, append([]string{"user", "add", "viewer", "--role", "guest", "--new-password-file", pw}, admin...)...)
	mustOK(t, "user add viewer", out, err)
	out, err = a.cli("guest-password-42\n", "import", "--to-repo", "enclave/x", fixturePath(t, "image.tar"), "--username", "viewer", "--password-stdin")
	mustFail(t, "guest import", out, err, "developer or admin role")

	// Read-only mode refuses imports.
	out, err = a.cli(in, append([]string{"readonly", "enable", "--reason", "standby"}, admin...)...)
	mustOK(t, "readonly enable", out, err)
	out, err = a.cli(in, append([]string{"import", "--to-repo", "enclave/ro", fixturePath(t, "image.tar")}, admin...)...)
	mustFail(t, "import in read-only mode", out, err, "read-only mode", "standby")
	out, err = a.cli(in, append([]string{"readonly", "disable"}, admin...)...)
	mustOK(t, "readonly disable", out, err)

	out, err = a.cli(in, append([]string{"imports"}, admin...)...)
	mustOK(t, "appliance imports", out, err)
	if strings.Count(out, "succeeded") != 3 || strings.Count(out, "failed") != 1 || !strings.Contains(out, "bundle.tar") {
		t.Fatalf("imports:\n%s", out)
	}
}

// TestImportSurvivesKilledServer kills the appliance (SIGKILL) while an
// import is streaming in: after a restart nothing of it is visible, the
// history says it was interrupted, and running it again completes it.
func TestImportSurvivesKilledServer(t *testing.T) {
	a := startAppliance(t, t.TempDir())
	data, err := os.ReadFile(fixturePath(t, "bundle.tar"))
	if err != nil {
		t.Fatal(err)
	}
	// Zero blocks after the end of the archive, as tar's blocking leaves:
	// the importer reads its input a megabyte at a time, so the part sent
	// before the kill must exceed one.
	data = append(data, make([]byte, 2<<20)...)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, "https://"+a.host()+"/api/v1/imports?to_repo=enclave/bundle&source=bundle.tar", pr)
	req.SetBasicAuth("admin", a.password)
	req.Header.Set("Content-Type", "application/octet-stream")
	done := make(chan error, 1)
	go func() {
		resp, err := a.httpClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	// Send two thirds, then wait until the server has written some of it.
	if _, err := pw.Write(data[:len(data)*2/3]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !hasStaging(t, a) {
		if time.Now().After(deadline) {
			t.Fatal("the import never started writing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.kill()
	pw.CloseWithError(io.ErrClosedPipe)
	<-done

	a.start()
	if hasStaging(t, a) {
		t.Fatal("the interrupted import's staging area survived the restart")
	}
	code, _, body := status(t, a, http.MethodGet, "/v2/_catalog", "admin", a.password)
	if code != http.StatusOK || strings.Contains(body, "enclave") {
		t.Fatalf("catalog after the killed import = %d %s, want nothing visible", code, body)
	}
	code, _, body = status(t, a, http.MethodGet, "/api/v1/imports", "admin", a.password)
	var recs []struct{ Outcome, Source string }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &recs) != nil || len(recs) != 1 || recs[0].Outcome != "interrupted" {
		t.Fatalf("history after the killed import = %d %s", code, body)
	}
	out, err := a.cli(a.password+"\n", "import", "--to-repo", "enclave/bundle", fixturePath(t, "bundle.tar"), "--username", "admin", "--password-stdin")
	mustOK(t, "re-running the import", out, err)
	if code, _, _ := status(t, a, http.MethodGet, "/v2/enclave/bundle/manifests/sha256-1a63919db6a9701b060d2d74652913f6f53e96aeb28b6d5399e1e5fbdd0bb24d.imgpkg", "", ""); code != http.StatusOK {
		t.Fatalf("bundle after re-running = %d", code)
	}
}
