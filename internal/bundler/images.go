package bundler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-dev/appliance/internal/bundle"
)

// Annotations of index.json entries.
const (
	annotationRefName = "org.opencontainers.image.ref.name"
	annotationKind    = "dev.appliance.bundle.kind"
)

// manifestDoc is the part of a manifest or index the builder walks.
type manifestDoc struct {
	MediaType string          `json:"mediaType"`
	Config    *v1.Descriptor  `json:"config"`
	Layers    []v1.Descriptor `json:"layers"`
	Manifests []v1.Descriptor `json:"manifests"`
}

func isIndex(mt types.MediaType) bool {
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

// fetched is a manifest read from an upstream.
type fetched struct {
	repo      name.Repository
	digest    v1.Hash
	mediaType types.MediaType
	raw       []byte
}

func (f fetched) descriptor() v1.Descriptor {
	return v1.Descriptor{MediaType: f.mediaType, Digest: f.digest, Size: int64(len(f.raw))}
}

// get reads a manifest by reference.
func (b *builder) get(ctx context.Context, ref name.Reference) (fetched, error) {
	d, err := remote.Get(ref, b.up.remote(remote.WithContext(ctx))...)
	if err != nil {
		return fetched{}, explain(ref.String(), err)
	}
	return fetched{repo: ref.Context(), digest: d.Digest, mediaType: d.MediaType, raw: d.Manifest}, nil
}

// optional reads a manifest that may not exist (cosign tags): nil when the
// registry says it does not.
func (b *builder) optional(ctx context.Context, ref name.Reference) (*fetched, error) {
	f, err := b.get(ctx, ref)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &f, nil
}

// tree records a manifest and everything it references: an index's
// children (only the wanted platforms, when platforms are given) and an
// image's config and layers. It returns the platforms it kept.
func (b *builder) tree(ctx context.Context, f fetched, platforms []string, depth int) ([]string, error) {
	if depth > 8 {
		return nil, fmt.Errorf("%s@%s: indexes nested too deep", f.repo, f.digest)
	}
	if err := b.addManifest(f); err != nil {
		return nil, err
	}
	var doc manifestDoc
	if err := json.Unmarshal(f.raw, &doc); err != nil {
		return nil, fmt.Errorf("%s@%s: manifest: %w", f.repo, f.digest, err)
	}
	if !isIndex(f.mediaType) {
		if doc.Config != nil {
			b.need(f.repo, doc.Config.Digest.String(), doc.Config.Size)
		}
		for _, l := range doc.Layers {
			if len(l.URLs) > 0 {
				continue // foreign layers are fetched by the client from their URLs
			}
			b.need(f.repo, l.Digest.String(), l.Size)
		}
		return nil, nil
	}
	var kept, available []string
	for _, c := range doc.Manifests {
		p := platformString(c.Platform)
		available = append(available, p)
		if len(platforms) > 0 && !slices.Contains(platforms, p) && !slices.Contains(platforms, trimVariant(p)) {
			continue
		}
		child, err := b.get(ctx, f.repo.Digest(c.Digest.String()))
		if err != nil {
			return nil, err
		}
		if child.digest != c.Digest {
			return nil, fmt.Errorf("%s: the registry served %s for %s", f.repo, child.digest, c.Digest)
		}
		if _, err := b.tree(ctx, child, nil, depth+1); err != nil {
			return nil, err
		}
		kept = append(kept, p)
	}
	if len(platforms) > 0 && len(kept) == 0 {
		return nil, fmt.Errorf("%s@%s: no platform matches %s (it has %s)", f.repo, f.digest, strings.Join(platforms, ", "), strings.Join(available, ", "))
	}
	return kept, nil
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return "unknown/unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func trimVariant(p string) string {
	if parts := strings.Split(p, "/"); len(parts) == 3 {
		return parts[0] + "/" + parts[1]
	}
	return p
}

// related finds what travels with a manifest: cosign's .sig, .att and
// .sbom tags and OCI referrers, as the spec asks.
func (b *builder) related(ctx context.Context, repo name.Repository, d v1.Hash, spec bundle.ImageSpec) ([]bundle.Related, error) {
	var out []bundle.Related
	for _, c := range []struct {
		on     *bool
		suffix string
		kind   string
	}{{spec.Signatures, ".sig", bundle.RelatedSignature}, {spec.Attestations, ".att", bundle.RelatedAttestation}, {spec.SBOMs, ".sbom", bundle.RelatedSBOM}} {
		if c.on != nil && !*c.on {
			continue
		}
		tag := d.Algorithm + "-" + d.Hex + c.suffix
		f, err := b.optional(ctx, repo.Tag(tag))
		if err != nil {
			return nil, err
		}
		if f == nil {
			continue
		}
		if _, err := b.tree(ctx, *f, nil, 0); err != nil {
			return nil, err
		}
		out = append(out, bundle.Related{Kind: c.kind, Digest: f.digest.String(), Size: int64(len(f.raw)), MediaType: string(f.mediaType), Tag: tag, Source: repo.Tag(tag).String()})
	}
	if spec.Referrers != nil && !*spec.Referrers {
		return out, nil
	}
	idx, err := remote.Referrers(repo.Digest(d.String()), b.up.remote(remote.WithContext(ctx))...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || te.StatusCode == http.StatusBadRequest) {
			return out, nil
		}
		return nil, explain(repo.Digest(d.String()).String()+" (referrers)", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, explain(repo.String()+" (referrers)", err)
	}
	for _, r := range im.Manifests {
		f, err := b.get(ctx, repo.Digest(r.Digest.String()))
		if err != nil {
			return nil, err
		}
		if _, err := b.tree(ctx, f, nil, 0); err != nil {
			return nil, err
		}
		out = append(out, bundle.Related{Kind: bundle.RelatedReferrer, Digest: f.digest.String(), Size: int64(len(f.raw)), MediaType: string(f.mediaType), Source: repo.Digest(f.digest.String()).String()})
	}
	return out, nil
}

// destination maps a source reference to repo[:tag] here: by default the
// source's repository path (without its registry host) and tag.
func destination(ref name.Reference, override string) (repo, tag string, err error) {
	if override == "" {
		repo = ref.Context().RepositoryStr()
		if t, ok := ref.(name.Tag); ok {
			tag = t.TagStr()
		}
		return repo, tag, nil
	}
	repo, tag, _ = strings.Cut(override, ":")
	if strings.Contains(override, "@") {
		return "", "", fmt.Errorf("destination %q: give repo or repo:tag, not a digest", override)
	}
	if _, err := name.NewRepository("example.invalid/"+repo, name.StrictValidation); err != nil || strings.Count(override, ":") > 1 {
		return "", "", fmt.Errorf("destination %q: not a valid repository[:tag]", override)
	}
	if tag != "" {
		if _, err := name.NewTag("example.invalid/"+repo+":"+tag, name.StrictValidation); err != nil {
			return "", "", fmt.Errorf("destination %q: tag %q is not valid", override, tag)
		}
	}
	return repo, tag, nil
}

func joinDest(repo, tag string) string {
	if tag == "" {
		return repo
	}
	return repo + ":" + tag
}

// image adds one image of the spec.
func (b *builder) image(ctx context.Context, spec bundle.ImageSpec) error {
	ref, err := b.up.parse(spec.Ref)
	if err != nil {
		return err
	}
	repo, tag, err := destination(ref, spec.Destination)
	if err != nil {
		return fmt.Errorf("images: %s: %w", spec.Ref, err)
	}
	f, err := b.get(ctx, ref)
	if err != nil {
		return err
	}
	if dg, ok := ref.(name.Digest); ok && dg.DigestStr() != f.digest.String() {
		return fmt.Errorf("%s: the registry served %s", spec.Ref, f.digest)
	}
	kept, err := b.tree(ctx, f, spec.Platforms, 0)
	if err != nil {
		return err
	}
	rel, err := b.related(ctx, f.repo, f.digest, spec)
	if err != nil {
		return err
	}
	src := f.repo.Digest(f.digest.String()).String()
	if t, ok := ref.(name.Tag); ok {
		src = t.String() + "@" + f.digest.String()
	}
	art := bundle.Artifact{Kind: bundle.KindImage, Source: src, Destination: joinDest(repo, tag), Digest: f.digest.String(),
		Size: int64(len(f.raw)), MediaType: string(f.mediaType), Version: spec.Version, Refresh: spec.Refresh, Related: rel}
	if len(spec.Platforms) > 0 {
		art.Platforms = kept
	}
	b.addArtifact(art, f.descriptor())
	for _, r := range rel {
		b.indexEntry(r, repo)
	}
	return nil
}

var zeroDesc v1.Descriptor

func typesOf(mt string) types.MediaType { return types.MediaType(mt) }
