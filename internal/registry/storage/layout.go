package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// What fsck, gc, the visibility index and the registry's fast paths read
// of distribution's filesystem layout (registry/storage/paths.go in
// distribution), read straight from disk: a walk through the storage
// driver costs a stat per file, and the modification times of links are
// what gc's grace period is measured on.
//
//	docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data
//	docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
//	docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//	docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
//	docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
//	docker/registry/v2/repositories/<name>/_uploads/<id>/…

// StagingProject is the project of the importer's per-import staging
// repositories: they hold blob links while an import streams, are never
// visible, and what a refused or killed import left in them is garbage.
const StagingProject = "appliance-import-staging"

// IsStaging tells whether repo is a staging repository of the importer.
func IsStaging(repo string) bool {
	return repo == StagingProject || strings.HasPrefix(repo, StagingProject+"/")
}

func (s *Store) v2Path(parts ...string) string {
	return filepath.Join(append([]string{s.root, "docker", "registry", "v2"}, parts...)...)
}

func (s *Store) repoPath(repo string, parts ...string) string {
	return s.v2Path(append([]string{"repositories", filepath.FromSlash(repo)}, parts...)...)
}

// blobDir is the folder of one blob (its data file and nothing else).
func (s *Store) blobDir(d digest.Digest) string {
	hex := d.Encoded()
	return s.v2Path("blobs", d.Algorithm().String(), hex[:2], hex)
}

// BlobDataPath is the file that holds blob d, as distribution's
// filesystem driver keeps it.
func (s *Store) BlobDataPath(d digest.Digest) string {
	return filepath.Join(s.blobDir(d), "data")
}

// The same places as keys of distribution's storage driver (slash
// separated, from the driver's root), for what the registry writes
// through the driver.
const (
	v2Root = "/docker/registry/v2"
	// RepositoriesRoot is the folder of the repositories.
	RepositoriesRoot = v2Root + "/repositories"
)

// LayerLinkKey is the driver key of repo's link to blob d.
func LayerLinkKey(repo string, d digest.Digest) string {
	return path.Join(RepositoriesRoot, repo, "_layers", d.Algorithm().String(), d.Encoded(), "link")
}

// RevisionLinkKey is the driver key of repo's link to manifest d.
func RevisionLinkKey(repo string, d digest.Digest) string {
	return path.Join(RepositoriesRoot, repo, "_manifests", "revisions", d.Algorithm().String(), d.Encoded(), "link")
}

// BlobDataKey is the driver key of blob d's data.
func BlobDataKey(d digest.Digest) string {
	return path.Join(v2Root, "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

// Revisions lists the manifests stored in repo, sorted: the revision
// folders whose link is there (deleting a manifest removes its link, not
// its folder). Walking them through the storage driver, as distribution's
// manifest enumerator does, is some fifty times slower, and the registry
// lists them after every write to a repository whose referrers are asked
// for.
func (s *Store) Revisions(ctx context.Context, repo string) ([]digest.Digest, error) {
	if _, err := reference.WithName(repo); err != nil {
		return nil, fmt.Errorf("%w: repository %q: %w", ErrInvalidName, repo, err)
	}
	dir := s.repoPath(repo, "_manifests", "revisions")
	algs, err := s.tree.readDir(ctx, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list manifests of %s: %w", repo, err)
	}
	var out []digest.Digest
	for _, a := range algs {
		ents, err := s.tree.readDir(ctx, filepath.Join(dir, a.name))
		if err != nil {
			return nil, fmt.Errorf("list manifests of %s: %w", repo, err)
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			d := digest.NewDigestFromEncoded(digest.Algorithm(a.name), e.name)
			if !e.dir || d.Validate() != nil {
				continue
			}
			_, err := s.tree.stat(ctx, filepath.Join(dir, a.name, e.name, "link")) //nolint:gosec // G703: a valid repository name, and names read from that folder
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted
			}
			if err != nil {
				return nil, fmt.Errorf("list manifests of %s: %w", repo, err)
			}
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out, nil
}

// removeRepository removes a repository's folder (its links, tags and
// uploads; not the blobs), as distribution's RepositoryRemover does.
func (s *Store) removeRepository(ctx context.Context, repo string) error {
	s.changes.Invalidate(repo)
	defer s.changes.Invalidate(repo)
	if _, err := reference.WithName(repo); err != nil {
		return fmt.Errorf("%w: %q", ErrInvalidName, repo)
	}
	if err := s.tree.remove(ctx, s.repoPath(repo), s.v2Path("repositories")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove repository %s: %w", repo, err)
	}
	return nil
}

// link is one link file: a tag, a manifest revision or a layer of a
// repository, naming a digest.
type link struct {
	target digest.Digest // what the file says; "" when unreadable
	bad    error         // why the file cannot be read as a digest
	dir    string        // the folder that holds the link file (removing it removes the link)
	mtime  time.Time
}

// storedRepo is what one repository holds on disk.
type storedRepo struct {
	name      string
	tags      map[string]link
	revisions map[digest.Digest]link // keyed by the folder's name
	layers    map[digest.Digest]link
}

// listRepos lists every repository in storage, sorted: every folder under
// repositories/ that holds _manifests, _layers or _uploads, including
// those the catalog leaves out (blob links only, staging).
func (s *Store) listRepos(ctx context.Context) ([]string, error) {
	root := s.v2Path("repositories")
	var out []string
	var walk func(dir, name string, depth int) error
	walk = func(dir, name string, depth int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := s.tree.readDir(ctx, dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		isRepo := false
		for _, e := range ents {
			if !e.dir {
				continue
			}
			switch n := e.name; {
			case n == "_manifests" || n == "_layers" || n == "_uploads":
				isRepo = true
			case strings.HasPrefix(n, "_") || depth > 32:
			default:
				child := n
				if name != "" {
					child = name + "/" + n
				}
				if err := walk(filepath.Join(dir, n), child, depth+1); err != nil {
					return err
				}
			}
		}
		if isRepo && name != "" {
			out = append(out, name)
		}
		return nil
	}
	if err := walk(root, "", 0); err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// readRepo reads a repository's tags, revisions and layer links.
func (s *Store) readRepo(ctx context.Context, repo string) (*storedRepo, error) {
	sr := &storedRepo{name: repo, tags: map[string]link{}}
	var err error
	if sr.revisions, err = s.readLinkTree(ctx, s.repoPath(repo, "_manifests", "revisions")); err != nil {
		return nil, fmt.Errorf("read repository %s: %w", repo, err)
	}
	if sr.layers, err = s.readLinkTree(ctx, s.repoPath(repo, "_layers")); err != nil {
		return nil, fmt.Errorf("read repository %s: %w", repo, err)
	}
	tagsDir := s.repoPath(repo, "_manifests", "tags")
	ents, err := s.tree.readDir(ctx, tagsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read tags of %s: %w", repo, err)
	}
	for _, e := range ents {
		if !e.dir {
			continue
		}
		dir := filepath.Join(tagsDir, e.name)
		l := s.readLink(ctx, filepath.Join(dir, "current"))
		if errors.Is(l.bad, fs.ErrNotExist) {
			// A tag folder without a current link: distribution answers
			// "unknown tag" and lists nothing; it is leftover, not a tag.
			if _, serr := s.tree.stat(ctx, filepath.Join(dir, "current")); errors.Is(serr, fs.ErrNotExist) {
				continue
			}
		}
		l.dir = dir // removing a tag removes its whole folder, index included
		sr.tags[e.name] = l
	}
	return sr, nil
}

// readLinkTree reads <dir>/<alg>/<hex>/link for every algorithm folder.
func (s *Store) readLinkTree(ctx context.Context, dir string) (map[digest.Digest]link, error) {
	out := map[digest.Digest]link{}
	algs, err := s.tree.readDir(ctx, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, a := range algs {
		if !a.dir {
			continue
		}
		ents, err := s.tree.readDir(ctx, filepath.Join(dir, a.name))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if !e.dir {
				continue
			}
			d := digest.NewDigestFromEncoded(digest.Algorithm(a.name), e.name)
			l := s.readLink(ctx, filepath.Join(dir, a.name, e.name))
			if l.bad == nil && l.target != d {
				l.bad = fmt.Errorf("the link names %s", l.target)
			}
			out[d] = l
		}
	}
	return out, nil
}

// readLink reads dir/link.
func (s *Store) readLink(ctx context.Context, dir string) link {
	l := link{dir: dir}
	p := filepath.Join(dir, "link")
	info, err := s.tree.stat(ctx, p)
	if err != nil {
		l.bad = err
		return l
	}
	l.mtime = info.mtime
	if info.size > 256 {
		l.bad = fmt.Errorf("%s: %d bytes, not a digest", p, info.size)
		return l
	}
	data, err := s.readFile(ctx, p, 256)
	if err != nil {
		l.bad = err
		return l
	}
	d, err := digest.Parse(strings.TrimSpace(string(data)))
	if err != nil {
		l.bad = fmt.Errorf("%s: %w", p, err)
		return l
	}
	l.target = d
	return l
}

// storedBlob is one blob's data file.
type storedBlob struct {
	size  int64
	mtime time.Time
	path  string
}

// listBlobs lists every blob data file, under every algorithm folder.
// Folders that do not name a valid digest are reported in odd.
func (s *Store) listBlobs(ctx context.Context) (blobs map[digest.Digest]storedBlob, odd []string, err error) {
	blobs = map[digest.Digest]storedBlob{}
	root := s.v2Path("blobs")
	algs, err := s.tree.readDir(ctx, root)
	if errors.Is(err, fs.ErrNotExist) {
		return blobs, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list blobs: %w", err)
	}
	for _, a := range algs {
		if !a.dir {
			continue
		}
		prefixes, err := s.tree.readDir(ctx, filepath.Join(root, a.name))
		if err != nil {
			return nil, nil, fmt.Errorf("list blobs: %w", err)
		}
		for _, p := range prefixes {
			if !p.dir {
				continue
			}
			ents, err := s.tree.readDir(ctx, filepath.Join(root, a.name, p.name))
			if err != nil {
				return nil, nil, fmt.Errorf("list blobs: %w", err)
			}
			for _, e := range ents {
				if err := ctx.Err(); err != nil {
					return nil, nil, err
				}
				dir := filepath.Join(root, a.name, p.name, e.name)
				d := digest.NewDigestFromEncoded(digest.Algorithm(a.name), e.name)
				if d.Validate() != nil || !strings.HasPrefix(e.name, p.name) {
					odd = append(odd, dir)
					continue
				}
				info, err := s.tree.stat(ctx, filepath.Join(dir, "data"))
				if errors.Is(err, fs.ErrNotExist) {
					continue // a folder without data is no blob: distribution says unknown
				}
				if err != nil {
					return nil, nil, fmt.Errorf("list blobs: %w", err)
				}
				blobs[d] = storedBlob{size: info.size, mtime: info.mtime, path: filepath.Join(dir, "data")}
			}
		}
	}
	return blobs, odd, nil
}

// removeDir removes a folder of the layout and the parents it leaves
// empty, up to (not including) stop.
func removeDir(dir, stop string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for p := filepath.Dir(dir); strings.HasPrefix(p, stop+string(filepath.Separator)); p = filepath.Dir(p) {
		if err := os.Remove(p); err != nil {
			break // not empty, or gone: either way, stop
		}
	}
	return nil
}
