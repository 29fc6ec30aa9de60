package registry_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// One Ceph for the package's object-store tests; each test has buckets
// of its own.
var ceph testkit.SharedCeph

func TestMain(m *testing.M) {
	code := m.Run()
	ceph.Stop()
	os.Exit(code)
}

type allowAll struct{}

func (allowAll) AuthorizeRegistry(*http.Request, []registry.Access) (string, error) { return "t", nil }

func s3Options(c *testkit.Ceph, bucket, writerID string) *registry.S3 {
	return &registry.S3{Endpoint: c.URL, Region: "us-east-1", Bucket: bucket, Prefix: "site-a",
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, PathStyle: true,
		WriterID: writerID, Writer: "appliance " + writerID}
}

func openS3(t *testing.T, o *registry.S3) (*registry.Registry, error) {
	t.Helper()
	dir := t.TempDir()
	r, err := registry.New(context.Background(), registry.Options{
		SecretFile: filepath.Join(dir, "secret"), StateFile: filepath.Join(dir, "state.json"),
		Authorizer: allowAll{}, S3: o,
	})
	if err == nil {
		t.Cleanup(func() { _ = r.Close() })
	}
	return r, err
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput() //nolint:gosec // G204: the test's own tools
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestS3PushPull proves the registry keeps its content in a real Ceph
// object store: crane pushes, skopeo and crane pull the same digests back
// (blobs served through the driver, not the local fast path), a second
// registry on the same bucket and prefix sees them, fsck reads the layout
// through the driver, and the tags of a repository never tagged are
// unknown.
func TestS3PushPull(t *testing.T) {
	c := ceph.Get(t)
	testkit.Need(t, "crane", "skopeo")
	c.CreateBucket(t, "pushpull")
	r, err := openS3(t, s3Options(c, "pushpull", "writer-one-0000000"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	src := t.TempDir()
	layout := filepath.Join(src, "img.tar")
	run(t, "crane", "append", "--platform", "linux/amd64", "-f", writeTar(t, src), "-t", "scratch/x:1", "-o", layout)
	run(t, "crane", "push", "--insecure", layout, host+"/proj/app:1.0")
	want := run(t, "crane", "digest", "--insecure", host+"/proj/app:1.0")
	got := run(t, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+host+"/proj/app:1.0")
	if got != want {
		t.Fatalf("skopeo sees %s, crane pushed %s", got, want)
	}
	out := t.TempDir()
	run(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+host+"/proj/app:1.0", "oci:"+out+":x")
	run(t, "crane", "validate", "--insecure", "--remote", host+"/proj/app:1.0")
	if !c.ObjectExists(t, "pushpull", "site-a/"+strings.TrimPrefix(registry.LockKey, "/")) {
		t.Fatal("no lock object under the prefix")
	}
	tags, err := r.Tags(t.Context(), "proj/app")
	if err != nil || len(tags) != 1 || tags[0] != "1.0" {
		t.Fatalf("Tags = %v, %v", tags, err)
	}
	rep, err := r.Check(t.Context(), registry.CheckOptions{})
	if err != nil || len(rep.Problems) != 0 || rep.Blobs < 3 || rep.BlobsHashed != rep.Blobs {
		t.Fatalf("fsck on s3 = %+v, %v", rep, err)
	}
	if used, err := r.StorageUsed(); err != nil || used <= 0 {
		t.Fatalf("StorageUsed = %d, %v", used, err)
	}
	if err := r.Ready(t.Context()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	// A repository never tagged is unknown, as on the filesystem (the S3
	// driver lists a missing folder as an empty one).
	for p, want := range map[string]int{"/v2/never/seen/tags/list": http.StatusNotFound, "/v2/proj/app/tags/list": http.StatusOK} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s on s3: %d, want %d", p, resp.StatusCode, want)
		}
	}
}

func writeTar(t *testing.T, dir string) string {
	t.Helper()
	return writeTarOf(t, dir, "hello from ceph "+t.Name())
}

// writeTarOf is writeTar with the file's content given: two layers made
// within the same second from the same content are the same blob.
func writeTarOf(t *testing.T, dir, content string) string {
	t.Helper()
	data := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(data, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(dir, "layer.tar")
	run(t, "tar", "-C", dir, "-cf", tarball, "hello.txt")
	return tarball
}

// TestS3BadInput proves each unusable object store is named at start-up,
// before anything is written: nothing answering, refused credentials, a
// missing bucket, and a bucket another appliance writes (its lock object).
// The same writer starting again takes its own lock back.
func TestS3BadInput(t *testing.T) {
	c := ceph.Get(t)
	c.CreateBucket(t, "badinput")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()
	for _, tc := range []struct {
		name    string
		mutate  func(o *registry.S3)
		want    error
		mention string
	}{
		{"nothing at the endpoint", func(o *registry.S3) { o.Endpoint = closed }, registry.ErrStoreUnreachable, closed},
		{"wrong access key", func(o *registry.S3) { o.AccessKey = "NOSUCHKEY" }, registry.ErrStoreCredentials, "access_key_file"},
		{"wrong secret key", func(o *registry.S3) { o.SecretKey = "wrong" }, registry.ErrStoreCredentials, "secret_key_file"},
		{"missing bucket", func(o *registry.S3) { o.Bucket = "no-such-bucket" }, registry.ErrNoBucket, "no-such-bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := s3Options(c, "badinput", "writer-bad-000000000")
			tc.mutate(o)
			_, err := openS3(t, o)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("New = %v, want %v naming %q", err, tc.want, tc.mention)
			}
			if strings.Contains(err.Error(), c.SecretKey) {
				t.Fatalf("the error shows the secret key: %v", err)
			}
		})
	}
	if c.ObjectExists(t, "badinput", "site-a/"+strings.TrimPrefix(registry.LockKey, "/")) {
		t.Fatal("a refused start left a lock object")
	}

	c.CreateBucket(t, "locked")
	first, err := openS3(t, s3Options(c, "locked", "writer-first-0000000"))
	if err != nil {
		t.Fatal(err)
	}
	_ = first.Close()
	_, err = openS3(t, s3Options(c, "locked", "writer-second-000000"))
	if !errors.Is(err, registry.ErrWriterLocked) || !strings.Contains(err.Error(), "appliance writer-first-0000000") ||
		!strings.Contains(err.Error(), "site-a/appliance/writer.lock") {
		t.Fatalf("second writer = %v, want ErrWriterLocked naming the first and the lock object", err)
	}
	if _, err := openS3(t, s3Options(c, "locked", "writer-first-0000000")); err != nil {
		t.Fatalf("the first writer again: %v", err)
	}
	// Another prefix of the same bucket is another appliance's.
	o := s3Options(c, "locked", "writer-second-000000")
	o.Prefix = "site-b"
	if _, err := openS3(t, o); err != nil {
		t.Fatalf("another prefix: %v", err)
	}
}
