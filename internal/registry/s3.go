package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/registry/fileobjects"
	"github.com/appliance-dev/appliance/internal/registry/storage"
)

// S3 is an S3-compatible object store (storage.S3).
type S3 = storage.S3

// LockKey is the driver key of the lock object naming the appliance that
// writes a bucket.
const LockKey = storage.LockKey

// Errors of an object store that is not usable, each named at start-up
// (storage's, named here for the registry's callers).
var (
	ErrStoreUnreachable = storage.ErrStoreUnreachable
	ErrStoreCredentials = storage.ErrStoreCredentials
	ErrNoBucket         = storage.ErrNoBucket
	ErrWriterLocked     = storage.ErrWriterLocked
	ErrNoWriter         = storage.ErrNoWriter
)

// copyData is LinkData in an object store, which has no hard links: the
// canonical data copied under want's key through the driver, appearing
// whole at Commit or not at all.
func (r *Registry) copyData(ctx context.Context, want, canonical digest.Digest) error {
	dst := storage.BlobDataKey(want)
	if _, err := r.driver.Stat(ctx, dst); err == nil {
		return nil
	}
	in, err := r.driver.Reader(ctx, storage.BlobDataKey(canonical), 0)
	if err != nil {
		return fmt.Errorf("copy blob data: %w", err)
	}
	defer in.Close()
	w, err := r.driver.Writer(ctx, dst, false)
	if err != nil {
		return fmt.Errorf("copy blob data: %w", err)
	}
	if _, err := io.Copy(w, in); err != nil {
		_ = w.Cancel(ctx)
		return fmt.Errorf("copy blob data: %w", err)
	}
	if err := w.Commit(ctx); err != nil {
		_ = w.Cancel(ctx)
		return fmt.Errorf("copy blob data: %w", err)
	}
	return w.Close()
}

// Ready tells whether the registry's storage answers: its root folder,
// or in an object store the lock object this writer holds.
func (r *Registry) Ready(ctx context.Context) error {
	if !r.onS3 {
		_, err := os.Stat(r.rootDir)
		return err
	}
	// The lock object: the writer's own, or on a replica the writer's.
	if _, err := r.driver.Stat(ctx, LockKey); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	return nil
}

// FileObjects are the objects of the file store (fileobjects.Objects).
type FileObjects = fileobjects.Objects

// FileObjects returns the file store's objects in the registry's bucket,
// through its own driver (read-only on a replica), and false on the
// filesystem backend.
func (r *Registry) FileObjects() (FileObjects, bool) {
	if !r.onS3 {
		return FileObjects{}, false
	}
	return fileobjects.New(r.driver), true
}

// serveUnknownTags answers a tag list of a repository that has never had
// a tag, on S3, with NAME_UNKNOWN as on the filesystem. distribution's S3
// driver walks a missing folder as an empty one, so distribution would
// answer 200 with no tags for any name at all. The caller must be allowed
// to pull first, as distribution checks.
func (r *Registry) serveUnknownTags(w http.ResponseWriter, req *http.Request) bool {
	if !r.onS3 {
		return false
	}
	repo, ok := strings.CutSuffix(strings.TrimPrefix(req.URL.Path, "/v2/"), "/tags/list")
	if !ok || repo == req.URL.Path || repo == "" {
		return false
	}
	if _, err := reference.WithName(repo); err != nil {
		return false // distribution names the problem
	}
	_, err := r.driver.List(req.Context(), path.Join(storage.RepositoriesRoot, repo, "_manifests", "tags"))
	var nf storagedriver.PathNotFoundError
	if !errors.As(err, &nf) {
		return false
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if !r.authorize(w, req, Access{Type: "repository", Name: repo, Action: "pull"}) {
		return true
	}
	_ = errcode.ServeJSON(w, errcode.ErrorCodeNameUnknown.WithDetail(map[string]string{"name": repo}))
	return true
}
