package importer_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/registry"
)

type ctxKey struct{}

// recordingStore is the real registry, with a log of which import wrote
// manifests and tags into which repository, in order.
type recordingStore struct {
	*registry.Registry
	mu  sync.Mutex
	ops map[string][]string // repository -> import names, one per write
}

func (r *recordingStore) note(ctx context.Context, repo string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	who, _ := ctx.Value(ctxKey{}).(string)
	r.ops[repo] = append(r.ops[repo], who)
}

func (r *recordingStore) PutManifest(ctx context.Context, repo, mt string, payload []byte) (digest.Digest, error) {
	r.note(ctx, repo)
	return r.Registry.PutManifest(ctx, repo, mt, payload)
}

func (r *recordingStore) Tag(ctx context.Context, repo, tag string, d digest.Digest) error {
	r.note(ctx, repo)
	return r.Registry.Tag(ctx, repo, tag, d)
}

// TestConcurrentImports runs eight imports at once, four into one
// repository and four into their own: all succeed, and in the shared
// repository the writes of one import are never interleaved with another's.
func TestConcurrentImports(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rs := &recordingStore{Registry: e.reg, ops: map[string][]string{}}
	imp, err := importer.New(rs, e.hist)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		repo := "enclave/shared"
		if i%2 == 1 {
			repo = fmt.Sprintf("enclave/own%d", i)
		}
		data := imgpkgTar(t, []byte(fmt.Sprintf("layer of import %d", i)), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.WithValue(context.Background(), ctxKey{}, fmt.Sprint("import", i))
			_, err := imp.Import(ctx, importer.Request{Source: fmt.Sprint("a", i), Reader: bytes.NewReader(data), ToRepo: repo})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		// Four imports tag enclave/shared:v1 with different images; each
		// succeeds and the last one wins, as with any registry push.
		if err != nil {
			t.Fatal(err)
		}
	}
	seq := rs.ops["enclave/shared"]
	done := map[string]bool{}
	for i, who := range seq {
		if i > 0 && seq[i-1] != who {
			if done[who] {
				t.Fatalf("writes into enclave/shared interleaved: %v", seq)
			}
			done[seq[i-1]] = true
		}
	}
	if len(seq) != 4*3 {
		t.Fatalf("enclave/shared saw %d writes, want 12 (manifest and two tags per import): %v", len(seq), seq)
	}
}
