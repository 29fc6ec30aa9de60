package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Kinds of Problem. Repairable ones are provably broken, and Repair
// removes them; the others need content brought in again (an import).
const (
	// ProblemCorruptBlob: a blob's bytes do not hash to its name. Repairable.
	ProblemCorruptBlob = "corrupt-blob"
	// ProblemUnreadableBlob: a blob cannot be read (an I/O error).
	ProblemUnreadableBlob = "unreadable-blob"
	// ProblemStrayPath: a folder among the blobs that names no digest.
	ProblemStrayPath = "stray-path"
	// ProblemDanglingTag: a tag names a manifest the repository does not
	// hold, or its link cannot be read. Repairable.
	ProblemDanglingTag = "dangling-tag"
	// ProblemDanglingLink: a manifest revision or layer link of a
	// repository names a blob that is not stored, or not its own digest.
	// Repairable.
	ProblemDanglingLink = "dangling-link"
	// ProblemInvalidManifest: a stored manifest does not parse.
	ProblemInvalidManifest = "invalid-manifest"
	// ProblemMissingBlob: a manifest's config or (distributable) layer is
	// not stored, or not linked into the manifest's repository.
	ProblemMissingBlob = "missing-blob"
	// ProblemSizeMismatch: a manifest gives a blob a size it does not have.
	ProblemSizeMismatch = "size-mismatch"
	// WarningMissingChild: an index lists a manifest the repository does
	// not hold: a platform a bundle carried in part, or one lost.
	WarningMissingChild = "missing-child"
	// WarningMissingSubject: a referrer's subject is not in its
	// repository (the OCI spec lets a referrer arrive first).
	WarningMissingSubject = "missing-subject"
)

// Problem is one thing Check found wrong.
type Problem struct {
	Kind       string `json:"kind"`
	Repository string `json:"repository,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Tag        string `json:"tag,omitempty"`
	Detail     string `json:"detail"`
	// Repairable: Repair removes what is broken (the blob, the tag, the link).
	Repairable bool `json:"repairable"`
}

// CheckOptions say how thorough Check is.
type CheckOptions struct {
	// SkipHashes checks links, tags and references against what is
	// stored without hashing every blob (manifests are still hashed).
	SkipHashes bool
}

// CheckReport is what Check looked at and found.
type CheckReport struct {
	Repositories int   `json:"repositories"`
	Manifests    int   `json:"manifests"`
	Tags         int   `json:"tags"`
	Blobs        int   `json:"blobs"`
	BlobBytes    int64 `json:"blob_bytes"`
	// BlobsHashed is how many blobs were hashed (all, unless SkipHashes).
	BlobsHashed int       `json:"blobs_hashed"`
	Problems    []Problem `json:"problems"`
	// Warnings are states that may be intended (see the Warning kinds).
	Warnings []Problem `json:"warnings"`
}

// Check verifies the registry's storage: every blob's bytes against its
// name (sha256 and sha512), every manifest's references (config, layers
// (non-distributable ones may be absent), index children, subject),
// every tag (it names a stored manifest) and every link of every
// repository. It reports every problem, changes nothing, and runs
// beside pulls, pushes and imports (it holds a gc turn, so gc waits);
// a problem seen while something was being written is checked again
// before it is reported. Staging repositories are left to gc.
func (s *Store) Check(ctx context.Context, opts CheckOptions) (CheckReport, error) {
	release, err := s.turns.Hold(ctx, "fsck")
	if err != nil {
		return CheckReport{}, err
	}
	defer release()
	rep := CheckReport{Problems: []Problem{}, Warnings: []Problem{}}
	blobs, odd, err := s.listBlobs(ctx)
	if err != nil {
		return rep, err
	}
	for _, p := range odd {
		rep.Problems = append(rep.Problems, Problem{Kind: ProblemStrayPath, Detail: p + " is among the blobs but names no digest"})
	}
	rep.Blobs = len(blobs)
	for _, b := range blobs {
		rep.BlobBytes += b.size
	}
	bad := map[digest.Digest]Problem{} // corrupt or unreadable blobs
	if !opts.SkipHashes {
		if bad, err = s.hashAll(ctx, blobs); err != nil {
			return rep, err
		}
		rep.BlobsHashed = len(blobs)
	}
	// stored tells whether a blob is there and sound, asking the disk again
	// for one written since the listing.
	stored := func(d digest.Digest) (storedBlob, bool) {
		if _, broken := bad[d]; broken {
			return storedBlob{}, false
		}
		if b, ok := blobs[d]; ok {
			return b, true
		}
		if d.Validate() != nil {
			return storedBlob{}, false
		}
		info, err := s.tree.stat(ctx, s.BlobDataPath(d))
		if err != nil {
			return storedBlob{}, false
		}
		b := storedBlob{size: info.size, mtime: info.mtime, path: s.BlobDataPath(d)}
		blobs[d] = b
		return b, true
	}
	repos, err := s.listRepos(ctx)
	if err != nil {
		return rep, err
	}
	usedBy := map[digest.Digest][]string{} // blob -> repo@manifest, for corrupt blobs' details
	for _, repo := range repos {
		if IsStaging(repo) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if err := s.checkRepo(ctx, repo, stored, bad, usedBy, &rep); err != nil {
			return rep, err
		}
	}
	for d, p := range bad {
		if users := usedBy[d]; len(users) > 0 {
			sort.Strings(users)
			p.Detail += "; referenced by " + strings.Join(firstOf(users, 3), ", ")
		} else {
			p.Detail += "; no manifest references it"
		}
		rep.Problems = append(rep.Problems, p)
	}
	sortProblems(rep.Problems)
	sortProblems(rep.Warnings)
	return rep, nil
}

func (s *Store) checkRepo(ctx context.Context, repo string, stored func(digest.Digest) (storedBlob, bool), bad map[digest.Digest]Problem, usedBy map[digest.Digest][]string, rep *CheckReport) error {
	sr, err := s.readRepo(ctx, repo)
	if err != nil {
		return err
	}
	rep.Repositories++
	rep.Manifests += len(sr.revisions)
	rep.Tags += len(sr.tags)
	add := func(p Problem) { p.Repository = repo; rep.Problems = append(rep.Problems, p) }
	warn := func(p Problem) { p.Repository = repo; rep.Warnings = append(rep.Warnings, p) }

	// Links: each must name its own digest, and the blob must be stored.
	hasRevision := func(d digest.Digest) bool {
		l, ok := sr.revisions[d]
		if !ok {
			l = s.readLink(ctx, s.repoPath(repo, "_manifests", "revisions", d.Algorithm().String(), d.Encoded()))
			if l.bad != nil || l.target != d {
				return false
			}
			sr.revisions[d] = l
		}
		_, ok = stored(d)
		return ok && l.bad == nil
	}
	for _, kind := range []struct {
		what  string
		links map[digest.Digest]link
		parts []string
	}{{"manifest revision", sr.revisions, []string{"_manifests", "revisions"}}, {"layer", sr.layers, []string{"_layers"}}} {
		for d, l := range kind.links {
			reason := ""
			switch _, ok := stored(d); {
			case l.bad != nil:
				reason = fmt.Sprintf("the %s link cannot be read as its digest: %v", kind.what, l.bad)
			case !ok:
				if _, broken := bad[d]; broken {
					continue // the blob's own problem says it all
				}
				reason = fmt.Sprintf("the %s link names a blob that is not stored", kind.what)
			default:
				continue
			}
			// Written or removed since the listing?
			now := s.readLink(ctx, l.dir)
			if now.bad == nil && now.target == d {
				if _, ok := stored(d); ok {
					continue
				}
			} else if errors.Is(now.bad, fs.ErrNotExist) {
				continue
			}
			add(Problem{Kind: ProblemDanglingLink, Digest: d.String(), Detail: reason, Repairable: true})
		}
	}

	// Tags.
	for tag, l := range sr.tags {
		if l.bad == nil {
			usedBy[l.target] = append(usedBy[l.target], repo+":"+tag)
			if _, broken := bad[l.target]; broken || hasRevision(l.target) {
				continue // a corrupt manifest is the blob's problem
			}
		}
		now := s.readLink(ctx, filepath.Join(l.dir, "current"))
		if errors.Is(now.bad, fs.ErrNotExist) {
			continue // removed since the listing
		}
		if now.bad == nil && hasRevision(now.target) {
			continue
		}
		p := Problem{Kind: ProblemDanglingTag, Tag: tag, Repairable: true}
		if now.bad != nil {
			p.Detail = fmt.Sprintf("the tag's link cannot be read: %v", now.bad)
		} else {
			p.Digest = now.target.String()
			p.Detail = "the tag names a manifest the repository does not hold"
		}
		add(p)
	}

	// Manifests and what they reference.
	for d, l := range sr.revisions {
		if l.bad != nil {
			continue
		}
		if _, ok := stored(d); !ok {
			continue // a dangling link, reported above
		}
		rf, err := s.manifestRefs(ctx, d)
		switch {
		case errors.Is(err, ErrDigestMismatch):
			if _, known := bad[d]; !known {
				bad[d] = Problem{Kind: ProblemCorruptBlob, Digest: d.String(), Detail: "the manifest's bytes do not hash to its digest", Repairable: true}
			}
			continue
		case errors.Is(err, errNotManifest):
			add(Problem{Kind: ProblemInvalidManifest, Digest: d.String(), Detail: err.Error()})
			continue
		case errors.Is(err, fs.ErrNotExist):
			continue // removed since the listing
		case err != nil:
			add(Problem{Kind: ProblemUnreadableBlob, Digest: d.String(), Detail: err.Error()})
			continue
		}
		for _, b := range rf.blobs {
			usedBy[b.digest] = append(usedBy[b.digest], repo+"@"+d.String())
			sb, ok := stored(b.digest)
			if !ok {
				if _, broken := bad[b.digest]; broken || b.foreign {
					continue
				}
				add(Problem{Kind: ProblemMissingBlob, Digest: d.String(), Detail: fmt.Sprintf("its %s %s is not stored", b.kind, b.digest)})
				continue
			}
			if ll, linked := sr.layers[b.digest]; !linked || ll.bad != nil {
				if now := s.readLink(ctx, s.repoPath(repo, "_layers", b.digest.Algorithm().String(), b.digest.Encoded())); now.bad != nil || now.target != b.digest {
					add(Problem{Kind: ProblemMissingBlob, Digest: d.String(), Detail: fmt.Sprintf("its %s %s is stored but not linked into %s (a pull gets 404)", b.kind, b.digest, repo)})
					continue
				}
			}
			if b.size > 0 && sb.size != b.size {
				add(Problem{Kind: ProblemSizeMismatch, Digest: d.String(), Detail: fmt.Sprintf("its %s %s is %d bytes, the manifest says %d", b.kind, b.digest, sb.size, b.size)})
			}
		}
		for _, c := range rf.children {
			usedBy[c] = append(usedBy[c], repo+"@"+d.String())
			if _, broken := bad[c]; !broken && !hasRevision(c) {
				warn(Problem{Kind: WarningMissingChild, Digest: d.String(), Detail: fmt.Sprintf("the index lists %s, which the repository does not hold (a platform carried in part, or lost)", c)})
			}
		}
		if _, broken := bad[rf.subject]; rf.subject != "" && !broken && !hasRevision(rf.subject) {
			warn(Problem{Kind: WarningMissingSubject, Digest: d.String(), Detail: fmt.Sprintf("the referrer's subject %s is not in the repository", rf.subject)})
		}
	}
	return nil
}

// hashAll hashes every blob, a few at a time, and returns those whose
// bytes do not hash to their name or cannot be read.
func (s *Store) hashAll(ctx context.Context, blobs map[digest.Digest]storedBlob) (map[digest.Digest]Problem, error) {
	bad := map[digest.Digest]Problem{}
	var mu sync.Mutex
	work := make(chan digest.Digest)
	var wg sync.WaitGroup
	for range min(4, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for d := range work {
				p, ok := s.verifyBlob(ctx, d, blobs[d].path, buf)
				if !ok {
					mu.Lock()
					bad[d] = p
					mu.Unlock()
				}
			}
		}()
	}
	keys := make([]digest.Digest, 0, len(blobs))
	for d := range blobs {
		keys = append(keys, d)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	var err error
feed:
	for _, d := range keys {
		select {
		case work <- d:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	return bad, err
}

// verifyBlob hashes one blob file. It is sound when it hashes to d, or
// when it is gone (removed since the listing: nothing to report).
func (s *Store) verifyBlob(ctx context.Context, d digest.Digest, path string, buf []byte) (Problem, bool) {
	f, err := s.tree.open(ctx, path)
	if errors.Is(err, fs.ErrNotExist) {
		return Problem{}, true
	}
	if err != nil {
		return Problem{Kind: ProblemUnreadableBlob, Digest: d.String(), Detail: err.Error()}, false
	}
	defer f.Close()
	h := d.Algorithm().Hash()
	if _, err := io.CopyBuffer(h, readerCtx{ctx, f}, buf); err != nil {
		if ctx.Err() != nil {
			return Problem{}, true
		}
		return Problem{Kind: ProblemUnreadableBlob, Digest: d.String(), Detail: err.Error()}, false
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return Problem{Kind: ProblemCorruptBlob, Digest: d.String(), Detail: "the blob's bytes hash to " + got.String(), Repairable: true}, false
	}
	return Problem{}, true
}

// readerCtx stops a long read when ctx ends.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.Repository != b.Repository {
			return a.Repository < b.Repository
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Digest != b.Digest {
			return a.Digest < b.Digest
		}
		return a.Tag < b.Tag
	})
}

func firstOf(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
}

// Removal is one thing Repair or GC removed (or, in a dry run, would).
type Removal struct {
	// What: "blob", "tag", "manifest" (a repository's manifest revision,
	// with its tag history entries), "manifest-link", "layer-link",
	// "staging-repository".
	What       string `json:"what"`
	Repository string `json:"repository,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Tag        string `json:"tag,omitempty"`
	Size       int64  `json:"size,omitempty"`
	Reason     string `json:"reason"`
}

// Repair removes what is provably broken, and nothing else, holding the
// registry alone (writers wait; pulls go on): every blob named in
// problems as corrupt whose bytes still do not hash to its name; then,
// in every repository, links that name a blob that is not stored (or
// not their own digest), and tags that name a manifest the repository
// does not hold, including those the first step left dangling. It
// returns every removal. Content it removes is gone: Check afterwards
// names the manifests that lack it, to be imported again.
func (s *Store) Repair(ctx context.Context, problems []Problem) ([]Removal, error) {
	release, err := s.turns.Exclusive(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	ctx = context.WithoutCancel(ctx) // ctx bounded the wait; the repair is short
	out := []Removal{}
	blobsRoot := s.v2Path("blobs")
	buf := make([]byte, 1<<20)
	seen := map[digest.Digest]bool{}
	for _, p := range problems {
		if p.Kind != ProblemCorruptBlob {
			continue
		}
		d, err := digest.Parse(p.Digest)
		if err != nil || seen[d] {
			continue
		}
		seen[d] = true
		info, err := s.tree.stat(ctx, s.BlobDataPath(d))
		if err != nil {
			continue
		}
		again, sound := s.verifyBlob(ctx, d, s.BlobDataPath(d), buf)
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if sound {
			continue
		}
		if again.Kind != ProblemCorruptBlob {
			continue // unreadable now: not proven corrupt
		}
		if err := s.tree.remove(ctx, s.blobDir(d), blobsRoot); err != nil {
			return out, fmt.Errorf("repair: remove blob %s: %w", d, err)
		}
		out = append(out, Removal{What: "blob", Digest: d.String(), Size: info.size, Reason: again.Detail})
		s.log.Warn("fsck removed a corrupt blob", "digest", d, "detail", again.Detail)
	}
	repos, err := s.listRepos(ctx)
	if err != nil {
		return out, err
	}
	for _, repo := range repos {
		if IsStaging(repo) {
			continue
		}
		removed, err := s.repairRepo(ctx, repo)
		out = append(out, removed...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (s *Store) repairRepo(ctx context.Context, repo string) ([]Removal, error) {
	sr, err := s.readRepo(ctx, repo)
	if err != nil {
		return nil, err
	}
	var out []Removal
	changed := false
	defer func() {
		if changed {
			s.changes.Invalidate(repo)
		}
	}()
	root := s.repoPath(repo)
	blobThere := func(d digest.Digest) bool {
		_, err := s.tree.stat(ctx, s.BlobDataPath(d))
		return err == nil
	}
	for _, kind := range []struct {
		what  string
		links map[digest.Digest]link
	}{{"manifest-link", sr.revisions}, {"layer-link", sr.layers}} {
		for _, d := range sortedDigests(kind.links) {
			l := kind.links[d]
			reason := ""
			switch {
			case l.bad != nil:
				reason = "the link cannot be read as its digest: " + l.bad.Error()
			case !blobThere(d):
				reason = "the link names a blob that is not stored"
			default:
				continue
			}
			if err := s.tree.remove(ctx, l.dir, root); err != nil {
				return out, fmt.Errorf("repair: remove %s %s of %s: %w", kind.what, d, repo, err)
			}
			changed = true
			delete(kind.links, d)
			out = append(out, Removal{What: kind.what, Repository: repo, Digest: d.String(), Reason: reason})
			s.log.Warn("fsck removed a dangling link", "repository", repo, "digest", d, "kind", kind.what)
		}
	}
	tags := make([]string, 0, len(sr.tags))
	for t := range sr.tags {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	for _, tag := range tags {
		l := sr.tags[tag]
		reason := ""
		if l.bad != nil {
			reason = "the tag's link cannot be read: " + l.bad.Error()
		} else if _, held := sr.revisions[l.target]; !held {
			reason = "the tag names a manifest the repository does not hold"
		} else {
			continue
		}
		if err := s.tree.remove(ctx, l.dir, root); err != nil {
			return out, fmt.Errorf("repair: remove tag %s:%s: %w", repo, tag, err)
		}
		changed = true
		rm := Removal{What: "tag", Repository: repo, Tag: tag, Reason: reason}
		if l.target != "" {
			rm.Digest = l.target.String()
		}
		out = append(out, rm)
		s.log.Warn("fsck removed a dangling tag", "repository", repo, "tag", tag, "digest", l.target)
	}
	return out, ctx.Err()
}

func sortedDigests[V any](m map[digest.Digest]V) []digest.Digest {
	out := make([]digest.Digest, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
