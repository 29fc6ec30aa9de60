package aptrepo_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// keyDir holds a signing key made once for the whole test binary: an
// RSA-4096 key takes seconds to make, and most tests only need one.
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

func sharedKeys(t testing.TB) string {
	t.Helper()
	keyOnce.Do(func() {
		keyDir, keyErr = os.MkdirTemp("", "aptrepo-key-")
		if keyErr != nil {
			return
		}
		var r *aptrepo.Repos
		r, keyErr = aptrepo.Open(context.Background(), aptrepo.Options{Dir: keyDir})
		if keyErr == nil {
			keyErr = r.Close()
		}
	})
	if keyErr != nil {
		t.Fatalf("make the shared signing key: %v", keyErr)
	}
	return filepath.Join(keyDir, "keys")
}

// openRepos opens Repos in dir with the shared key copied in.
func openRepos(t testing.TB, dir string, o aptrepo.Options) *aptrepo.Repos {
	t.Helper()
	src := sharedKeys(t)
	dst := filepath.Join(dir, "keys")
	if _, err := os.Stat(dst); os.IsNotExist(err) {
		if err := os.MkdirAll(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"secring.gpg", "pubring.gpg", "pubring.asc"} {
			data, err := os.ReadFile(filepath.Join(src, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, f), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	o.Dir = dir
	r, err := aptrepo.Open(t.Context(), o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return r
}

// newRepos is openRepos on a fresh temporary folder, closed at the end.
func newRepos(t testing.TB) (*aptrepo.Repos, string) {
	t.Helper()
	dir := t.TempDir()
	r := openRepos(t, dir, aptrepo.Options{})
	t.Cleanup(func() { _ = r.Close() })
	return r, dir
}

// pkg describes a test package.
type pkg struct {
	Name, Version, Arch, Depends string
	Payload                      string // makes two builds of one version differ
}

func (p pkg) file() string { return fmt.Sprintf("%s_%s_%s.deb", p.Name, p.Version, p.Arch) }

func (p pkg) control() string {
	c := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: Appliance Tests <tests@example.com>\n", p.Name, p.Version, p.Arch)
	if p.Depends != "" {
		c += "Depends: " + p.Depends + "\n"
	}
	return c + "Section: misc\nPriority: optional\nDescription: test package " + p.Name + "\n test package built by the aptrepo tests\n"
}

// buildDeb builds p with dpkg-deb --build and returns the file's path.
func buildDeb(t testing.TB, dir string, p pkg) string {
	t.Helper()
	testkit.Need(t, "dpkg-deb")
	root := filepath.Join(t.TempDir(), p.Name)
	for _, d := range []string{"DEBIAN", "usr/share/doc/" + p.Name} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(p.control()), 0o644); err != nil {
		t.Fatal(err)
	}
	payload := fmt.Sprintf("%s %s %s\n", p.Name, p.Version, p.Payload)
	if err := os.WriteFile(filepath.Join(root, "usr/share/doc", p.Name, "README"), []byte(payload), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, p.file())
	cmd := exec.Command("dpkg-deb", "-Zgzip", "--root-owner-group", "--build", root, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build %s: %v\n%s", p.Name, err, b)
	}
	return out
}

func debFiles(paths ...string) []aptrepo.Deb {
	out := make([]aptrepo.Deb, len(paths))
	for i, p := range paths {
		out[i] = aptrepo.DebFile(p)
	}
	return out
}

// serve serves h on a loopback port chosen by the kernel.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// aptClient runs the real apt-get and apt-cache against one sources.list,
// with a configuration of its own (APT_CONFIG): nothing of the machine's
// apt configuration, state or cache is read or written.
type aptClient struct {
	t   testing.TB
	dir string
	env []string
}

func newAptClient(t testing.TB, sourcesLine string, key []byte) *aptClient {
	t.Helper()
	testkit.Need(t, "apt-get", "apt-cache", "gpgv")
	dir := t.TempDir()
	if strings.ContainsAny(dir, ", ") {
		t.Fatalf("apt option values are split on commas and spaces: name the (sub)test without them (%s)", dir)
	}
	mk := func(p string) string {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile := filepath.Join(dir, "repo-key.gpg")
	if err := os.WriteFile(keyFile, key, 0o644); err != nil {
		t.Fatal(err)
	}
	sources := write("sources.list", strings.ReplaceAll(sourcesLine, "KEYFILE", keyFile)+"\n")
	status := write("status", "")
	arch, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatalf("dpkg --print-architecture: %v", err)
	}
	conf := fmt.Sprintf(`Dir::Etc::main "/dev/null";
Dir::Etc::parts %q;
Dir::Etc::sourcelist %q;
Dir::Etc::sourceparts "/dev/null";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts %q;
Dir::Etc::trusted "/dev/null";
Dir::Etc::trustedparts %q;
Dir::State %q;
Dir::State::lists %q;
Dir::State::status %q;
Dir::Cache %q;
Dir::Log %q;
APT::Architecture %q;
APT::Architectures { %q; };
APT::Sandbox::User "root";
Debug::NoLocking "1";
Acquire::Languages "none";
Acquire::Retries "0";
Acquire::http::Proxy "DIRECT";
Acquire::IndexTargets::deb::DEP-11 "";
Acquire::IndexTargets::deb::DEP-11-icons-small "";
Acquire::IndexTargets::deb::DEP-11-icons "";
`, mk("parts"), sources, mk("prefparts"), mk("trustedparts"), mk("state"), mk("state/lists"), status,
		mk("cache"), mk("log"), strings.TrimSpace(string(arch)), strings.TrimSpace(string(arch)))
	cfg := write("apt.conf", conf)
	mk("state/lists/partial")
	mk("cache/archives/partial")
	return &aptClient{t: t, dir: dir, env: append(os.Environ(), "APT_CONFIG="+cfg, "LC_ALL=C")}
}

// run runs apt-get or apt-cache; the output is returned whatever the exit.
func (a *aptClient) run(tool string, args ...string) (string, error) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = a.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (a *aptClient) mustRun(tool string, args ...string) string {
	a.t.Helper()
	out, err := a.run(tool, args...)
	if err != nil {
		a.t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return out
}

// setStatus writes the dpkg status file apt reads: packages it takes as
// installed.
func (a *aptClient) setStatus(stanzas string) {
	a.t.Helper()
	if err := os.WriteFile(filepath.Join(a.dir, "status"), []byte(stanzas), 0o644); err != nil {
		a.t.Fatal(err)
	}
}

// archives lists the .deb files apt downloaded.
func (a *aptClient) archives() []string {
	a.t.Helper()
	m, _ := filepath.Glob(filepath.Join(a.dir, "cache", "archives", "*.deb"))
	out := make([]string, len(m))
	for i, p := range m {
		out[i] = filepath.Base(p)
	}
	return out
}

func get(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return b
}
