package aptrepo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aptly-dev/aptly/database"
	"github.com/aptly-dev/aptly/deb"
)

// lists is a distribution's package set: component → aptly package list.
type lists map[string]*deb.PackageList

func snapshotName(repo, dist, component, id string) string {
	return repo + "/" + dist + "/" + component + "@" + id
}

// loadLists loads the package lists of a publish from its snapshots.
func (r *Repos) loadLists(p Publish) (lists, error) {
	out := lists{}
	for comp, name := range p.Snapshots {
		snap, err := r.factory.SnapshotCollection().ByName(name)
		if err != nil {
			return nil, fmt.Errorf("load publish %s: %w", p.ID, err)
		}
		if err := r.factory.SnapshotCollection().LoadComplete(snap); err != nil {
			return nil, fmt.Errorf("load snapshot %s: %w", name, err)
		}
		l, err := deb.NewPackageListFromRefList(snap.RefList(), r.factory.PackageCollection(), nil)
		if err != nil {
			return nil, fmt.Errorf("load snapshot %s: %w", name, err)
		}
		out[comp] = l
	}
	return out, nil
}

// currentLists loads the package set clients are served for repo/dist;
// empty for a distribution not published yet.
func (r *Repos) currentLists(repo, dist string) (lists, Publish, bool, error) {
	ds := r.st.dist(repo, dist)
	if ds == nil {
		return lists{}, Publish{}, false, nil
	}
	cur, ok := ds.current()
	if !ok {
		return lists{}, Publish{}, false, nil
	}
	l, err := r.loadLists(cur)
	return l, cur, true, err
}

// owner is where a package already is.
type owner struct {
	sha256, where string
}

// repoIndex maps name+version+architecture to content for every package
// currently published in repo, in any distribution but skipDist.
func (r *Repos) repoIndex(repo, skipDist string) (map[string]owner, error) {
	idx := map[string]owner{}
	for dist := range r.st.Repos[repo] {
		if dist == skipDist {
			continue
		}
		ls, _, _, err := r.currentLists(repo, dist)
		if err != nil {
			return nil, err
		}
		addToIndex(idx, ls, repo+"/"+dist)
	}
	return idx, nil
}

func addToIndex(idx map[string]owner, ls lists, where string) {
	for comp, l := range ls {
		_ = l.ForEach(func(p *deb.Package) error {
			k := pkgKey(p.Name, p.Version, p.Architecture)
			if _, ok := idx[k]; !ok {
				idx[k] = owner{sha256: pkgSHA256(p), where: where + " " + comp}
			}
			return nil
		})
	}
}

func pkgSHA256(p *deb.Package) string {
	if f := p.Files(); len(f) > 0 {
		return f[0].Checksums.SHA256
	}
	return ""
}

// checkAgainst refuses a package set that has one name, version and
// architecture with two contents, within itself or against idx.
func checkAgainst(idx map[string]owner, ls lists) error {
	seen := map[string]owner{}
	for k, v := range idx {
		seen[k] = v
	}
	for _, comp := range slices.Sorted(keysOf(ls)) {
		var err error
		_ = ls[comp].ForEach(func(p *deb.Package) error {
			k := pkgKey(p.Name, p.Version, p.Architecture)
			sum := pkgSHA256(p)
			if o, ok := seen[k]; ok && o.sha256 != sum {
				err = fmt.Errorf("%w: %s is in %s with sha256 %s, here with sha256 %s", ErrConflict, p, o.where, o.sha256, sum)
				return err
			}
			seen[k] = owner{sha256: sum, where: comp}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func keysOf[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// changes describes what goes from old to new, one line a package.
func changes(old, next lists) []string {
	names := func(ls lists) map[string]bool {
		m := map[string]bool{}
		for comp, l := range ls {
			_ = l.ForEach(func(p *deb.Package) error {
				m[p.String()+" ("+comp+")"] = true
				return nil
			})
		}
		return m
	}
	o, n := names(old), names(next)
	var out []string
	for _, k := range slices.Sorted(keysOf(n)) {
		if !o[k] {
			out = append(out, "+"+k)
		}
	}
	for _, k := range slices.Sorted(keysOf(o)) {
		if !n[k] {
			out = append(out, "-"+k)
		}
	}
	if len(out) > maxChanges {
		more := len(out) - (maxChanges - 1)
		out = append(out[:maxChanges-1], fmt.Sprintf("… and %d more", more))
	}
	return out
}

// publish publishes ls as the new current state of repo/dist: snapshots,
// aptly publish into a folder of its own, signatures, fsync, then the
// switch (state file, then routes). On any error before the switch,
// everything it made is removed and clients keep being served what they
// were.
func (r *Repos) publish(ctx context.Context, repo, dist string, ls lists, prev Publish, rec Publish) (Publish, error) {
	if err := ctx.Err(); err != nil {
		return Publish{}, err
	}
	now := time.Now().UTC()
	rec.ID, rec.Repo, rec.Dist, rec.Time = newPublishID(now), repo, dist, now
	rec.Components, rec.Snapshots = map[string]int{}, map[string]string{}
	comps := slices.Sorted(keysOf(ls))
	if len(comps) == 0 {
		return Publish{}, fmt.Errorf("%w: nothing to publish", ErrInvalid)
	}

	var (
		made      []*deb.Snapshot
		published *deb.PublishedRepo
		ok        bool
	)
	defer func() {
		if !ok {
			r.undoPublish(rec.ID, published, made)
		}
	}()

	archs := map[string]bool{}
	sources := make([]any, 0, len(comps))
	for _, comp := range comps {
		l := ls[comp]
		name := snapshotName(repo, dist, comp, rec.ID)
		snap := deb.NewSnapshotFromRefList(name, nil, deb.NewPackageRefListFromPackageList(l),
			fmt.Sprintf("%s %s/%s %s (%s by %s)", rec.Action, repo, dist, comp, rec.ID, rec.By))
		if err := r.factory.SnapshotCollection().Add(snap); err != nil {
			return Publish{}, fmt.Errorf("create snapshot %s: %w", name, err)
		}
		made = append(made, snap)
		sources = append(sources, snap)
		rec.Components[comp] = l.Len()
		rec.Snapshots[comp] = name
		rec.Packages += l.Len()
		_ = l.ForEach(func(p *deb.Package) error {
			if p.Architecture != deb.ArchitectureAll {
				archs[p.Architecture] = true
			}
			return nil
		})
	}
	// Architectures come from the packages; "all" packages are listed in
	// every binary-<arch>/Packages, as apt expects. With no architecture
	// of its own (only "all" packages, or none left), a distribution keeps
	// the architectures it had, or publishes binary-all alone.
	rec.Architectures = slices.Sorted(keysOf(archs))
	if len(rec.Architectures) == 0 {
		rec.Architectures = slices.Clone(prev.Architectures)
	}
	if len(rec.Architectures) == 0 {
		rec.Architectures = []string{deb.ArchitectureAll}
	}

	var err error
	published, err = deb.NewPublishedRepo("", rec.ID, dist, slices.Clone(rec.Architectures), comps, sources, r.factory, false)
	if err != nil {
		return Publish{}, fmt.Errorf("publish %s/%s: %w", repo, dist, err)
	}
	published.Origin = r.origin
	published.Label = r.labelFor(repo)
	published.Suite, published.Codename = dist, dist
	published.SkipContents = true
	published.SkipBz2 = true
	published.AcquireByHash = true
	if err := published.Publish(r.pool, r.storage, r.factory, r.signer, nil, false, ""); err != nil {
		return Publish{}, fmt.Errorf("publish %s/%s: %w", repo, dist, err)
	}
	if err := r.factory.PublishedRepoCollection().Add(published); err != nil {
		return Publish{}, fmt.Errorf("publish %s/%s: record: %w", repo, dist, err)
	}
	if err := syncFS(r.dir, filepath.Join(r.public, rec.ID), r.pool, ls); err != nil {
		return Publish{}, fmt.Errorf("publish %s/%s: %w", repo, dist, err)
	}
	if err := ctx.Err(); err != nil {
		return Publish{}, err
	}

	// The switch.
	next := r.st.clone()
	if next.Repos[repo] == nil {
		next.Repos[repo] = map[string]*distState{}
	}
	ds := next.Repos[repo][dist]
	if ds == nil {
		ds = &distState{}
		next.Repos[repo][dist] = ds
	}
	rec.Kept = true
	ds.History = append(ds.History, rec)
	ds.Current = rec.ID
	for len(ds.History) > maxHistory && !ds.History[0].Kept {
		ds.History = ds.History[1:]
	}
	if err := next.save(r.statePath); err != nil {
		return Publish{}, err
	}
	ok = true
	r.st = next
	r.rebuildRoutes()
	r.log.Info("apt repository published", "repo", repo, "dist", dist, "id", rec.ID, "action", rec.Action,
		"by", rec.By, "packages", rec.Packages, "architectures", strings.Join(rec.Architectures, " "))

	r.prune(repo, dist)
	rec.Current = true
	return rec, nil
}

func (r *Repos) labelFor(repo string) string {
	if r.label != "" {
		return r.label
	}
	return repo
}

// undoPublish removes what a publish that was not switched in made.
func (r *Repos) undoPublish(id string, published *deb.PublishedRepo, snaps []*deb.Snapshot) {
	if err := os.RemoveAll(filepath.Join(r.public, id)); err != nil {
		r.log.Warn("apt repository: remove unfinished publish", "id", id, "err", err)
	}
	if published != nil {
		_ = r.db.Delete(published.Key())
	}
	for _, s := range snaps {
		_ = r.factory.SnapshotCollection().Drop(s)
	}
	r.factory.Flush()
	// Packages an Add imported for this publish are referenced by nothing.
	if err := r.gc(); err != nil {
		r.log.Warn("apt repository: garbage collection", "err", err)
	}
}

// prune drops the publishes of repo/dist beyond the KeepSnapshots newest,
// then the packages and pool files nothing refers to any more. It runs
// after a successful switch: its failures are logged, not returned.
func (r *Repos) prune(repo, dist string) {
	ds := r.st.dist(repo, dist)
	var drop []int
	n := 0
	for i := len(ds.History) - 1; i >= 0; i-- {
		if ds.History[i].Kept {
			if n++; n > r.keep {
				drop = append(drop, i)
			}
		}
	}
	if len(drop) == 0 {
		return
	}
	next := r.st.clone()
	nds := next.Repos[repo][dist]
	var gone []Publish
	for _, i := range drop {
		nds.History[i].Kept = false
		gone = append(gone, nds.History[i])
	}
	if err := next.save(r.statePath); err != nil {
		r.log.Warn("apt repository: prune", "repo", repo, "dist", dist, "err", err)
		return
	}
	r.st = next
	r.rebuildRoutes()
	for _, p := range gone {
		if err := r.dropPublish(p); err != nil {
			r.log.Warn("apt repository: drop publish", "repo", repo, "dist", dist, "id", p.ID, "err", err)
		}
	}
	r.factory.Flush()
	if err := r.gc(); err != nil {
		r.log.Warn("apt repository: garbage collection", "err", err)
	}
}

// dropPublish deletes a publish's tree, its aptly published-repo record
// and its snapshots.
func (r *Repos) dropPublish(p Publish) error {
	var errs []error
	if err := os.RemoveAll(filepath.Join(r.public, p.ID)); err != nil {
		errs = append(errs, err)
	}
	key := (&deb.PublishedRepo{Prefix: p.ID, Distribution: p.Dist}).Key()
	if err := r.db.Delete(key); err != nil && !errors.Is(err, database.ErrNotFound) {
		errs = append(errs, err)
	}
	for _, name := range p.Snapshots {
		snap, err := r.factory.SnapshotCollection().ByName(name)
		if err != nil {
			continue // already gone
		}
		if err := r.factory.SnapshotCollection().Drop(snap); err != nil {
			errs = append(errs, fmt.Errorf("drop snapshot %s: %w", name, err))
		}
	}
	r.log.Info("apt repository publish dropped", "repo", p.Repo, "dist", p.Dist, "id", p.ID)
	return errors.Join(errs...)
}

// gc deletes the packages no snapshot refers to, and their pool files.
func (r *Repos) gc() error {
	referenced := map[string]bool{}
	err := r.factory.SnapshotCollection().ForEach(func(s *deb.Snapshot) error {
		if err := r.factory.SnapshotCollection().LoadComplete(s); err != nil {
			return fmt.Errorf("load snapshot %s: %w", s.Name, err)
		}
		return s.RefList().ForEach(func(key []byte) error {
			referenced[string(key)] = true
			return nil
		})
	})
	if err != nil {
		return err
	}
	pc := r.factory.PackageCollection()
	batch := r.db.CreateBatch()
	var poolPaths []string
	n := 0
	for _, key := range pc.AllPackageRefs().Refs {
		if referenced[string(key)] {
			continue
		}
		if p, err := pc.ByKey(key); err == nil {
			for _, f := range p.Files() {
				if f.PoolPath != "" {
					poolPaths = append(poolPaths, f.PoolPath)
				}
			}
		}
		if err := pc.DeleteByKey(key, batch); err != nil {
			return fmt.Errorf("delete package %s: %w", key, err)
		}
		n++
	}
	if n == 0 {
		return nil
	}
	if err := batch.Write(); err != nil {
		return fmt.Errorf("delete packages: %w", err)
	}
	for _, pp := range poolPaths {
		if _, err := r.pool.Remove(pp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove pool file %s: %w", pp, err)
		}
		_ = r.db.Delete([]byte("C" + pp)) // aptly's checksum record for the pool file
	}
	r.factory.Flush()
	r.log.Info("apt repository garbage collected", "packages", n, "files", len(poolPaths))
	return nil
}

// recover brings the directory back to what state.json says after a crash:
// trees, published records and snapshots of publishes that are not kept
// are removed, then unreferenced packages and pool files.
func (r *Repos) recover(ctx context.Context) error {
	kept := map[string]bool{}
	keptSnaps := map[string]bool{}
	for _, dists := range r.st.Repos {
		for _, ds := range dists {
			for _, p := range ds.History {
				if p.Kept {
					kept[p.ID] = true
					for _, s := range p.Snapshots {
						keptSnaps[s] = true
					}
				}
			}
		}
	}
	ents, err := os.ReadDir(r.public)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, e := range ents {
		if !kept[e.Name()] {
			r.log.Warn("apt repository: removing a publish that was never switched in", "id", e.Name())
			if err := os.RemoveAll(filepath.Join(r.public, e.Name())); err != nil {
				return fmt.Errorf("recover: %w", err)
			}
		}
	}
	for id := range kept {
		if _, err := os.Stat(filepath.Join(r.public, id)); err != nil {
			r.log.Error("apt repository: a kept publish is missing from disk", "id", id, "err", err)
		}
	}
	var stale [][]byte
	_ = r.factory.PublishedRepoCollection().ForEach(func(p *deb.PublishedRepo) error {
		if !kept[p.Prefix] {
			stale = append(stale, p.Key())
		}
		return nil
	})
	for _, k := range stale {
		if err := r.db.Delete(k); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}
	var staleSnaps []*deb.Snapshot
	_ = r.factory.SnapshotCollection().ForEach(func(s *deb.Snapshot) error {
		if !keptSnaps[s.Name] {
			staleSnaps = append(staleSnaps, s)
		}
		return nil
	})
	for _, s := range staleSnaps {
		if err := r.factory.SnapshotCollection().Drop(s); err != nil {
			return fmt.Errorf("recover: drop snapshot %s: %w", s.Name, err)
		}
	}
	r.factory.Flush()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.gc(); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	return r.sweepPool()
}

// sweepPool removes pool files no package refers to (left by an Add that
// failed after importing).
func (r *Repos) sweepPool() error {
	used := map[string]bool{}
	pc := r.factory.PackageCollection()
	for _, key := range pc.AllPackageRefs().Refs {
		p, err := pc.ByKey(key)
		if err != nil {
			return fmt.Errorf("sweep pool: %w", err)
		}
		for _, f := range p.Files() {
			used[f.PoolPath] = true
		}
	}
	all, err := r.pool.FilepathList(nil)
	if err != nil {
		return fmt.Errorf("sweep pool: %w", err)
	}
	for _, f := range all {
		if !used[f] {
			if _, err := r.pool.Remove(f); err != nil {
				return fmt.Errorf("sweep pool: %w", err)
			}
			_ = r.db.Delete([]byte("C" + f))
		}
	}
	return nil
}
