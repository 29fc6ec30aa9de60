package storage

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
// written since it was last asked, which it learns from Changes: the
// generations the registry's manifest cache keeps, which every write to a
// repository, over /v2/ or through the direct methods, moves on.
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

// Visible tells whether a visible manifest references blob d (or d is
// such a manifest). It does not ask whether the blob is stored: a caller
// asks distribution that.
func (s *Store) Visible(ctx context.Context, d digest.Digest) (bool, error) {
	return s.visible.has(ctx, s, d)
}

func (v *visibleIndex) has(ctx context.Context, s *Store, d digest.Digest) (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.refresh(ctx, s); err != nil {
		return false, err
	}
	return v.counts[d] > 0, nil
}

// refresh recomputes the repositories written since the last call; the
// first call walks them all.
func (v *visibleIndex) refresh(ctx context.Context, s *Store) error {
	gens := s.changes.Generations()
	if v.repos == nil {
		v.repos, v.counts = map[string]*repoVisible{}, map[digest.Digest]int{}
	}
	stale := map[string]bool{}
	if !v.full {
		repos, err := s.listRepos(ctx)
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
		blobs, err := s.visibleIn(ctx, repo)
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
func (s *Store) visibleIn(ctx context.Context, repo string) (map[digest.Digest]bool, error) {
	sr, err := s.readRepo(ctx, repo)
	if err != nil {
		return nil, err
	}
	g := s.graphOf(ctx, sr)
	set := map[digest.Digest]bool{}
	g.referenced(g.reach(g.tagRoots()), set)
	return set, nil
}
