package promote

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/registry"
)

// Content is the appliance's registry storage as promotion reads it:
// straight from disk, not over HTTP from itself.
type Content interface {
	Repositories(ctx context.Context) ([]string, error)
	Tags(ctx context.Context, repo string) ([]string, error)
	TagDigest(ctx context.Context, repo, tag string) (digest.Digest, bool, error)
	GetManifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error)
	ManifestDigests(ctx context.Context, repo string) ([]digest.Digest, error)
}

// Blobs reads the appliance's blobs.
type Blobs interface {
	StatBlob(ctx context.Context, d digest.Digest) (registry.Descriptor, bool, error)
	ReadBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, error)
}

// repoContent is what one repository holds, as promotion and parity see
// it: its tags, every manifest they reach, and the referrers of those.
type repoContent struct {
	name      string
	tags      []tagRef                        // ordinary tags, sorted
	manifests []*manifestNode                 // children before parents, subjects before referrers
	byDigest  map[digest.Digest]*manifestNode // the same, by digest
	referrers []referrer                      // every referrer of a promoted manifest
	fallback  map[string]digest.Digest        // referrers fallback tags (sha256-<hex>) and the index each names
	absent    map[digest.Digest]digest.Digest // index child -> index, for children not stored (platforms not carried)
	untagged  int                             // manifests neither tagged, reached, nor a referrer: not promoted
}

type tagRef struct {
	tag    string
	digest digest.Digest
}

type manifestNode struct {
	digest       digest.Digest
	mediaType    string
	payload      []byte
	blobs        []blobRef
	children     []digest.Digest
	subject      digest.Digest // "" when none
	artifactType string
	annotations  map[string]string
}

type blobRef struct {
	digest    digest.Digest
	size      int64
	mediaType string
	foreign   bool // non-distributable: may be absent, never pushed when absent
}

// referrer is a manifest whose subject is another manifest.
type referrer struct {
	Subject      digest.Digest `json:"subject"`
	Digest       digest.Digest `json:"digest"`
	ArtifactType string        `json:"artifact_type,omitempty"`
}

func parseNode(d digest.Digest, mediaType string, payload []byte) (*manifestNode, error) {
	m, err := regclient.ParseManifest(mediaType, payload)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	n := &manifestNode{digest: d, mediaType: m.MediaType, payload: payload, annotations: m.Annotations, artifactType: m.ArtifactTypeOf()}
	for _, b := range m.Blobs() {
		n.blobs = append(n.blobs, blobRef{digest: b.Digest, size: b.Size, mediaType: b.MediaType, foreign: regclient.NonDistributable(b.MediaType)})
	}
	for _, c := range m.Manifests {
		n.children = append(n.children, c.Digest)
	}
	if m.Subject != nil {
		n.subject = m.Subject.Digest
	}
	return n, nil
}

// maxDepth bounds index nesting.
const maxDepth = 8

// loadRepo reads a repository's tags, the manifests they reach (children
// first) and the referrers of those, from the appliance's storage.
func loadRepo(ctx context.Context, c Content, repo string) (*repoContent, error) {
	rc := &repoContent{name: repo, byDigest: map[digest.Digest]*manifestNode{}, fallback: map[string]digest.Digest{}, absent: map[digest.Digest]digest.Digest{}}
	tags, err := c.Tags(ctx, repo)
	if err != nil {
		return nil, err
	}
	for _, t := range tags {
		d, ok, err := c.TagDigest(ctx, repo, t)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // removed while listing
		}
		if regclient.IsFallbackTag(t) {
			rc.fallback[t] = d
			continue
		}
		rc.tags = append(rc.tags, tagRef{tag: t, digest: d})
	}
	sort.Slice(rc.tags, func(i, j int) bool { return rc.tags[i].tag < rc.tags[j].tag })
	for _, t := range rc.tags {
		if err := rc.visit(ctx, c, t.digest, "", 0); err != nil {
			return nil, err
		}
	}
	if err := rc.findReferrers(ctx, c); err != nil {
		return nil, err
	}
	return rc, nil
}

// visit loads d and, first, everything it references.
func (rc *repoContent) visit(ctx context.Context, c Content, d, parent digest.Digest, depth int) error {
	if _, ok := rc.byDigest[d]; ok {
		return nil
	}
	if depth > maxDepth {
		return fmt.Errorf("read %s@%s: indexes nested deeper than %d", rc.name, d, maxDepth)
	}
	mt, payload, err := c.GetManifest(ctx, rc.name, d)
	if err != nil {
		if parent != "" {
			// An index carried with only some of its platforms.
			rc.absent[d] = parent
			return nil
		}
		return fmt.Errorf("read %s@%s: %w", rc.name, d, err)
	}
	n, err := parseNode(d, mt, payload)
	if err != nil {
		return fmt.Errorf("read %s: %w", rc.name, err)
	}
	for _, child := range n.children {
		if err := rc.visit(ctx, c, child, d, depth+1); err != nil {
			return err
		}
	}
	rc.byDigest[d] = n
	rc.manifests = append(rc.manifests, n)
	return nil
}

// findReferrers adds, until none is left, the stored manifests whose
// subject is a manifest already promoted (signatures of signatures too).
// Manifests the fallback indexes list count as well.
func (rc *repoContent) findReferrers(ctx context.Context, c Content) error {
	all, err := c.ManifestDigests(ctx, rc.name)
	if err != nil {
		return err
	}
	candidates := map[digest.Digest]*manifestNode{}
	for _, d := range all {
		if _, ok := rc.byDigest[d]; ok {
			continue
		}
		mt, payload, err := c.GetManifest(ctx, rc.name, d)
		if err != nil {
			continue // removed while listing
		}
		n, err := parseNode(d, mt, payload)
		if err != nil || n.subject == "" {
			if err == nil && !rc.isFallbackIndex(d) {
				rc.untagged++
			}
			continue
		}
		candidates[d] = n
	}
	for changed := true; changed; {
		changed = false
		keys := make([]digest.Digest, 0, len(candidates))
		for d := range candidates {
			keys = append(keys, d)
		}
		slices.Sort(keys)
		for _, d := range keys {
			n := candidates[d]
			if _, ok := rc.byDigest[n.subject]; !ok {
				continue
			}
			delete(candidates, d)
			for _, child := range n.children {
				if err := rc.visit(ctx, c, child, d, 1); err != nil {
					return err
				}
			}
			rc.byDigest[d] = n
			rc.manifests = append(rc.manifests, n)
			rc.referrers = append(rc.referrers, referrer{Subject: n.subject, Digest: d, ArtifactType: n.artifactType})
			changed = true
		}
	}
	rc.untagged += len(candidates) // referrers of manifests that are not promoted
	sort.Slice(rc.referrers, func(i, j int) bool {
		if rc.referrers[i].Subject != rc.referrers[j].Subject {
			return rc.referrers[i].Subject < rc.referrers[j].Subject
		}
		return rc.referrers[i].Digest < rc.referrers[j].Digest
	})
	return nil
}

func (rc *repoContent) isFallbackIndex(d digest.Digest) bool {
	for _, fd := range rc.fallback {
		if fd == d {
			return true
		}
	}
	return false
}

// blobsToPush lists the repository's distinct blobs, in manifest order.
func (rc *repoContent) blobsToPush() []blobRef {
	seen := map[digest.Digest]bool{}
	var out []blobRef
	for _, m := range rc.manifests {
		for _, b := range m.blobs {
			if !seen[b.digest] {
				seen[b.digest] = true
				out = append(out, b)
			}
		}
	}
	return out
}
