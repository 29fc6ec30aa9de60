package aptrepo

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aptly-dev/aptly/deb"
)

// RepoInfo describes one repository.
type RepoInfo struct {
	Name  string     `json:"name"`
	Dists []DistInfo `json:"dists"`
}

// DistInfo describes one distribution as it is currently published.
type DistInfo struct {
	Name          string          `json:"name"`
	Components    []ComponentInfo `json:"components"`
	Architectures []string        `json:"architectures"`
	Packages      int             `json:"packages"`
	Current       string          `json:"current"` // the current publish id
	Updated       time.Time       `json:"updated"` // when it was published
}

// ComponentInfo is one component of a distribution.
type ComponentInfo struct {
	Name     string `json:"name"`
	Packages int    `json:"packages"`
}

// Package is one package as published.
type Package struct {
	Repo         string `json:"repo"`
	Dist         string `json:"dist"`
	Component    string `json:"component"`
	Name         string `json:"name"`
	Version      string `json:"version"`
	Architecture string `json:"architecture"`
	Size         int64  `json:"size"`
	SHA256       string `json:"sha256"`
	// Filename is the path apt fetches, relative to the repository's URL
	// (as in Packages): pool/<component>/<letter>/<source>/<file>.deb.
	Filename string `json:"filename"`
	Depends  string `json:"depends,omitempty"`
}

// List describes every repository and distribution, sorted by name.
func (r *Repos) List(ctx context.Context) ([]RepoInfo, error) {
	if err := r.lock(); err != nil {
		return nil, &Error{Op: "list", Err: err}
	}
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: "list", Err: err}
	}
	out := []RepoInfo{}
	for _, repo := range slices.Sorted(keysOf(r.st.Repos)) {
		ri := RepoInfo{Name: repo}
		for _, dist := range slices.Sorted(keysOf(r.st.Repos[repo])) {
			cur, ok := r.st.Repos[repo][dist].current()
			if !ok {
				continue
			}
			di := DistInfo{Name: dist, Architectures: slices.Clone(cur.Architectures), Packages: cur.Packages, Current: cur.ID, Updated: cur.Time}
			for _, c := range slices.Sorted(keysOf(cur.Components)) {
				di.Components = append(di.Components, ComponentInfo{Name: c, Packages: cur.Components[c]})
			}
			ri.Dists = append(ri.Dists, di)
		}
		out = append(out, ri)
	}
	return out, nil
}

// Packages lists the packages repo/dist currently publishes, sorted by
// name, version (Debian order), architecture and component.
func (r *Repos) Packages(ctx context.Context, repo, dist string) ([]Package, error) {
	if err := r.lock(); err != nil {
		return nil, &Error{Op: "packages", Repo: repo, Dist: dist, Err: err}
	}
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: "packages", Repo: repo, Dist: dist, Err: err}
	}
	if r.st.dist(repo, dist) == nil {
		return nil, &Error{Op: "packages", Repo: repo, Dist: dist, Err: fmt.Errorf("%w: no distribution %s/%s", ErrNotFound, repo, dist)}
	}
	out, err := r.packages(repo, dist, func(*deb.Package) bool { return true })
	if err != nil {
		return nil, &Error{Op: "packages", Repo: repo, Dist: dist, Err: err}
	}
	return out, nil
}

// Search finds packages by name across every repository and distribution:
// a glob when name has *, ? or [ (path.Match syntax), else a substring.
func (r *Repos) Search(ctx context.Context, name string) ([]Package, error) {
	if name == "" {
		return nil, &Error{Op: "search", Err: fmt.Errorf("%w: empty name", ErrInvalid)}
	}
	match := func(p *deb.Package) bool { return strings.Contains(p.Name, name) }
	if strings.ContainsAny(name, "*?[") {
		if _, err := path.Match(name, ""); err != nil {
			return nil, &Error{Op: "search", Err: fmt.Errorf("%w: pattern %q: %w", ErrInvalid, name, err)}
		}
		match = func(p *deb.Package) bool { ok, _ := path.Match(name, p.Name); return ok }
	}
	if err := r.lock(); err != nil {
		return nil, &Error{Op: "search", Err: err}
	}
	defer r.mu.Unlock()
	out := []Package{}
	for _, repo := range slices.Sorted(keysOf(r.st.Repos)) {
		for _, dist := range slices.Sorted(keysOf(r.st.Repos[repo])) {
			if err := ctx.Err(); err != nil {
				return nil, &Error{Op: "search", Err: err}
			}
			ps, err := r.packages(repo, dist, match)
			if err != nil {
				return nil, &Error{Op: "search", Repo: repo, Dist: dist, Err: err}
			}
			out = append(out, ps...)
		}
	}
	return out, nil
}

func (r *Repos) packages(repo, dist string, match func(*deb.Package) bool) ([]Package, error) {
	ls, _, _, err := r.currentLists(repo, dist)
	if err != nil {
		return nil, err
	}
	out := []Package{}
	for comp, l := range ls {
		err := l.ForEach(func(p *deb.Package) error {
			if !match(p) {
				return nil
			}
			pkg := Package{Repo: repo, Dist: dist, Component: comp, Name: p.Name, Version: p.Version, Architecture: p.Architecture,
				Depends: strings.Join(p.Deps().Depends, ", ")}
			if f := p.Files(); len(f) > 0 {
				pkg.Size, pkg.SHA256 = f[0].Checksums.Size, f[0].Checksums.SHA256
				dir, err := p.PoolDirectory()
				if err != nil {
					return err
				}
				pkg.Filename = filepath.ToSlash(filepath.Join("pool", comp, dir, f[0].Filename))
			}
			out = append(out, pkg)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b Package) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), deb.CompareVersions(a.Version, b.Version),
			cmp.Compare(a.Architecture, b.Architecture), cmp.Compare(a.Component, b.Component))
	})
	return out, nil
}

// History lists every publish of repo/dist, newest first, the current one
// marked. At most 1,000 records are kept per distribution.
func (r *Repos) History(ctx context.Context, repo, dist string) ([]Publish, error) {
	if err := r.lock(); err != nil {
		return nil, &Error{Op: "history", Repo: repo, Dist: dist, Err: err}
	}
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: "history", Repo: repo, Dist: dist, Err: err}
	}
	ds := r.st.dist(repo, dist)
	if ds == nil {
		return nil, &Error{Op: "history", Repo: repo, Dist: dist, Err: fmt.Errorf("%w: no distribution %s/%s", ErrNotFound, repo, dist)}
	}
	out := make([]Publish, 0, len(ds.History))
	for i := len(ds.History) - 1; i >= 0; i-- {
		p := ds.History[i].clone()
		p.Current = p.ID == ds.Current
		out = append(out, p)
	}
	return out, nil
}
