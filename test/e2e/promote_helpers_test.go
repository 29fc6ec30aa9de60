package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/pki"
	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// The real Harbor is started once for the package (about ten seconds)
// and shared; each test uses projects of its own.
var (
	harborOnce sync.Once
	harbor     *testkit.Harbor
	harborErr  error
	harborDir  string
)

func sharedHarbor(t *testing.T) *testkit.Harbor {
	t.Helper()
	testkit.NeedHarbor(t)
	harborOnce.Do(func() {
		harborDir, harborErr = os.MkdirTemp("", "appliance-e2e-harbor-")
		if harborErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		harbor, harborErr = testkit.LaunchHarbor(ctx, harborDir)
	})
	if harborErr != nil {
		t.Fatalf("start the real Harbor: %v", harborErr)
	}
	return harbor
}

// stopSharedHarbor runs after every test of the package.
func stopSharedHarbor() {
	if harbor != nil {
		if err := harbor.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if harborDir != "" {
		_ = os.RemoveAll(harborDir)
	}
}

// regView reads and writes a registry with go-containerregistry, trusting
// one CA, as a test's own eyes on a target.
type regView struct {
	host string
	opts []remote.Option
}

func newRegView(t *testing.T, host, caFile, user, pass string) *regView {
	t.Helper()
	pool := x509.NewCertPool()
	if caFile != "" {
		data, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(data)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	opts := []remote.Option{remote.WithTransport(tr)}
	if user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	}
	return &regView{host: host, opts: opts}
}

func (v *regView) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(v.host+"/"+s, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (v *regView) write(t *testing.T, ref string, img v1.Image) string {
	t.Helper()
	if err := remote.Write(v.ref(t, ref), img, v.opts...); err != nil {
		t.Fatalf("push %s to %s: %v", ref, v.host, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func (v *regView) tags(t *testing.T, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(v.host+"/"+repo, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r, v.opts...)
	if err != nil {
		t.Fatalf("list tags of %s/%s: %v", v.host, repo, err)
	}
	slices.Sort(tags)
	return tags
}

func (v *regView) digest(t *testing.T, ref string) string {
	t.Helper()
	d, err := remote.Head(v.ref(t, ref), v.opts...)
	if err != nil {
		t.Fatalf("HEAD %s/%s: %v", v.host, ref, err)
	}
	return d.Digest.String()
}

// content is what a registry holds: repository -> tag -> digest, without
// referrers fallback tags (a target with the referrers API needs none).
func (v *regView) content(t *testing.T, repos ...string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, repo := range repos {
		out[repo] = map[string]string{}
		for _, tag := range v.tags(t, repo) {
			if regclient.IsFallbackTag(tag) {
				continue
			}
			out[repo][tag] = v.digest(t, repo+":"+tag)
		}
	}
	return out
}

// sameContent fails the test unless the target holds every tag of want
// with the same digest.
func sameContent(t *testing.T, what string, want, got map[string]map[string]string) {
	t.Helper()
	for repo, tags := range want {
		if len(tags) == 0 {
			t.Errorf("%s: the appliance's %s has no tags (bad seed)", what, repo)
		}
		for tag, d := range tags {
			if got[repo][tag] != d {
				t.Errorf("%s: %s:%s is %q on the target, %s on the appliance", what, repo, tag, got[repo][tag], d)
			}
		}
	}
}

// applianceView is a regView of an appliance as its admin.
func applianceView(t *testing.T, a *appliance) *regView {
	t.Helper()
	return newRegView(t, a.host(), filepath.Join(a.dataDir, "ca.crt"), "admin", a.password)
}

// seed fills an appliance with what an enclave's first registry holds:
// the real imgpkg bundle with its cosign signature in a public project,
// a multi-arch index in a private one, and an image with an SBOM
// referrer (pushed with go-containerregistry, which finds the appliance's
// referrers API and writes no fallback tag). It returns the repositories.
func seed(t *testing.T, a *appliance, prefix string) (repos []string, app string) {
	t.Helper()
	admin := []string{"--username", "admin", "--password-stdin"}
	pub, priv := prefix+"-nvidia", prefix+"-vendor"
	out, err := a.cli(a.password+"\n", append([]string{"import", "--to-repo", pub + "/bundle", fixturePath(t, "bundle.tar")}, admin...)...)
	mustOK(t, "import the imgpkg bundle", out, err)
	out, err = a.cli(a.password+"\n", append([]string{"import", "--to-repo", priv + "/app3", fixturePath(t, "image-index.tar")}, admin...)...)
	mustOK(t, "import the multi-arch index", out, err)
	out, err = a.cli(a.password+"\n", append([]string{"project", "set", priv, "--private"}, admin...)...)
	mustOK(t, "make the vendor project private", out, err)
	v := applianceView(t, a)
	img := randomImage(t, 64<<10, 2)
	app = v.write(t, pub+"/gpu-operator:v24.9", img)
	v.write(t, pub+"/gpu-operator:latest", img)
	sub, err := partialDescriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	ref := referrer(t, sub)
	refDigest, err := ref.Digest()
	if err != nil {
		t.Fatal(err)
	}
	v.write(t, pub+"/gpu-operator@"+refDigest.String(), ref)
	return []string{pub + "/bundle", pub + "/gpu-operator", priv + "/app3"}, app
}

func partialDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: size}, nil
}

// promoteArgs are the CLI arguments of a promotion as the admin.
func promoteArgs(target, ca, user, passFile string, extra ...string) []string {
	args := []string{"promote", "--target", target, "--username", "admin", "--password-stdin"}
	if ca != "" {
		args = append(args, "--target-ca", ca)
	}
	if user != "" {
		args = append(args, "--target-user", user, "--target-password-file", passFile)
	}
	return append(args, extra...)
}

// promoteJSON runs a promotion with --json and decodes the record.
func promoteJSON(t *testing.T, a *appliance, args ...string) (promote.Promotion, string, error) {
	t.Helper()
	out, err := a.cliLong(a.password+"\n", append(args, "--json")...)
	var rec promote.Promotion
	if start := strings.Index(out, "{\n"); start >= 0 {
		dec := json.NewDecoder(strings.NewReader(out[start:]))
		if derr := dec.Decode(&rec); derr != nil && err == nil {
			t.Fatalf("promote --json printed no record: %v\n%s", derr, out)
		}
	}
	return rec, out, err
}

// cliLong is cli with a bound of ten minutes, for promotions.
func (a *appliance) cliLong(stdin string, args ...string) (string, error) {
	a.t.Helper()
	return a.cliTimeout(10*time.Minute, stdin, args...)
}

func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsRegistry is Debian's docker-registry serving TLS from a CA of its
// own, with htpasswd authentication for user "promoter".
type tlsRegistry struct {
	*testkit.DockerRegistry
	caFile   string
	password string
}

func startTLSRegistry(t *testing.T) *tlsRegistry {
	t.Helper()
	dir := t.TempDir()
	auth, err := pki.Ensure(dir, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(auth.CAPEM)
	pw := "promoter-password-1"
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("promoter:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := testkit.StartDockerRegistry(t, testkit.DockerRegistryOptions{
		CertFile: filepath.Join(dir, pki.ServerCertFile), KeyFile: filepath.Join(dir, pki.ServerKeyFile), RootCAs: pool, Htpasswd: htpasswd, Delete: true,
	})
	return &tlsRegistry{DockerRegistry: r, caFile: filepath.Join(dir, pki.CACertFile), password: pw}
}

// throttle is a TCP proxy on loopback that passes at most rate bytes per
// second in each direction: it stretches a promotion so that a test can
// stop the target, or the appliance, while blobs are on their way. Its
// loops end when the test does.
type throttle struct {
	ln     net.Listener
	target string
	rate   atomic.Int64
	moved  atomic.Int64
}

func startThrottle(t *testing.T, target string, rate int64) *throttle {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &throttle{ln: ln, target: target}
	p.rate.Store(rate)
	done := make(chan struct{})
	t.Cleanup(func() { close(done); _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, done)
		}
	}()
	return p
}

func (p *throttle) addr() string { return p.ln.Addr().String() }

func (p *throttle) serve(c net.Conn, done <-chan struct{}) {
	defer c.Close()
	u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	go func() { <-done; c.Close(); u.Close() }()
	errc := make(chan error, 2)
	go func() { errc <- p.copy(u, c) }()
	go func() { errc <- p.copy(c, u) }()
	<-errc
}

func (p *throttle) copy(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if rate := p.rate.Load(); rate > 0 {
				time.Sleep(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			p.moved.Add(int64(n))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// waitPromotionBytes waits (bounded) until the running promotion has sent
// at least n bytes of blobs.
func waitPromotionBytes(t *testing.T, a *appliance, n int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var rec promote.Promotion
		if err := getJSON(a, "/api/v1/promotions/latest", &rec); err == nil && rec.State == promote.StateRunning && rec.Progress.BytesDone >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the promotion did not send %d bytes within 2 minutes", n)
}

// getJSON reads an API path as the admin.
func getJSON(a *appliance, path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, "https://"+a.host()+path, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth("admin", a.password)
	resp, err := a.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: HTTP %d %s", path, resp.StatusCode, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// imgpkgTool is ../shared/tools/imgpkg.
func imgpkgTool(t *testing.T) string {
	t.Helper()
	p := filepath.Join(testkit.SharedDir(), "tools", "imgpkg")
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("imgpkg not found at %s", p)
		}
		t.Skipf("imgpkg not found at %s", p)
	}
	return p
}
