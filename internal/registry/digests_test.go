package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-dev/appliance/internal/registry/storage"
)

var (
	sha512  = digest.SHA512
	specsV2 = specs.Versioned{SchemaVersion: 2}
)

// linkTarget reads what a link file of the storage names.
func linkTarget(t *testing.T, r *Registry, key string) string {
	t.Helper()
	data, err := r.driver.GetContent(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func rangeOf(start, n int) string { return strconv.Itoa(start) + "-" + strconv.Itoa(start+n-1) }

// TestSHA512Blobs pushes blobs by their sha512 digest, whole, in chunks,
// and as distribution alone stores them (an alias of the sha256), and
// checks each is answered, read, ranged, mounted and deleted under its
// sha512, and kept under it in storage.
func TestSHA512Blobs(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	c := newClient(t, r.Handler())
	for _, tc := range []struct {
		name string
		push func(repo string, d digest.Digest, data []byte)
		own  bool // stored under its own digest by the push itself
	}{
		{"post and put", func(repo string, d digest.Digest, data []byte) {
			h := c.pushBlob(repo, d, data)
			if got := h.Get("Docker-Content-Digest"); got != d.String() || !strings.HasSuffix(h.Get("Location"), "/v2/"+repo+"/blobs/"+d.String()) {
				t.Fatalf("upload answered %s at %s", got, h.Get("Location"))
			}
		}, true},
		{"chunks", func(repo string, d digest.Digest, data []byte) {
			resp, _ := c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil) //nolint:bodyclose // closed by do
			loc := resp.Header.Get("Location")
			for i, part := range [][]byte{data[:7], data[7:]} {
				h := http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {rangeOf(i*7, len(part))}}
				resp, body := c.do(http.MethodPatch, loc, h, part) //nolint:bodyclose // closed by do
				if resp.StatusCode != http.StatusAccepted {
					t.Fatalf("PATCH = %d %s", resp.StatusCode, body)
				}
				loc = resp.Header.Get("Location")
			}
			resp, body := c.do(http.MethodPut, loc+"&digest="+d.String(), nil, nil) //nolint:bodyclose // closed by do
			if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != d.String() {
				t.Fatalf("closing PUT = %d %s %v", resp.StatusCode, body, resp.Header)
			}
		}, true},
		{"alias", func(repo string, d digest.Digest, data []byte) {
			// What distribution alone makes of it (and what a blob pushed
			// before sha512 blobs were kept under their own digest is).
			newClient(t, r.app).pushBlob(repo, d, data)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte("sha512 blob content: " + tc.name)
			d := sha512.FromBytes(data)
			src, dst := "p/src-"+strings.ReplaceAll(tc.name, " ", "-"), "p/dst"
			tc.push(src, d, data)
			if _, err := os.Stat(r.store.BlobDataPath(d)); tc.own && err != nil {
				t.Fatalf("not stored under its sha512: %v", err)
			}
			want := d.String()
			if !tc.own {
				want = digest.FromBytes(data).String()
			}
			if got := linkTarget(t, r, storage.LayerLinkKey(src, d)); got != want {
				t.Fatalf("the repository links %s to %s, want %s", d, got, want)
			}
			check := func(repo string) {
				t.Helper()
				resp, body := c.do(http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil, nil) //nolint:bodyclose // closed by do
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) || resp.Header.Get("Docker-Content-Digest") != d.String() {
					t.Fatalf("GET from %s = %d %q %v", repo, resp.StatusCode, body, resp.Header)
				}
				resp, body = c.do(http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil, nil) //nolint:bodyclose // closed by do
				if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != int64(len(data)) || resp.Header.Get("Docker-Content-Digest") != d.String() {
					t.Fatalf("HEAD in %s = %d %d %v", repo, resp.StatusCode, resp.ContentLength, resp.Header)
				}
				resp, body = c.do(http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), http.Header{"Range": {"bytes=2-5"}}, nil) //nolint:bodyclose // closed by do
				if resp.StatusCode != http.StatusPartialContent || string(body) != string(data[2:6]) {
					t.Fatalf("range GET in %s = %d %q", repo, resp.StatusCode, body)
				}
			}
			check(src)
			resp, body := c.do(http.MethodPost, "/v2/"+dst+"/blobs/uploads/?mount="+d.String()+"&from="+src, nil, nil) //nolint:bodyclose // closed by do
			if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != d.String() {
				t.Fatalf("mount = %d %s %v", resp.StatusCode, body, resp.Header)
			}
			check(dst)
			if got := linkTarget(t, r, storage.LayerLinkKey(dst, d)); got != d.String() {
				t.Fatalf("the mount linked %s to %s", d, got)
			}
			if resp, body := c.do(http.MethodDelete, "/v2/"+dst+"/blobs/"+d.String(), nil, nil); resp.StatusCode != http.StatusAccepted { //nolint:bodyclose // closed by do
				t.Fatalf("DELETE = %d %s", resp.StatusCode, body)
			}
			if resp, _ := c.do(http.MethodGet, "/v2/"+dst+"/blobs/"+d.String(), nil, nil); resp.StatusCode != http.StatusNotFound { //nolint:bodyclose // closed by do
				t.Fatalf("GET after DELETE = %d", resp.StatusCode)
			}
			check(src) // the source keeps it
		})
	}
}

// sha512Image pushes a config and a layer by their sha512 digests and
// returns an image manifest naming them.
func sha512Image(t *testing.T, c *client, repo, note string) ([]byte, digest.Digest) {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","note":"` + note + `"}`)
	layer := []byte("layer " + note)
	c.pushBlob(repo, sha512.FromBytes(cfg), cfg)
	c.pushBlob(repo, sha512.FromBytes(layer), layer)
	m, err := json.Marshal(v1.Manifest{
		Versioned: specsV2, MediaType: v1.MediaTypeImageManifest,
		Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: sha512.FromBytes(cfg), Size: int64(len(cfg))},
		Layers: []v1.Descriptor{{MediaType: v1.MediaTypeImageLayerGzip, Digest: sha512.FromBytes(layer), Size: int64(len(layer))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, sha512.FromBytes(m)
}

// TestSHA512Manifests pushes an image, an index and a referrer by their
// sha512 digests and checks they are verified as distribution verifies a
// sha256 manifest, stored under the sha512 only, pulled, listed as
// referrers and deleted like any other.
func TestSHA512Manifests(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	c := newClient(t, r.Handler())
	ctx := context.Background()
	const repo = "p/five12"
	img, imgDigest := sha512Image(t, c, repo, "a")
	resp, body := c.pushManifest(repo, imgDigest.String(), v1.MediaTypeImageManifest, img) //nolint:bodyclose // closed by do
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != imgDigest.String() {
		t.Fatalf("PUT by sha512 = %d %s %v", resp.StatusCode, body, resp.Header)
	}
	loc := resp.Header.Get("Location")
	if loc != "/v2/"+repo+"/manifests/"+imgDigest.String() {
		t.Fatalf("Location %q", loc)
	}
	accept := http.Header{"Accept": {v1.MediaTypeImageManifest, v1.MediaTypeImageIndex}}
	for range 2 { // the second read is served from the cache
		resp, body = c.do(http.MethodGet, loc, accept, nil) //nolint:bodyclose // closed by do
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img) || resp.Header.Get("Content-Type") != v1.MediaTypeImageManifest || resp.Header.Get("Docker-Content-Digest") != imgDigest.String() {
			t.Fatalf("GET by sha512 = %d %s %v", resp.StatusCode, body, resp.Header)
		}
	}
	if resp, _ := c.do(http.MethodHead, loc, accept, nil); resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(img)) { //nolint:bodyclose // closed by do
		t.Fatalf("HEAD by sha512 = %d %d", resp.StatusCode, resp.ContentLength)
	}

	index, _ := json.Marshal(v1.Index{Versioned: specsV2, MediaType: v1.MediaTypeImageIndex,
		Manifests: []v1.Descriptor{{MediaType: v1.MediaTypeImageManifest, Digest: imgDigest, Size: int64(len(img)), Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}}})
	indexDigest := sha512.FromBytes(index)
	if resp, body := c.pushManifest(repo, indexDigest.String(), v1.MediaTypeImageIndex, index); resp.StatusCode != http.StatusCreated { //nolint:bodyclose // closed by do
		t.Fatalf("PUT of a sha512 index = %d %s", resp.StatusCode, body)
	}
	subject := v1.Descriptor{MediaType: v1.MediaTypeImageIndex, Digest: indexDigest, Size: int64(len(index))}
	sig, sigDigest := c.artifact(repo, "application/vnd.example.sig", subject, "sig")
	sig512 := sha512.FromBytes(sig)
	if resp, body := c.pushManifest(repo, sig512.String(), v1.MediaTypeImageManifest, sig); resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != indexDigest.String() { //nolint:bodyclose // closed by do
		t.Fatalf("PUT of a sha512 referrer = %d %s, OCI-Subject %q", resp.StatusCode, body, resp.Header.Get("OCI-Subject"))
	}
	if _, idx := c.listReferrers(repo, indexDigest, ""); len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sig512 { //nolint:bodyclose // closed by do
		t.Fatalf("referrers of the sha512 index = %+v", idx.Manifests)
	}
	// Stored under the sha512 only: no sha256 revision beside it.
	ds, err := r.ManifestDigests(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Algorithm() != sha512 || d == digest.FromBytes(img) || d == sigDigest {
			t.Errorf("manifest %s stored (want only sha512 revisions)", d)
		}
	}
	if len(ds) != 3 {
		t.Errorf("manifests = %v, want 3", ds)
	}

	// Refused as distribution refuses a sha256 manifest.
	other, _ := sha512Image(t, c, repo, "b")
	missing, _ := json.Marshal(v1.Manifest{Versioned: specsV2, MediaType: v1.MediaTypeImageManifest,
		Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: sha512.FromString("absent"), Size: 6}, Layers: []v1.Descriptor{}})
	badIndex, _ := json.Marshal(v1.Index{Versioned: specsV2, MediaType: v1.MediaTypeImageIndex,
		Manifests: []v1.Descriptor{{MediaType: v1.MediaTypeImageManifest, Digest: sha512.FromString("absent"), Size: 6}}})
	for _, tc := range []struct {
		name, ref, mediaType string
		payload              []byte
		code                 string
	}{
		{"another manifest's digest", imgDigest.String(), v1.MediaTypeImageManifest, other, "DIGEST_INVALID"},
		{"a missing config", sha512.FromBytes(missing).String(), v1.MediaTypeImageManifest, missing, "MANIFEST_BLOB_UNKNOWN"},
		{"a missing child", sha512.FromBytes(badIndex).String(), v1.MediaTypeImageIndex, badIndex, "MANIFEST_BLOB_UNKNOWN"},
		{"no JSON", sha512.FromString("x").String(), v1.MediaTypeImageManifest, []byte("x"), "MANIFEST_INVALID"},
	} {
		resp, body := c.pushManifest(repo, tc.ref, tc.mediaType, tc.payload) //nolint:bodyclose // closed by do
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.code) {
			t.Errorf("%s: PUT = %d %s, want 400 %s", tc.name, resp.StatusCode, body, tc.code)
		}
	}

	if resp, body := c.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+sig512.String(), nil, nil); resp.StatusCode != http.StatusAccepted { //nolint:bodyclose // closed by do
		t.Fatalf("DELETE by sha512 = %d %s", resp.StatusCode, body)
	}
	if resp, _ := c.do(http.MethodGet, "/v2/"+repo+"/manifests/"+sig512.String(), accept, nil); resp.StatusCode != http.StatusNotFound { //nolint:bodyclose // closed by do
		t.Fatalf("GET after DELETE = %d", resp.StatusCode)
	}
	if _, idx := c.listReferrers(repo, indexDigest, ""); len(idx.Manifests) != 0 { //nolint:bodyclose // closed by do
		t.Fatalf("referrers after the DELETE = %+v", idx.Manifests)
	}
}

// TestSHA512Direct: the importer's direct writes keep a blob named by its
// sha512 under that digest, link it into another repository, and read it.
func TestSHA512Direct(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	ctx := context.Background()
	data := []byte("direct sha512")
	d := sha512.FromBytes(data)
	got, err := r.WriteBlob(ctx, "p/one", Descriptor{Digest: d, Size: int64(len(data))}, bytes.NewReader(data))
	if err != nil || got.Digest != d {
		t.Fatalf("WriteBlob = %+v, %v", got, err)
	}
	if got := linkTarget(t, r, storage.LayerLinkKey("p/one", d)); got != d.String() {
		t.Fatalf("the repository links %s to %s", d, got)
	}
	if _, err := r.WriteBlob(ctx, "p/one", Descriptor{Digest: sha512.FromString("other")}, bytes.NewReader(data)); err == nil {
		t.Fatal("a blob that does not match its sha512 was stored")
	}
	if st, ok, err := r.StatBlob(ctx, d); err != nil || !ok || st.Size != int64(len(data)) {
		t.Fatalf("StatBlob = %+v %v %v", st, ok, err)
	}
	if err := r.LinkBlob(ctx, "p/two", d); err != nil {
		t.Fatal(err)
	}
	rc, err := r.ReadBlob(ctx, "p/two", d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, _ := io.ReadAll(rc); !bytes.Equal(b, data) {
		t.Fatalf("ReadBlob = %q", b)
	}
}

// TestForeignLayers: a manifest whose non-distributable layers were never
// pushed is stored (by tag and by a sha512 digest) and pulled, as
// distribution-spec asks; a layer URL that is not http(s) is refused.
func TestForeignLayers(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	c := newClient(t, r.Handler())
	const repo = "p/foreign"
	cfg := []byte(`{"architecture":"amd64","os":"windows"}`)
	c.pushBlob(repo, digest.FromBytes(cfg), cfg)
	manifest := func(url string) []byte {
		ld := digest.FromString("never pushed " + url)
		m, _ := json.Marshal(v1.Manifest{Versioned: specsV2, MediaType: v1.MediaTypeImageManifest,
			Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
			Layers: []v1.Descriptor{{MediaType: v1.MediaTypeImageLayerNonDistributableGzip, Digest: ld, Size: 1234, URLs: []string{url + ld.Encoded()}}}, //nolint:staticcheck // the deprecated type is the point
		})
		return m
	}
	good := manifest("https://store.example.com/blobs/")
	if resp, body := c.pushManifest(repo, "windows", v1.MediaTypeImageManifest, good); resp.StatusCode != http.StatusCreated { //nolint:bodyclose // closed by do
		t.Fatalf("PUT by tag = %d %s", resp.StatusCode, body)
	}
	if resp, body := c.do(http.MethodGet, "/v2/"+repo+"/manifests/windows", http.Header{"Accept": {v1.MediaTypeImageManifest}}, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, good) { //nolint:bodyclose // closed by do
		t.Fatalf("GET = %d %s", resp.StatusCode, body)
	}
	if resp, body := c.pushManifest(repo, sha512.FromBytes(good).String(), v1.MediaTypeImageManifest, good); resp.StatusCode != http.StatusCreated { //nolint:bodyclose // closed by do
		t.Fatalf("PUT by sha512 = %d %s", resp.StatusCode, body)
	}
	bad := manifest("ftp://store.example.com/blobs/")
	for _, ref := range []string{"ftp", sha512.FromBytes(bad).String()} {
		if resp, body := c.pushManifest(repo, ref, v1.MediaTypeImageManifest, bad); resp.StatusCode < 400 { //nolint:bodyclose // closed by do
			t.Errorf("PUT %s with an ftp URL = %d %s", ref, resp.StatusCode, body)
		}
	}
}
