package importer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/registry"
)

// plan is what an import will make visible, in order: manifests (children
// before parents, each after the blobs it references) and then tags.
type plan struct {
	format    string
	manifests []planManifest
	tags      []planTag
	seen      map[string]bool // repo@digest already planned
	tagIndex  map[string]digest.Digest
}

type planManifest struct {
	repo      string
	mediaType string
	payload   []byte
	digest    digest.Digest
	blobs     []digest.Digest        // config and layers to link first
	optional  map[digest.Digest]bool // non-distributable layers, which may be absent
	subject   *descriptor            // for referrers
	desc      descriptor             // as a referrer would list it
	children  []digest.Digest        // index children, which must be planned or present
}

type planTag struct {
	repo, tag string
	digest    digest.Digest
}

func newPlan(format string) *plan {
	return &plan{format: format, seen: map[string]bool{}, tagIndex: map[string]digest.Digest{}}
}

func (p *plan) addManifest(m planManifest) {
	key := m.repo + "@" + m.digest.String()
	if p.seen[key] {
		return
	}
	p.seen[key] = true
	p.manifests = append(p.manifests, m)
}

func (p *plan) addTag(repo, tag string, d digest.Digest) error {
	key := repo + ":" + tag
	if old, ok := p.tagIndex[key]; ok {
		if old != d {
			return fmt.Errorf("%w: %s would name both %s and %s", ErrTagConflict, key, old, d)
		}
		return nil
	}
	if !registry.ValidTag(tag) {
		return fmt.Errorf("%w: invalid tag %q", ErrInvalidJSON, tag)
	}
	p.tagIndex[key] = d
	p.tags = append(p.tags, planTag{repo: repo, tag: tag, digest: d})
	return nil
}

func (p *plan) repos() []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range p.manifests {
		if !seen[m.repo] {
			seen[m.repo] = true
			out = append(out, m.repo)
		}
	}
	return out
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     json.RawMessage   `json:"platform,omitempty"`
}

// manifestDoc is the part of an image manifest or index the importer reads.
type manifestDoc struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *descriptor       `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Manifests     []descriptor      `json:"manifests"`
	Subject       *descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// Media types the importer distinguishes.
const (
	mtOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerConfig   = "application/vnd.docker.container.image.v1+json"
	mtDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar"
	mtDockerLayerGz  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

func isIndex(mt string) bool { return mt == mtOCIIndex || mt == mtDockerList }

func isForeign(mt string) bool {
	return strings.Contains(mt, "foreign") || strings.Contains(mt, "nondistributable")
}

// parseManifest reads a manifest or index and checks its shape; mediaType is
// what the referrer (tar entry or descriptor) says, used when the document
// carries none.
func parseManifest(mediaType string, raw []byte) (manifestDoc, string, error) {
	var doc manifestDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return doc, "", fmt.Errorf("%w: %w", ErrInvalidJSON, err)
	}
	mt := doc.MediaType
	if mt == "" {
		mt = mediaType
	}
	if mt == "" {
		switch {
		case doc.Manifests != nil:
			mt = mtOCIIndex
		default:
			mt = mtOCIManifest
		}
	}
	if doc.MediaType != "" && mediaType != "" && doc.MediaType != mediaType {
		return doc, "", fmt.Errorf("%w: manifest says media type %s, its descriptor %s", ErrInvalidJSON, doc.MediaType, mediaType)
	}
	if doc.SchemaVersion != 2 {
		return doc, "", fmt.Errorf("%w: schemaVersion %d (only 2 is supported)", ErrInvalidJSON, doc.SchemaVersion)
	}
	if isIndex(mt) {
		for _, m := range doc.Manifests {
			if _, err := digest.Parse(m.Digest); err != nil {
				return doc, "", fmt.Errorf("%w: index entry digest %q", ErrInvalidJSON, m.Digest)
			}
		}
		return doc, mt, nil
	}
	if doc.Config == nil {
		return doc, "", fmt.Errorf("%w: image manifest without config", ErrInvalidJSON)
	}
	for _, d := range append([]descriptor{*doc.Config}, doc.Layers...) {
		if _, err := digest.Parse(d.Digest); err != nil {
			return doc, "", fmt.Errorf("%w: descriptor digest %q", ErrInvalidJSON, d.Digest)
		}
		if d.Size < 0 {
			return doc, "", fmt.Errorf("%w: descriptor %s has a negative size", ErrInvalidJSON, d.Digest)
		}
	}
	return doc, mt, nil
}

// imageManifest plans an image manifest in repo: its config and layers.
func imageManifest(repo, mt string, raw []byte, d digest.Digest, doc manifestDoc) planManifest {
	m := planManifest{repo: repo, mediaType: mt, payload: raw, digest: d, optional: map[digest.Digest]bool{},
		subject: doc.Subject, desc: descriptor{MediaType: mt, Digest: d.String(), Size: int64(len(raw)), ArtifactType: artifactType(doc), Annotations: doc.Annotations}}
	if doc.Config != nil {
		m.blobs = append(m.blobs, digest.Digest(doc.Config.Digest))
	}
	for _, l := range doc.Layers {
		ld := digest.Digest(l.Digest)
		m.blobs = append(m.blobs, ld)
		if isForeign(l.MediaType) || len(l.URLs) > 0 {
			m.optional[ld] = true
		}
	}
	for _, c := range doc.Manifests {
		m.children = append(m.children, digest.Digest(c.Digest))
	}
	return m
}

func artifactType(doc manifestDoc) string {
	if doc.ArtifactType != "" {
		return doc.ArtifactType
	}
	if doc.Config != nil {
		return doc.Config.MediaType
	}
	return ""
}

// validRepo tells whether name is a repository name the registry accepts.
func validRepo(name string) bool {
	_, err := reference.WithName(name)
	return err == nil && !strings.Contains(name, ":") && !strings.Contains(name, "@")
}

// destination maps a name found in an archive (a tag, or a reference with
// or without a registry host) to a repository and tag of this registry.
func (s *session) destination(name string) (repo, tag string, err error) {
	if name == "" {
		return "", "", errors.New("empty name")
	}
	if !strings.ContainsAny(name, "/:@") {
		// A bare tag, as OCI layouts made by skopeo and crane write them.
		if s.req.ToRepo == "" {
			return "", "", fmt.Errorf("%w: %q is only a tag; give --to-repo", ErrInvalidRequest, name)
		}
		return s.req.ToRepo, name, nil
	}
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", "", fmt.Errorf("%w: image name %q: %w", ErrInvalidJSON, name, err)
	}
	if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	if !s.req.KeepNames {
		return s.req.ToRepo, tag, nil
	}
	repo = reference.Path(named)
	if s.req.ToRepo != "" {
		repo = s.req.ToRepo + "/" + repo
	}
	if !validRepo(repo) {
		return "", "", fmt.Errorf("%w: %q maps to the invalid repository %q", ErrInvalidRequest, name, repo)
	}
	return repo, tag, nil
}
