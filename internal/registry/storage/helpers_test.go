package storage

import (
	"context"
	"io"
	"maps"
	"path/filepath"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3"
	dstorage "github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// noTurns lets everything through at once: these tests run one thing at
// a time (the registry's own tests take the turns).
type noTurns struct{}

func (noTurns) Hold(context.Context, string) (func(), error) { return func() {}, nil }
func (noTurns) Exclusive(context.Context) (func(), error)    { return func() {}, nil }

// generations is the registry's manifest cache as far as the store sees it.
type generations struct {
	mu  sync.Mutex
	gen map[string]uint64
}

func (g *generations) Generations() map[string]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.gen)
}

func (g *generations) Invalidate(repo string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gen[repo]++
}

// testStore is a Store and distribution's storage on the same folder:
// the test writes content as the registry does, through distribution,
// and the Store reads and maintains it.
type testStore struct {
	*Store
	t       *testing.T
	changes *generations
	ns      distribution.Namespace
}

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	root := filepath.Join(t.TempDir(), "registry")
	changes := &generations{gen: map[string]uint64{}}
	s, err := New(root, Options{Turns: noTurns{}, Changes: changes})
	if err != nil {
		t.Fatal(err)
	}
	driver, err := filesystem.FromParameters(map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := dstorage.NewRegistry(t.Context(), driver, dstorage.EnableDelete)
	if err != nil {
		t.Fatal(err)
	}
	return &testStore{Store: s, t: t, changes: changes, ns: ns}
}

func (ts *testStore) repository(name string) distribution.Repository {
	ts.t.Helper()
	named, err := reference.WithName(name)
	if err != nil {
		ts.t.Fatal(err)
	}
	repo, err := ts.ns.Repository(ts.t.Context(), named)
	if err != nil {
		ts.t.Fatal(err)
	}
	return repo
}

// putBlob stores data in repo, as an upload does.
func (ts *testStore) putBlob(repo string, data []byte) digest.Digest {
	ts.t.Helper()
	ctx := ts.t.Context()
	ts.changes.Invalidate(repo)
	desc, err := ts.repository(repo).Blobs(ctx).Put(ctx, "application/octet-stream", data)
	if err != nil {
		ts.t.Fatal(err)
	}
	return desc.Digest
}

// push stores a random image of one layer in repo and points tag at it,
// as a push over /v2/ does.
func (ts *testStore) push(repo, tag string) {
	ts.t.Helper()
	ctx := ts.t.Context()
	img, err := random.Image(256, 1)
	if err != nil {
		ts.t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		ts.t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			ts.t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			ts.t.Fatal(err)
		}
		ts.putBlob(repo, data)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.putBlob(repo, cfg)
	mt, err := img.MediaType()
	if err != nil {
		ts.t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		ts.t.Fatal(err)
	}
	m, _, err := distribution.UnmarshalManifest(string(mt), raw)
	if err != nil {
		ts.t.Fatal(err)
	}
	rp := ts.repository(repo)
	ms, err := rp.Manifests(ctx)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.changes.Invalidate(repo)
	d, err := ms.Put(ctx, m)
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := rp.Tags(ctx).Tag(ctx, tag, v1.Descriptor{Digest: d}); err != nil {
		ts.t.Fatal(err)
	}
}

// pull reads repo:tag as distribution answers a pull: the tag, the
// manifest, and every blob it references, through the repository's links.
func (ts *testStore) pull(repo, tag string) error {
	ctx := ts.t.Context()
	rp := ts.repository(repo)
	desc, err := rp.Tags(ctx).Get(ctx, tag)
	if err != nil {
		return err
	}
	ms, err := rp.Manifests(ctx)
	if err != nil {
		return err
	}
	m, err := ms.Get(ctx, desc.Digest)
	if err != nil {
		return err
	}
	for _, ref := range m.References() {
		rc, err := rp.Blobs(ctx).Open(ctx, ref.Digest)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		_ = rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
