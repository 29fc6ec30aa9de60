package testkit

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

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-dev/appliance/internal/registry"
)

// allowAll lets every registry request through: a Node's tests are about
// content, not access (access is proven in internal/server and test/e2e).
type allowAll struct{}

func (allowAll) AuthorizeRegistry(*http.Request, []registry.Access) (string, error) {
	return "test", nil
}

// Node is the appliance's real registry (internal/registry over a
// temporary folder) served over TLS on loopback: a source, a target or a
// primary for in-process tests.
type Node struct {
	Reg   *registry.Registry
	CAPEM []byte // the server's certificate, to trust
	Host  string // 127.0.0.1:PORT
	URL   string // https://127.0.0.1:PORT
	Dir   string // the data folder
	// Opts make go-containerregistry trust the node.
	Opts []remote.Option
}

// StartNode starts a Node, stopped when the test ends.
func StartNode(t testing.TB) *Node {
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
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &Node{Reg: reg, CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
		Host: strings.TrimPrefix(srv.URL, "https://"), URL: srv.URL, Dir: dir, Opts: []remote.Option{remote.WithTransport(tr)}}
}

// Ref parses a reference to the node ("repo:tag", "repo@digest").
func (n *Node) Ref(t testing.TB, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(n.Host+"/"+s, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Push writes an image over the registry API and returns its digest.
func (n *Node) Push(t testing.TB, ref string, img v1.Image) v1.Hash {
	t.Helper()
	if err := remote.Write(n.Ref(t, ref), img, n.Opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// PushIndex writes an index and its children and returns its digest.
func (n *Node) PushIndex(t testing.TB, ref string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	if err := remote.WriteIndex(n.Ref(t, ref), idx, n.Opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Digest reads a tag's digest straight from storage ("" when absent).
func (n *Node) Digest(t testing.TB, repo, tag string) string {
	t.Helper()
	d, ok, err := n.Reg.TagDigest(context.Background(), repo, tag)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return d.String()
}

// RandomImage is an OCI image of random layers.
func RandomImage(t testing.TB, size int64, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
}

// SBOM is an OCI artifact whose subject is img: a referrer.
func SBOM(t testing.TB, img v1.Image) v1.Image {
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
