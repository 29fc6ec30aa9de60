package aptrepo_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// downloadReal fetches real Debian packages with the machine's apt (its
// configured mirror) into a temporary folder, or skips the test saying why.
func downloadReal(t *testing.T, names ...string) []string {
	t.Helper()
	testkit.Need(t, "apt-get")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-q", "-o", "APT::Sandbox::User=root", "download"}, names...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("real Debian packages cannot be fetched (apt-get download %s: %v): skipping the real-package and debootstrap/chroot scenarios\n%s",
			strings.Join(names, " "), err, out)
	}
	m, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(m) != len(names) {
		t.Skipf("apt-get download %s gave %v: skipping the real-package scenarios", strings.Join(names, " "), m)
	}
	return m
}

// TestRealDebianPackages adds real packages from Debian's archive and shows
// apt-get resolving them from the repository: xml-core depends on
// sgml-base (and on sed and dpkg, which the client's status file says are
// installed, as on any Debian system).
func TestRealDebianPackages(t *testing.T) {
	debs := downloadReal(t, "xml-core", "sgml-base")
	r, _ := newRepos(t)
	p, err := r.Add(t.Context(), "debian", "bookworm", "main", debFiles(debs...), "tests")
	if err != nil {
		t.Fatal(err)
	}
	if p.Packages != 2 || !slices.Equal(p.Architectures, []string{"all"}) {
		t.Fatalf("published %+v", p)
	}
	pkgs, err := r.Search(t.Context(), "xml-core")
	if err != nil || len(pkgs) != 1 || !strings.Contains(pkgs[0].Depends, "sgml-base") {
		t.Fatalf("Search(xml-core) = %+v, %v", pkgs, err)
	}
	key, _ := r.PublicKey()
	url := serve(t, r.Handler())
	c := newAptClient(t, "deb [signed-by=KEYFILE] "+url+"/debian bookworm main", key)
	c.setStatus(installed("sed", "4.9-1") + installed("dpkg", "1.21.22"))
	c.mustRun("apt-get", "update")
	c.mustRun("apt-get", "install", "-y", "--download-only", "xml-core")
	got := c.archives()
	if len(got) != 2 || !strings.HasPrefix(got[0], "sgml-base_") || !strings.HasPrefix(got[1], "xml-core_") {
		t.Fatalf("downloaded %v, want sgml-base and xml-core", got)
	}

	t.Run("debootstrap", func(t *testing.T) {
		testDebootstrap(t)
	})
}

func installed(name, version string) string {
	return "Package: " + name + "\nStatus: install ok installed\nPriority: required\nSection: admin\nMaintainer: x\nArchitecture: amd64\nVersion: " +
		version + "\nDescription: stand-in\n\n"
}

// testDebootstrap builds a minimal Debian chroot from the repository with
// debootstrap, then runs a command in it. It downloads the ~80 packages of
// the minbase variant (about 40 MB) and takes a minute or two, so it runs
// only when APTREPO_DEBOOTSTRAP=1.
func testDebootstrap(t *testing.T) {
	if os.Getenv("APTREPO_DEBOOTSTRAP") != "1" {
		t.Skip("the debootstrap/chroot scenario downloads about 40 MB of real Debian packages: set APTREPO_DEBOOTSTRAP=1 to run it")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("debootstrap is not installed: apt-get install -y debootstrap")
	}
	if os.Geteuid() != 0 {
		t.Skip("debootstrap and chroot need root")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	// Which packages: debootstrap tells, from the machine's mirror.
	list := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--print-debs", "bookworm", t.TempDir())
	out, err := list.Output()
	if err != nil {
		t.Skipf("real Debian packages cannot be fetched (debootstrap --print-debs: %v): skipping the debootstrap/chroot scenario", err)
	}
	names := strings.Fields(string(out))
	debs := downloadReal(t, names...)
	r, _ := newRepos(t)
	if _, err := r.Add(ctx, "debian", "bookworm", "main", debFiles(debs...), "tests"); err != nil {
		t.Fatal(err)
	}
	key, _ := r.PublicKey()
	keyFile := filepath.Join(t.TempDir(), "key.gpg")
	if err := os.WriteFile(keyFile, key, 0o644); err != nil {
		t.Fatal(err)
	}
	url := serve(t, r.Handler())
	target := filepath.Join(t.TempDir(), "chroot")
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--keyring="+keyFile, "bookworm", target, url+"/debian")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debootstrap from the repository: %v\n%s", err, out)
	}
	chroot := exec.CommandContext(ctx, "chroot", target, "dpkg-query", "-W", "base-files")
	if out, err := chroot.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "base-files") {
		t.Fatalf("chroot dpkg-query: %v\n%s", err, out)
	}
}
