package importer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// An imgpkg bundle is an image whose config carries the label
// dev.carvel.imgpkg.bundle and whose one layer holds .imgpkg/images.yml.
// `imgpkg copy --to-repo` pushes, for each bundle, a small "locations"
// image tagged sha256-<bundle hex>.image-locations.imgpkg that tells
// consumers (imgpkg describe/pull, kapp-controller) that the bundle's
// images now live in the same repository.

const bundleLabel = "dev.carvel.imgpkg.bundle"

type bundleRef struct {
	digest digest.Digest // the bundle's manifest
	layer  digest.Digest // its one layer
	root   bool
	tag    string
}

func isBundleConfig(raw string) bool {
	var c struct {
		Config struct {
			Labels map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if json.Unmarshal([]byte(raw), &c) != nil {
		return false
	}
	_, ok := c.Config.Labels[bundleLabel]
	return ok
}

// imagesLock is .imgpkg/images.yml.
type imagesLock struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Images     []struct {
		Image string `yaml:"image"`
	} `yaml:"images"`
}

// maxBundleLayer bounds a bundle layer read to find images.yml.
const maxBundleLayer = 512 << 20

// readImagesLock finds .imgpkg/images.yml in a bundle's layer.
func (s *session) readImagesLock(layer digest.Digest) (imagesLock, error) {
	var lock imagesLock
	rc, err := s.store.ReadBlob(s.ctx, s.staging, layer)
	if err != nil {
		return lock, err
	}
	defer rc.Close()
	zr, err := gzip.NewReader(io.LimitReader(rc, maxBundleLayer))
	if err != nil {
		return lock, fmt.Errorf("%w: bundle layer is not gzip: %w", ErrInvalidJSON, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return lock, fmt.Errorf("%w: the bundle layer has no .imgpkg/images.yml", ErrInvalidJSON)
		}
		if err != nil {
			return lock, fmt.Errorf("%w: bundle layer: %w", ErrInvalidJSON, err)
		}
		if strings.TrimPrefix(h.Name, "./") != ".imgpkg/images.yml" || h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(tr, maxMetaSize))
		if err != nil {
			return lock, fmt.Errorf("%w: bundle layer: %w", ErrInvalidJSON, err)
		}
		if err := yaml.Unmarshal(data, &lock); err != nil {
			return lock, fmt.Errorf("%w: .imgpkg/images.yml: %w", ErrInvalidJSON, err)
		}
		if lock.Kind != "ImagesLock" {
			return lock, fmt.Errorf("%w: .imgpkg/images.yml has kind %q, want ImagesLock", ErrInvalidJSON, lock.Kind)
		}
		return lock, nil
	}
}

// planLocations plans the locations image of one bundle, and checks that
// every image its images.yml names came in the archive.
func (s *session) planLocations(p *plan, repo string, b bundleRef, bundles map[digest.Digest]bool) error {
	lock, err := s.readImagesLock(b.layer)
	if err != nil {
		return s.fail("parse", b.digest.String(), err)
	}
	planned := map[digest.Digest]bool{}
	for _, m := range p.manifests {
		planned[m.digest] = true
	}
	type location struct {
		image    string
		isBundle bool
	}
	var locs []location
	seen := map[digest.Digest]bool{}
	for _, im := range lock.Images {
		// imgpkg normalises each reference (ubuntu@… → index.docker.io/library/ubuntu@…)
		// and lists each digest once.
		ref, err := name.NewDigest(im.Image)
		if err != nil {
			return s.fail("parse", b.digest.String(), fmt.Errorf("%w: images.yml names %q, not a digest reference: %w", ErrInvalidJSON, im.Image, err))
		}
		d := digest.Digest(ref.DigestStr())
		if !planned[d] {
			if _, _, err := s.store.GetManifest(s.ctx, repo, d); err != nil {
				return s.fail("verify", b.digest.String(), fmt.Errorf("%w: the bundle names %s, which is neither in the archive nor in %s", ErrMissingBlob, im.Image, repo))
			}
		}
		if seen[d] {
			continue
		}
		seen[d] = true
		locs = append(locs, location{image: ref.Name(), isBundle: bundles[d]})
	}
	sort.Slice(locs, func(i, j int) bool { return locs[i].image < locs[j].image })
	var yml strings.Builder
	yml.WriteString("---\napiVersion: imgpkg.carvel.dev/v1alpha1\n")
	if len(locs) == 0 {
		yml.WriteString("images: []\n")
	} else {
		yml.WriteString("images:\n")
	}
	for _, l := range locs {
		fmt.Fprintf(&yml, "- image: %s\n  isBundle: %t\n", l.image, l.isBundle)
	}
	yml.WriteString("kind: ImageLocations\n")

	layer, diffID, err := deterministicLayer("image-locations.yml", []byte(yml.String()))
	if err != nil {
		return s.fail("store", b.digest.String(), err)
	}
	config := fmt.Sprintf(`{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"author":"imgpkg","created":"0001-01-01T00:00:00Z","created_by":"imgpkg"}],"os":"","rootfs":{"type":"layers","diff_ids":[%q]},"config":{}}`, diffID)
	cd, ld := digest.FromString(config), digest.FromBytes(layer)
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"size":%d,"digest":%q},"layers":[{"mediaType":%q,"size":%d,"digest":%q}]}`,
		mtDockerManifest, mtDockerConfig, len(config), cd, mtDockerLayerGz, len(layer), ld)
	if err := s.writeRaw(cd, mtDockerConfig, []byte(config)); err != nil {
		return s.fail("store", cd.String(), err)
	}
	if err := s.writeRaw(ld, mtDockerLayerGz, layer); err != nil {
		return s.fail("store", ld.String(), err)
	}
	md := digest.FromString(manifest)
	doc, mt, err := parseManifest(mtDockerManifest, []byte(manifest))
	if err != nil {
		return s.fail("parse", md.String(), err)
	}
	p.addManifest(imageManifest(repo, mt, []byte(manifest), md, doc))
	tag := b.digest.Algorithm().String() + "-" + b.digest.Encoded() + ".image-locations.imgpkg"
	if err := p.addTag(repo, tag, md); err != nil {
		return s.fail("tag", tag, err)
	}
	// imgpkg tags every image it pushes by its digest, this one too.
	return s.imgpkgTags(p, repo, md, "")
}

// deterministicLayer makes the layer imgpkg makes of a folder holding one
// file: a USTAR tar of "." (mode 0700) and the file (mode 0600), owner 0,
// time zero, gzipped at level 1 (what go-containerregistry uses). It
// returns the layer and its diff id. The result is byte-for-byte imgpkg's.
func deterministicLayer(name string, content []byte) ([]byte, string, error) {
	var plain bytes.Buffer
	tw := tar.NewWriter(&plain)
	if err := tw.WriteHeader(&tar.Header{Name: ".", Mode: 0o700, Typeflag: tar.TypeDir, Format: tar.FormatUSTAR}); err != nil {
		return nil, "", err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(content)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
		return nil, "", err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, "", err
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	diffID := digest.FromBytes(plain.Bytes()).String()
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return nil, "", err
	}
	if _, err := zw.Write(plain.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), diffID, nil
}
