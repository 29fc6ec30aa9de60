package regclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// MediaTypeOCIIndex is the media type of an OCI image index, which the
// referrers API and the fallback tags answer.
const MediaTypeOCIIndex = "application/vnd.oci.image.index.v1+json"

// Manifest is what the appliance reads of an image manifest or an index:
// the content it references, and its subject.
type Manifest struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Config       *Descriptor       `json:"config"`
	Layers       []Descriptor      `json:"layers"`
	Manifests    []Descriptor      `json:"manifests"`
	Subject      *Descriptor       `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

// ParseManifest reads a manifest or index. Its media type is the one
// given (the registry's Content-Type), else the one it names itself.
func ParseManifest(mediaType string, payload []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(payload, &m); err != nil {
		return Manifest{}, fmt.Errorf("%w: manifest: %w", ErrProtocol, err)
	}
	if mediaType != "" {
		m.MediaType = mediaType
	}
	for _, d := range append(m.Blobs(), m.Manifests...) {
		if err := d.Digest.Validate(); err != nil {
			return Manifest{}, fmt.Errorf("%w: manifest names the digest %q: %w", ErrProtocol, d.Digest, err)
		}
	}
	return m, nil
}

// Blobs lists the blobs an image manifest references: its config, then
// its layers (none for an index).
func (m Manifest) Blobs() []Descriptor {
	var out []Descriptor
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	return append(out, m.Layers...)
}

// NonDistributable tells whether a layer's media type marks it as one a
// registry need not hold (foreign, non-distributable layers).
func NonDistributable(mediaType string) bool {
	return strings.Contains(mediaType, "foreign") || strings.Contains(mediaType, "nondistributable")
}

// ArtifactTypeOf is what a referrer is, as the referrers API lists it:
// its artifactType, else its config's media type.
func (m Manifest) ArtifactTypeOf() string {
	if m.ArtifactType != "" {
		return m.ArtifactType
	}
	if m.Config != nil {
		return m.Config.MediaType
	}
	return ""
}

// Index is an OCI image index as the referrers API and the fallback
// tags hold it.
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// ListReferrers lists the manifests in repo whose subject is d: through
// the referrers API where the registry serves it, else from the fallback
// tag's index (none when there is no such tag).
func (c *Client) ListReferrers(ctx context.Context, repo string, d digest.Digest) ([]Descriptor, error) {
	list, supported, err := c.Referrers(ctx, repo, d)
	if err != nil || supported {
		return list, err
	}
	_, payload, err := c.GetManifest(ctx, repo, FallbackTag(d))
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var idx Index
	if err := json.Unmarshal(payload, &idx); err != nil {
		return nil, &Error{Op: "read fallback tag", Target: c.Host() + "/" + repo + ":" + FallbackTag(d), Err: fmt.Errorf("%w: %w", ErrProtocol, err)}
	}
	return idx.Manifests, nil
}
