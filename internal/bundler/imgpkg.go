package bundler

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.yaml.in/yaml/v3"

	"github.com/appliance-dev/appliance/internal/bundle"
)

// imgpkgBundleLabel marks an imgpkg bundle's config.
const imgpkgBundleLabel = "dev.carvel.imgpkg.bundle"

// maxImagesYML bounds .imgpkg/images.yml.
const maxImagesYML = 16 << 20

// imgpkgBundle adds an imgpkg bundle: the bundle image, every image its
// .imgpkg/images.yml names (nested bundles followed recursively) and their
// cosign signatures, all bound for one repository, as `imgpkg copy
// --to-repo` would put them.
func (b *builder) imgpkgBundle(ctx context.Context, spec bundle.ImgpkgBundleSpec) error {
	ref, err := b.up.parse(spec.Ref)
	if err != nil {
		return err
	}
	repo, tag, err := destination(ref, spec.Destination)
	if err != nil {
		return fmt.Errorf("bundles: %s: %w", spec.Ref, err)
	}
	root, err := b.get(ctx, ref)
	if err != nil {
		return err
	}
	w := &imgpkgWalk{b: b, seen: map[string]bool{root.digest.String(): true}}
	isBundle, err := w.visit(ctx, root, 0)
	if err != nil {
		return err
	}
	if !isBundle {
		return fmt.Errorf("%s: not an imgpkg bundle (its config has no %s label); list it under images", spec.Ref, imgpkgBundleLabel)
	}
	src := root.repo.Digest(root.digest.String()).String()
	if t, ok := ref.(name.Tag); ok {
		src = t.String() + "@" + root.digest.String()
	}
	b.addArtifact(bundle.Artifact{Kind: bundle.KindBundle, Source: src, Destination: joinDest(repo, tag), Digest: root.digest.String(),
		Size: int64(len(root.raw)), MediaType: string(root.mediaType), Version: spec.Version, Refresh: spec.Refresh, Related: w.related}, root.descriptor())
	for _, r := range w.related {
		b.indexEntry(r, repo)
	}
	return nil
}

type imgpkgWalk struct {
	b       *builder
	seen    map[string]bool
	related []bundle.Related
}

// visit records a manifest of the bundle's closure and its signature, and,
// when it is a bundle, everything its images.yml names. It tells whether
// the manifest was a bundle.
func (w *imgpkgWalk) visit(ctx context.Context, f fetched, depth int) (bool, error) {
	if depth > 16 {
		return false, fmt.Errorf("%s: imgpkg bundles nested too deep", f.repo)
	}
	if _, err := w.b.tree(ctx, f, nil, 0); err != nil {
		return false, err
	}
	sig, err := w.b.optional(ctx, f.repo.Tag(f.digest.Algorithm+"-"+f.digest.Hex+".sig"))
	if err != nil {
		return false, err
	}
	if sig != nil && !w.seen[sig.digest.String()] {
		w.seen[sig.digest.String()] = true
		if _, err := w.b.tree(ctx, *sig, nil, 0); err != nil {
			return false, err
		}
		tag := f.digest.Algorithm + "-" + f.digest.Hex + ".sig"
		w.related = append(w.related, bundle.Related{Kind: bundle.RelatedSignature, Digest: sig.digest.String(), Size: int64(len(sig.raw)), MediaType: string(sig.mediaType), Tag: tag, Source: f.repo.Tag(tag).String()})
	}
	if isIndex(f.mediaType) {
		return false, nil
	}
	var doc manifestDoc
	if err := json.Unmarshal(f.raw, &doc); err != nil || doc.Config == nil {
		return false, fmt.Errorf("%s@%s: manifest: not an image manifest", f.repo, f.digest)
	}
	isBundle, err := w.isBundleConfig(ctx, f.repo, doc.Config)
	if err != nil || !isBundle {
		return false, err
	}
	if len(doc.Layers) != 1 {
		return false, fmt.Errorf("%s@%s: an imgpkg bundle has exactly one layer, this one %d", f.repo, f.digest, len(doc.Layers))
	}
	refs, err := w.imagesLock(ctx, f.repo, doc.Layers[0])
	if err != nil {
		return false, fmt.Errorf("%s@%s: %w", f.repo, f.digest, err)
	}
	for _, r := range refs {
		child, err := w.locate(ctx, f.repo, r)
		if err != nil {
			return false, err
		}
		if w.seen[child.digest.String()] {
			continue
		}
		w.seen[child.digest.String()] = true
		nested, err := w.visit(ctx, child, depth+1)
		if err != nil {
			return false, err
		}
		kind := bundle.RelatedImage
		if nested {
			kind = bundle.RelatedBundle
		}
		w.related = append(w.related, bundle.Related{Kind: kind, Digest: child.digest.String(), Size: int64(len(child.raw)), MediaType: string(child.mediaType), Source: r})
	}
	return true, nil
}

// locate finds an image of images.yml the way imgpkg does: first in the
// bundle's own repository (where `imgpkg copy` relocates it), then where
// images.yml says it came from.
func (w *imgpkgWalk) locate(ctx context.Context, bundleRepo name.Repository, ref string) (fetched, error) {
	orig, err := w.b.up.parse(ref)
	if err != nil {
		return fetched{}, fmt.Errorf("images.yml: %w", err)
	}
	dg, ok := orig.(name.Digest)
	if !ok {
		return fetched{}, fmt.Errorf("images.yml: %s is not a digest reference", ref)
	}
	if f, err := w.b.optional(ctx, bundleRepo.Digest(dg.DigestStr())); err == nil && f != nil {
		return *f, nil
	}
	f, err := w.b.get(ctx, orig)
	if err != nil {
		return fetched{}, fmt.Errorf("images.yml names %s: %w", ref, err)
	}
	if f.digest.String() != dg.DigestStr() {
		return fetched{}, fmt.Errorf("images.yml names %s, the registry served %s", ref, f.digest)
	}
	return f, nil
}

func (w *imgpkgWalk) isBundleConfig(ctx context.Context, repo name.Repository, cfg *v1.Descriptor) (bool, error) {
	if err := w.b.fetchNow(ctx, repo, cfg.Digest.String(), cfg.Size); err != nil {
		return false, err
	}
	rc, err := w.b.cache.Open(cfg.Digest.String())
	if err != nil {
		return false, err
	}
	defer rc.Close()
	var c struct {
		Config struct {
			Labels map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if err := json.NewDecoder(io.LimitReader(rc, 4<<20)).Decode(&c); err != nil {
		return false, fmt.Errorf("%s config %s: %w", repo, cfg.Digest, err)
	}
	_, ok := c.Config.Labels[imgpkgBundleLabel]
	return ok, nil
}

// imagesLock reads .imgpkg/images.yml from a bundle's layer.
func (w *imgpkgWalk) imagesLock(ctx context.Context, repo name.Repository, layer v1.Descriptor) ([]string, error) {
	if err := w.b.fetchNow(ctx, repo, layer.Digest.String(), layer.Size); err != nil {
		return nil, err
	}
	rc, err := w.b.cache.Open(layer.Digest.String())
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		return nil, fmt.Errorf("bundle layer: %w", err)
	}
	tr := tar.NewReader(zr)
	for range 100000 {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bundle layer: %w", err)
		}
		if h.Name != ".imgpkg/images.yml" && h.Name != "./.imgpkg/images.yml" {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(tr, maxImagesYML))
		if err != nil {
			return nil, fmt.Errorf("bundle layer: %w", err)
		}
		var lock struct {
			Images []struct {
				Image string `yaml:"image"`
			} `yaml:"images"`
		}
		if err := yaml.Unmarshal(data, &lock); err != nil {
			return nil, fmt.Errorf(".imgpkg/images.yml: %w", err)
		}
		out := make([]string, 0, len(lock.Images))
		for _, i := range lock.Images {
			out = append(out, i.Image)
		}
		return out, nil
	}
	return nil, fmt.Errorf("bundle layer %s has no .imgpkg/images.yml: %w", layer.Digest, os.ErrNotExist)
}
