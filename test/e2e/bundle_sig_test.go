package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// Digests of the real imgpkg fixtures (shared/fixtures/imgpkg/README.md).
const (
	fixtureApp1   = "sha256:307717c59eb859dfcf7424483b2d62a2499c9ef73620f1006b2543084b3eaca7"
	fixtureBundle = "sha256:1a63919db6a9701b060d2d74652913f6f53e96aeb28b6d5399e1e5fbdd0bb24d"
)

// TestBundleCarriesRealSignatures takes a real imgpkg bundle with a real
// cosign signature (the fixtures imgpkg made) through the whole way: an
// upstream appliance (TLS from its own CA, reached with --ca) serves it,
// `bundle create` fetches it, the enclave imports the bundle, and app1's
// signature still verifies with cosign.pub the way `cosign verify --key
// cosign.pub --insecure-ignore-tlog` checks it.
func TestBundleCarriesRealSignatures(t *testing.T) {
	testkit.Need(t, "skopeo")
	admin := []string{"--username", "admin", "--password-stdin"}
	up := startAppliance(t, t.TempDir())
	out, err := up.cli(up.password+"\n", append([]string{"import", "--to-repo", "fixtures/bundle", fixturePath(t, "bundle.tar")}, admin...)...)
	mustOK(t, "import the fixture upstream", out, err)

	work := t.TempDir()
	out, err = runBin(t, "key", "generate", "--private", filepath.Join(work, "k"), "--public", filepath.Join(work, "k.pub"))
	mustOK(t, "key generate", out, err)
	spec := fmt.Sprintf("name: real-signatures\nbundles:\n  - ref: %s/fixtures/bundle@%s\n    destination: vmware/tkg:v1\n", up.host(), fixtureBundle)
	specFile := filepath.Join(work, "spec.yaml")
	if err := os.WriteFile(specFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(work, "real.bundle")
	// The upstream's certificate is signed by its private CA: without
	// --ca the fetch is refused, with it it verifies.
	out, err = runBin(t, "bundle", "create", "-f", specFile, "-o", b, "--key", filepath.Join(work, "k"), "--cache", filepath.Join(work, "cache"))
	mustFail(t, "create without --ca", out, err, "--ca")
	out, err = runBin(t, "bundle", "create", "-f", specFile, "-o", b, "--key", filepath.Join(work, "k"), "--cache", filepath.Join(work, "cache"),
		"--ca", filepath.Join(up.dataDir, "ca.crt"))
	mustOK(t, "bundle create --ca", out, err)

	enclave := startAppliance(t, t.TempDir(), "--trusted-key", filepath.Join(work, "k.pub"))
	out, err = enclave.cli(enclave.password+"\n", append([]string{"import", b}, admin...)...)
	mustOK(t, "import the bundle", out, err)
	tags, err := run(t, nil, "skopeo", "list-tags", "--cert-dir", enclave.certDir(), "docker://"+enclave.host()+"/vmware/tkg")
	mustOK(t, "list-tags", tags, err)
	hex := func(d string) string { return strings.TrimPrefix(d, "sha256:") }
	for _, want := range []string{`"v1"`, "sha256-" + hex(fixtureBundle) + ".image-locations.imgpkg", "sha256-" + hex(fixtureApp1) + ".sig", "sha256-" + hex(fixtureApp1) + ".imgpkg"} {
		if !strings.Contains(tags, want) {
			t.Errorf("tags of vmware/tkg lack %s:\n%s", want, tags)
		}
	}

	// cosign verify --key cosign.pub --insecure-ignore-tlog, by hand.
	pemBytes, err := os.ReadFile(fixturePath(t, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(enclave.dataDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := remote.WithTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	sigRef, err := name.ParseReference(enclave.host() + "/vmware/tkg:sha256-" + hex(fixtureApp1) + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	sig, err := remote.Image(sigRef, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := testkit.VerifyCosign(sig, pemBytes, fixtureApp1); err != nil {
		t.Fatalf("app1's signature after the round trip: %v", err)
	}
	if got := enclaveDigest(t, enclave, "vmware/tkg@"+fixtureApp1); got != fixtureApp1 {
		t.Fatalf("app1 in the enclave: %s", got)
	}
}
