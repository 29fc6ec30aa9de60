package aptrepo

import (
	"context"
	"fmt"
	"os"

	"github.com/aptly-dev/aptly/deb"
	"github.com/aptly-dev/aptly/utils"
)

// Add adds package files to a component of repo/dist (both made when
// new) and publishes the result. Every file is read and checked before
// anything changes; one bad file refuses the whole Add with an *Error
// naming it. Packages already there with the same content are skipped: an
// Add of nothing new returns the current publish and publishes nothing.
// by names who asked, for the history.
func (r *Repos) Add(ctx context.Context, repo, dist, component string, debs []Deb, by string) (Publish, error) {
	fail := func(file string, err error) (Publish, error) {
		return Publish{}, &Error{Op: "add", Repo: repo, Dist: dist, File: file, Err: err}
	}
	for _, n := range [][2]string{{"repository", repo}, {"distribution", dist}, {"component", component}} {
		if err := validName(n[0], n[1]); err != nil {
			return fail("", err)
		}
	}
	if len(debs) == 0 {
		return fail("", fmt.Errorf("%w: no package files", ErrInvalid))
	}
	if len(debs) > maxDebsPerAdd {
		return fail("", fmt.Errorf("%w: %d package files in one request, at most %d", ErrInvalid, len(debs), maxDebsPerAdd))
	}
	if err := r.lock(); err != nil {
		return fail("", err)
	}
	defer r.mu.Unlock()

	stageDir, err := os.MkdirTemp(r.tmp, "add-")
	if err != nil {
		return fail("", err)
	}
	defer os.RemoveAll(stageDir)

	// 1. Read and check every file.
	cands := make([]*candidate, 0, len(debs))
	inBatch := map[string]*candidate{}
	for _, d := range debs {
		if err := ctx.Err(); err != nil {
			return fail("", err)
		}
		c, err := stage(ctx, stageDir, d, r.maxDeb)
		if err != nil {
			return fail(d.Name, err)
		}
		if o, ok := inBatch[c.key()]; ok {
			if o.sha256 != c.sha256 {
				return fail(d.Name, fmt.Errorf("%w: %s is also in %s, with different content", ErrConflict, c.pkg, o.name))
			}
			continue // the same file twice
		}
		inBatch[c.key()] = c
		cands = append(cands, c)
	}

	// 2. Check against what the repository publishes.
	cur, prev, _, err := r.currentLists(repo, dist)
	if err != nil {
		return fail("", err)
	}
	idx, err := r.repoIndex(repo, dist)
	if err != nil {
		return fail("", err)
	}
	addToIndex(idx, cur, repo+"/"+dist)
	target := cur[component]
	inTarget := map[string]bool{}
	if target != nil {
		_ = target.ForEach(func(p *deb.Package) error {
			inTarget[pkgKey(p.Name, p.Version, p.Architecture)] = true
			return nil
		})
	}
	var fresh []*candidate
	for _, c := range cands {
		if o, ok := idx[c.key()]; ok {
			if o.sha256 != c.sha256 {
				return fail(c.name, fmt.Errorf("%w: %s is already in %s with sha256 %s, this file has sha256 %s",
					ErrConflict, c.pkg, o.where, o.sha256, c.sha256))
			}
			if inTarget[c.key()] {
				continue // already there: a no-op
			}
		}
		fresh = append(fresh, c)
	}
	if len(fresh) == 0 {
		if p, ok := r.st.dist(repo, dist).current(); ok {
			r.log.Info("apt repository add: nothing new", "repo", repo, "dist", dist, "component", component, "files", len(debs))
			return p, nil
		}
	}

	// 3. Import into aptly's pool and database, then publish.
	next := lists{}
	for comp, l := range cur {
		next[comp] = l
	}
	if target == nil {
		target = deb.NewPackageList()
	}
	nl := deb.NewPackageListWithDuplicates(false, target.Len()+len(fresh))
	if err := nl.Append(target); err != nil {
		return fail("", err)
	}
	if err := r.importPackages(fresh, nl); err != nil {
		return fail(err.file, err.err)
	}
	next[component] = nl
	p, err := r.publish(ctx, repo, dist, next, prev, Publish{Action: ActionAdd, By: by, Changes: changes(cur, next)})
	if err != nil {
		return fail("", err)
	}
	return p, nil
}

// Remove removes a package (every version when version is "") from every
// component of repo/dist and publishes the result. Nothing matching is
// ErrNotFound.
func (r *Repos) Remove(ctx context.Context, repo, dist, pkg, version, by string) (Publish, error) {
	fail := func(err error) (Publish, error) {
		return Publish{}, &Error{Op: "remove", Repo: repo, Dist: dist, Err: err}
	}
	if err := r.lock(); err != nil {
		return fail(err)
	}
	defer r.mu.Unlock()
	cur, prev, ok, err := r.currentLists(repo, dist)
	if err != nil {
		return fail(err)
	}
	if !ok {
		return fail(fmt.Errorf("%w: no distribution %s/%s", ErrNotFound, repo, dist))
	}
	next := lists{}
	removed := 0
	for comp, l := range cur {
		nl := deb.NewPackageListWithDuplicates(false, l.Len())
		_ = l.ForEach(func(p *deb.Package) error {
			if p.Name == pkg && (version == "" || p.Version == version) {
				removed++
				return nil
			}
			return nl.Add(p)
		})
		next[comp] = nl
	}
	if removed == 0 {
		what := pkg
		if version != "" {
			what += " " + version
		}
		return fail(fmt.Errorf("%w: no package %s in %s/%s", ErrNotFound, what, repo, dist))
	}
	p, err := r.publish(ctx, repo, dist, next, prev, Publish{Action: ActionRemove, By: by, Changes: changes(cur, next)})
	if err != nil {
		return fail(err)
	}
	return p, nil
}

// Rollback publishes again the package set of an earlier publish of
// repo/dist, by its id, as a new publish. The publish must still be kept
// (ErrNotAvailable otherwise). Rolling back to the current publish is a
// no-op.
func (r *Repos) Rollback(ctx context.Context, repo, dist, publishID, by string) (Publish, error) {
	fail := func(err error) (Publish, error) {
		return Publish{}, &Error{Op: "rollback", Repo: repo, Dist: dist, Err: err}
	}
	if err := r.lock(); err != nil {
		return fail(err)
	}
	defer r.mu.Unlock()
	ds := r.st.dist(repo, dist)
	if ds == nil {
		return fail(fmt.Errorf("%w: no distribution %s/%s", ErrNotFound, repo, dist))
	}
	i, ok := ds.find(publishID)
	if !ok {
		return fail(fmt.Errorf("%w: no publish %s in %s/%s", ErrNotFound, publishID, repo, dist))
	}
	to := ds.History[i].clone()
	if publishID == ds.Current {
		to.Current = true
		return to, nil
	}
	if !to.Kept {
		return fail(fmt.Errorf("%w: publish %s was dropped (only the %d newest publishes are kept)", ErrNotAvailable, publishID, r.keep))
	}
	cur, prev, _, err := r.currentLists(repo, dist)
	if err != nil {
		return fail(err)
	}
	next, err := r.loadLists(to)
	if err != nil {
		return fail(err)
	}
	idx, err := r.repoIndex(repo, dist)
	if err != nil {
		return fail(err)
	}
	if err := checkAgainst(idx, next); err != nil {
		return fail(err)
	}
	p, err := r.publish(ctx, repo, dist, next, prev, Publish{Action: ActionRollback, By: by, RollbackTo: publishID, Changes: changes(cur, next)})
	if err != nil {
		return fail(err)
	}
	return p, nil
}

type fileError struct {
	file string
	err  error
}

// importPackages puts the candidates into aptly's pool and, in one
// database transaction, its package collection, and adds them to nl. (One
// transaction for all: goleveldb writes each transaction as a table of its
// own, and one per package makes an Add of a thousand crawl.)
func (r *Repos) importPackages(cands []*candidate, nl *deb.PackageList) *fileError {
	tx, err := r.db.OpenTransaction()
	if err != nil {
		return &fileError{"", fmt.Errorf("open database transaction: %w", err)}
	}
	defer tx.Discard()
	checksums := r.factory.ChecksumCollection(tx)
	pc := r.factory.PackageCollection()
	for _, c := range cands {
		if err := os.Chmod(c.path, 0o644); err != nil { //nolint:gosec // G302: a published package, public by design (Dir itself is 0750)
			return &fileError{c.name, err}
		}
		sums := utils.ChecksumInfo{}
		poolPath, err := r.pool.Import(c.path, c.filename, &sums, true, checksums)
		if err != nil {
			return &fileError{c.name, fmt.Errorf("import into the package pool: %w", err)}
		}
		c.pkg.UpdateFiles(deb.PackageFiles{{Filename: c.filename, Checksums: sums, PoolPath: poolPath}})
		if err := pc.UpdateInTransaction(c.pkg, tx); err != nil {
			return &fileError{c.name, fmt.Errorf("save package: %w", err)}
		}
		if err := nl.Add(c.pkg); err != nil {
			return &fileError{c.name, fmt.Errorf("%w: %w", ErrConflict, err)}
		}
	}
	if err := tx.Commit(); err != nil {
		return &fileError{"", fmt.Errorf("save packages: %w", err)}
	}
	return nil
}
