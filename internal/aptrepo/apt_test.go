package aptrepo_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// aptFixture is a repository "ubuntu", distribution "noble", served on
// loopback, with alpha depending on bravo, two versions of charlie (1.0
// published first, then 2.0), an "all" package delta and a package uniform
// in universe. (Debian package names have two characters at least: "a"
// would be refused, see TestAddRefuses.)
type aptFixture struct {
	r        *aptrepo.Repos
	url      string
	key      []byte
	first    aptrepo.Publish // alpha, bravo, charlie 1.0, delta in main
	withU    aptrepo.Publish // + uniform in universe
	withC2   aptrepo.Publish // + charlie 2.0
	debs     map[string]string
	handler  http.Handler
	swapped  *swapHandler
	sources  string
	keyFile  string
	dataRoot string
}

// swapHandler lets a test put a tampering wrapper in front of Handler.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

func newAptFixture(t *testing.T) *aptFixture {
	t.Helper()
	testkit.Need(t, "dpkg-deb", "apt-get", "apt-cache", "gpgv")
	r, dir := newRepos(t)
	debDir := t.TempDir()
	f := &aptFixture{r: r, debs: map[string]string{}, dataRoot: dir}
	for _, p := range []pkg{
		{Name: "alpha", Version: "1.0", Arch: "amd64", Depends: "bravo (>= 1.0)"},
		{Name: "bravo", Version: "1.0", Arch: "amd64"},
		{Name: "charlie", Version: "1.0", Arch: "amd64"},
		{Name: "charlie", Version: "2.0", Arch: "amd64"},
		{Name: "delta", Version: "1.0", Arch: "all"},
		{Name: "uniform", Version: "1.0", Arch: "amd64"},
	} {
		f.debs[p.Name+"_"+p.Version] = buildDeb(t, debDir, p)
	}
	ctx := t.Context()
	var err error
	if f.first, err = r.Add(ctx, "ubuntu", "noble", "main", debFiles(f.debs["alpha_1.0"], f.debs["bravo_1.0"], f.debs["charlie_1.0"], f.debs["delta_1.0"]), "alice"); err != nil {
		t.Fatal(err)
	}
	if f.withU, err = r.Add(ctx, "ubuntu", "noble", "universe", debFiles(f.debs["uniform_1.0"]), "alice"); err != nil {
		t.Fatal(err)
	}
	if f.withC2, err = r.Add(ctx, "ubuntu", "noble", "main", debFiles(f.debs["charlie_2.0"]), "bob"); err != nil {
		t.Fatal(err)
	}
	f.key, _ = r.PublicKey()
	f.handler = r.Handler()
	f.swapped = &swapHandler{}
	f.swapped.set(f.handler)
	f.url = serve(t, f.swapped)
	f.sources = "deb [signed-by=KEYFILE] " + f.url + "/ubuntu noble main universe"
	return f
}

func (f *aptFixture) client(t *testing.T) *aptClient { return newAptClient(t, f.sources, f.key) }

func TestAptGet(t *testing.T) {
	f := newAptFixture(t)

	t.Run("update verifies the signature", func(t *testing.T) {
		c := f.client(t)
		out := c.mustRun("apt-get", "update")
		if strings.Contains(out, "W:") || strings.Contains(out, "E:") {
			t.Fatalf("apt-get update warned:\n%s", out)
		}
		if !strings.Contains(out, "InRelease") {
			t.Fatalf("apt-get update did not fetch InRelease:\n%s", out)
		}
		// The lists folder holds the verified InRelease.
		m, _ := filepath.Glob(filepath.Join(c.dir, "state", "lists", "*_InRelease"))
		if len(m) != 1 {
			t.Fatalf("lists hold %v, want one InRelease", m)
		}
	})

	t.Run("install resolves the dependency", func(t *testing.T) {
		c := f.client(t)
		c.mustRun("apt-get", "update")
		c.mustRun("apt-get", "install", "-y", "--download-only", "alpha")
		got := c.archives()
		want := []string{"alpha_1.0_amd64.deb", "bravo_1.0_amd64.deb"}
		if !slices.Equal(got, want) {
			t.Fatalf("downloaded %v, want %v", got, want)
		}
	})

	t.Run("arch all and a second component", func(t *testing.T) {
		c := f.client(t)
		c.mustRun("apt-get", "update")
		c.mustRun("apt-get", "install", "-y", "--download-only", "delta", "uniform")
		got := c.archives()
		want := []string{"delta_1.0_all.deb", "uniform_1.0_amd64.deb"}
		if !slices.Equal(got, want) {
			t.Fatalf("downloaded %v, want %v", got, want)
		}
	})

	t.Run("a distribution of arch all packages only", func(t *testing.T) {
		p, err := f.r.Add(t.Context(), "ubuntu", "tools", "main", debFiles(f.debs["delta_1.0"]), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.Architectures, []string{"all"}) {
			t.Fatalf("architectures %v, want [all]", p.Architectures)
		}
		c := newAptClient(t, "deb [signed-by=KEYFILE] "+f.url+"/ubuntu tools main", f.key)
		out := c.mustRun("apt-get", "update")
		if strings.Contains(out, "E:") || strings.Contains(out, "W:") {
			t.Fatalf("apt-get update:\n%s", out)
		}
		c.mustRun("apt-get", "install", "-y", "--download-only", "delta")
		if got := c.archives(); !slices.Equal(got, []string{"delta_1.0_all.deb"}) {
			t.Fatalf("downloaded %v", got)
		}
	})

	t.Run("both versions of charlie and the newest is the candidate", func(t *testing.T) {
		c := f.client(t)
		c.mustRun("apt-get", "update")
		out := c.mustRun("apt-cache", "madison", "charlie")
		if !strings.Contains(out, "1.0") || !strings.Contains(out, "2.0") {
			t.Fatalf("apt-cache madison c:\n%s", out)
		}
		if out := c.mustRun("apt-cache", "policy", "charlie"); !strings.Contains(out, "Candidate: 2.0") {
			t.Fatalf("apt-cache policy c:\n%s", out)
		}
	})

	t.Run("gpgv verifies InRelease and Release.gpg", func(t *testing.T) {
		testkit.Need(t, "gpgv")
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "key.gpg")
		if err := os.WriteFile(keyFile, f.key, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"InRelease", "Release", "Release.gpg"} {
			if err := os.WriteFile(filepath.Join(dir, name), get(t, f.url+"/ubuntu/dists/noble/"+name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{{"InRelease"}, {"Release.gpg", "Release"}} {
			cmd := exec.Command("gpgv", append([]string{"--homedir", dir, "--keyring", keyFile}, args...)...)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("gpgv %v: %v\n%s", args, err, out)
			}
		}
		// And a modified Release does not verify.
		rel, _ := os.ReadFile(filepath.Join(dir, "Release"))
		if err := os.WriteFile(filepath.Join(dir, "Release"), bytes.Replace(rel, []byte("Codename: noble"), []byte("Codename: noblf"), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("gpgv", "--homedir", dir, "--keyring", keyFile, "Release.gpg", "Release")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("gpgv accepted a modified Release:\n%s", out)
		}
	})

	t.Run("Release fields", func(t *testing.T) {
		rel := string(get(t, f.url+"/ubuntu/dists/noble/Release"))
		for _, want := range []string{"Origin: appliance\n", "Label: ubuntu\n", "Suite: noble\n", "Codename: noble\n",
			"Architectures: amd64\n", "Components: main universe\n", "Date: ", "SHA256:\n", "Acquire-By-Hash: yes\n",
			" main/binary-amd64/Packages.gz\n"} {
			if !strings.Contains(rel, want) {
				t.Errorf("Release lacks %q:\n%s", want, rel)
			}
		}
	})

	t.Run("tampered InRelease is refused", func(t *testing.T) {
		f.tamper(t, func(path string, body []byte) []byte {
			if strings.HasSuffix(path, "/InRelease") {
				return bytes.Replace(body, []byte("Codename: noble"), []byte("Codename: noblf"), 1)
			}
			if strings.HasSuffix(path, "/Release") || strings.HasSuffix(path, "/Release.gpg") {
				return nil // 404: no way around the bad InRelease
			}
			return body
		})
		c := f.client(t)
		out, err := c.run("apt-get", "update")
		if err == nil || !strings.Contains(out, "BADSIG") {
			t.Fatalf("apt-get update with a tampered InRelease: err=%v\n%s", err, out)
		}
		if out, err := c.run("apt-get", "install", "-y", "--download-only", "alpha"); err == nil {
			t.Fatalf("apt-get install after a refused update succeeded:\n%s", out)
		}
	})

	t.Run("replaced Packages.gz is refused", func(t *testing.T) {
		f.tamper(t, func(path string, body []byte) []byte {
			if !strings.Contains(path, "/binary-amd64/") || strings.HasSuffix(path, "/Release") {
				return body
			}
			// A well-formed Packages.gz, as an attacker would serve: same
			// packages, one of them pointing elsewhere.
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return append(body, '\n')
			}
			plain, _ := io.ReadAll(zr)
			plain = bytes.Replace(plain, []byte("Package: alpha\n"), []byte("Package: evil\n"), 1)
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(plain)
			_ = zw.Close()
			return buf.Bytes()
		})
		c := f.client(t)
		out, err := c.run("apt-get", "update")
		if err == nil || (!strings.Contains(out, "Hash Sum mismatch") && !strings.Contains(out, "unexpected size")) {
			t.Fatalf("apt-get update with a replaced Packages.gz: err=%v\n%s", err, out)
		}
	})

	t.Run("altered deb is refused", func(t *testing.T) {
		c := f.client(t)
		c.mustRun("apt-get", "update")
		f.tamper(t, func(path string, body []byte) []byte {
			if strings.HasSuffix(path, ".deb") {
				b := bytes.Clone(body)
				b[len(b)-1] ^= 0xff
				return b
			}
			return body
		})
		out, err := c.run("apt-get", "install", "-y", "--download-only", "bravo")
		if err == nil || !strings.Contains(out, "Hash Sum mismatch") {
			t.Fatalf("apt-get install of an altered .deb: err=%v\n%s", err, out)
		}
		if got := c.archives(); len(got) != 0 {
			t.Fatalf("apt kept %v", got)
		}
	})

	t.Run("rollback serves the earlier package set", func(t *testing.T) {
		c := f.client(t)
		c.mustRun("apt-get", "update")
		if out := c.mustRun("apt-cache", "policy", "charlie"); !strings.Contains(out, "Candidate: 2.0") {
			t.Fatalf("before rollback, apt-cache policy c:\n%s", out)
		}
		p, err := f.r.Rollback(t.Context(), "ubuntu", "noble", f.withU.ID, "carol")
		if err != nil {
			t.Fatal(err)
		}
		if p.Action != aptrepo.ActionRollback || p.RollbackTo != f.withU.ID || !p.Current || p.ID == f.withU.ID {
			t.Fatalf("Rollback returned %+v", p)
		}
		c.mustRun("apt-get", "update")
		if out := c.mustRun("apt-cache", "policy", "charlie"); !strings.Contains(out, "Candidate: 1.0") {
			t.Fatalf("after rollback, apt-cache policy c:\n%s", out)
		}
		if out := c.mustRun("apt-cache", "madison", "charlie"); strings.Contains(out, "2.0") {
			t.Fatalf("after rollback, apt-cache madison c still lists 2.0:\n%s", out)
		}
		// And forward again, to the publish with c 2.0.
		if _, err := f.r.Rollback(t.Context(), "ubuntu", "noble", f.withC2.ID, "carol"); err != nil {
			t.Fatal(err)
		}
		c.mustRun("apt-get", "update")
		if out := c.mustRun("apt-cache", "policy", "charlie"); !strings.Contains(out, "Candidate: 2.0") {
			t.Fatalf("after rolling forward, apt-cache policy c:\n%s", out)
		}
	})
}

// tamper puts a wrapper in front of the repository for the rest of the
// (sub)test: change returns the body to serve, nil for 404.
func (f *aptFixture) tamper(t *testing.T, change func(path string, body []byte) []byte) {
	t.Helper()
	f.swapped.set(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		f.handler.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		body := change(r.URL.Path, rec.Body.Bytes())
		if body == nil {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(func() { f.swapped.set(f.handler) })
}
