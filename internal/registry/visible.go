package registry

import (
	"context"
	"fmt"
	"sync"

	"github.com/opencontainers/go-digest"
)

// visibleIndex knows which blobs are visible: referenced (as a manifest,
// its config or a layer) by a manifest that a tag of some repository,
// staging aside, reaches directly, through index entries, or as a
// referrer. A blob in storage that is not visible is garbage (left by a
// refused import, or by a tag that moved); the importer must not count
// on it being there.
//
// It is kept per repository and recomputed only for the repositories
// written since it was last asked, which it learns from the generations
// the manifest cache already keeps: every write to a repository, over
// /v2/ or through the direct methods, invalidates that repository there.
type visibleIndex struct {
	mu     sync.Mutex
	full   bool                    // every repository walked once
	repos  map[string]*repoVisible // by repository
	counts map[digest.Digest]int   // blob -> repositories in which it is visible
}

type repoVisible struct {
	gen   uint64
	blobs map[digest.Digest]bool
}

// generations copies the manifest cache's per-repository generations.
func (c *manifestCache) generations() map[string]uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]uint64, len(c.gen))
	for k, v := range c.gen {
		out[k] = v
	}
	return out
}

// BlobVisible tells whether the registry holds blob d and a visible
// manifest references it (or it is such a manifest): what an import that
// does not carry a blob may count on.
func (r *Registry) BlobVisible(ctx context.Context, d digest.Digest) (bool, error) {
	visible, err := r.maint.visible.has(ctx, r, d)
	if err != nil || !visible {
		return false, err
	}
	_, ok, err := r.StatBlob(ctx, d)
	return ok, err
}

func (v *visibleIndex) has(ctx context.Context, r *Registry, d digest.Digest) (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.refresh(ctx, r); err != nil {
		return false, err
	}
	return v.counts[d] > 0, nil
}

// refresh recomputes the repositories written since the last call; the
// first call walks them all.
func (v *visibleIndex) refresh(ctx context.Context, r *Registry) error {
	gens := r.cache.generations()
	if v.repos == nil {
		v.repos, v.counts = map[string]*repoVisible{}, map[digest.Digest]int{}
	}
	stale := map[string]bool{}
	if !v.full {
		repos, err := r.listRepos(ctx)
		if err != nil {
			return fmt.Errorf("visible blobs: %w", err)
		}
		for _, repo := range repos {
			stale[repo] = true
		}
	}
	for repo, g := range gens {
		if rv, ok := v.repos[repo]; !ok || rv.gen != g {
			stale[repo] = true
		}
	}
	for repo := range stale {
		if IsStaging(repo) {
			continue
		}
		// The generation is read before the walk: a write during the walk
		// changes it, and the next call walks the repository again.
		g := gens[repo]
		blobs, err := r.visibleIn(ctx, repo)
		if err != nil {
			return fmt.Errorf("visible blobs of %s: %w", repo, err)
		}
		if old := v.repos[repo]; old != nil {
			for d := range old.blobs {
				if v.counts[d]--; v.counts[d] <= 0 {
					delete(v.counts, d)
				}
			}
		}
		for d := range blobs {
			v.counts[d]++
		}
		v.repos[repo] = &repoVisible{gen: g, blobs: blobs}
	}
	v.full = true
	return nil
}

// visibleIn is what the tags of one repository make visible.
func (r *Registry) visibleIn(ctx context.Context, repo string) (map[digest.Digest]bool, error) {
	sr, err := r.readRepo(ctx, repo)
	if err != nil {
		return nil, err
	}
	g := r.graphOf(sr)
	set := map[digest.Digest]bool{}
	g.referenced(g.reach(g.tagRoots()), set)
	return set, nil
}
