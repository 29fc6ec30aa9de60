package maintenance_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/filestore"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/testkit"
)

type allowAll struct{}

func (allowAll) AuthorizeRegistry(*http.Request, []registry.Access) (string, error) { return "t", nil }

// stack is the appliance's stores on a temporary folder: the real
// registry served on loopback, the importer and its history, the file
// store, and (when asked) the apt repository, with a Maintainer of all.
type stack struct {
	dir   string
	reg   *registry.Registry
	hist  *history.History
	imp   *importer.Importer
	files *filestore.Store
	apt   *aptrepo.Repos
	m     *maintenance.Maintainer
	host  string
}

func newStack(t *testing.T, withApt bool, opts ...maintenance.Option) *stack {
	t.Helper()
	dir := t.TempDir()
	reg, err := registry.New(context.Background(), registry.Options{
		RootDir: filepath.Join(dir, "registry"), SecretFile: filepath.Join(dir, "http.secret"),
		StateFile: filepath.Join(dir, "state.json"), Authorizer: allowAll{},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg.Handler())
	t.Cleanup(func() { srv.Close(); _ = reg.Close() })
	s := &stack{dir: dir, reg: reg, host: strings.TrimPrefix(srv.URL, "http://")}
	if s.hist, err = history.Open(filepath.Join(dir, "imports")); err != nil {
		t.Fatal(err)
	}
	if s.files, err = filestore.Open(t.Context(), filepath.Join(dir, "files"), nil); err != nil {
		t.Fatal(err)
	}
	if s.imp, err = importer.New(reg, s.hist, importer.WithFiles(s.files)); err != nil {
		t.Fatal(err)
	}
	all := []maintenance.Option{maintenance.WithFiles(s.files), maintenance.WithHistory(s.hist)}
	if withApt {
		s.apt = openApt(t, filepath.Join(dir, "apt"))
		all = append(all, maintenance.WithApt(s.apt))
	}
	if s.m, err = maintenance.New(reg, append(all, opts...)...); err != nil {
		t.Fatal(err)
	}
	return s
}

// The apt repository's first open makes an RSA-4096 key: make it once.
var (
	aptKeyOnce sync.Once
	aptKeyDir  string
	aptKeyErr  error
)

func openApt(t *testing.T, dir string) *aptrepo.Repos {
	t.Helper()
	aptKeyOnce.Do(func() {
		aptKeyDir, aptKeyErr = os.MkdirTemp("", "maintenance-apt-key-")
		if aptKeyErr == nil {
			var r *aptrepo.Repos
			if r, aptKeyErr = aptrepo.Open(context.Background(), aptrepo.Options{Dir: aptKeyDir}); aptKeyErr == nil {
				aptKeyErr = r.Close()
			}
		}
	})
	if aptKeyErr != nil {
		t.Fatal(aptKeyErr)
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"secring.gpg", "pubring.gpg", "pubring.asc"} {
		data, err := os.ReadFile(filepath.Join(aptKeyDir, "keys", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "keys", f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := aptrepo.Open(context.Background(), aptrepo.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func (s *stack) ref(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s.host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// push writes an image over /v2/ and returns its digest.
func (s *stack) push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	if err := remote.Write(s.ref(t, ref), img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (s *stack) pushIndex(t *testing.T, ref string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	if err := remote.WriteIndex(s.ref(t, ref), idx); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pull reads an image over /v2/ and checks every byte against its digest.
func (s *stack) pull(ref string) error {
	r, err := name.ParseReference(s.host+"/"+ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if _, err := img.ConfigFile(); err != nil {
		return fmt.Errorf("pull %s: config: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	for _, l := range layers {
		want, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("pull %s: layer %s: %w", ref, want, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		_ = rc.Close()
		if err != nil {
			return fmt.Errorf("pull %s: layer %s: %w", ref, want, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.String() {
			return fmt.Errorf("pull %s: layer %s hashes to %s", ref, want, got)
		}
	}
	return nil
}

// blobData is where the registry keeps a blob's bytes.
func (s *stack) blobData(d string) string {
	hex := strings.TrimPrefix(d, "sha256:")
	return filepath.Join(s.dir, "registry", "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

func (s *stack) repoDir(repo string, parts ...string) string {
	return filepath.Join(append([]string{s.dir, "registry", "docker", "registry", "v2", "repositories", repo}, parts...)...)
}

// flipByte changes one byte of a file in place (every hard link sees it).
func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

func randomImage(t *testing.T, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(1024, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// sbom is an OCI artifact whose subject is img: a referrer.
func sbom(t *testing.T, img v1.Image) v1.Image {
	t.Helper()
	d, _ := img.Digest()
	size, _ := img.Size()
	mt, _ := img.MediaType()
	a, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: static.NewLayer([]byte(`{"spdxVersion":"SPDX-2.3"}`), "application/spdx+json")})
	if err != nil {
		t.Fatal(err)
	}
	a = mutate.ConfigMediaType(a, "application/vnd.oci.empty.v1+json")
	return mutate.Subject(a, v1.Descriptor{MediaType: mt, Digest: d, Size: size}).(v1.Image)
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		d, _ := l.Digest()
		out = append(out, d.String())
	}
	cd, _ := img.ConfigName()
	return append(out, cd.String())
}

// addFile commits one file to the file store.
func (s *stack) addFile(t *testing.T, name string, content []byte) filestore.Entry {
	t.Helper()
	st, err := s.files.Stage("test-" + strings.NewReplacer(".", "-", "/", "-").Replace(name))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	d := "sha256:" + hex.EncodeToString(sum[:])
	if err := st.Write(context.Background(), d, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	es, err := s.files.Commit(context.Background(), st, []filestore.Entry{{Name: name, Digest: d}})
	if err != nil {
		t.Fatal(err)
	}
	return es[0]
}

// addDeb publishes a small .deb (built in Go) into ubuntu/noble/main.
func (s *stack) addDeb(t *testing.T, pkg, version string) {
	t.Helper()
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: amd64\nMaintainer: Tests <t@example.com>\nDescription: test package\n a test\n", pkg, version)
	deb := testkit.GoDeb(t, control, "payload of "+pkg)
	if _, err := s.apt.Add(context.Background(), "ubuntu", "noble", "main", []aptrepo.Deb{aptrepo.DebBytes(pkg+"_"+version+"_amd64.deb", deb)}, "tester"); err != nil {
		t.Fatal(err)
	}
}

// tarOf builds an uncompressed tar of (name, body) pairs.
func tarOf(t *testing.T, entries ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e[0], Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e[1]))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b string) string {
	s := sha256.Sum256([]byte(b))
	return "sha256:" + hex.EncodeToString(s[:])
}

// layout is a one-layer OCI image layout tagged tag, as tar entries;
// extra entries go between the config and the manifest.
func layout(layer, tag string, extra ...[2]string) ([][2]string, string) {
	config := `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + sha(layer) + `"]}}`
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":"%s"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":%d,"digest":"%s"}]}`,
		len(config), sha(config), len(layer), sha(layer))
	index := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":%d,"digest":"%s","annotations":{"org.opencontainers.image.ref.name":"%s"}}]}`,
		len(manifest), sha(manifest), tag)
	blob := func(b string) [2]string { return [2]string{"blobs/sha256/" + strings.TrimPrefix(sha(b), "sha256:"), b} }
	es := [][2]string{{"oci-layout", `{"imageLayoutVersion":"1.0.0"}`}, blob(layer), blob(config)}
	es = append(es, extra...)
	es = append(es, blob(manifest), [2]string{"index.json", index})
	return es, sha(manifest)
}

// later is a clock three hours on: past gc's grace period.
func later() time.Time { return time.Now().Add(3 * time.Hour) }
