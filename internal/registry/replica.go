package registry

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/appliance-dev/appliance/internal/registry/storage"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	s3driver "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// A read-only replica serves pulls of a bucket that another appliance,
// its writer, writes (docs/architecture.md). It never writes the bucket:
// its storage driver refuses every write, whoever asks (distribution,
// the importer, gc, a follow), and its /v2/ refuses every method but
// GET, HEAD and OPTIONS with an OCI DENIED that names the writer.

// ErrReplica marks a write refused because this appliance is a read-only
// replica; the error's message names the writer (or, from the driver,
// the refused key).
var ErrReplica = storage.ErrReplica

// StateKey is the driver key of the folder of the state's objects.
const StateKey = storage.StateKey

// Objects are the small objects of the state (storage.Objects).
type Objects = storage.Objects

// StateObjects returns the state's objects, and false on the filesystem
// backend (which has no replicas).
func (r *Registry) StateObjects() (Objects, bool) {
	if !r.onS3 {
		return Objects{}, false
	}
	return storage.NewObjects(r.driver), true
}

// replicaRefusal is the error of a write refused on a replica.
type replicaRefusal struct{ writer string }

func (e replicaRefusal) Error() string {
	return "this appliance is a read-only replica: pushes, deletes, imports and changes go to its writer, " + e.writer
}
func (e replicaRefusal) Unwrap() error { return ErrReplica }

// IsReplica tells whether this registry is a read-only replica.
func (r *Registry) IsReplica() bool { return r.writer.Load() != nil }

// Writer describes the appliance that writes the bucket, as its lock
// object names it, on a replica; "" on the writer itself.
func (r *Registry) Writer() string {
	if w := r.writer.Load(); w != nil {
		return *w
	}
	return ""
}

// RefusedOnReplica is the error of a change refused on a replica: it
// wraps ErrReplica and names the writer. Nil on the writer.
func (r *Registry) RefusedOnReplica() error {
	w := r.writer.Load()
	if w == nil {
		return nil
	}
	return replicaRefusal{writer: *w}
}

// refuseOnReplica answers a /v2/ write on a replica and reports whether
// it did.
func (r *Registry) refuseOnReplica(w http.ResponseWriter) bool {
	err := r.RefusedOnReplica()
	if err == nil {
		return false
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	_ = errcode.ServeJSON(w, errcode.ErrorCodeDenied.WithMessage(err.Error()))
	return true
}

// ReplicaTick is what a replica does on every poll of its writer's
// state: it drops every cached manifest, tag and referrers list (tags
// move only on the writer, which cannot tell this process; so nothing
// cached outlives one poll) and reads the lock object again, so that a
// refusal names the writer that holds the bucket now. On an error the
// writer named before is kept.
func (r *Registry) ReplicaTick(ctx context.Context) error {
	r.cache.InvalidateAll()
	if !r.IsReplica() {
		return nil
	}
	l, err := storage.ReadLock(ctx, r.driver, r.s3)
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("%w: the lock object %s is gone", ErrNoWriter, storage.LockObject(r.s3))
	}
	w := l.Describe()
	r.writer.Store(&w)
	return nil
}

// replicaDriverName is the storage driver distribution's App is built
// with on a replica: the S3 driver behind readOnlyDriver, so that the
// App, whose driver is its own, cannot write the bucket either.
const replicaDriverName = "appliance-replica-s3"

var registerReplicaOnce sync.Once

// registerReplicaDriver registers, once per process, the replica's driver
// with distribution's driver factory (a global of distribution's; it
// stays inside this package).
func registerReplicaDriver() {
	registerReplicaOnce.Do(func() { factory.Register(replicaDriverName, replicaFactory{}) })
}

type replicaFactory struct{}

func (replicaFactory) Create(ctx context.Context, params map[string]any) (storagedriver.StorageDriver, error) {
	d, err := s3driver.FromParameters(ctx, params)
	if err != nil {
		return nil, err
	}
	return storage.ReadOnlyDriver{StorageDriver: d}, nil
}
