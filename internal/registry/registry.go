// Package registry embeds the OCI Distribution registry (distribution/v3)
// over filesystem storage in the data directory. It and its sub-package
// storage are the only packages that import distribution (and its
// logrus): the rest of the appliance sees an http.Handler for /v2/, a
// small Authorizer interface it must provide, a run-time read-only
// switch, the importer's verified direct writes, and read access to what
// is stored.
//
// This package is everything that stands in front of distribution or
// writes through it: the App and its access controller; the gates every
// /v2/ write passes (read-only mode, and the turns gc takes with writers);
// the manifest cache, which every write invalidates; the fast paths for
// blob and manifest reads; what distribution-spec 1.1 needs beyond
// distribution (the referrers API, sha512 content kept under its own
// digest, non-distributable layers); the direct-storage writes of the
// importer and a standby's follow; and, on a read-only replica of an
// object store, the refusal of every write, naming the writer (replica.go). Package storage, beneath it, is the
// layout on disk as the appliance reads and maintains it: the content
// graph and the visible set, fsck and gc. It owns three small interfaces
// the registry provides (Turns, Changes, Asked) and knows nothing of
// HTTP or of distribution's App; Check, Repair, GC and BlobVisible here
// answer for it (maint.go).
package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	dauth "github.com/distribution/distribution/v3/registry/auth"
	"github.com/distribution/distribution/v3/registry/handlers"
	dstorage "github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/appliance-dev/appliance/internal/coalesce"
	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/registry/directfs"
	"github.com/appliance-dev/appliance/internal/registry/storage"
	"github.com/appliance-dev/appliance/internal/registry/turns"
)

// Access is one permission a registry request needs.
type Access struct {
	Type   string // "repository" or "registry"
	Name   string // repository name, or "catalog"
	Action string // "pull", "push", "delete", "*"
}

// Authorizer decides whether a request may proceed. It returns the caller's
// name, or an error. An error that has a Challenge method is answered with
// 401 and that WWW-Authenticate value; any other error is answered with 401
// and no challenge detail beyond the error code.
type Authorizer interface {
	AuthorizeRegistry(r *http.Request, access []Access) (user string, err error)
}

// Challenger is implemented by Authorizer errors that carry a
// WWW-Authenticate challenge.
type Challenger interface {
	error
	Challenge() string
}

// Options configure a Registry.
type Options struct {
	// RootDir is where blobs, manifests and repositories are stored.
	RootDir string
	// SecretFile holds the HTTP secret that signs upload state; created if missing.
	SecretFile string
	// Authorizer is asked before every request.
	Authorizer Authorizer
	// StateFile persists the read-only mode across restarts; created on the
	// first change.
	StateFile string
	// Logger receives distribution's warnings and errors.
	Logger *slog.Logger
	// S3, when set, keeps the content in an object store instead of
	// under RootDir (s3.go); RootDir is then unused. fsck, repair and gc
	// read and remove through the driver.
	S3 *S3
}

// Registry is the embedded registry.
type Registry struct {
	app       *handlers.App
	handler   http.Handler
	namespace distribution.Namespace
	driver    storagedriver.StorageDriver
	rootDir   string
	onS3      bool           // content in an object store: no fast paths on local files
	store     *storage.Store // the layout on disk: fsck, gc, the visible set
	stateFile string
	log       *slog.Logger
	modeMu    sync.Mutex // serializes SetReadOnly

	readOnly   atomic.Pointer[Mode]
	authorizer Authorizer
	cache      *manifestCache
	refs       *referrersCache
	turns      *turns.Turns // gc takes turns with writers (turns.go)
	asked      askedBlobs   // blobs clients found present (turns.go)
	s3         *S3
	// writer describes the appliance that holds the bucket's lock, on a
	// read-only replica; nil on a writer (replica.go).
	writer atomic.Pointer[string]
}

// controllerName is the access controller registered with distribution.
const controllerName = "appliance"

var registerOnce sync.Once

// registerController registers, once per process, the access controller that
// hands every decision to the Authorizer passed in the configuration. The
// registration is a global of distribution's; it stays inside this package.
func registerController() error {
	var err error
	registerOnce.Do(func() {
		err = dauth.Register(controllerName, func(options map[string]any) (dauth.AccessController, error) {
			a, ok := options["authorizer"].(Authorizer)
			if !ok || a == nil {
				return nil, errors.New("appliance access controller: no authorizer")
			}
			return &accessController{a: a}, nil
		})
	})
	return err
}

// New builds the registry. It validates the configuration it builds and
// turns distribution's panics on bad configuration into errors.
func New(ctx context.Context, opts Options) (_ *Registry, err error) {
	if (opts.RootDir == "" && opts.S3 == nil) || opts.Authorizer == nil || opts.SecretFile == "" || opts.StateFile == "" {
		return nil, errors.New("new registry: RootDir (or S3), SecretFile, StateFile and Authorizer are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var (
		driver   storagedriver.StorageDriver
		storeCfg = configuration.Parameters{"rootdirectory": opts.RootDir}
		backend  = directfs.Name
		writer   string
	)
	if opts.S3 != nil {
		// Checked before anything else: an unusable store is named at
		// start-up, and nothing is written to it but the lock object.
		d, params, w, err := storage.OpenS3(ctx, opts.S3)
		if err != nil {
			return nil, fmt.Errorf("new registry: %w", err)
		}
		driver, storeCfg, backend, writer = d, configuration.Parameters(params), "s3", w
		if opts.S3.Replica {
			registerReplicaDriver()
			backend = replicaDriverName
		}
	} else {
		if err := os.MkdirAll(opts.RootDir, 0o750); err != nil {
			return nil, fmt.Errorf("new registry: %w", err)
		}
		// Blob data is written with O_DIRECT, by the importer's
		// namespace and by the App's pushes alike (directfs).
		d, err := directfs.New(opts.RootDir)
		if err != nil {
			return nil, fmt.Errorf("new registry: storage: %w", err)
		}
		directfs.Register()
		driver = d
	}
	secret, err := loadSecret(opts.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("new registry: %w", err)
	}
	if err := registerController(); err != nil {
		return nil, fmt.Errorf("new registry: %w", err)
	}
	bridgeLogrus(opts.Logger)

	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		backend:    storeCfg,
		"delete":   configuration.Parameters{"enabled": true},
		"redirect": configuration.Parameters{"disable": true},
		// No blob descriptor cache: it answers "present" for a blob that
		// gc or fsck --repair removed, without reading the link, so a
		// HEAD would say 200 and a manifest naming the blob would be
		// accepted. Blob and manifest reads have faster paths of their
		// own (blobs.go, cache.go).
		"maintenance": configuration.Parameters{
			"uploadpurging": map[any]any{"enabled": true, "age": "168h", "interval": "24h", "dryrun": false},
		},
	}
	if opts.S3 != nil && opts.S3.Replica {
		// A replica writes nothing: no purging of others' uploads.
		cfg.Storage["maintenance"] = configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}}
	}
	cfg.Auth = configuration.Auth{controllerName: configuration.Parameters{"authorizer": opts.Authorizer}}
	cfg.HTTP.Secret = secret
	// Non-distributable (foreign) layers are never pushed: accept them
	// with http(s) URLs, as distribution-spec asks (the default accepts none).
	cfg.Validation.Manifests.URLs.Allow = []string{"^https?://"}
	cfg.Catalog.MaxEntries = 1000
	cfg.Tags.MaxTags = 10000
	cfg.Log.Level = "warn"

	app, err := newApp(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// The importer's and the follower's namespace writes every blob in
	// one writer, from start to commit, so distribution's resumable
	// digest (a hash state file, with two fsyncs, per blob) serves no
	// purpose there: the digest is the one computed while writing. The
	// App, whose uploads may span requests, keeps it.
	ns, err := dstorage.NewRegistry(ctx, driver, dstorage.EnableDelete, dstorage.DisableDigestResumption)
	if err != nil {
		return nil, fmt.Errorf("new registry: storage: %w", err)
	}
	st, err := loadState(opts.StateFile)
	if err != nil {
		_ = app.Shutdown()
		return nil, fmt.Errorf("new registry: %w", err)
	}
	r := &Registry{app: app, namespace: ns, driver: driver, authorizer: opts.Authorizer, cache: newManifestCache(), refs: newReferrersCache(), turns: turns.New(), stateFile: opts.StateFile, log: opts.Logger, onS3: opts.S3 != nil, rootDir: opts.RootDir, s3: opts.S3}
	if opts.S3 != nil && opts.S3.Replica {
		r.writer.Store(&writer)
	}
	so := storage.Options{Turns: r.turns, Changes: r.cache, Asked: &r.asked, Logger: opts.Logger}
	if r.onS3 {
		so.Driver = driver
	}
	r.store, err = storage.New(opts.RootDir, so)
	if err != nil {
		_ = app.Shutdown()
		return nil, fmt.Errorf("new registry: %w", err)
	}
	r.readOnly.Store(st)
	r.handler = http.HandlerFunc(r.serve)
	return r, nil
}

func newApp(ctx context.Context, cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("new registry: invalid configuration: %v", p)
		}
	}()
	return handlers.NewApp(ctx, cfg), nil
}

func loadSecret(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(data))
		if len(s) < 32 {
			return "", fmt.Errorf("load http secret %s: too short (corrupt?)", path)
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("load http secret: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("create http secret: %w", err)
	}
	s := hex.EncodeToString(b)
	if err := fsutil.WriteFileAtomic(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("create http secret: %w", err)
	}
	return s, nil
}

// Handler serves the OCI Distribution API; mount it at /v2/.
func (r *Registry) Handler() http.Handler { return r.handler }

func loadState(path string) (*Mode, error) {
	st := &Mode{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load registry state: %w", err)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("load registry state %s: corrupt: %w", path, err)
	}
	return st, nil
}

// Mode is the registry's read-only mode as reported to callers.
type Mode struct {
	ReadOnly bool      `json:"read_only"`
	Reason   string    `json:"reason,omitempty"`
	Since    time.Time `json:"since,omitzero"`
}

// SetReadOnly switches read-only mode at run time and persists it, so a
// standby stays read-only across restarts. While on, pushes and deletes are
// refused with an error that gives reason; pulls go on.
func (r *Registry) SetReadOnly(on bool, reason string) (Mode, error) {
	r.modeMu.Lock()
	defer r.modeMu.Unlock()
	cur := r.readOnly.Load()
	next := &Mode{ReadOnly: on, Reason: reason, Since: time.Now().UTC()}
	if !on {
		next.Reason = ""
	}
	if cur.ReadOnly == next.ReadOnly && cur.Reason == next.Reason {
		return *cur, nil
	}
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return Mode{}, fmt.Errorf("set read-only: %w", err)
	}
	if err := fsutil.WriteFileAtomic(r.stateFile, data, 0o644); err != nil {
		return Mode{}, fmt.Errorf("set read-only: %w", err)
	}
	r.readOnly.Store(next)
	r.log.Info("registry mode changed", "read_only", next.ReadOnly, "reason", next.Reason)
	return *next, nil
}

// Mode reports the read-only mode and its reason.
func (r *Registry) Mode() Mode { return *r.readOnly.Load() }

// RefusedReadOnly is the error of a change refused in read-only mode: it
// wraps ErrReadOnly and reads as ReadOnlyError(reason), once.
func RefusedReadOnly(reason string) error { return readOnlyRefusal(reason) }

type readOnlyRefusal string

func (r readOnlyRefusal) Error() string { return ReadOnlyError(string(r)) }
func (r readOnlyRefusal) Unwrap() error { return ErrReadOnly }

// ReadOnlyError is the message a refused write carries.
func ReadOnlyError(reason string) string {
	msg := "the registry is in read-only mode: pushes and deletes are refused, pulls still work"
	if reason != "" {
		msg += " (reason: " + reason + ")"
	}
	return msg
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		r.noteHead(req)
		if r.serveReferrers(w, req) || r.serveCachedManifest(w, req) || r.serveBlob(w, req) || r.serveUnknownTags(w, req) {
			return
		}
	case http.MethodOptions:
	default:
		if r.refuseOnReplica(w) {
			return
		}
		if st := r.readOnly.Load(); st.ReadOnly {
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			_ = errcode.ServeJSON(w, errcode.ErrorCodeDenied.WithMessage(ReadOnlyError(st.Reason)))
			return
		}
		release, ok := r.holdForWrite(w, req) // gc sweeps between writes, never during one
		if !ok {
			return
		}
		defer release()
		// A manifest or tag write: nothing cached for the repository may
		// outlive it. (Blob writes do not change what a manifest says.)
		if repo, _, ok := manifestPath(req.URL.Path); ok {
			r.cache.Invalidate(repo)
			defer r.cache.Invalidate(repo)
		}
		var done bool
		if w, done = r.serveWrite(w, req); done {
			return
		}
	}
	if req.Method == http.MethodGet {
		if _, _, ok := blobPath(req.URL.Path); ok {
			// A blob distribution serves (from an object store, or whatever
			// serveBlob left to it): its body too in large writes (see
			// coalesce.ServeContent).
			defer coalesce.Gather(w, req)()
			w = coalesce.LargeWrites(w)
		}
	}
	r.app.ServeHTTP(w, req)
}

// Close stops the registry's background work (upload purging).
func (r *Registry) Close() error { return r.app.Shutdown() }

// StorageUsed returns the bytes stored under the registry's root, computed
// at most every 30 seconds.
func (r *Registry) StorageUsed() (int64, error) { return r.store.Used() }

// Repositories lists every repository name in storage, sorted.
func (r *Registry) Repositories(ctx context.Context) ([]string, error) {
	var out []string
	err := r.namespace.(distribution.RepositoryEnumerator).Enumerate(ctx, func(name string) error {
		out = append(out, name)
		return nil
	})
	var notFound storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	return out, nil
}

// RepositoriesUnder lists the repositories directly under project,
// including those that hold only blob links and uploads (which the catalog
// does not show because they have no manifests).
func (r *Registry) RepositoriesUnder(ctx context.Context, project string) ([]string, error) {
	if strings.ContainsAny(project, "/.") {
		return nil, fmt.Errorf("%w: project %q", ErrInvalidName, project)
	}
	children, err := r.driver.List(ctx, storage.RepositoriesRoot+"/"+project)
	var notFound storagedriver.PathNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list repositories under %s: %w", project, err)
	}
	out := make([]string, 0, len(children))
	for _, c := range children {
		out = append(out, strings.TrimPrefix(c, storage.RepositoriesRoot+"/"))
	}
	return out, nil
}

// Projects lists the projects (first path components) that hold repositories.
func (r *Registry) Projects(ctx context.Context) ([]string, error) {
	repos, err := r.Repositories(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, repo := range repos {
		p, _, _ := strings.Cut(repo, "/")
		if len(out) == 0 || out[len(out)-1] != p {
			out = append(out, p)
		}
	}
	return out, nil
}
