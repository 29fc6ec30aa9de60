package importer_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// One Ceph for the package's object-store tests.
var ceph testkit.SharedCeph

func TestMain(m *testing.M) {
	code := m.Run()
	ceph.Stop()
	os.Exit(code)
}

// TestS3ImportAllOrNothing proves imports stay all-or-nothing with the
// registry's content in a real Ceph object store: an import cut at any
// point, and one with a corrupt layer, leave no repository (staging
// included) and no tag; the complete import afterwards reuses what was
// stored and is pulled back whole.
func TestS3ImportAllOrNothing(t *testing.T) {
	c := ceph.Get(t)
	c.CreateBucket(t, "imports")
	e, err := envWith(t.TempDir(), &registry.S3{Endpoint: c.URL, Region: "us-east-1", Bucket: "imports", Prefix: "a",
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, PathStyle: true, WriterID: "importer-test-000000", Writer: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	ctx := context.Background()

	_, err = e.imp.Import(ctx, importer.Request{Source: "save.tar", Reader: bytes.NewReader(dockerSave(t, true)), ToRepo: "enclave/saved"})
	if !errors.Is(err, importer.ErrDigestMismatch) {
		t.Fatalf("import of a corrupt layer = %v", err)
	}
	if repos := e.leftovers(t); len(repos) != 0 {
		t.Fatalf("a refused import left repositories: %v", repos)
	}

	data, err := os.ReadFile(fixture(t, "bundle.tar"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int64{100, int64(len(data)) / 2, int64(len(data)) - 5000} {
		_, err := e.imp.Import(ctx, importer.Request{Source: "bundle.tar", Reader: &failingReader{r: bytes.NewReader(data), n: cut}, ToRepo: "enclave/bundle"})
		if err == nil {
			t.Fatalf("cut at %d: import succeeded", cut)
		}
		if repos := e.leftovers(t); len(repos) != 0 {
			t.Fatalf("cut at %d left repositories: %v", cut, repos)
		}
	}
	rec, err := e.imp.Import(ctx, importer.Request{Source: "bundle.tar", Reader: bytes.NewReader(data), ToRepo: "enclave/bundle"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.BlobsExisting == 0 {
		t.Fatalf("the complete import wrote everything again: %+v", rec)
	}
	tags := e.tags(t, "enclave/bundle")
	if len(tags) < 7 {
		t.Fatalf("tags after completing = %v", tags)
	}
	for _, tag := range tags {
		img, err := remote.Image(e.ref(t, "enclave/bundle:"+tag))
		if err != nil {
			t.Fatalf("pull %s: %v", tag, err)
		}
		if _, err := img.Manifest(); err != nil {
			t.Fatalf("manifest of %s: %v", tag, err)
		}
	}
	if !c.ObjectExists(t, "imports", "a/appliance/writer.lock") {
		t.Fatal("the content is not in the bucket")
	}
}
