package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

type allow struct{}

func (allow) AuthorizeRegistry(*http.Request, []Access) (string, error) { return "t", nil }

func newTest(t testing.TB, dir string) *Registry {
	t.Helper()
	r, err := New(context.Background(), Options{
		RootDir: filepath.Join(dir, "registry"), SecretFile: filepath.Join(dir, "secret"),
		StateFile: filepath.Join(dir, "state.json"), Authorizer: allow{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// TestReadOnlyGate proves that read-only mode refuses writes on /v2/ with an
// OCI error that gives the reason, lets reads through, refuses direct
// storage writes, and persists across a new Registry on the same folder.
func TestReadOnlyGate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := newTest(t, dir)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	if _, err := r.SetReadOnly(true, "standby of harbor.test"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(srv.URL+"/v2/a/b/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"code":"DENIED"`) || !strings.Contains(string(body), "standby of harbor.test") {
		t.Fatalf("upload in read-only mode = %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(srv.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ in read-only mode = %d", resp.StatusCode)
	}
	_, err = r.WriteBlob(context.Background(), "a/b", Descriptor{}, strings.NewReader("x"))
	if !errors.Is(err, ErrReadOnly) || strings.Count(err.Error(), "read-only mode") != 1 || !strings.Contains(err.Error(), "standby of harbor.test") {
		t.Fatalf("direct write in read-only mode = %v, want ErrReadOnly saying so once, with the reason", err)
	}
	_ = r.Close()
	again := newTest(t, dir)
	if m := again.Mode(); !m.ReadOnly || m.Reason != "standby of harbor.test" {
		t.Fatalf("mode after reopening = %+v", m)
	}
}

// TestDirectStorage proves the importer's primitives: a blob that does not
// match its digest is not stored, a good one is, it can be linked into
// another repository without copying, and a manifest referencing a blob the
// repository lacks is refused.
func TestDirectStorage(t *testing.T) {
	t.Parallel()
	r := newTest(t, t.TempDir())
	ctx := context.Background()
	data := []byte("blob content")
	d := digest.FromBytes(data)
	if _, err := r.WriteBlob(ctx, "p/one", Descriptor{Digest: d}, bytes.NewReader([]byte("other content"))); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("mismatching write = %v", err)
	}
	if _, ok, _ := r.StatBlob(ctx, d); ok {
		t.Fatal("a refused blob was stored")
	}
	if _, err := r.WriteBlob(ctx, "p/one", Descriptor{Digest: d, Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := r.LinkBlob(ctx, "p/two", d); err != nil {
		t.Fatal(err)
	}
	rc, err := r.ReadBlob(ctx, "p/two", d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("linked blob reads %q", got)
	}
	missing := digest.FromString("missing")
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":12,"digest":"` + d.String() + `"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":7,"digest":"` + missing.String() + `"}]}`
	if _, err := r.PutManifest(ctx, "p/two", "application/vnd.oci.image.manifest.v1+json", []byte(manifest)); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("manifest with a missing layer = %v", err)
	}
	if err := r.Tag(ctx, "p/two", "bad tag!", d); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("invalid tag = %v", err)
	}
	used, err := r.StorageUsed()
	if err != nil || used < int64(len(data)) {
		t.Fatalf("storage used = %d, %v", used, err)
	}
}
