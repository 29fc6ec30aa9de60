// Package testkit holds the helpers the test packages share: skipping (or,
// in CI, failing) when a real tool is missing, a buffer a process can write
// to while a test reads it, Debian's docker-registry as a stand-in for a
// remote registry (restartable, read-only on demand), the appliance's own
// registry served over TLS in-process (Node), the real Harbor of
// ../shared/harbor, a real Ceph object store (S3) from ../shared/ceph, and
// a cosign signature check. It is an ordinary package
// so that tests of several packages can import it; only tests import it,
// and the appliance itself never does.
package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// debianPackages names the Debian package (or, for crane, the other way to
// get it) of each tool the tests run; .ci/run installs them all. A tool
// not listed is taken to come in the package of its own name.
var debianPackages = map[string]string{ //nolint:gosec // G101: package names, not credentials
	"dpkg-deb":        "dpkg",
	"apt-get":         "apt",
	"apt-cache":       "apt",
	"gpgv":            "gpgv",
	"docker-registry": "docker-registry",
	"skopeo":          "skopeo",
	"podman":          "podman",
	"crane":           "none: go install github.com/google/go-containerregistry/cmd/crane@v0.22.1",
	"openssl":         "openssl",
	"debootstrap":     "debootstrap",
	"htpasswd":        "apache2-utils",
	"nginx":           "nginx-light",
	"imgpkg":          "none: ../shared/tools/imgpkg",
	// The OVA's build and boot test (packaging/ova).
	"qemu-system-x86_64": "qemu-system-x86",
	"qemu-img":           "qemu-utils",
	"mkfs.vfat":          "dosfstools",
	"mkfs.ext4":          "e2fsprogs",
	"debugfs":            "e2fsprogs",
	"mmd":                "mtools",
	"mcopy":              "mtools",
	"sfdisk":             "fdisk",
	"xorriso":            "xorriso",
	"journalctl":         "systemd",
	// The storage.backend s3 tests (../shared/ceph).
	"ceph-mon": "ceph-mon",
	"ceph-mgr": "ceph-mgr",
	"ceph-osd": "ceph-osd",
	"radosgw":  "radosgw",
	"ceph":     "ceph-common",
}

// Need skips the test when one of tools is not on $PATH, naming the
// package that has it. In CI (the environment variable CI is set) a
// missing tool fails the test instead: there .ci/run must have installed it.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err == nil {
			continue
		}
		pkg, ok := debianPackages[tool]
		if !ok {
			pkg = tool
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; .ci/run must install it (apt-get install -y %s)", tool, pkg)
		}
		t.Skipf("%s is not installed: apt-get install -y %s (CI installs it)", tool, pkg)
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent use: a process's output,
// copied in by os/exec, that the test reads while the process runs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what has been written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
