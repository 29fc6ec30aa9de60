package bundler_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/bundler"
	"github.com/appliance-dev/appliance/internal/pki"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// privateUpstream is Debian's docker-registry with TLS from a private CA
// and htpasswd authentication: a vendor registry that needs --ca and
// credentials.
type privateUpstream struct {
	host   string
	caFile string
	log    *testkit.SyncBuffer // docker-registry's access log
	pool   *x509.CertPool
}

const upUser, upPass = "mirror", "s3cret-mirror-pass"

func startPrivateUpstream(t *testing.T) *privateUpstream {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.Ensure(dir, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(upPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(upUser+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CAPEM)
	r := testkit.StartDockerRegistry(t, testkit.DockerRegistryOptions{
		CertFile:  filepath.Join(dir, pki.ServerCertFile),
		KeyFile:   filepath.Join(dir, pki.ServerKeyFile),
		RootCAs:   pool,
		Htpasswd:  htpasswd,
		AccessLog: true,
	})
	return &privateUpstream{host: r.Host, caFile: filepath.Join(dir, pki.CACertFile), log: r.Log, pool: pool}
}

func (u *privateUpstream) push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(u.host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: u.pool, MinVersion: tls.VersionTLS12}}
	if err := remote.Write(r, img, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: upUser, Password: upPass})); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, _ := img.Digest()
	return d
}

// blobGets counts the blob downloads docker-registry logged.
func (u *privateUpstream) blobGets() int {
	n := 0
	for _, l := range strings.Split(u.log.String(), "\n") {
		if strings.Contains(l, `"GET /v2/`) && strings.Contains(l, "/blobs/sha256:") {
			n++
		}
	}
	return n
}

func spec(t *testing.T, refs ...string) *bundle.Spec {
	t.Helper()
	var b strings.Builder
	b.WriteString("name: t\nimages:\n")
	for _, r := range refs {
		fmt.Fprintf(&b, "  - ref: %s\n", r)
	}
	s, err := bundle.ParseSpec(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPrivateUpstream: a registry behind a private CA and credentials is
// reached with --ca and the podman/docker auth file, and every way of
// getting that wrong ends in an error that says what to do. A second run
// with the same cache downloads no blob again.
func TestPrivateUpstream(t *testing.T) {
	up := startPrivateUpstream(t)
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	d := up.push(t, "vendor/gpu-operator:v24.9.0", img)

	// Credentials only from the usual files: an empty home, and the
	// podman auth file named by $REGISTRY_AUTH_FILE.
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, ".docker"))
	t.Setenv("XDG_RUNTIME_DIR", home)
	t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(home, "none.json"))

	ctx := context.Background()
	work := t.TempDir()
	ref := up.host + "/vendor/gpu-operator:v24.9.0"
	create := func(cache string, s *bundle.Spec, ca ...string) (*bundler.Result, error) {
		return bundler.Create(ctx, bundler.Options{Spec: s, Out: filepath.Join(work, "out.bundle"), CacheDir: cache, CAFiles: ca})
	}
	cache := filepath.Join(work, "cache")

	_, err = create(cache, spec(t, ref))
	if err == nil || !strings.Contains(err.Error(), "--ca") {
		t.Fatalf("without --ca: %v", err)
	}
	_, err = create(cache, spec(t, ref), up.caFile)
	if err == nil || !strings.Contains(err.Error(), "refused access") || !strings.Contains(err.Error(), "login") {
		t.Fatalf("without credentials: %v", err)
	}

	auth := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, up.host, base64.StdEncoding.EncodeToString([]byte(upUser+":"+upPass)))
	authFile := filepath.Join(home, "auth.json")
	if err := os.WriteFile(authFile, []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REGISTRY_AUTH_FILE", authFile)

	_, err = create(cache, spec(t, up.host+"/vendor/gpu-operator:v0.0.0-missing"), up.caFile)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing tag: %v", err)
	}

	before := up.blobGets()
	res, err := create(cache, spec(t, ref), up.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := up.blobGets() - before; got != 4 { // config and three layers
		t.Errorf("first run downloaded %d blobs, want 4", got)
	}
	if len(res.Inventory.Artifacts) != 1 || res.Inventory.Artifacts[0].Digest != d.String() || res.Inventory.Artifacts[0].Destination != "vendor/gpu-operator:v24.9.0" {
		t.Fatalf("artifacts = %+v", res.Inventory.Artifacts)
	}
	before = up.blobGets()
	if _, err := create(cache, spec(t, ref), up.caFile); err != nil {
		t.Fatal(err)
	}
	if got := up.blobGets() - before; got != 0 {
		t.Errorf("a second run with the same cache downloaded %d blobs again", got)
	}
	f, err := os.Open(filepath.Join(work, "out.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := bundle.VerifyArchive(ctx, f, bundle.Trust{AllowUnsigned: true}); err != nil {
		t.Fatalf("the bundle does not verify: %v", err)
	}

	// Many small blobs: the downloads finish long before the writer has
	// written them all, and every one still lands in the bundle.
	many, err := random.Image(1024, 40)
	if err != nil {
		t.Fatal(err)
	}
	up.push(t, "vendor/many:1", many)
	for i := range 3 {
		res, err := create(filepath.Join(work, fmt.Sprint("cache-many-", i)), spec(t, up.host+"/vendor/many:1"), up.caFile)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if len(res.Inventory.Blobs) != 42 {
			t.Fatalf("round %d: %d blobs, want 42", i, len(res.Inventory.Blobs))
		}
	}

	// An unreachable registry says so.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	_ = ln.Close()
	if _, err := create(cache, spec(t, closed+"/x/y:1"), up.caFile); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("unreachable registry: %v", err)
	}
}

// TestFileDownloadResumes: a download cut off half-way is resumed with a
// range request, and the file's pin is checked.
func TestFileDownloadResumes(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	sum := fmt.Sprintf("%x", sha256.Sum256(body))
	var calls atomic.Int32
	var ranges []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		if calls.Add(1) == 1 {
			// The first answer breaks off after half the bytes.
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops
		}
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(srv.Close)
	work := t.TempDir()
	mk := func(pin string) *bundle.Spec {
		s, err := bundle.ParseSpec(strings.NewReader(fmt.Sprintf("files:\n  - url: %s/model.tar\n    kind: file\n    sha256: %s\n", srv.URL, pin)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	res, err := bundler.Create(context.Background(), bundler.Options{Spec: mk(sum), Out: filepath.Join(work, "b"), CacheDir: filepath.Join(work, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Inventory.Artifacts[0].Digest != "sha256:"+sum || res.Inventory.Artifacts[0].Size != int64(len(body)) {
		t.Fatalf("artifact = %+v", res.Inventory.Artifacts[0])
	}
	mu.Lock()
	got := append([]string(nil), ranges...)
	mu.Unlock()
	if len(got) != 2 || got[1] != fmt.Sprintf("bytes=%d-", len(body)/2) {
		t.Fatalf("requests' Range headers = %q, want a resume from %d", got, len(body)/2)
	}
	wrong := strings.Repeat("0", 64)
	if _, err := bundler.Create(context.Background(), bundler.Options{Spec: mk(wrong), Out: filepath.Join(work, "c"), CacheDir: filepath.Join(work, "cache2")}); err == nil || !strings.Contains(err.Error(), "the spec says "+wrong) {
		t.Fatalf("a wrong pin = %v", err)
	}
}
