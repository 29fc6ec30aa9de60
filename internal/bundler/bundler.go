// Package bundler builds transfer bundles on the connected side: it reads a
// bundle spec, fetches the images (with their signatures, attestations,
// SBOMs and referrers), imgpkg bundles, files and apt packages it names
// into a resumable download cache, verifying every digest, and writes them
// as one signed bundle archive (see package bundle), split for media if
// asked, or as a delta that leaves out what an enclave's receipt says it
// already holds. It needs no appliance server.
package bundler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"

	"github.com/appliance-dev/appliance/internal/bundle"
)

// Progress hears how the download and the writing go.
type Progress interface {
	// Phase starts a phase ("download", "write") of total bytes (-1 unknown).
	Phase(name string, total int64)
	// Add counts bytes done in the current phase.
	Add(n int64)
}

// Options configure one bundle build.
type Options struct {
	Spec *bundle.Spec
	// SpecDir resolves the spec's relative file paths.
	SpecDir string
	// Out is the bundle file; with SplitSize, the parts are Out.001, … and
	// the parts list Out.parts.json.
	Out       string
	SplitSize int64
	// Signer signs the inventory (and parts list); nil writes an unsigned
	// bundle.
	Signer *bundle.Signer
	// Since makes a delta against an enclave's receipt; SinceSum is the
	// receipt file's sha256, recorded in the inventory.
	Since    *bundle.Receipt
	SinceSum string
	// CacheDir keeps downloads between runs.
	CacheDir string
	// CAFiles are extra CAs for upstream TLS; Insecure names hosts reached
	// over plain HTTP or unverified TLS.
	CAFiles  []string
	Insecure []string
	// Parallel bounds concurrent downloads (default 8).
	Parallel int
	// Tool names the creating program in the inventory.
	Tool     string
	Log      *slog.Logger
	Progress Progress
	// Now stamps the inventory (default time.Now).
	Now func() time.Time
}

// Result is what Create wrote.
type Result struct {
	Inventory *bundle.Inventory
	Files     []string // the bundle file, or the parts and the parts list
	Bytes     int64    // blob bytes carried
	Skipped   int      // blobs left out of a delta
}

type fetchItem struct {
	repo name.Repository
	size int64
}

type builder struct {
	o     Options
	up    *upstreams
	cache *cache
	log   *slog.Logger

	mu        sync.Mutex
	blobs     map[string]int64     // every blob the bundle carries
	present   map[string]int64     // blobs a delta relies on the enclave to hold
	fetch     map[string]fetchItem // blobs to download
	artifacts []bundle.Artifact
	index     []v1.Descriptor
	indexed   map[string]bool
	held      map[string]bool // registry blobs of the receipt
	heldFiles map[string]bool
	heldDebs  map[string]bool // repo/dist/component sha256
}

// Create builds the bundle the options describe.
func Create(ctx context.Context, o Options) (*Result, error) {
	if o.Spec == nil || o.Out == "" {
		return nil, errors.New("create bundle: a spec and an output file are required")
	}
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CacheDir == "" {
		o.CacheDir = o.Out + ".cache"
	}
	up, err := newUpstreams(o.CAFiles, o.Insecure, o.Parallel)
	if err != nil {
		return nil, err
	}
	c, err := openCache(o.CacheDir)
	if err != nil {
		return nil, err
	}
	b := &builder{o: o, up: up, cache: c, log: o.Log, blobs: map[string]int64{}, present: map[string]int64{},
		fetch: map[string]fetchItem{}, indexed: map[string]bool{}, held: map[string]bool{}, heldFiles: map[string]bool{}, heldDebs: map[string]bool{}}
	if o.Since != nil {
		for _, bl := range o.Since.Blobs {
			b.held[bl.Digest] = true
		}
		for _, f := range o.Since.Files {
			b.heldFiles[f.Digest] = true
		}
		for _, p := range o.Since.Packages {
			b.heldDebs[p.Repo+"/"+p.Distribution+"/"+p.Component+" sha256:"+p.SHA256] = true
		}
	}
	if err := b.collect(ctx); err != nil {
		return nil, err
	}
	return b.write(ctx)
}

// collect resolves everything the spec names, in spec order.
func (b *builder) collect(ctx context.Context) error {
	s := b.o.Spec
	for _, im := range s.Images {
		b.log.Info("resolving image", "ref", im.Ref)
		if err := b.image(ctx, im); err != nil {
			return fmt.Errorf("images: %w", err)
		}
	}
	for _, bu := range s.Bundles {
		b.log.Info("resolving imgpkg bundle", "ref", bu.Ref)
		if err := b.imgpkgBundle(ctx, bu); err != nil {
			return fmt.Errorf("bundles: %w", err)
		}
	}
	for i, f := range s.Files {
		if err := b.file(ctx, f); err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
	}
	for i, a := range s.Apt {
		if err := b.apt(ctx, a); err != nil {
			return fmt.Errorf("apt[%d]: %w", i, err)
		}
	}
	return nil
}

// need records a registry blob the bundle carries (or, in a delta, relies on).
func (b *builder) need(repo name.Repository, d string, size int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held[d] {
		b.present[d] = size
		return
	}
	b.blobs[d] = size
	if _, ok := b.fetch[d]; !ok && !b.cache.has(d, size) {
		b.fetch[d] = fetchItem{repo: repo, size: size}
	}
}

// addManifest records a manifest, which is a blob of the layout too.
func (b *builder) addManifest(f fetched) error {
	d := f.digest.String()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held[d] {
		b.present[d] = int64(len(f.raw))
		return nil
	}
	b.blobs[d] = int64(len(f.raw))
	return b.cache.putBytes(d, f.raw)
}

// fetchNow downloads one blob right away (a bundle's config and layer,
// needed to walk it), whether or not a delta leaves it out.
func (b *builder) fetchNow(ctx context.Context, repo name.Repository, d string, size int64) error {
	if b.cache.has(d, size) {
		return nil
	}
	return b.download1(ctx, d, fetchItem{repo: repo, size: size}, nil)
}

// download1 fetches one blob into the cache and, when also is set, into
// also at the same time.
func (b *builder) download1(ctx context.Context, d string, it fetchItem, also io.Writer) error {
	ref := it.repo.Digest(d)
	l, err := remote.Layer(ref, b.up.remote(remote.WithContext(ctx))...)
	if err != nil {
		return explain(ref.String(), err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return explain(ref.String(), err)
	}
	defer rc.Close()
	var count func(int64)
	if b.o.Progress != nil {
		count = b.o.Progress.Add
	}
	// go-containerregistry's reader checks the digest itself and fails at
	// the end on a mismatch, before the cache renames the file into place.
	if err := b.cache.store(d, it.size, rc, count, true, also); err != nil {
		return explain(ref.String(), err)
	}
	return nil
}

// download fetches every blob not yet in the cache, o.Parallel at a time,
// largest first so the long downloads overlap the short ones, and sends
// each digest to ready as soon as it is in the cache (verified).
func (b *builder) download(ctx context.Context, keys []string, ready chan<- string) error {
	var total int64
	for _, d := range keys {
		total += b.fetch[d].size
	}
	sort.Slice(keys, func(i, j int) bool { return b.fetch[keys[i]].size > b.fetch[keys[j]].size })
	b.log.Info("downloading", "blobs", len(keys), "bytes", total, "parallel", b.o.Parallel)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.o.Parallel)
	for _, d := range keys {
		g.Go(func() error {
			if err := b.download1(gctx, d, b.fetch[d], nil); err != nil {
				return err
			}
			ready <- d
			return nil
		})
	}
	return g.Wait()
}

func (b *builder) addArtifact(a bundle.Artifact, desc v1.Descriptor) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.artifacts = append(b.artifacts, a)
	if desc.Digest.Hex == "" || b.indexed[a.Destination+"@"+desc.Digest.String()] {
		return
	}
	b.indexed[a.Destination+"@"+desc.Digest.String()] = true
	desc.Annotations = map[string]string{annotationRefName: a.Destination, annotationKind: a.Kind}
	b.index = append(b.index, desc)
}

// indexEntry lists a related manifest in index.json, so the bundle reads
// as an ordinary OCI layout too.
func (b *builder) indexEntry(r bundle.Related, repo string) {
	h, err := v1.NewHash(r.Digest)
	if err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	dest := joinDest(repo, r.Tag)
	if b.indexed[dest+"@"+r.Digest] {
		return
	}
	b.indexed[dest+"@"+r.Digest] = true
	b.index = append(b.index, v1.Descriptor{MediaType: typesOf(r.MediaType), Digest: h, Size: r.Size,
		Annotations: map[string]string{annotationRefName: dest, annotationKind: r.Kind}})
}

// write renders the inventory and index and writes the archive, in one
// file (atomically) or in parts.
func (b *builder) write(ctx context.Context) (*Result, error) {
	inv := &bundle.Inventory{SchemaVersion: 1, Name: b.o.Spec.Name, Created: b.o.Now().UTC().Truncate(time.Second), Tool: b.o.Tool,
		Since: b.o.SinceSum, Artifacts: b.artifacts}
	res := &Result{Inventory: inv}
	for d, n := range b.blobs {
		inv.Blobs = append(inv.Blobs, bundle.Blob{Digest: d, Size: n})
		res.Bytes += n
	}
	for d, n := range b.present {
		if _, carried := b.blobs[d]; !carried {
			inv.Present = append(inv.Present, bundle.Blob{Digest: d, Size: n})
		}
	}
	res.Skipped = len(inv.Present)
	if len(inv.Artifacts) == 0 {
		return nil, errors.New("create bundle: the spec resolved to nothing")
	}
	index, err := json.MarshalIndent(struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     []v1.Descriptor `json:"manifests"`
	}{2, "application/vnd.oci.image.index.v1+json", b.index}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("create bundle: index.json: %w", err)
	}
	if b.o.Progress != nil {
		b.o.Progress.Phase("download and write", res.Bytes)
	}
	if b.o.SplitSize > 0 {
		sw := bundle.NewSplitWriter(b.o.Out, b.o.SplitSize)
		if err := b.stream(ctx, sw, inv, index); err != nil {
			sw.Abort()
			return nil, err
		}
		list, err := sw.Close(b.o.Signer)
		if err != nil {
			return nil, err
		}
		dir := filepath.Dir(b.o.Out)
		for _, p := range list.Parts {
			res.Files = append(res.Files, filepath.Join(dir, p.Name))
		}
		res.Files = append(res.Files, b.o.Out+".parts.json")
		if b.o.Signer != nil {
			res.Files = append(res.Files, b.o.Out+".parts.json.sig")
		}
		return res, nil
	}
	if err := b.place(ctx, inv, index); err != nil {
		return nil, err
	}
	res.Files = []string{b.o.Out}
	return res, nil
}

// stream writes the archive while the blobs still missing are downloaded:
// the inventory (every digest is known once the manifests are read) first,
// then the blobs already at hand, then each download as it completes.
// Blobs downloaded and verified by this run are not hashed a second time;
// blobs from an earlier run's cache and local files are.
func (b *builder) stream(ctx context.Context, w io.Writer, inv *bundle.Inventory, index []byte) error {
	aw, err := bundle.NewArchiveWriter(ctxWriter{ctx, w}, inv, index, b.o.Signer)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan string, len(inv.Blobs))
	fresh := map[string]bool{}
	var pending, missing []string
	for _, bl := range inv.Blobs {
		if it, ok := b.fetch[bl.Digest]; ok && !b.cache.has(bl.Digest, it.size) {
			fresh[bl.Digest] = true
			missing = append(missing, bl.Digest)
			continue
		}
		pending = append(pending, bl.Digest)
	}
	// ready has room for every blob, so downloads never wait on the
	// writer; it is closed when the downloads end, well or not.
	dlErr := make(chan error, 1)
	go func() {
		err := b.download(ctx, missing, ready)
		close(ready)
		dlErr <- err
	}()
	sizes := make(map[string]int64, len(inv.Blobs))
	for _, bl := range inv.Blobs {
		sizes[bl.Digest] = bl.Size
	}
	put := func(d string) error {
		rc, err := b.cache.Open(d)
		if err != nil {
			return fmt.Errorf("write bundle: blob %s: %w", d, err)
		}
		defer rc.Close()
		var r io.Reader = rc
		if b.o.Progress != nil && !fresh[d] {
			// Downloads count themselves; count what comes from the cache.
			r = countingReader{rc, b.o.Progress}
		}
		return aw.Blob(bundle.Blob{Digest: d, Size: sizes[d]}, r, fresh[d])
	}
	fail := func(err error) error {
		cancel()
		<-dlErr // the downloads have stopped
		return err
	}
	for _, d := range pending {
		if err := put(d); err != nil {
			return fail(err)
		}
	}
	for d := range ready {
		if err := put(d); err != nil {
			return fail(err)
		}
	}
	if err := <-dlErr; err != nil {
		return err
	}
	return aw.Close()
}

type countingReader struct {
	r io.Reader
	p Progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.Add(int64(n))
	return n, err
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
