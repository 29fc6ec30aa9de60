package mirror_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/appliance-dev/appliance/internal/aptrepo"
)

// The upstreams of these tests are apt repositories published by
// aptrepo. They sign with one key made once per test binary (an RSA-4096
// key takes seconds); a test that needs a stranger's key makes its own.
var (
	keyOnce sync.Once
	keyDir  string
	keyErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if keyDir != "" {
		_ = os.RemoveAll(keyDir)
	}
	os.Exit(code)
}

// newRepos opens aptrepo's repositories on a fresh folder, signing with
// the shared key, closed at the end.
func newRepos(t *testing.T) (*aptrepo.Repos, string) {
	t.Helper()
	keyOnce.Do(func() {
		if keyDir, keyErr = os.MkdirTemp("", "mirror-key-"); keyErr != nil {
			return
		}
		var r *aptrepo.Repos
		if r, keyErr = aptrepo.Open(context.Background(), aptrepo.Options{Dir: keyDir}); keyErr == nil {
			keyErr = r.Close()
		}
	})
	if keyErr != nil {
		t.Fatalf("make the shared signing key: %v", keyErr)
	}
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "keys"), os.DirFS(filepath.Join(keyDir, "keys"))); err != nil {
		t.Fatal(err)
	}
	r, err := aptrepo.Open(t.Context(), aptrepo.Options{Dir: dir})
	if err != nil {
		t.Fatalf("open the upstream's repositories: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r, dir
}

// pkg is a package an upstream offers.
type pkg struct{ Name, Version, Arch, Depends string }

func (p pkg) file() string { return fmt.Sprintf("%s_%s_%s.deb", p.Name, p.Version, p.Arch) }

func (p pkg) control() string {
	c := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: Appliance Tests <tests@example.com>\n", p.Name, p.Version, p.Arch)
	if p.Depends != "" {
		c += "Depends: " + p.Depends + "\n"
	}
	return c + "Description: test package " + p.Name + "\n offered by an upstream of the mirror tests\n"
}
