package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
)

// DefaultGrace is how long gc keeps what was written or asked about
// recently even when nothing references it yet: a blob pushed over /v2/
// before its manifest, a child manifest before its index, a blob a client
// found present (HEAD) before it pushed the manifest naming it. Harbor's
// garbage collection keeps two hours by default too.
const DefaultGrace = 2 * time.Hour

// GCOptions configure a garbage collection.
type GCOptions struct {
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// Grace protects what was linked, pushed or asked about within it;
	// DefaultGrace when zero.
	Grace time.Duration
	// Now is what ages are measured from; the current time when zero.
	Now time.Time
}

// GCReport is what a garbage collection removed (or would remove).
type GCReport struct {
	DryRun bool `json:"dry_run"`
	// Grace is the grace period, as Go writes a duration ("2h0m0s").
	Grace string `json:"grace"`
	// Removed lists every manifest, blob and staging repository removed,
	// blobs with their sizes. Layer links of removed blobs are counted
	// in LayerLinks, not listed.
	Removed          []Removal `json:"removed"`
	Manifests        int       `json:"manifests"`
	Blobs            int       `json:"blobs"`
	Bytes            int64     `json:"bytes"`
	LayerLinks       int       `json:"layer_links"`
	StagingRepos     int       `json:"staging_repositories"`
	BlobsKept        int       `json:"blobs_kept"`
	BytesKept        int64     `json:"bytes_kept"`
	ProtectedByGrace int       `json:"protected_by_grace"`
	// Warnings name repositories gc left alone (a manifest it could not
	// read: what it references is unknown).
	Warnings []string `json:"warnings,omitempty"`
}

// GC removes what nothing visible references, while pulls go on: every
// staging repository (no import runs while gc holds the registry, so
// they are what refused or killed imports left); in every other
// repository, the manifests no tag reaches (directly, through index
// entries, or as a referrer of a reached manifest); and the blobs that no
// remaining manifest references, with their layer links. What was
// linked, stored or asked about (HEAD) within the grace period is kept.
//
// It takes turns with writers (Turns.Exclusive): it waits until no
// import, promotion or /v2/ write holds a turn (without keeping new ones
// out), giving up with the error of Turns (the registry's ErrBusy) when
// ctx ends first, then holds the registry alone while it marks and
// sweeps. A dry run marks the same way and removes nothing.
//
// A gc stopped at any point leaves a consistent store: staging
// repositories and unreachable manifests go first, then for each blob
// its links and last its data, so a blob is only removed once no
// remaining manifest can reference it. The next gc finishes the work.
func (s *Store) GC(ctx context.Context, opts GCOptions) (GCReport, error) {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	rep := GCReport{DryRun: opts.DryRun, Grace: opts.Grace.String(), Removed: []Removal{}}
	release, err := s.turns.Exclusive(ctx)
	if err != nil {
		return rep, err
	}
	defer release()
	// The sweep is not cut short by a caller that stops waiting: it is
	// seconds, and finishing it is tidier than the next gc finishing it.
	ctx = context.WithoutCancel(ctx)
	cutoff := opts.Now.Add(-opts.Grace)
	asked := s.asked.AskedSince(cutoff)

	repos, err := s.listRepos(ctx)
	if err != nil {
		return rep, err
	}
	marked := map[digest.Digest]bool{}    // referenced by a manifest that stays
	protected := map[digest.Digest]bool{} // linked within the grace period
	links := map[digest.Digest][]string{} // blob -> repositories linking it
	type doomed struct {
		repo string
		d    digest.Digest
		tags map[string]link
	}
	var manifests []doomed
	var staging []string
	for _, repo := range repos {
		if IsStaging(repo) {
			staging = append(staging, repo)
			continue
		}
		sr, err := s.readRepo(ctx, repo)
		if err != nil {
			return rep, err
		}
		for d, l := range sr.layers {
			if l.bad != nil {
				continue // fsck's to repair
			}
			links[d] = append(links[d], repo)
			if l.mtime.After(cutoff) {
				protected[d] = true
			}
		}
		g := s.graphOf(ctx, sr)
		roots := g.tagRoots()
		for d, l := range sr.revisions {
			if l.bad == nil && l.mtime.After(cutoff) {
				roots = append(roots, d)
			}
		}
		reached := g.reach(roots)
		if d, err := unreadReached(g, reached); err != nil {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: nothing collected in this repository: manifest %s cannot be read (%v), so what it references is unknown; run fsck", repo, d, err))
			for d := range sr.revisions {
				reached[d] = true
			}
			for d := range sr.layers {
				marked[d] = true
			}
		}
		g.referenced(reached, marked)
		for _, d := range sortedDigests(sr.revisions) {
			if !reached[d] {
				manifests = append(manifests, doomed{repo: repo, d: d, tags: sr.tags})
			}
		}
	}
	blobs, _, err := s.listBlobs(ctx)
	if err != nil {
		return rep, err
	}
	var sweep []digest.Digest
	for _, d := range sortedDigests(blobs) {
		b := blobs[d]
		switch {
		case marked[d]:
		case protected[d] || asked[d]:
			rep.ProtectedByGrace++
		default:
			sweep = append(sweep, d)
			continue
		}
		rep.BlobsKept++
		rep.BytesKept += b.size
	}

	// Sweep, in the order that keeps the store consistent at every step.
	for _, repo := range staging {
		rep.StagingRepos++
		rep.Removed = append(rep.Removed, Removal{What: "staging-repository", Repository: repo, Reason: "left by an import that is no longer running"})
		if !opts.DryRun {
			if err := s.removeRepository(ctx, repo); err != nil {
				return rep, fmt.Errorf("gc: %w", err)
			}
			if err := s.step("staging repository %s removed", repo); err != nil {
				return rep, err
			}
		}
	}
	for _, m := range manifests {
		rep.Manifests++
		rep.Removed = append(rep.Removed, Removal{What: "manifest", Repository: m.repo, Digest: m.d.String(), Reason: "no tag reaches it"})
		if !opts.DryRun {
			if err := s.removeRevision(ctx, m.repo, m.d, m.tags); err != nil {
				return rep, fmt.Errorf("gc: %w", err)
			}
			if err := s.step("manifest %s@%s removed", m.repo, m.d); err != nil {
				return rep, err
			}
		}
	}
	blobsRoot := s.v2Path("blobs")
	for _, d := range sweep {
		rep.Blobs++
		rep.Bytes += blobs[d].size
		rep.LayerLinks += len(links[d])
		rep.Removed = append(rep.Removed, Removal{What: "blob", Digest: d.String(), Size: blobs[d].size, Reason: "no remaining manifest references it"})
		if opts.DryRun {
			continue
		}
		for _, repo := range links[d] {
			err := s.tree.remove(ctx, s.repoPath(repo, "_layers", d.Algorithm().String(), d.Encoded()), s.repoPath(repo))
			if errors.Is(err, fs.ErrNotExist) {
				err = nil // gone meanwhile: an object store lists what a stopped gc left
			}
			if err != nil {
				return rep, fmt.Errorf("gc: remove layer link %s of %s: %w", d, repo, err)
			}
			if err := s.step("layer link %s of %s removed", d, repo); err != nil {
				return rep, err
			}
		}
		if err := s.tree.remove(ctx, s.blobDir(d), blobsRoot); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, fmt.Errorf("gc: remove blob %s: %w", d, err)
		}
		if err := s.step("blob %s removed", d); err != nil {
			return rep, err
		}
	}
	if !opts.DryRun {
		s.log.Info("registry garbage collected", "manifests", rep.Manifests, "blobs", rep.Blobs, "bytes", rep.Bytes,
			"staging_repositories", rep.StagingRepos, "kept_by_grace", rep.ProtectedByGrace)
	}
	return rep, nil
}

// unreadReached returns a reached manifest whose references are unknown.
func unreadReached(g *repoGraph, reached map[digest.Digest]bool) (digest.Digest, error) {
	var ds []digest.Digest
	for d := range g.unread {
		if reached[d] {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return "", nil
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[0], g.unread[ds[0]]
}

// removeRevision removes a manifest from a repository: its tag history
// entries, then its revision link. The manifest's blob stays for the
// blob sweep to judge.
func (s *Store) removeRevision(ctx context.Context, repo string, d digest.Digest, tags map[string]link) error {
	s.changes.Invalidate(repo)
	defer s.changes.Invalidate(repo)
	root := s.repoPath(repo)
	for _, l := range tags {
		entry := filepath.Join(l.dir, "index", d.Algorithm().String(), d.Encoded())
		if err := s.tree.remove(ctx, entry, root); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove tag history of %s in %s: %w", d, repo, err)
		}
	}
	if err := s.tree.remove(ctx, s.repoPath(repo, "_manifests", "revisions", d.Algorithm().String(), d.Encoded()), root); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove manifest %s of %s: %w", d, repo, err)
	}
	return nil
}
