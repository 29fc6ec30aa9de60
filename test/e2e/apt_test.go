package e2e

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// buildDeb makes a .deb with dpkg-deb.
func buildDeb(t *testing.T, dir, name, version, depends string) string {
	t.Helper()
	return buildDebSized(t, dir, name, version, depends, 0)
}

// buildDebSized adds a payload of random bytes (incompressible) of size bytes.
func buildDebSized(t *testing.T, dir, name, version, depends string, size int) string {
	t.Helper()
	root := filepath.Join(dir, name+"_"+version)
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr", "share", "doc", name), 0o755); err != nil {
		t.Fatal(err)
	}
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: Test <test@example.invalid>\nDescription: test package %s\n", name, version, name)
	if depends != "" {
		control += "Depends: " + depends + "\n"
	}
	if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr", "share", "doc", name, "README"), []byte(name+" "+version), 0o644); err != nil {
		t.Fatal(err)
	}
	if size > 0 {
		payload := make([]byte, size)
		if _, err := rand.Read(payload); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "usr", "share", "doc", name, "payload.bin"), payload, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, name+"_"+version+"_all.deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, b)
	}
	return out
}

// aptGet runs the real apt-get against the appliance without touching the
// machine's own configuration.
type aptClient struct {
	t    *testing.T
	dir  string
	opts []string
}

func newAptClient(t *testing.T, sourcesLine string) *aptClient {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"lists/partial", "cache/archives/partial", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	list := filepath.Join(dir, "etc", "sources.list")
	if err := os.WriteFile(list, []byte(sourcesLine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(dir, "status")
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return &aptClient{t: t, dir: dir, opts: []string{
		"-o", "Dir::Etc::SourceList=" + list, "-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::State::Lists=" + filepath.Join(dir, "lists"), "-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		"-o", "Dir::State::status=" + status, "-o", "Acquire::Languages=none", "-o", "Debug::NoLocking=1",
		"-o", "APT::Sandbox::User=root", "-o", "Dir::Etc::Preferences=/dev/null", "-o", "Dir::Etc::PreferencesParts=/dev/null",
		"-o", "Dir::Etc::TrustedParts=/dev/null", "-o", "Dir::Etc::Trusted=/dev/null",
	}}
}

func (c *aptClient) run(tool string, args ...string) (string, error) {
	c.t.Helper()
	return run(c.t, nil, tool, append(c.opts, args...)...)
}

// TestAptThroughTheAppliance adds packages with the CLI and installs them
// with the real apt-get over plain HTTP, checks the snippets VMs use, the
// signature with plain gpgv, and a rollback with the CLI.
func TestAptThroughTheAppliance(t *testing.T) {
	testkit.Need(t, "dpkg-deb", "apt-get", "gpgv")
	a := startAppliance(t, t.TempDir())
	admin := []string{"--username", "admin", "--password-stdin"}
	in := a.password + "\n"
	debs := t.TempDir()
	a1 := buildDeb(t, debs, "gpu-tools", "1.0", "gpu-libs")
	libs := buildDeb(t, debs, "gpu-libs", "1.0", "")
	a2 := buildDeb(t, debs, "gpu-tools", "2.0", "gpu-libs")

	out, err := a.cli(in, append([]string{"apt", "add", "ubuntu", "noble", a1, libs}, admin...)...)
	mustOK(t, "apt add", out, err)
	out, err = a.cli(in, append([]string{"apt", "add", "ubuntu", "noble", "--component", "main", a2}, admin...)...)
	mustOK(t, "apt add v2", out, err)
	// Real packages are often megabytes: uploads are not bound by the
	// API's limit on JSON bodies.
	big := buildDebSized(t, debs, "cuda-sample", "12.4", "", 3<<20)
	out, err = a.cli(in, append([]string{"apt", "add", "ubuntu", "noble", "--component", "multiverse", big}, admin...)...)
	mustOK(t, "apt add of a 3 MiB package", out, err)

	base := "http://" + a.httpAddr + "/apt"
	get := func(path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	keyFile := filepath.Join(t.TempDir(), "key.gpg")
	if err := os.WriteFile(keyFile, []byte(get("/key.gpg")), 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(get("/key.asc"), "BEGIN PGP PUBLIC KEY BLOCK") {
		t.Fatal("/apt/key.asc is not an armored key")
	}
	// Plain gpgv verifies InRelease.
	inrel := filepath.Join(t.TempDir(), "InRelease")
	if err := os.WriteFile(inrel, []byte(get("/ubuntu/dists/noble/InRelease")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, nil, "gpgv", "--keyring", keyFile, inrel)
	mustOK(t, "gpgv InRelease", out, err)

	apt := newAptClient(t, "deb [signed-by="+keyFile+"] "+base+"/ubuntu noble main")
	out, err = apt.run("apt-get", "update")
	mustOK(t, "apt-get update", out, err)
	out, err = apt.run("apt-get", "install", "-y", "--download-only", "gpu-tools")
	mustOK(t, "apt-get install --download-only", out, err)
	for _, want := range []string{"gpu-tools_2.0_all.deb", "gpu-libs_1.0_all.deb"} {
		if _, err := os.Stat(filepath.Join(apt.dir, "cache", "archives", want)); err != nil {
			t.Errorf("%s not downloaded: %v\n%s", want, err, out)
		}
	}

	// The snippets VMs use.
	ci := get("/cloud-init.yaml")
	caPEM, _ := os.ReadFile(filepath.Join(a.dataDir, "ca.crt"))
	for _, want := range []string{"#cloud-config", "ca_certs:", strings.Split(string(caPEM), "\n")[1], "preserve_sources_list: false",
		"deb [signed-by=$KEY_FILE] " + base + "/ubuntu noble main multiverse", "BEGIN PGP PUBLIC KEY BLOCK", "uri: " + base + "/ubuntu"} {
		if !strings.Contains(ci, want) {
			t.Errorf("cloud-init.yaml lacks %q:\n%s", want, ci)
		}
	}
	src := get("/ubuntu.sources")
	for _, want := range []string{"Types: deb\n", "URIs: " + base + "/ubuntu\n", "Suites: noble\n", "Components: main multiverse\n", "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----"} {
		if !strings.Contains(src, want) {
			t.Errorf("ubuntu.sources lacks %q:\n%s", want, src)
		}
	}

	// CLI views and a rollback to the first publish.
	out, err = a.cli("", "apt", "ls")
	mustOK(t, "apt ls", out, err)
	if !regexp.MustCompile(`ubuntu\s+noble\s+main\(3\) multiverse\(1\)`).MatchString(out) {
		t.Errorf("apt ls:\n%s", out)
	}
	out, err = a.cli("", "apt", "search", "gpu-tools")
	mustOK(t, "apt search", out, err)
	if !strings.Contains(out, "2.0") {
		t.Errorf("apt search:\n%s", out)
	}
	out, err = a.cli("", "apt", "history", "ubuntu", "noble")
	mustOK(t, "apt history", out, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	first := strings.Fields(lines[len(lines)-1])[0]
	out, err = a.cli(in, append([]string{"apt", "rollback", "ubuntu", "noble", first}, admin...)...)
	mustOK(t, "apt rollback", out, err)
	out, err = apt.run("apt-get", "update")
	mustOK(t, "apt-get update after rollback", out, err)
	out, err = apt.run("apt-cache", "policy", "gpu-tools")
	mustOK(t, "apt-cache policy", out, err)
	if !strings.Contains(out, "Candidate: 1.0") {
		t.Fatalf("after rollback apt sees:\n%s", out)
	}

	// Bad input is refused by name, and needs a developer.
	junk := writeTemp(t, "not a package")
	out, err = a.cli(in, append([]string{"apt", "add", "ubuntu", "noble", junk}, admin...)...)
	mustFail(t, "apt add of a text file", out, err, "not a Debian binary package")
	out, err = a.cli("", "apt", "add", "ubuntu", "noble", libs)
	mustFail(t, "anonymous apt add", out, err, "authentication required")
}
