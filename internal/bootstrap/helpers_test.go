package bootstrap_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/registry"
)

// allowAll lets every registry request through: these tests are about
// content and the lifecycle, not access (proven in internal/server and
// test/e2e, with real clients and a real Harbor).
type allowAll struct{}

func (allowAll) AuthorizeRegistry(*http.Request, []registry.Access) (string, error) {
	return "test", nil
}

// node is the real registry (distribution/v3 over a temporary folder)
// served over TLS on loopback, as a source, a target or a primary.
type node struct {
	reg   *registry.Registry
	srv   *httptest.Server
	caPEM []byte
	host  string
	url   string
	dir   string
	opts  []remote.Option
}

func newNode(t *testing.T) *node {
	t.Helper()
	dir := t.TempDir()
	reg, err := registry.New(context.Background(), registry.Options{
		RootDir: filepath.Join(dir, "registry"), SecretFile: filepath.Join(dir, "http.secret"),
		StateFile: filepath.Join(dir, "state.json"), Authorizer: allowAll{},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(reg.Handler())
	t.Cleanup(func() { srv.Close(); _ = reg.Close() })
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &node{reg: reg, srv: srv, caPEM: caPEM, host: strings.TrimPrefix(srv.URL, "https://"), url: srv.URL, dir: dir,
		opts: []remote.Option{remote.WithTransport(tr)}}
}

func (n *node) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(n.host+"/"+s, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (n *node) push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	if err := remote.Write(n.ref(t, ref), img, n.opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (n *node) pushIndex(t *testing.T, ref string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	if err := remote.WriteIndex(n.ref(t, ref), idx, n.opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// digest reads a tag's digest straight from storage.
func (n *node) digest(t *testing.T, repo, tag string) string {
	t.Helper()
	d, ok, err := n.reg.TagDigest(context.Background(), repo, tag)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return d.String()
}

func image(t *testing.T, size int64, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
}

// sbom is an OCI artifact whose subject is img.
func sbom(t *testing.T, img v1.Image) v1.Image {
	t.Helper()
	d, _ := img.Digest()
	size, _ := img.Size()
	mt, _ := img.MediaType()
	l := static.NewLayer([]byte(`{"spdxVersion":"SPDX-2.3"}`), "application/spdx+json")
	a, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: l})
	if err != nil {
		t.Fatal(err)
	}
	a = mutate.ConfigMediaType(a, "application/vnd.oci.empty.v1+json")
	return mutate.Subject(a, v1.Descriptor{MediaType: mt, Digest: d, Size: size}).(v1.Image)
}

type public map[string]bool

func (p public) Public(project string) bool { return p[project] }

// waitDone polls a promotion (bounded) until it leaves the running state.
func waitDone(t *testing.T, p *bootstrap.Promoter, id string) bootstrap.Promotion {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		rec, err := p.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != bootstrap.StateRunning {
			return rec
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("promotion %s still running after a minute", id)
	return bootstrap.Promotion{}
}

func isStaging(repo string) bool { return strings.HasPrefix(repo, importer.StagingProject+"/") }

// standbyOf is a standby node: lifecycle, importer with the registry's sync
// writer, and follower, following primary.
type standbyOf struct {
	*node
	life *bootstrap.Lifecycle
	hist *importer.History
	f    *bootstrap.Follower
}

func newStandby(t *testing.T, primary *node, projects ...string) *standbyOf {
	t.Helper()
	n := newNode(t)
	life, err := bootstrap.OpenLifecycle(n.dir, n.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := importer.OpenHistory(filepath.Join(n.dir, "imports"))
	if err != nil {
		t.Fatal(err)
	}
	imp, err := importer.New(n.reg, hist, importer.WithSyncStore(n.reg.SyncWriter()))
	if err != nil {
		t.Fatal(err)
	}
	f, err := bootstrap.NewFollower(life, n.reg, imp, n.dir, bootstrap.WithFollowerSkip(isStaging))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := life.Standby(bootstrap.StandbyRequest{
		Primary:     &bootstrap.Primary{URL: primary.url, Projects: projects, Interval: time.Hour},
		Credentials: bootstrap.PrimaryCredentials{CAPEM: string(primary.caPEM)},
		By:          "test", Reason: "production is up",
	}); err != nil {
		t.Fatal(err)
	}
	return &standbyOf{node: n, life: life, hist: hist, f: f}
}
