package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
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
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// upstream is Debian's docker-registry on loopback, standing in for the
// internet registries (nvcr.io, projects.registry.vmware.com) the
// connected side pulls from.
type upstream struct {
	host string
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	r := testkit.StartDockerRegistry(t, testkit.DockerRegistryOptions{Delete: true})
	return &upstream{host: r.Host}
}

func (u *upstream) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(u.host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (u *upstream) push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	if err := remote.Write(u.ref(t, ref), img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func randomImage(t *testing.T, size int64, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
}

// cosignLike is a signature image as cosign makes it: one layer holding
// the simple-signing payload, its annotations carrying the signature.
func cosignLike(t *testing.T, subject v1.Hash, repo string) v1.Image {
	t.Helper()
	payload := fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, repo, subject)
	l := static.NewLayer([]byte(payload), "application/vnd.dev.cosign.simplesigning.v1+json")
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: l, Annotations: map[string]string{"dev.cosignproject.cosign/signature": "MEUCIQ-test"}})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

// referrer is an OCI artifact whose manifest names subject (an SBOM).
func referrer(t *testing.T, subject v1.Descriptor) v1.Image {
	t.Helper()
	l := static.NewLayer([]byte(`{"spdxVersion":"SPDX-2.3","name":"test"}`), "application/spdx+json")
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: l})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, "application/vnd.oci.empty.v1+json")
	return mutate.Subject(img, subject).(v1.Image)
}

// imgpkgBundleImage is an imgpkg bundle: a config labelled
// dev.carvel.imgpkg.bundle and one layer holding .imgpkg/images.yml.
func imgpkgBundleImage(t *testing.T, images ...string) v1.Image {
	t.Helper()
	var yml strings.Builder
	yml.WriteString("apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\nimages:\n")
	for _, i := range images {
		fmt.Fprintf(&yml, "- image: %s\n  annotations:\n    kbld.carvel.dev/id: app\n", i)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range []struct{ name, body string }{{".imgpkg/images.yml", yml.String()}, {"config/app.yml", "kind: Deployment\n"}} {
		_ = tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte(f.body))
	}
	_ = tw.Close()
	_ = zw.Close()
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{"dev.carvel.imgpkg.bundle": "true"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func multiPlatform(t *testing.T) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		adds = append(adds, mutate.IndexAddendum{Add: randomImage(t, 2048, 1), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

// enclaveDigest asks the appliance for a manifest's digest with skopeo.
func enclaveDigest(t *testing.T, a *appliance, ref string) string {
	t.Helper()
	out, err := run(t, nil, "skopeo", "inspect", "--raw", "--cert-dir", a.certDir(), "docker://"+a.host()+"/"+ref)
	if err != nil {
		t.Fatalf("skopeo inspect %s: %v\n%s", ref, err, out)
	}
	sum := sha256.Sum256([]byte(out))
	return fmt.Sprintf("sha256:%x", sum)
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(data))
}

// TestBundleRoundTrip is the connected side and the enclave end to end:
// create from a real registry (docker-registry) and a real signed apt
// archive (a second appliance's), split, verify, damage, import, pull
// with skopeo, and a delta against the enclave's receipt.
func TestBundleRoundTrip(t *testing.T) {
	testkit.Need(t, "skopeo", "dpkg-deb", "docker-registry")
	up := startUpstream(t)
	work := t.TempDir()

	// Upstream content: an image with a cosign signature and an SBOM
	// referrer, a two-platform index, an imgpkg bundle with a signed image.
	alpha := randomImage(t, 300<<10, 3)
	alphaD := up.push(t, "enclave/alpha:1.0", alpha)
	sigD := up.push(t, "enclave/alpha:sha256-"+alphaD.Hex+".sig", cosignLike(t, alphaD, up.host+"/enclave/alpha"))
	am, _ := alpha.RawManifest()
	refD := up.push(t, "enclave/alpha:sbom", referrer(t, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: alphaD, Size: int64(len(am))}))
	multi := multiPlatform(t)
	if err := remote.WriteIndex(up.ref(t, "enclave/multi:2.0"), multi); err != nil {
		t.Fatal(err)
	}
	multiD, _ := multi.Digest()
	app1 := randomImage(t, 100<<10, 2)
	app1D := up.push(t, "tkg/app1:v1", app1)
	app1SigD := up.push(t, "tkg/app1:sha256-"+app1D.Hex+".sig", cosignLike(t, app1D, up.host+"/tkg/app1"))
	// A nested bundle: the outer one names the inner one and app1.
	app2 := randomImage(t, 50<<10, 1)
	app2D := up.push(t, "tkg/app2:v1", app2)
	innerD := up.push(t, "tkg/inner:v1", imgpkgBundleImage(t, up.host+"/tkg/app2@"+app2D.String()))
	bundleD := up.push(t, "tkg/bundle:v1", imgpkgBundleImage(t, up.host+"/tkg/app1@"+app1D.String(), up.host+"/tkg/inner@"+innerD.String()))

	// A real signed apt archive: a second appliance, packages added with
	// its CLI, served over plain HTTP with its key.
	aptUp := startAppliance(t, t.TempDir())
	debs := t.TempDir()
	admin := []string{"--username", "admin", "--password-stdin"}
	out, err := aptUp.cli(aptUp.password+"\n", append([]string{"apt", "add", "ubuntu", "noble",
		buildDeb(t, debs, "gpu-tools", "1.0", "gpu-libs"), buildDeb(t, debs, "gpu-libs", "1.0", ""), buildDeb(t, debs, "unrelated", "1.0", "")}, admin...)...)
	mustOK(t, "apt add upstream", out, err)
	keyring := filepath.Join(work, "upstream.gpg")
	getTo(t, "http://"+aptUp.httpAddr+"/apt/key.gpg", keyring)

	// Files: a local driver and a NIM profile served over HTTP.
	driver := filepath.Join(work, "NVIDIA-Linux-x86_64-550.127.05-grid.run")
	if err := os.WriteFile(driver, bytes.Repeat([]byte("driver "), 50000), 0o644); err != nil {
		t.Fatal(err)
	}
	profile := bytes.Repeat([]byte("model weights "), 80000)
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "profile.tar", time.Time{}, bytes.NewReader(profile))
	}))
	t.Cleanup(files.Close)

	// Keys: the release key the enclave trusts, and one it does not.
	for _, k := range []string{"release", "rogue"} {
		out, err := runBin(t, "key", "generate", "--private", filepath.Join(work, k+".key"), "--public", filepath.Join(work, k+".pub"))
		mustOK(t, "key generate", out, err)
	}
	spec := fmt.Sprintf(`name: e2e-foundation
images:
  - ref: %[1]s/enclave/alpha:1.0
    version: "1.0"
    refresh: new alpha release
  - ref: %[1]s/enclave/multi:2.0
    platforms: [linux/amd64]
bundles:
  - ref: %[1]s/tkg/bundle:v1
    destination: vmware/tkg-packages:v1
files:
  - path: %[2]s
    kind: driver
    version: 550.127.05
    refresh: driver or NVAIE version bump
  - url: %[3]s/llama3-8b-h100.tar
    kind: nim-profile
    sha256: %[6]s
    metadata: {image: "nvcr.io/nim/meta/llama3-8b-instruct@sha256:1111111111111111111111111111111111111111111111111111111111111111", profile: "8835c317", gpu: H100}
    refresh: new model or GPU type
apt:
  - url: http://%[4]s/apt/ubuntu
    distributions: [noble]
    components: [main]
    architectures: [amd64]
    packages: [gpu-tools]
    keyring: %[5]s
    repo: ubuntu
`, up.host, driver, files.URL, aptUp.httpAddr, keyring, fmt.Sprintf("%x", sha256.Sum256(profile)))
	specFile := filepath.Join(work, "spec.yaml")
	if err := os.WriteFile(specFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(work, "cache")

	// Plain HTTP to the upstream is refused unless named.
	out, err = runBin(t, "bundle", "create", "-f", specFile, "-o", filepath.Join(work, "refused.tar"), "--cache", cache)
	mustFail(t, "create without --insecure-registry", out, err, "--insecure-registry")

	outDir := filepath.Join(work, "media")
	_ = os.MkdirAll(outDir, 0o755)
	b := filepath.Join(outDir, "foundation.bundle")
	out, err = runBin(t, "bundle", "create", "-f", specFile, "-o", b, "--key", filepath.Join(work, "release.key"),
		"--split", "1M", "--cache", cache, "--insecure-registry", up.host)
	mustOK(t, "bundle create --split", out, err)
	parts, _ := filepath.Glob(b + ".0*")
	if len(parts) < 2 {
		t.Fatalf("--split 1M wrote %d parts: %v\n%s", len(parts), parts, out)
	}

	// verify: signature, parts, every blob, and a summary.
	out, err = runBin(t, "bundle", "verify", b, "--key", filepath.Join(work, "release.pub"))
	mustOK(t, "bundle verify", out, err)
	for _, want := range []string{"OK", "signature: valid", "parts:", "image", "imgpkg-bundle", "file/nim-profile", "apt", "gpu-libs", "refresh: driver or NVAIE version bump"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	var sum struct {
		Inventory struct {
			Artifacts []struct {
				Kind, Destination, Digest string
				Platforms                 []string
				Metadata                  map[string]string
			}
			Blobs []struct{ Digest string }
		}
	}
	out, err = runBin(t, "bundle", "verify", b, "--json")
	mustOK(t, "bundle verify --json", out, err)
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &sum); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	kinds := map[string]int{}
	var debNames []string
	for _, a := range sum.Inventory.Artifacts {
		kinds[a.Kind]++
		if a.Kind == "apt" {
			debNames = append(debNames, a.Metadata["package"])
		}
	}
	if kinds["image"] != 2 || kinds["imgpkg-bundle"] != 1 || kinds["file"] != 2 || kinds["apt"] != 2 {
		t.Errorf("artifacts by kind = %v, want 2 images, 1 imgpkg bundle, 2 files, 2 apt packages (gpu-tools and its dependency)", kinds)
	}
	if strings.Contains(strings.Join(debNames, ","), "unrelated") {
		t.Errorf("apt carried a package nobody asked for: %v", debNames)
	}

	// One flipped byte in one part names that part.
	damaged := parts[1]
	orig, _ := os.ReadFile(damaged)
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(damaged, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runBin(t, "bundle", "verify", b)
	mustFail(t, "verify with a damaged part", out, err, filepath.Base(damaged), "copy")
	if err := os.WriteFile(damaged, orig, 0o644); err != nil {
		t.Fatal(err)
	}

	// The enclave trusts the release key only.
	enclave := startAppliance(t, t.TempDir(), "--trusted-key", filepath.Join(work, "release.pub"))
	ein := enclave.password + "\n"
	out, err = enclave.cli(ein, append([]string{"import", b}, admin...)...)
	mustOK(t, "import of the split bundle", out, err)
	if !strings.Contains(out, "signed by sha256:") {
		t.Errorf("import output does not say who signed:\n%s", out)
	}

	// Pulled with skopeo: digests identical to the upstream's.
	for ref, want := range map[string]v1.Hash{
		"enclave/alpha:1.0":                                    alphaD,
		"enclave/alpha:sha256-" + alphaD.Hex + ".sig":          sigD,
		"enclave/alpha@" + refD.String():                       refD,
		"enclave/multi:2.0":                                    multiD,
		"vmware/tkg-packages:v1":                               bundleD,
		"vmware/tkg-packages:sha256-" + app1D.Hex + ".imgpkg":  app1D,
		"vmware/tkg-packages:sha256-" + app1D.Hex + ".sig":     app1SigD,
		"vmware/tkg-packages:sha256-" + innerD.Hex + ".imgpkg": innerD,
		"vmware/tkg-packages:sha256-" + app2D.Hex + ".imgpkg":  app2D,
	} {
		if got := enclaveDigest(t, enclave, ref); got != want.String() {
			t.Errorf("%s: digest %s, upstream %s", ref, got, want)
		}
	}
	ociOut := filepath.Join(work, "pulled")
	out, err = run(t, nil, "skopeo", "copy", "--src-cert-dir", enclave.certDir(), "docker://"+enclave.host()+"/enclave/alpha:1.0", "oci:"+ociOut+":alpha")
	mustOK(t, "skopeo copy from the enclave", out, err)
	out, err = run(t, nil, "skopeo", "copy", "--override-arch", "amd64", "--src-cert-dir", enclave.certDir(), "docker://"+enclave.host()+"/enclave/multi:2.0", "oci:"+ociOut+":multi")
	mustOK(t, "skopeo copy of the carried platform", out, err)
	// The referrer is found through the fallback tag, and the imgpkg
	// locations image was made.
	tagsOut, err := run(t, nil, "skopeo", "list-tags", "--cert-dir", enclave.certDir(), "docker://"+enclave.host()+"/enclave/alpha")
	mustOK(t, "list-tags", tagsOut, err)
	if !strings.Contains(tagsOut, `"sha256-`+alphaD.Hex+`"`) {
		t.Errorf("no referrers fallback tag for alpha:\n%s", tagsOut)
	}
	tagsOut, err = run(t, nil, "skopeo", "list-tags", "--cert-dir", enclave.certDir(), "docker://"+enclave.host()+"/vmware/tkg-packages")
	mustOK(t, "list-tags", tagsOut, err)
	for _, b := range []v1.Hash{bundleD, innerD} {
		if !strings.Contains(tagsOut, "sha256-"+b.Hex+".image-locations.imgpkg") {
			t.Errorf("no imgpkg locations image for %s:\n%s", b, tagsOut)
		}
	}

	// Files at /files/ with their sums, over HTTP and HTTPS.
	fileBody := getBytes(t, http.DefaultClient, "http://"+enclave.httpAddr+"/files/llama3-8b-h100.tar")
	if !bytes.Equal(fileBody, profile) {
		t.Error("/files/llama3-8b-h100.tar differs from the upstream file")
	}
	sumLine := string(getBytes(t, enclave.httpClient(), "https://"+enclave.host()+"/files/"+filepath.Base(driver)+".sha256"))
	if !strings.HasPrefix(sumLine, fileSHA(t, driver)) {
		t.Errorf("driver sum line %q, want %s", sumLine, fileSHA(t, driver))
	}
	// apt: gpu-tools and gpu-libs in the enclave's signed repository.
	pkgs := string(getBytesAuth(t, enclave, "/api/v1/apt/repos/ubuntu/noble/packages"))
	if !strings.Contains(pkgs, `"gpu-tools"`) || !strings.Contains(pkgs, `"gpu-libs"`) || strings.Contains(pkgs, `"unrelated"`) {
		t.Errorf("enclave apt Packages:\n%s", pkgs)
	}
	// The history keeps the inventory and the signer.
	var recs []struct {
		Format string
		Bundle *struct {
			Signed      bool
			Fingerprint string
			Inventory   json.RawMessage
		}
	}
	if err := json.Unmarshal(getBytesAuth(t, enclave, "/api/v1/imports"), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || recs[0].Format != "bundle" || recs[0].Bundle == nil || !recs[0].Bundle.Signed || !bytes.Contains(recs[0].Bundle.Inventory, []byte("e2e-foundation")) {
		t.Errorf("import history does not record the bundle with its inventory: %+v", recs)
	}

	t.Run("edited inventory breaks the signature", func(t *testing.T) {
		single := filepath.Join(work, "single.bundle")
		out, err := runBin(t, "bundle", "create", "-f", specFile, "-o", single, "--key", filepath.Join(work, "release.key"), "--cache", cache, "--insecure-registry", up.host)
		mustOK(t, "bundle create", out, err)
		// The archive reads as an OCI layout, and its signature checks
		// without the appliance (cosign verify-blob's format: base64 DER).
		out, err = run(t, nil, "skopeo", "inspect", "--raw", "oci-archive:"+single+":enclave/alpha:1.0")
		mustOK(t, "skopeo reads the bundle as an OCI archive", out, err)
		if fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(out))) != alphaD.String() {
			t.Errorf("oci-archive alpha digest differs from %s", alphaD)
		}
		testkit.Need(t, "openssl")
		x := t.TempDir()
		for _, e := range []string{"inventory.json", "inventory.json.sig"} {
			extractTarEntry(t, single, e, filepath.Join(x, e))
		}
		sig, _ := os.ReadFile(filepath.Join(x, "inventory.json.sig"))
		der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
		if err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(filepath.Join(x, "sig.der"), der, 0o644)
		out, err = run(t, nil, "openssl", "dgst", "-sha256", "-verify", filepath.Join(work, "release.pub"), "-signature", filepath.Join(x, "sig.der"), filepath.Join(x, "inventory.json"))
		mustOK(t, "openssl verifies inventory.json.sig", out, err)

		edited := filepath.Join(work, "edited.bundle")
		editTarEntry(t, single, edited, "inventory.json", func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"vmware/tkg-packages:v1"`), []byte(`"vmware/tkg-packages:v9"`), 1)
		})
		out, err = runBin(t, "bundle", "verify", edited, "--key", filepath.Join(work, "release.pub"))
		mustFail(t, "verify of an edited inventory", out, err, "changed after signing")
		fresh := startAppliance(t, t.TempDir(), "--trusted-key", filepath.Join(work, "release.pub"))
		out, err = fresh.cli(fresh.password+"\n", append([]string{"import", edited}, admin...)...)
		mustFail(t, "import of an edited inventory", out, err, "changed after signing")
		if code, _, _ := status(t, fresh, http.MethodGet, "/v2/vmware/tkg-packages/tags/list", "admin", fresh.password); code != http.StatusNotFound {
			t.Errorf("after a refused import, tags/list = %d, want 404", code)
		}
	})

	t.Run("untrusted and unsigned bundles are refused", func(t *testing.T) {
		rogue := filepath.Join(work, "rogue.bundle")
		out, err := runBin(t, "bundle", "create", "-f", specFile, "-o", rogue, "--key", filepath.Join(work, "rogue.key"), "--cache", cache, "--insecure-registry", up.host)
		mustOK(t, "bundle create (rogue key)", out, err)
		unsigned := filepath.Join(work, "unsigned.bundle")
		out, err = runBin(t, "bundle", "create", "-f", specFile, "-o", unsigned, "--cache", cache, "--insecure-registry", up.host)
		mustOK(t, "bundle create (unsigned)", out, err)
		fresh := startAppliance(t, t.TempDir(), "--trusted-key", filepath.Join(work, "release.pub"))
		in := fresh.password + "\n"
		out, err = fresh.cli(in, append([]string{"import", rogue}, admin...)...)
		mustFail(t, "import signed by an untrusted key", out, err, "not among the 1 trusted keys")
		out, err = fresh.cli(in, append([]string{"import", unsigned}, admin...)...)
		mustFail(t, "import of an unsigned bundle", out, err, "not signed", "--allow-unsigned")
		if code, _, _ := status(t, fresh, http.MethodGet, "/v2/enclave/alpha/tags/list", "admin", fresh.password); code != http.StatusNotFound {
			t.Errorf("after refused imports, tags/list = %d, want 404", code)
		}
		out, err = fresh.cli(in, append([]string{"import", "--allow-unsigned", unsigned}, admin...)...)
		mustOK(t, "import --allow-unsigned", out, err)
		if !strings.Contains(out, "UNSIGNED") {
			t.Errorf("the import does not say it let an unsigned bundle in:\n%s", out)
		}
		// The split bundle, from the appliance's own disk (mounted media).
		out, err = fresh.cli(in, append([]string{"import", "--on-server", b}, admin...)...)
		mustOK(t, "import --on-server of the split bundle", out, err)
		if got := enclaveDigest(t, fresh, "vmware/tkg-packages:v1"); got != bundleD.String() {
			t.Errorf("after --on-server import: %s, want %s", got, bundleD)
		}
	})

	t.Run("delta carries only what is new", func(t *testing.T) {
		receipt := filepath.Join(work, "receipt.json")
		out, err := enclave.cli(ein, append([]string{"receipt", "-o", receipt}, admin...)...)
		mustOK(t, "receipt", out, err)
		beta := randomImage(t, 200<<10, 2)
		betaD := up.push(t, "enclave/beta:1.0", beta)
		spec2 := strings.Replace(spec, "images:\n", "images:\n  - ref: "+up.host+"/enclave/beta:1.0\n", 1)
		spec2File := filepath.Join(work, "spec2.yaml")
		if err := os.WriteFile(spec2File, []byte(spec2), 0o644); err != nil {
			t.Fatal(err)
		}
		delta := filepath.Join(work, "delta.bundle")
		out, err = runBin(t, "bundle", "create", "-f", spec2File, "-o", delta, "--key", filepath.Join(work, "release.key"),
			"--since", receipt, "--receipt-key", filepath.Join(enclave.dataDir, "receipt.pub"), "--cache", cache, "--insecure-registry", up.host)
		mustOK(t, "bundle create --since", out, err)
		out, err = runBin(t, "bundle", "verify", delta, "--json")
		mustOK(t, "verify delta", out, err)
		var ds struct {
			Inventory struct {
				Since   string
				Blobs   []struct{ Digest string }
				Present []struct{ Digest string }
			}
		}
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &ds); err != nil {
			t.Fatal(err)
		}
		carried := map[string]bool{}
		for _, bl := range ds.Inventory.Blobs {
			carried[bl.Digest] = true
		}
		betaLayers, _ := beta.Layers()
		for _, l := range betaLayers {
			d, _ := l.Digest()
			if !carried[d.String()] {
				t.Errorf("the delta lacks beta's new layer %s", d)
			}
		}
		alphaLayers, _ := alpha.Layers()
		for _, l := range alphaLayers {
			d, _ := l.Digest()
			if carried[d.String()] {
				t.Errorf("the delta carries alpha's layer %s, which the enclave holds", d)
			}
		}
		if len(ds.Inventory.Blobs) >= len(sum.Inventory.Blobs) || len(ds.Inventory.Present) == 0 || ds.Inventory.Since == "" {
			t.Errorf("delta: %d blobs carried, %d present, since %q; the full bundle had %d", len(ds.Inventory.Blobs), len(ds.Inventory.Present), ds.Inventory.Since, len(sum.Inventory.Blobs))
		}
		// On top of the enclave it imports cleanly...
		out, err = enclave.cli(ein, append([]string{"import", delta}, admin...)...)
		mustOK(t, "import of the delta", out, err)
		if got := enclaveDigest(t, enclave, "enclave/beta:1.0"); got != betaD.String() {
			t.Errorf("beta after the delta: %s, want %s", got, betaD)
		}
		if got := enclaveDigest(t, enclave, "enclave/alpha:1.0"); got != alphaD.String() {
			t.Errorf("alpha after the delta: %s, want %s", got, alphaD)
		}
		// ...and on an appliance without the base it is refused, naming why.
		fresh := startAppliance(t, t.TempDir(), "--trusted-key", filepath.Join(work, "release.pub"))
		out, err = fresh.cli(fresh.password+"\n", append([]string{"import", delta}, admin...)...)
		mustFail(t, "delta without its base", out, err, "delta", "does not hold")
	})
}

// runBin runs the appliance binary as a client, without a server.
func runBin(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(t, nil, binary, args...)
}

func getTo(t *testing.T, u, path string) {
	t.Helper()
	if err := os.WriteFile(path, getBytes(t, http.DefaultClient, u), 0o644); err != nil {
		t.Fatal(err)
	}
}

func getBytes(t *testing.T, c *http.Client, u string) []byte {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %v: %s", u, resp.StatusCode, err, b)
	}
	return b
}

func getBytesAuth(t *testing.T, a *appliance, path string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+a.host()+path, nil)
	req.SetBasicAuth("admin", a.password)
	resp, err := a.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d: %s", path, resp.StatusCode, b)
	}
	return b
}

// extractTarEntry writes one entry of a tar to dst.
func extractTarEntry(t *testing.T, src, entry, dst string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s has no %s: %v", src, entry, err)
		}
		if h.Name == entry {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// editTarEntry copies a tar, changing one entry's content.
func editTarEntry(t *testing.T, src, dst, entry string, edit func([]byte) []byte) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	outF, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer outF.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(outF)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == entry {
			nb := edit(body)
			if bytes.Equal(nb, body) {
				t.Fatalf("the edit changed nothing in %s", entry)
			}
			body = nb
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}
