package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/appliance-dev/appliance/internal/filestore"
	"github.com/appliance-dev/appliance/internal/registry"
)

// failIndex is the writer's bucket with the index's upload failing, as
// when the object store goes away between the content and the switch.
type failIndex struct{ registry.FileObjects }

func (f failIndex) Upload(ctx context.Context, key string, r io.Reader, size int64) error {
	if key == "index.json" {
		return errors.New("the object store went away")
	}
	return f.FileObjects.Upload(ctx, key, r, size)
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// get fetches /files/<name> from a store's handler: status and body.
func get(t *testing.T, h http.Handler, name, rng string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/"+name, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// TestS3Files proves the file store in a real Ceph bucket: a writer
// commits files (one large enough for a multipart upload) under
// <prefix>/files/, a read-only replica of the same bucket serves them with
// the same bytes once it reads the index again, and never before; nothing
// is visible of a commit whose index switch failed or of a writer killed
// after its upload (the writer removes such content when it opens again);
// a replica refuses to stage and its driver to upload; a name the writer
// replaced is served new by a replica that still had the old index, and
// content lost from the bucket is an error.
func TestS3Files(t *testing.T) {
	c := ceph.Get(t)
	c.CreateBucket(t, "files")
	w, err := openS3(t, s3Options(c, "files", "files-writer-000000"))
	if err != nil {
		t.Fatal(err)
	}
	ro := s3Options(c, "files", "files-replica-00000")
	ro.Replica = true
	r, err := openS3(t, ro)
	if err != nil {
		t.Fatal(err)
	}
	wobj, ok := w.FileObjects()
	if !ok {
		t.Fatal("a registry on S3 has no file objects")
	}
	robj, _ := r.FileObjects()
	wdir := t.TempDir()
	ws, err := filestore.Open(t.Context(), wdir, nil, filestore.InBucket(wobj, false))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := filestore.Open(t.Context(), t.TempDir(), nil, filestore.InBucket(robj, true))
	if err != nil {
		t.Fatal(err)
	}

	small := []byte("model profile v1\n")
	large := bytes.Repeat([]byte("0123456789abcdef"), (9<<20)/16+7) // over the single-PUT size
	commit := func(s *filestore.Store, id string, files map[string][]byte) ([]filestore.Entry, error) {
		t.Helper()
		st, err := s.Stage(id)
		if err != nil {
			return nil, err
		}
		defer func() { _ = st.Discard() }()
		var entries []filestore.Entry
		for name, b := range files {
			if err := st.Write(t.Context(), sum(b), int64(len(b)), bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
			entries = append(entries, filestore.Entry{Name: name, Digest: sum(b), Kind: "file"})
		}
		return s.Commit(t.Context(), st, entries)
	}
	if _, err := commit(ws, "first", map[string][]byte{"nim/profile.tgz": small, "iso/big.iso": large}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"site-a/files/index.json", "site-a/files/blobs/sha256/" + sum(small)[7:], "site-a/files/blobs/sha256/" + sum(large)[7:]} {
		if !c.ObjectExists(t, "files", key) {
			t.Errorf("%s is not in the bucket", key)
		}
	}
	if ents, _ := os.ReadDir(wdir); len(ents) != 1 || ents[0].Name() != ".staging" {
		t.Errorf("the writer's folder holds %v, want only .staging", ents)
	}

	if code, _ := get(t, rs.Handler(), "iso/big.iso", ""); code != http.StatusNotFound {
		t.Fatalf("the replica served a file before it read the index: %d", code)
	}
	if err := rs.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, rs.Handler(), "iso/big.iso", ""); code != http.StatusOK || !bytes.Equal(body, large) {
		t.Fatalf("the replica serves iso/big.iso: %d, %d bytes (want %d)", code, len(body), len(large))
	}
	if code, body := get(t, rs.Handler(), "iso/big.iso", "bytes=9437180-9437199"); code != http.StatusPartialContent || !bytes.Equal(body, large[9437180:9437200]) {
		t.Fatalf("a range of iso/big.iso on the replica: %d %q", code, body)
	}
	if code, body := get(t, rs.Handler(), "nim/profile.tgz", ""); code != http.StatusOK || !bytes.Equal(body, small) {
		t.Fatalf("the replica serves nim/profile.tgz: %d %q", code, body)
	}
	if rep, err := rs.Verify(t.Context()); err != nil || rep.Files != 2 || len(rep.Problems) != 0 {
		t.Fatalf("Verify on the replica: %+v, %v", rep, err)
	}

	// A replica stages nothing, and its driver writes nothing.
	if _, err := rs.Stage("on-replica"); !errors.Is(err, filestore.ErrReadOnly) {
		t.Fatalf("Stage on a replica: %v, want ErrReadOnly", err)
	}
	if err := robj.Upload(t.Context(), "blobs/sha256/x", bytes.NewReader(small), int64(len(small))); !errors.Is(err, registry.ErrReplica) {
		t.Fatalf("an upload through the replica's driver: %v, want ErrReplica", err)
	}

	// The index switch fails: the commit is refused, the uploaded content
	// is taken back, and no replica sees anything of it.
	failing, err := filestore.Open(t.Context(), t.TempDir(), nil, filestore.InBucket(failIndex{wobj}, false))
	if err != nil {
		t.Fatal(err)
	}
	lost := []byte("never visible\n")
	if _, err := commit(failing, "lost", map[string][]byte{"lost.txt": lost}); err == nil {
		t.Fatal("a commit whose index could not be written succeeded")
	}
	if c.ObjectExists(t, "files", "site-a/files/blobs/sha256/"+sum(lost)[7:]) {
		t.Error("the content of a failed commit stayed in the bucket")
	}
	// A writer killed between its upload and its index switch: content no
	// index names, invisible, and removed when the writer opens again.
	orphan := []byte("uploaded by a writer that died\n")
	if err := wobj.Upload(t.Context(), "blobs/sha256/"+sum(orphan)[7:], bytes.NewReader(orphan), int64(len(orphan))); err != nil {
		t.Fatal(err)
	}
	if err := rs.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(rs.List()); n != 2 {
		t.Fatalf("the replica lists %d files after a failed commit, want 2", n)
	}
	if _, err := filestore.Open(t.Context(), wdir, nil, filestore.InBucket(wobj, false)); err != nil {
		t.Fatal(err)
	}
	if c.ObjectExists(t, "files", "site-a/files/blobs/sha256/"+sum(orphan)[7:]) {
		t.Error("a writer's Open left content no index names")
	}
	if !c.ObjectExists(t, "files", "site-a/files/blobs/sha256/"+sum(large)[7:]) {
		t.Fatal("a writer's Open removed content its index names")
	}

	// The writer replaces a name; the old content goes. A replica that
	// still has the old index reads it again when the content is gone.
	v2 := []byte("model profile v2\n")
	if _, err := commit(ws, "second", map[string][]byte{"nim/profile.tgz": v2}); err != nil {
		t.Fatal(err)
	}
	if c.ObjectExists(t, "files", "site-a/files/blobs/sha256/"+sum(small)[7:]) {
		t.Error("the replaced content is still in the bucket")
	}
	if code, body := get(t, rs.Handler(), "nim/profile.tgz", ""); code != http.StatusOK || !bytes.Equal(body, v2) {
		t.Fatalf("a replica with the old index serves nim/profile.tgz: %d %q, want the new content", code, body)
	}
	// Content lost behind the store's back is an error, after one more
	// read of the index, not a request retried without end.
	c.DeleteObject(t, "files", "site-a/files/blobs/sha256/"+sum(v2)[7:])
	if code, _ := get(t, rs.Handler(), "nim/profile.tgz", ""); code != http.StatusInternalServerError {
		t.Fatalf("a file whose content is gone: %d, want 500", code)
	}
}
