package importer_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/registry"
)

// allowAll lets every request through: these tests are about content, not
// access (access is proven in internal/server and test/e2e).
type allowAll struct{}

func (allowAll) AuthorizeRegistry(*http.Request, []registry.Access) (string, error) {
	return "test", nil
}

// env is a real registry on a temporary folder, served on loopback, with
// an importer writing into its storage.
type env struct {
	reg   *registry.Registry
	imp   *importer.Importer
	hist  *history.History
	host  string // 127.0.0.1:port
	dir   string
	close func()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e, err := envAt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func mustEnvAt(dir string) *env {
	e, err := envAt(dir)
	if err != nil {
		panic(err)
	}
	return e
}

func envAt(dir string) (*env, error) { return envWith(dir, nil) }

// envWith is envAt with the registry's content in an object store when s3
// is set.
func envWith(dir string, s3 *registry.S3) (*env, error) {
	reg, err := registry.New(context.Background(), registry.Options{
		RootDir:    filepath.Join(dir, "registry"),
		SecretFile: filepath.Join(dir, "http.secret"),
		StateFile:  filepath.Join(dir, "state.json"),
		Authorizer: allowAll{},
		S3:         s3,
	})
	if err != nil {
		return nil, err
	}
	hist, err := history.Open(filepath.Join(dir, "imports"))
	if err != nil {
		return nil, err
	}
	imp, err := importer.New(reg, hist)
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(reg.Handler())
	e := &env{reg: reg, imp: imp, hist: hist, host: strings.TrimPrefix(srv.URL, "http://"), dir: dir}
	e.close = func() { srv.Close(); _ = reg.Close() }
	return e, nil
}

func (e *env) importFile(t *testing.T, path, toRepo string) (*history.Record, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return e.imp.Import(context.Background(), importer.Request{Source: filepath.Base(path), Reader: f, ToRepo: toRepo, User: "tester"})
}

func (e *env) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(e.host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) tags(t *testing.T, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(e.host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r)
	if err != nil {
		t.Fatalf("list tags of %s: %v", repo, err)
	}
	return tags
}

// leftovers lists every repository, including staging areas that hold
// only blob links (which the catalog does not show).
func (e *env) leftovers(t *testing.T) []string {
	t.Helper()
	repos, err := e.reg.Repositories(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	staging, err := e.reg.RepositoriesUnder(context.Background(), importer.StagingProject)
	if err != nil {
		t.Fatal(err)
	}
	return append(repos, staging...)
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "..", "..", "shared", "fixtures", "imgpkg", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("fixture %s not available: %v", name, err)
	}
	return p
}
