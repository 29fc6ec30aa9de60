package bootstrap

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/regclient"
)

// Importer is where the follower puts what it pulls: the appliance's
// importer, which verifies every byte and records the import.
type Importer interface {
	Import(ctx context.Context, req importer.Request) (*history.Record, error)
}

// StandbyStatusFile keeps the last sync's outcome.
const StandbyStatusFile = "standby-status.json"

// SyncStatus is how the standby stands against its primary.
type SyncStatus struct {
	Primary       string    `json:"primary,omitempty"`
	Running       bool      `json:"running"`
	LastSync      time.Time `json:"last_sync,omitzero"`
	LastCleanSync time.Time `json:"last_clean_sync,omitzero"`
	// LagSeconds is the time since the last clean sync (or since the
	// standby began, before the first): how stale the standby may be.
	LagSeconds   float64     `json:"lag_seconds"`
	LastError    string      `json:"last_error,omitempty"`
	Repositories int         `json:"repositories"`
	Tags         int         `json:"tags"`
	Pulled       []PulledTag `json:"pulled,omitempty"`
	Drift        []Drift     `json:"drift"`
	Warnings     []string    `json:"warnings,omitempty"`
}

// PulledTag is a tag a sync brought in (new, or moved on the primary).
type PulledTag struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	Previous   string `json:"previous,omitempty"`
	ImportID   string `json:"import_id"`
}

// Drift kinds.
const (
	DriftMissing    = "missing-on-standby" // the primary has it, the standby does not (yet)
	DriftDifferent  = "different"          // both have the tag, naming other digests
	DriftOnlyHere   = "only-on-standby"    // the standby has it, the primary does not (any more)
	syncParallelism = 4
)

// Drift is one difference between standby and primary after a sync.
type Drift struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Kind       string `json:"kind"`
	Primary    string `json:"primary,omitempty"`
	Standby    string `json:"standby,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Local is what the follower reads of the appliance's own storage.
type Local interface {
	Repositories(ctx context.Context) ([]string, error)
	Tags(ctx context.Context, repo string) ([]string, error)
	TagDigest(ctx context.Context, repo, tag string) (digest.Digest, bool, error)
	// BlobVisible tells whether the standby holds a blob that a visible
	// manifest references: only those may be left out of what a sync
	// streams in (the importer refuses to count on any other).
	BlobVisible(ctx context.Context, d digest.Digest) (bool, error)
}

// Follower keeps a standby in step with its primary: new and moved tags
// in the followed projects are pulled, through the importer.
type Follower struct {
	life  *Lifecycle
	local Local
	imp   Importer
	dir   string
	log   *slog.Logger
	skip  func(repo string) bool

	syncMu sync.Mutex // one sync at a time
	mu     sync.Mutex
	status SyncStatus
}

// FollowerOption configures a Follower.
type FollowerOption func(*Follower)

// WithFollowerLogger sets the logger.
func WithFollowerLogger(l *slog.Logger) FollowerOption { return func(f *Follower) { f.log = l } }

// WithFollowerSkip names repositories never followed (the importer's staging area).
func WithFollowerSkip(skip func(repo string) bool) FollowerOption {
	return func(f *Follower) { f.skip = skip }
}

// NewFollower builds the follower; its last status is read from dataDir.
func NewFollower(life *Lifecycle, local Local, imp Importer, dataDir string, opts ...FollowerOption) (*Follower, error) {
	if life == nil || local == nil || imp == nil {
		return nil, errors.New("new follower: lifecycle, local storage and importer are required")
	}
	f := &Follower{life: life, local: local, imp: imp, dir: dataDir, log: slog.New(slog.DiscardHandler), skip: func(string) bool { return false }}
	for _, o := range opts {
		o(f)
	}
	data, err := os.ReadFile(filepath.Join(dataDir, StandbyStatusFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open standby status: %w", err)
	default:
		if err := json.Unmarshal(data, &f.status); err != nil {
			return nil, fmt.Errorf("open standby status: %s is corrupt: %w", StandbyStatusFile, err)
		}
		f.status.Running = false
	}
	return f, nil
}

// Status returns the last sync's outcome with the current lag.
func (f *Follower) Status() SyncStatus {
	f.mu.Lock()
	st := f.status
	f.mu.Unlock()
	st.Pulled, st.Drift, st.Warnings = slices.Clone(st.Pulled), slices.Clone(st.Drift), slices.Clone(st.Warnings)
	if st.Drift == nil {
		st.Drift = []Drift{}
	}
	if lag, ok := f.Lag(); ok {
		st.LagSeconds = lag.Seconds()
	}
	return st
}

// Lag is the time since the last clean sync, or since the standby began
// when none has finished cleanly since; false when not a standby.
func (f *Follower) Lag() (time.Duration, bool) {
	s := f.life.State()
	if s.Mode != ModeStandby {
		return 0, false
	}
	f.mu.Lock()
	clean := f.status.LastCleanSync
	f.mu.Unlock()
	from := s.Since
	if clean.After(from) {
		from = clean
	}
	return time.Since(from), true
}

// Run syncs on the primary's interval while the appliance is a standby,
// until ctx ends. A change of mode or primary restarts the wait.
func (f *Follower) Run(ctx context.Context) error {
	for {
		changed := f.life.Changed()
		var (
			tick  <-chan time.Time
			timer *time.Timer
		)
		if p, _, ok := f.life.primary(); ok {
			timer = time.NewTimer(p.Interval)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-tick:
			if _, err := f.SyncNow(ctx); err != nil && ctx.Err() == nil {
				f.log.Warn("standby sync failed", "error", err)
			}
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// SyncNow compares the followed projects with the primary and pulls every
// new or moved tag. It returns the outcome, also kept for Status.
func (f *Follower) SyncNow(ctx context.Context) (SyncStatus, error) {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	p, creds, ok := f.life.primary()
	if !ok {
		return SyncStatus{}, fmt.Errorf("%w: only a standby follows a primary (this appliance is in %s mode)", ErrBadTransition, f.life.Mode())
	}
	f.mu.Lock()
	f.status.Running, f.status.Primary = true, p.URL
	f.mu.Unlock()
	st, err := f.sync(ctx, p, creds)
	st.Primary, st.LastSync = p.URL, time.Now().UTC()
	f.mu.Lock()
	if err == nil {
		st.LastCleanSync = st.LastSync
	} else {
		st.LastError = err.Error()
		st.LastCleanSync = f.status.LastCleanSync
	}
	f.status = st
	f.mu.Unlock()
	if serr := f.saveStatus(st); serr != nil {
		f.log.Warn("standby status not saved", "error", serr)
	}
	if err != nil {
		return f.Status(), err
	}
	f.log.Info("standby synced", "primary", p.URL, "repositories", st.Repositories, "tags", st.Tags, "pulled", len(st.Pulled), "drift", len(st.Drift))
	return f.Status(), nil
}

func (f *Follower) saveStatus(st SyncStatus) error {
	st.Running = false
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(f.dir, StandbyStatusFile), data, 0o640)
}

// repoState is one repository on both sides.
type repoState struct {
	name    string
	primary map[string]digest.Digest
	local   map[string]digest.Digest
}

func (f *Follower) sync(ctx context.Context, p *Primary, creds PrimaryCredentials) (SyncStatus, error) {
	st := SyncStatus{Drift: []Drift{}}
	client, err := regclient.New(regclient.Options{URL: p.URL, CAPEM: []byte(creds.CAPEM), Username: creds.Username, Password: creds.Password, MaxConns: syncParallelism + 2, UserAgent: "appliance-standby"})
	if err != nil {
		return st, fmt.Errorf("primary: %w", err)
	}
	defer client.Close()
	if err := client.Login(ctx); err != nil {
		return st, fmt.Errorf("primary %s: %w", p.URL, err)
	}
	repos, warnings, err := f.followedRepos(ctx, client, p)
	st.Warnings = warnings
	if err != nil {
		return st, err
	}
	states := make([]repoState, len(repos))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(syncParallelism)
	for i := range repos {
		g.Go(func() error {
			rs, err := f.compare(gctx, client, repos[i])
			states[i] = rs
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return st, err
	}
	st.Repositories = len(repos)
	var errs []error
	for _, rs := range states {
		st.Tags += len(rs.primary)
		var pulls []pullTag
		for _, tag := range sortedKeys(rs.primary) {
			if rs.local[tag] != rs.primary[tag] {
				pulls = append(pulls, pullTag{tag: tag, digest: rs.primary[tag]})
			}
		}
		for _, tag := range sortedKeys(rs.local) {
			if _, ok := rs.primary[tag]; !ok {
				st.Drift = append(st.Drift, Drift{Repository: rs.name, Tag: tag, Kind: DriftOnlyHere, Standby: rs.local[tag].String()})
			}
		}
		if len(pulls) == 0 {
			continue
		}
		rec, err := f.pull(ctx, client, p, rs.name, pulls)
		if err != nil {
			errs = append(errs, fmt.Errorf("pull %s: %w", rs.name, err))
			for _, t := range pulls {
				d := Drift{Repository: rs.name, Tag: t.tag, Kind: DriftMissing, Primary: t.digest.String(), Error: err.Error()}
				if old, ok := rs.local[t.tag]; ok {
					d.Kind, d.Standby = DriftDifferent, old.String()
				}
				st.Drift = append(st.Drift, d)
			}
			continue
		}
		for _, t := range pulls {
			pt := PulledTag{Repository: rs.name, Tag: t.tag, Digest: t.digest.String(), ImportID: rec.ID}
			if old, ok := rs.local[t.tag]; ok {
				pt.Previous = old.String()
			}
			st.Pulled = append(st.Pulled, pt)
		}
	}
	return st, errors.Join(errs...)
}

// pullTag is a tag to bring in from the primary.
type pullTag struct {
	tag    string
	digest digest.Digest
}

func sortedKeys(m map[string]digest.Digest) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// followedRepos lists the repositories of the followed projects on the
// primary (Harbor's API, else the catalog) and on the standby.
func (f *Follower) followedRepos(ctx context.Context, c *regclient.Client, p *Primary) ([]string, []string, error) {
	local, err := f.local.Repositories(ctx)
	if err != nil {
		return nil, nil, err
	}
	local = slices.DeleteFunc(local, f.skip)
	projects := slices.Clone(p.Projects)
	if len(projects) == 0 {
		for _, r := range local {
			pr, _, _ := strings.Cut(r, "/")
			if !slices.Contains(projects, pr) {
				projects = append(projects, pr)
			}
		}
	}
	if len(projects) == 0 {
		return nil, nil, fmt.Errorf("%w: the standby holds nothing yet: name the projects to follow", ErrInvalid)
	}
	set := map[string]bool{}
	for _, r := range local {
		pr, _, _ := strings.Cut(r, "/")
		if slices.Contains(projects, pr) {
			set[r] = true
		}
	}
	var warnings []string
	harbor, err := c.Harbor(ctx)
	if err != nil {
		return nil, nil, err
	}
	if harbor != nil {
		for _, pr := range projects {
			names, err := c.HarborRepositories(ctx, pr)
			if err != nil {
				return nil, nil, err
			}
			for _, n := range names {
				set[n] = true
			}
		}
	} else {
		names, err := c.Catalog(ctx)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("the primary's catalog cannot be read (%v): only repositories the standby already holds are followed", err))
		}
		for _, n := range names {
			pr, _, _ := strings.Cut(n, "/")
			if slices.Contains(projects, pr) {
				set[n] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		if !f.skip(r) {
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return out, warnings, nil
}

// compare reads a repository's ordinary tags (not referrers fallback
// tags) with their digests on both sides.
func (f *Follower) compare(ctx context.Context, c *regclient.Client, repo string) (repoState, error) {
	rs := repoState{name: repo, primary: map[string]digest.Digest{}, local: map[string]digest.Digest{}}
	tags, err := c.Tags(ctx, repo)
	if err != nil {
		return rs, err
	}
	for _, t := range tags {
		if regclient.IsFallbackTag(t) {
			continue
		}
		desc, ok, err := c.HeadManifest(ctx, repo, t)
		if err != nil {
			return rs, err
		}
		if ok {
			rs.primary[t] = desc.Digest
		}
	}
	ltags, err := f.local.Tags(ctx, repo)
	if err != nil {
		return rs, err
	}
	for _, t := range ltags {
		if regclient.IsFallbackTag(t) {
			continue
		}
		d, ok, err := f.local.TagDigest(ctx, repo, t)
		if err != nil {
			return rs, err
		}
		if ok {
			rs.local[t] = d
		}
	}
	return rs, nil
}

// pull brings tags of one repository in from the primary: an OCI layout,
// streamed as it is read from the primary, imported with the importer's
// checks and recorded in its history. Blobs the standby holds already are
// left out of the stream.
func (f *Follower) pull(ctx context.Context, c *regclient.Client, p *Primary, repo string, tags []pullTag) (*history.Record, error) {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { pw.CloseWithError(f.writeLayout(ctx, c, repo, tags, pw)) }()
	defer pr.Close()
	rec, err := f.imp.Import(ctx, importer.Request{
		Source:    "standby sync of " + repo + " from " + p.URL,
		Reader:    pr,
		KeepNames: true,
		User:      "standby",
		Sync:      true,
	})
	if err != nil {
		return rec, err
	}
	return rec, nil
}

// refHost is the registry host the layout's names carry: the importer
// keeps their paths (KeepNames) and drops the host.
const refHost = "localhost"

func (f *Follower) writeLayout(ctx context.Context, c *regclient.Client, repo string, tags []pullTag, w io.Writer) error {
	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(data)), Mode: 0o644}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	written := map[digest.Digest]bool{}
	var index []regclient.Descriptor
	// walk writes a manifest after what it references; it returns its
	// descriptor for index.json.
	var walk func(d digest.Digest, depth int) (regclient.Descriptor, error)
	walk = func(d digest.Digest, depth int) (regclient.Descriptor, error) {
		if depth > maxIndexDepth {
			return regclient.Descriptor{}, fmt.Errorf("%s@%s: indexes nested deeper than %d", repo, d, maxIndexDepth)
		}
		desc, payload, err := c.GetManifest(ctx, repo, d.String())
		if err != nil {
			return regclient.Descriptor{}, err
		}
		m, err := regclient.ParseManifest(desc.MediaType, payload)
		if err != nil {
			return regclient.Descriptor{}, fmt.Errorf("%s@%s: %w", repo, d, err)
		}
		for _, child := range m.Manifests {
			if written[child.Digest] {
				continue
			}
			if _, err := walk(child.Digest, depth+1); err != nil {
				return regclient.Descriptor{}, err
			}
		}
		for _, b := range m.Blobs() {
			if err := f.copyBlob(ctx, c, tw, repo, b, written); err != nil {
				return regclient.Descriptor{}, err
			}
		}
		if !written[d] {
			written[d] = true
			if err := put("blobs/sha256/"+d.Encoded(), payload); err != nil {
				return regclient.Descriptor{}, err
			}
		}
		return regclient.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(payload))}, nil
	}
	var referrersOf func(subject digest.Digest, depth int) error
	referrersOf = func(subject digest.Digest, depth int) error {
		if depth > maxIndexDepth {
			return nil
		}
		refs, err := c.ListReferrers(ctx, repo, subject)
		if err != nil {
			return err
		}
		for _, r := range refs {
			if written[r.Digest] {
				continue
			}
			desc, err := walk(r.Digest, 1)
			if err != nil {
				return err
			}
			desc.Annotations = map[string]string{"org.opencontainers.image.ref.name": refHost + "/" + repo + "@" + r.Digest.String()}
			index = append(index, desc)
			if err := referrersOf(r.Digest, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, t := range tags {
		desc, err := walk(t.digest, 0)
		if err != nil {
			return err
		}
		desc.Annotations = map[string]string{"org.opencontainers.image.ref.name": refHost + "/" + repo + ":" + t.tag}
		index = append(index, desc)
		if err := referrersOf(t.digest, 0); err != nil {
			return err
		}
	}
	data, err := json.Marshal(struct {
		SchemaVersion int                    `json:"schemaVersion"`
		MediaType     string                 `json:"mediaType"`
		Manifests     []regclient.Descriptor `json:"manifests"`
	}{2, regclient.MediaTypeOCIIndex, index})
	if err != nil {
		return err
	}
	if err := put("index.json", data); err != nil {
		return err
	}
	return tw.Close()
}

// copyBlob streams one blob from the primary into the layout, unless the
// standby holds it already. The importer checks its digest as it reads.
func (f *Follower) copyBlob(ctx context.Context, c *regclient.Client, tw *tar.Writer, repo string, b regclient.Descriptor, written map[digest.Digest]bool) error {
	if written[b.Digest] {
		return nil
	}
	written[b.Digest] = true
	if b.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("blob %s: only sha256 blobs can be followed", b.Digest)
	}
	if ok, err := f.local.BlobVisible(ctx, b.Digest); err != nil {
		return err
	} else if ok {
		return nil // held: left out, as the importer allows
	}
	rc, size, err := c.OpenBlob(ctx, repo, b.Digest)
	if errors.Is(err, regclient.ErrNotFound) && regclient.NonDistributable(b.MediaType) {
		return nil // non-distributable, not on the primary either
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	if size >= 0 && size != b.Size {
		return fmt.Errorf("blob %s: the primary sends %d bytes, the manifest says %d", b.Digest, size, b.Size)
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + b.Digest.Encoded(), Typeflag: tar.TypeReg, Size: b.Size, Mode: 0o644}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, rc); err != nil {
		return fmt.Errorf("blob %s from the primary: %w", b.Digest, err)
	}
	return nil
}

// maxIndexDepth bounds index nesting.
const maxIndexDepth = 8

// CheckPrimary proves a primary can be followed before the appliance
// turns into its standby: the URL, its TLS against the CA given, and the
// credentials.
func CheckPrimary(ctx context.Context, url string, creds PrimaryCredentials) error {
	c, err := regclient.New(regclient.Options{URL: url, CAPEM: []byte(creds.CAPEM), Username: creds.Username, Password: creds.Password})
	if err != nil {
		return fmt.Errorf("%w: primary: %w", ErrInvalid, err)
	}
	defer c.Close()
	if err := c.Login(ctx); err != nil {
		return fmt.Errorf("primary %s: %w", url, err)
	}
	return nil
}
