package storage

import (
	"context"
	_ "crypto/sha512" // sha512 digests (go-digest needs the hash linked in)
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
)

// references is what one stored manifest references. Manifests are content
// addressed, so what a digest references never changes: they are cached
// by digest.
type references struct {
	blobs    []blobRef       // config, then layers
	children []digest.Digest // index entries
	subject  digest.Digest   // "" when none
}

// blobRef is one config or layer a manifest names.
type blobRef struct {
	digest digest.Digest
	size   int64
	kind   string // "config" or "layer"
	// foreign: a non-distributable layer, which may be absent.
	foreign bool
}

// maxManifestBytes bounds a manifest read for its references
// (distribution refuses to store larger ones).
const maxManifestBytes = 4 << 20

type manifestJSON struct {
	MediaType string           `json:"mediaType"`
	Config    *descriptorJSON  `json:"config"`
	Layers    []descriptorJSON `json:"layers"`
	Manifests []descriptorJSON `json:"manifests"`
	Subject   *descriptorJSON  `json:"subject"`
	// Blobs is the OCI artifact manifest's list (a draft of image-spec
	// 1.1 that some registries and tools still write).
	Blobs []descriptorJSON `json:"blobs"`
}

type descriptorJSON struct {
	MediaType string   `json:"mediaType"`
	Digest    string   `json:"digest"`
	Size      int64    `json:"size"`
	URLs      []string `json:"urls"`
}

// errNotManifest: the stored bytes of a manifest revision do not parse.
var errNotManifest = errors.New("not a manifest")

// parseRefs reads what a manifest's bytes reference.
func parseRefs(payload []byte) (*references, error) {
	var m manifestJSON
	if err := json.Unmarshal(payload, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotManifest, err)
	}
	out := &references{}
	parse := func(what string, s string) (digest.Digest, error) {
		d, err := digest.Parse(s)
		if err != nil {
			return "", fmt.Errorf("%w: %s digest %q: %w", errNotManifest, what, s, err)
		}
		return d, nil
	}
	if m.Config != nil {
		d, err := parse("config", m.Config.Digest)
		if err != nil {
			return nil, err
		}
		out.blobs = append(out.blobs, blobRef{digest: d, size: m.Config.Size, kind: "config"})
	}
	for _, l := range append(m.Layers, m.Blobs...) {
		d, err := parse("layer", l.Digest)
		if err != nil {
			return nil, err
		}
		out.blobs = append(out.blobs, blobRef{digest: d, size: l.Size, kind: "layer", foreign: nonDistributable(l)})
	}
	for _, c := range m.Manifests {
		d, err := parse("index entry", c.Digest)
		if err != nil {
			return nil, err
		}
		out.children = append(out.children, d)
	}
	if m.Subject != nil {
		d, err := parse("subject", m.Subject.Digest)
		if err != nil {
			return nil, err
		}
		out.subject = d
	}
	return out, nil
}

// nonDistributable tells whether a layer may be absent: foreign and
// non-distributable media types, and layers with URLs to fetch them from.
func nonDistributable(d descriptorJSON) bool {
	return strings.Contains(d.MediaType, "foreign") || strings.Contains(d.MediaType, "nondistributable") || len(d.URLs) > 0
}

// referencesCache keeps the parsed references of manifests by digest.
type referencesCache struct {
	mu sync.Mutex
	m  map[digest.Digest]*references
}

// maxCachedRefs bounds the cache; it is emptied when full (a walk then
// reads manifests again, nothing more).
const maxCachedRefs = 200000

// manifestRefs reads (or recalls) what the manifest stored as blob d
// references. The error wraps fs.ErrNotExist when the blob is gone and
// errNotManifest when its bytes do not parse.
func (s *Store) manifestRefs(ctx context.Context, d digest.Digest) (*references, error) {
	c := &s.parsed
	c.mu.Lock()
	if rf, ok := c.m[d]; ok {
		c.mu.Unlock()
		return rf, nil
	}
	c.mu.Unlock()
	payload, err := s.readBlobFile(ctx, d, maxManifestBytes)
	if err != nil {
		return nil, err
	}
	if d.Algorithm().FromBytes(payload) != d {
		// The bytes are not the manifest's (fsck names the blob); what
		// they reference must not be trusted, nor cached.
		return nil, fmt.Errorf("manifest %s: %w", d, ErrDigestMismatch)
	}
	rf, err := parseRefs(payload)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedRefs {
		c.m = map[digest.Digest]*references{}
	}
	c.m[d] = rf
	c.mu.Unlock()
	return rf, nil
}

// readBlobFile reads a whole (small) blob from disk.
func (s *Store) readBlobFile(ctx context.Context, d digest.Digest, limit int64) ([]byte, error) {
	if d.Validate() != nil {
		return nil, fmt.Errorf("read blob %q: %w", d, fs.ErrInvalid)
	}
	f, err := s.tree.open(ctx, s.BlobDataPath(d))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("read blob %s: more than %d bytes: %w", d, limit, errNotManifest)
	}
	return data, nil
}

// repoGraph is one repository's manifests and what reaches them.
type repoGraph struct {
	repo      *storedRepo
	refs      map[digest.Digest]*references // every readable revision
	unread    map[digest.Digest]error       // revisions that could not be read or parsed
	referrers map[digest.Digest][]digest.Digest
}

// graphOf reads the references of every manifest revision of a repository.
func (s *Store) graphOf(ctx context.Context, sr *storedRepo) *repoGraph {
	g := &repoGraph{repo: sr, refs: map[digest.Digest]*references{}, unread: map[digest.Digest]error{}, referrers: map[digest.Digest][]digest.Digest{}}
	for d, l := range sr.revisions {
		if l.bad != nil {
			g.unread[d] = l.bad
			continue
		}
		rf, err := s.manifestRefs(ctx, d)
		if err != nil {
			g.unread[d] = err
			continue
		}
		g.refs[d] = rf
		if rf.subject != "" {
			g.referrers[rf.subject] = append(g.referrers[rf.subject], d)
		}
	}
	return g
}

// reach returns every manifest of the repository reachable from roots:
// through index entries, and from a subject to its referrers. Digests
// the repository does not hold are left out.
func (g *repoGraph) reach(roots []digest.Digest) map[digest.Digest]bool {
	seen := map[digest.Digest]bool{}
	stack := append([]digest.Digest(nil), roots...)
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[d] {
			continue
		}
		if _, held := g.repo.revisions[d]; !held {
			continue
		}
		seen[d] = true
		if rf := g.refs[d]; rf != nil {
			stack = append(stack, rf.children...)
		}
		stack = append(stack, g.referrers[d]...)
	}
	return seen
}

// tagRoots lists the manifests the repository's tags name.
func (g *repoGraph) tagRoots() []digest.Digest {
	var out []digest.Digest
	for _, l := range g.repo.tags {
		if l.target != "" {
			out = append(out, l.target)
		}
	}
	return out
}

// referenced adds to set every manifest in reached and every blob they
// reference.
func (g *repoGraph) referenced(reached map[digest.Digest]bool, set map[digest.Digest]bool) {
	for d := range reached {
		set[d] = true
		if rf := g.refs[d]; rf != nil {
			for _, b := range rf.blobs {
				set[b.digest] = true
			}
		}
	}
}
