package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// client talks to a test registry over /v2/.
type client struct {
	t   *testing.T
	url string
}

func newClient(t *testing.T, h http.Handler) *client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &client{t: t, url: srv.URL}
}

// do sends a request and returns the response with its body read.
func (c *client) do(method, path string, header http.Header, body []byte) (*http.Response, []byte) {
	c.t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = c.url + path
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, data
}

// pushBlob uploads data to repo by d (POST, then PUT with the digest) and
// returns the headers of the answer to the PUT.
func (c *client) pushBlob(repo string, d digest.Digest, data []byte) http.Header {
	c.t.Helper()
	resp, _ := c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil) //nolint:bodyclose // read and closed by do
	if resp.StatusCode != http.StatusAccepted {
		c.t.Fatalf("start upload: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	resp, body := c.do(http.MethodPut, loc+sep+"digest="+d.String(), http.Header{"Content-Type": {"application/octet-stream"}}, data) //nolint:bodyclose // read and closed by do
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("upload %s: %d %s", d, resp.StatusCode, body)
	}
	return resp.Header
}

// pushManifest PUTs a manifest by ref and returns the response.
func (c *client) pushManifest(repo, ref, mediaType string, payload []byte) (*http.Response, []byte) {
	c.t.Helper()
	return c.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, http.Header{"Content-Type": {mediaType}}, payload)
}

// listReferrers GETs the referrers of subject, with query appended.
func (c *client) listReferrers(repo string, subject digest.Digest, query string) (*http.Response, v1.Index) {
	c.t.Helper()
	resp, body := c.do(http.MethodGet, "/v2/"+repo+"/referrers/"+subject.String()+query, nil, nil) //nolint:bodyclose // read and closed by do
	var idx v1.Index
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &idx); err != nil {
			c.t.Fatalf("referrers body %s: %v", body, err)
		}
	}
	return resp, idx
}

// artifact is an OCI artifact manifest whose one layer and config are
// pushed to repo; subject may be zero.
func (c *client) artifact(repo, artifactType string, subject v1.Descriptor, note string) ([]byte, digest.Digest) {
	c.t.Helper()
	layer := []byte("artifact " + note)
	c.pushBlob(repo, digest.FromBytes(layer), layer)
	c.pushBlob(repo, digest.FromBytes([]byte("{}")), []byte("{}"))
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     v1.MediaTypeImageManifest,
		"artifactType":  artifactType,
		"config":        v1.DescriptorEmptyJSON,
		"layers":        []v1.Descriptor{{MediaType: "application/octet-stream", Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
		"annotations":   map[string]string{"note": note},
	}
	if subject.Digest != "" {
		m["subject"] = subject
	}
	payload, err := json.Marshal(m)
	if err != nil {
		c.t.Fatal(err)
	}
	return payload, digest.FromBytes(payload)
}

func hasReferrer(idx v1.Index, d digest.Digest) bool {
	for _, m := range idx.Manifests {
		if m.Digest == d {
			return true
		}
	}
	return false
}

// TestReferrers pushes an image, referrers of it (an artifact, an index,
// one over the importer's direct path) and one of a subject that does not
// exist, and checks the referrers API answers exactly what storage holds
// after every push and delete, filters by artifact type, and is what a
// standard client (go-containerregistry) reads.
func TestReferrers(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	c := newClient(t, r.Handler())
	ctx := context.Background()
	host := strings.TrimPrefix(c.url, "http://")
	img := ociImage(t)
	ref, _ := name.ParseReference(host+"/p/app:v1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	subject := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}

	// Nothing refers to it yet: an empty index, not a 404.
	resp, idx := c.listReferrers("p/app", subject.Digest, "") //nolint:bodyclose // closed by do
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != v1.MediaTypeImageIndex || idx.Manifests == nil || len(idx.Manifests) != 0 || idx.MediaType != v1.MediaTypeImageIndex || idx.SchemaVersion != 2 {
		t.Fatalf("referrers before any = %d %q %+v", resp.StatusCode, resp.Header.Get("Content-Type"), idx)
	}

	sbom, sbomDigest := c.artifact("p/app", "application/vnd.example.sbom", subject, "sbom")
	resp, body := c.pushManifest("p/app", sbomDigest.String(), v1.MediaTypeImageManifest, sbom) //nolint:bodyclose // closed by do
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != subject.Digest.String() {
		t.Fatalf("push of a referrer = %d %s, OCI-Subject %q", resp.StatusCode, body, resp.Header.Get("OCI-Subject"))
	}
	sigIndex, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": v1.MediaTypeImageIndex, "artifactType": "application/vnd.example.sig",
		"manifests": []v1.Descriptor{}, "subject": subject, "annotations": map[string]string{"note": "sig"},
	})
	sigDigest := digest.FromBytes(sigIndex)
	resp, body = c.pushManifest("p/app", "sig", v1.MediaTypeImageIndex, sigIndex) //nolint:bodyclose // closed by do
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != subject.Digest.String() {
		t.Fatalf("push of an index referrer by tag = %d %s, OCI-Subject %q", resp.StatusCode, body, resp.Header.Get("OCI-Subject"))
	}
	// A manifest without a subject gets no OCI-Subject.
	plain, plainDigest := c.artifact("p/app", "application/vnd.example.plain", v1.Descriptor{}, "plain")
	if resp, _ := c.pushManifest("p/app", plainDigest.String(), v1.MediaTypeImageManifest, plain); resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != "" { //nolint:bodyclose // closed by do
		t.Fatalf("push without a subject = %d, OCI-Subject %q", resp.StatusCode, resp.Header.Get("OCI-Subject"))
	}
	// A subject that does not exist (yet) is no reason to refuse.
	absent := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString("not pushed"), Size: 10}
	orphan, orphanDigest := c.artifact("p/app", "application/vnd.example.sbom", absent, "orphan")
	if resp, body := c.pushManifest("p/app", orphanDigest.String(), v1.MediaTypeImageManifest, orphan); resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != absent.Digest.String() { //nolint:bodyclose // closed by do
		t.Fatalf("push with a missing subject = %d %s, OCI-Subject %q", resp.StatusCode, body, resp.Header.Get("OCI-Subject"))
	}

	resp, idx = c.listReferrers("p/app", subject.Digest, "") //nolint:bodyclose // closed by do
	want := []v1.Descriptor{
		{MediaType: v1.MediaTypeImageManifest, Digest: sbomDigest, Size: int64(len(sbom)), ArtifactType: "application/vnd.example.sbom", Annotations: map[string]string{"note": "sbom"}},
		{MediaType: v1.MediaTypeImageIndex, Digest: sigDigest, Size: int64(len(sigIndex)), ArtifactType: "application/vnd.example.sig", Annotations: map[string]string{"note": "sig"}},
	}
	if len(idx.Manifests) != 2 || resp.Header.Get("OCI-Filters-Applied") != "" {
		t.Fatalf("referrers = %+v (filters %q), want %+v", idx.Manifests, resp.Header.Get("OCI-Filters-Applied"), want)
	}
	for _, w := range want {
		found := false
		for _, m := range idx.Manifests {
			if m.Digest == w.Digest && m.MediaType == w.MediaType && m.Size == w.Size && m.ArtifactType == w.ArtifactType && m.Annotations["note"] == w.Annotations["note"] {
				found = true
			}
		}
		if !found {
			t.Errorf("referrers lack %+v: %+v", w, idx.Manifests)
		}
	}
	resp, idx = c.listReferrers("p/app", subject.Digest, "?artifactType=application/vnd.example.sbom") //nolint:bodyclose // closed by do
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sbomDigest {
		t.Fatalf("filtered referrers = %+v (filters %q)", idx.Manifests, resp.Header.Get("OCI-Filters-Applied"))
	}
	if _, idx = c.listReferrers("p/app", absent.Digest, ""); len(idx.Manifests) != 1 || idx.Manifests[0].Digest != orphanDigest { //nolint:bodyclose // closed by do
		t.Fatalf("referrers of a missing subject = %+v", idx.Manifests)
	}

	// What a standard client reads.
	subjRef, _ := name.NewDigest(host+"/p/app@"+subject.Digest.String(), name.Insecure)
	got, err := remote.Referrers(subjRef)
	if err != nil {
		t.Fatal(err)
	}
	if im, _ := got.IndexManifest(); im == nil || len(im.Manifests) != 2 {
		t.Fatalf("go-containerregistry reads %+v", im)
	}

	// A deleted referrer is gone at once; one stored over the direct path
	// (an import, a standby's follow) is there at once.
	if resp, body := c.do(http.MethodDelete, "/v2/p/app/manifests/"+sbomDigest.String(), nil, nil); resp.StatusCode != http.StatusAccepted { //nolint:bodyclose // closed by do
		t.Fatalf("delete = %d %s", resp.StatusCode, body)
	}
	direct, directDigest := c.artifact("p/app", "application/vnd.example.vex", subject, "direct")
	if _, err := r.PutManifest(ctx, "p/app", v1.MediaTypeImageManifest, direct); err != nil {
		t.Fatal(err)
	}
	_, idx = c.listReferrers("p/app", subject.Digest, "") //nolint:bodyclose // closed by do
	if len(idx.Manifests) != 2 || hasReferrer(idx, sbomDigest) || !hasReferrer(idx, sigDigest) || !hasReferrer(idx, directDigest) {
		t.Fatalf("referrers after a delete and a direct put = %+v", idx.Manifests)
	}
	if err := r.RemoveRepository(ctx, "p/app"); err != nil {
		t.Fatal(err)
	}
	if _, idx = c.listReferrers("p/app", subject.Digest, ""); len(idx.Manifests) != 0 { //nolint:bodyclose // closed by do
		t.Fatalf("referrers of a removed repository = %+v", idx.Manifests)
	}

	// Requests that are wrong are told so.
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/v2/p/app/referrers/sha256:nothex", http.StatusBadRequest},
		{"/v2/P/App/referrers/" + subject.Digest.String(), http.StatusBadRequest},
		{"/v2/p/never/referrers/" + subject.Digest.String(), http.StatusOK},
	} {
		if resp, body := c.do(http.MethodGet, tc.path, nil, nil); resp.StatusCode != tc.code { //nolint:bodyclose // closed by do
			t.Errorf("GET %s = %d %s, want %d", tc.path, resp.StatusCode, body, tc.code)
		}
	}
}

// deny refuses every request on repositories under "private/".
type deny struct{}

type denied struct{ error }

func (denied) Challenge() string { return `Bearer realm="https://test/service/token",service="test"` }

func (deny) AuthorizeRegistry(_ *http.Request, access []Access) (string, error) {
	for _, a := range access {
		if strings.HasPrefix(a.Name, "private/") {
			return "", denied{errors.New("no")}
		}
	}
	return "t", nil
}

// TestReferrersNeedPull: the referrers of a repository the caller may not
// pull, and a manifest PUT by a sha512 digest the caller may not push, are
// refused as distribution refuses the rest: 401 with the challenge and an
// UNAUTHORIZED body.
func TestReferrersNeedPull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r, err := New(context.Background(), Options{RootDir: dir + "/registry", SecretFile: dir + "/secret", StateFile: dir + "/state.json", Authorizer: deny{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	c := newClient(t, r.Handler())
	d := digest.FromString("x")
	for _, tc := range []struct {
		method, path string
	}{
		{http.MethodGet, "/v2/private/app/referrers/" + d.String()},
		{http.MethodPut, "/v2/private/app/manifests/" + digest.SHA512.FromString("x").String()},
	} {
		resp, body := c.do(tc.method, tc.path, nil, nil) //nolint:bodyclose // closed by do
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" || !strings.Contains(string(body), `"UNAUTHORIZED"`) {
			t.Errorf("%s %s = %d %v %s", tc.method, tc.path, resp.StatusCode, resp.Header, body)
		}
	}
	if resp, _ := c.do(http.MethodGet, "/v2/public/app/referrers/"+d.String(), nil, nil); resp.StatusCode != http.StatusOK { //nolint:bodyclose // closed by do
		t.Errorf("referrers of an allowed repository = %d", resp.StatusCode)
	}
}

// BenchmarkReferrers lists the referrers of a repository of 1000
// manifests right after a write, which is when the index is rebuilt
// (reading the one new manifest; the others are known by digest). It also
// reports the first build, which reads them all.
func BenchmarkReferrers(b *testing.B) {
	r := newTest(b, b.TempDir())
	ctx := context.Background()
	cfg := []byte("{}")
	if _, err := r.WriteBlob(ctx, "p/app", Descriptor{Digest: digest.FromBytes(cfg)}, bytes.NewReader(cfg)); err != nil {
		b.Fatal(err)
	}
	subject := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString("s"), Size: 1}
	put := func(i int) {
		m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": v1.MediaTypeImageManifest, "config": v1.DescriptorEmptyJSON, "layers": []any{},
			"subject": subject, "annotations": map[string]string{"i": fmt.Sprint(i)}})
		if _, err := r.PutManifest(ctx, "p/app", v1.MediaTypeImageManifest, m); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 1000 {
		put(i)
	}
	start := time.Now()
	if _, err := r.referrers(ctx, "p/app", subject.Digest); err != nil {
		b.Fatal(err)
	}
	first := time.Since(start)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		put(1000 + i)
		b.StartTimer()
		if list, err := r.referrers(ctx, "p/app", subject.Digest); err != nil || len(list) != 1001+i {
			b.Fatalf("%d referrers, %v", len(list), err)
		}
	}
	b.ReportMetric(float64(first.Microseconds())/1000, "ms/first-build")
}
