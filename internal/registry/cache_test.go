package registry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

func ociImage(t *testing.T) v1.Image {
	t.Helper()
	l, err := random.Layer(256, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestManifestCacheNeverServesStale pushes, reads (filling the cache),
// moves the tag over /v2/ and through the importer's direct path, deletes,
// and checks every read answers what storage holds now.
func TestManifestCacheNeverServesStale(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ref, _ := name.ParseReference(host+"/p/app:v1", name.Insecure)
	head := func() digest.Digest {
		t.Helper()
		for range 2 { // the second read comes from the cache
			d, err := remote.Head(ref)
			if err != nil {
				t.Fatal(err)
			}
			img, err := remote.Image(ref)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := img.Digest(); got != d.Digest {
				t.Fatalf("GET digest %s, HEAD %s", got, d.Digest)
			}
		}
		d, _ := remote.Head(ref)
		return digest.Digest(d.Digest.String())
	}
	a, b, c := ociImage(t), ociImage(t), ociImage(t)
	if err := remote.Write(ref, a); err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	if got := head(); got.String() != da.String() {
		t.Fatalf("v1 = %s, want %s", got, da)
	}
	// Moved over /v2/.
	if err := remote.Write(ref, b); err != nil {
		t.Fatal(err)
	}
	db, _ := b.Digest()
	if got := head(); got.String() != db.String() {
		t.Fatalf("after a push v1 = %s, want %s", got, db)
	}
	// Moved through the direct path (as an import does).
	cref, _ := name.ParseReference(host+"/p/app:other", name.Insecure)
	if err := remote.Write(cref, c); err != nil {
		t.Fatal(err)
	}
	dc, _ := c.Digest()
	if err := r.Tag(context.Background(), "p/app", "v1", digest.Digest(dc.String())); err != nil {
		t.Fatal(err)
	}
	if got := head(); got.String() != dc.String() {
		t.Fatalf("after a direct tag v1 = %s, want %s", got, dc)
	}
	// Deleted over /v2/: gone, not served from the cache.
	byDigest, _ := name.ParseReference(host+"/p/app@"+dc.String(), name.Insecure)
	if _, err := remote.Head(byDigest); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(byDigest); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(byDigest); err == nil {
		t.Fatal("a deleted manifest is still served")
	}
	// Accept: an OCI manifest is not served to a client that names only
	// Docker types, exactly as distribution answers.
	if err := remote.Write(ref, a); err != nil {
		t.Fatal(err)
	}
	head()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/p/app/manifests/v1", nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("OCI manifest to a Docker-only client = %d, want distribution's 404", resp.StatusCode)
	}
}

// TestServeBlobDirect: blobs are served whole, by range and to HEAD with
// distribution's headers, and never from a repository they are not linked into.
func TestServeBlobDirect(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	ctx := context.Background()
	data := []byte("0123456789abcdefghij")
	d := digest.FromBytes(data)
	if _, err := r.WriteBlob(ctx, "p/one", Descriptor{Digest: d, Size: int64(len(data))}, strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
	// get closes the body itself and returns the response for its headers.
	get := func(method, repo, rangeHdr string) (*http.Response, string) { //nolint:bodyclose // closed inside
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/v2/"+repo+"/blobs/"+d.String(), nil)
		if rangeHdr != "" {
			req.Header.Set("Range", rangeHdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		_, _ = io.Copy(b, resp.Body)
		return resp, b.String()
	}
	resp, body := get(http.MethodGet, "p/one", "") //nolint:bodyclose // closed inside get
	if resp.StatusCode != 200 || body != string(data) || resp.Header.Get("Docker-Content-Digest") != d.String() || resp.Header.Get("Etag") != `"`+d.String()+`"` {
		t.Fatalf("GET = %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = get(http.MethodGet, "p/one", "bytes=5-9") //nolint:bodyclose // closed inside get
	if resp.StatusCode != http.StatusPartialContent || body != "56789" {
		t.Fatalf("range GET = %d %q", resp.StatusCode, body)
	}
	resp, body = get(http.MethodHead, "p/one", "") //nolint:bodyclose // closed inside get
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD = %d %q %d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp, _ = get(http.MethodGet, "p/other", ""); resp.StatusCode != http.StatusNotFound { //nolint:bodyclose // closed inside get
		t.Fatalf("a blob from a repository it is not linked into = %d, want 404", resp.StatusCode)
	}
}

// TestInvalidateAll proves a replica's drop of the whole cache: what was
// cached is gone, repositories never seen move on too (a lookup that
// started before the drop cannot put what it read), and the generations
// package storage reads all moved.
func TestInvalidateAll(t *testing.T) {
	t.Parallel()
	c := newManifestCache()
	d := digest.FromString("m")
	_, _, _, gen := c.get("a/x", "v1")
	c.put("a/x", "v1", gen, d, cachedManifest{mediaType: "t", payload: []byte("m")})
	if _, _, hit, _ := c.get("a/x", "v1"); !hit {
		t.Fatal("not cached")
	}
	c.Invalidate("a/y")
	before := c.Generations()
	_, _, _, unseen := c.get("b/new", "v1") // a lookup in flight
	c.InvalidateAll()
	if _, _, hit, _ := c.get("a/x", "v1"); hit {
		t.Fatal("a tag served after InvalidateAll")
	}
	c.put("b/new", "v1", unseen, d, cachedManifest{mediaType: "t", payload: []byte("m")})
	if _, _, hit, _ := c.get("b/new", "v1"); hit {
		t.Fatal("a lookup that began before InvalidateAll filled the cache")
	}
	after := c.Generations()
	for repo, g := range before {
		if after[repo] == g {
			t.Errorf("the generation of %s did not move", repo)
		}
	}
	if c.n != 0 || c.bytes != 0 {
		t.Errorf("counts after InvalidateAll: %d manifests, %d bytes", c.n, c.bytes)
	}
}
