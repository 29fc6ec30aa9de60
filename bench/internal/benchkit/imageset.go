package benchkit

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Media types of the generated images.
const (
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	refNameAnnotation = "org.opencontainers.image.ref.name"
)

// ImageSetOptions says what WriteImageSet generates: SizeMiB of layers in
// layers of LayerMiB, LayersPerImage to an image, the bytes drawn from
// Seed. Repo is the repository the imgpkg tar's references name.
type ImageSetOptions struct {
	SizeMiB, LayerMiB, LayersPerImage int
	Seed                              uint64
	Repo                              string
	// NoTar leaves out the imgpkg tar (ImgpkgTar is then "").
	NoTar bool
}

// Image is one generated image.
type Image struct {
	Tag                          string // img-1, img-2, …
	Config, Manifest             []byte
	ConfigDigest, ManifestDigest string
	Layers                       []Layer
}

// ImageSet is the import benchmark's set of images, which the other
// benchmarks reuse: random, incompressible layers, written as an OCI image
// layout (a folder) and as an imgpkg `copy --to-tar` archive (manifest.json
// first with Go-field-name keys, then sha256-<hex>.tar.gz blobs sorted by
// digest; plain, uncompressed tar).
type ImageSet struct {
	Layout     string // OCI image layout folder
	ImgpkgTar  string
	Images     []Image
	LayerCount int
	LayerBytes int64 // of the layers
	Payload    int64 // of the layers, configs and manifests
	TarSize    int64 // of the imgpkg tar
}

// BlobPath is where blob d lies in the layout.
func (s *ImageSet) BlobPath(d string) string {
	return filepath.Join(s.Layout, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
}

// BlobBytes is the size of every distinct blob of the set (layers and
// configs): what a registry-to-registry copy moves.
func (s *ImageSet) BlobBytes() int64 {
	n := s.LayerBytes
	for _, img := range s.Images {
		n += int64(len(img.Config))
	}
	return n
}

// WriteImageSet generates the set into work: oci-layout/ and, unless
// o.NoTar, bundle.tar. The same options give the same bytes.
func WriteImageSet(ctx context.Context, work string, o ImageSetOptions) (*ImageSet, error) {
	if o.SizeMiB < o.LayerMiB || o.LayerMiB < 1 || o.LayersPerImage < 1 {
		return nil, fmt.Errorf("image set: need size ≥ layer size ≥ 1 MiB and at least one layer per image")
	}
	ds := &ImageSet{Layout: filepath.Join(work, "oci-layout"), ImgpkgTar: filepath.Join(work, "bundle.tar")}
	if err := os.MkdirAll(filepath.Join(ds.Layout, "blobs", "sha256"), 0o750); err != nil {
		return nil, err
	}
	layerBytes := int64(o.LayerMiB) << 20
	nLayers := o.SizeMiB / o.LayerMiB
	nImages := (nLayers + o.LayersPerImage - 1) / o.LayersPerImage
	// Layers are generated two at a time (2 cores), image by image; the
	// rest is sequential.
	infos := make([][]Layer, nImages)
	for i := range infos {
		infos[i] = make([]Layer, min(o.LayersPerImage, nLayers-i*o.LayersPerImage))
	}
	err := Parallel(ctx, nLayers, func(k int) error {
		img, layer := k/o.LayersPerImage, k%o.LayersPerImage
		l, err := ds.writeLayer(layerBytes, o.Seed, img, layer)
		infos[img][layer] = l
		return err
	})
	if err != nil {
		return nil, err
	}
	var index []map[string]any
	for i, layers := range infos {
		img := NewImage(fmt.Sprintf("img-%d", i+1), layers)
		for _, l := range layers {
			ds.LayerCount++
			ds.LayerBytes += l.Size
		}
		for _, b := range [][]byte{img.Config, img.Manifest} {
			if err := os.WriteFile(ds.BlobPath(digest.FromBytes(b).String()), b, 0o644); err != nil { //nolint:gosec // test data
				return nil, err
			}
		}
		ds.Payload += int64(len(img.Config) + len(img.Manifest))
		index = append(index, map[string]any{"mediaType": MediaTypeManifest, "digest": img.ManifestDigest, "size": len(img.Manifest),
			"annotations": map[string]string{refNameAnnotation: img.Tag}})
		ds.Images = append(ds.Images, img)
	}
	ds.Payload += ds.LayerBytes
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": index})
	if err := os.WriteFile(filepath.Join(ds.Layout, "index.json"), idx, 0o644); err != nil { //nolint:gosec // test data
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(ds.Layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil { //nolint:gosec // test data
		return nil, err
	}
	if o.NoTar {
		ds.ImgpkgTar = ""
	} else if err := ds.writeTar(o.Repo); err != nil {
		return nil, err
	}
	return ds, nil
}

// writeTar writes the imgpkg tar and records its size.
func (s *ImageSet) writeTar(repo string) error {
	if err := s.writeImgpkgTar(repo); err != nil {
		return fmt.Errorf("imgpkg tar: %w", err)
	}
	st, err := os.Stat(s.ImgpkgTar)
	if err != nil {
		return err
	}
	s.TarSize = st.Size()
	return nil
}

// writeLayer writes one layer into the layout (see WriteLayer).
func (s *ImageSet) writeLayer(size int64, seed uint64, img, layer int) (Layer, error) {
	f, err := os.CreateTemp(filepath.Join(s.Layout, "blobs", "sha256"), "layer-*.tmp")
	if err != nil {
		return Layer{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	l, err := WriteLayer(f, size, seed, uint64(img), uint64(layer)) //nolint:gosec // small
	if err != nil {
		return Layer{}, err
	}
	if err := f.Close(); err != nil {
		return Layer{}, err
	}
	return l, os.Rename(f.Name(), s.BlobPath(l.Digest))
}

// NewImage is the image of layers, tagged tag: an OCI manifest and a
// config naming each layer's diff ID, with fixed dates, so the same layers
// always give the same digests.
func NewImage(tag string, layers []Layer) Image {
	img := Image{Tag: tag, Layers: layers}
	diffIDs := []string{}
	history := []map[string]string{}
	for _, l := range layers {
		diffIDs = append(diffIDs, l.DiffID)
		history = append(history, map[string]string{"created": "1970-01-01T00:00:00Z", "created_by": "bench/import"})
	}
	img.Config, _ = json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
		"config":  map[string]any{"Labels": map[string]string{"org.example.bench": img.Tag}},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history": history,
	})
	img.ConfigDigest = digest.FromBytes(img.Config).String()
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: desc{MediaTypeConfig, img.ConfigDigest, int64(len(img.Config))}}
	for _, l := range layers {
		m.Layers = append(m.Layers, desc{MediaTypeLayer, l.Digest, l.Size})
	}
	img.Manifest, _ = json.Marshal(m)
	img.ManifestDigest = digest.FromBytes(img.Manifest).String()
	return img
}

// The imgpkg manifest.json: imgpkg's Go field names, nil pointers as null.
type imgpkgEntry struct {
	ImageIndex *struct{}    `json:"ImageIndex"`
	Image      *imgpkgImage `json:"Image"`
}

type imgpkgLayer struct {
	MediaType string `json:"MediaType"`
	Digest    string `json:"Digest"`
	DiffID    string `json:"DiffID"`
	Size      int64  `json:"Size"`
}

type imgpkgImage struct {
	Refs   []string      `json:"Refs"`
	Layers []imgpkgLayer `json:"Layers"`
	Config struct {
		Digest string `json:"Digest"`
		Raw    string `json:"Raw"`
	} `json:"Config"`
	Manifest struct {
		MediaType string `json:"MediaType"`
		Digest    string `json:"Digest"`
		Raw       string `json:"Raw"`
	} `json:"Manifest"`
	Tag     string            `json:"Tag"`
	OrigRef string            `json:"OrigRef"`
	Labels  map[string]string `json:"Labels"`
}

func (s *ImageSet) writeImgpkgTar(repo string) error {
	var entries []imgpkgEntry
	blobs := map[string]int64{}
	for _, img := range s.Images {
		e := &imgpkgImage{Refs: []string{"registry.example.invalid/" + repo + "@" + img.ManifestDigest}, Tag: img.Tag}
		for _, l := range img.Layers {
			e.Layers = append(e.Layers, imgpkgLayer{MediaTypeLayer, l.Digest, l.DiffID, l.Size})
			blobs[l.Digest] = l.Size
		}
		e.Config.Digest, e.Config.Raw = img.ConfigDigest, string(img.Config)
		e.Manifest.MediaType, e.Manifest.Digest, e.Manifest.Raw = MediaTypeManifest, img.ManifestDigest, string(img.Manifest)
		entries = append(entries, imgpkgEntry{Image: e})
	}
	mj, err := json.Marshal(entries)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(blobs))
	for d := range blobs {
		names = append(names, d)
	}
	sort.Strings(names)
	return createTar(s.ImgpkgTar, func(tw *tar.Writer) error {
		if err := tarBytes(tw, "manifest.json", mj); err != nil {
			return err
		}
		for _, d := range names {
			if err := tarFile(tw, "sha256-"+strings.TrimPrefix(d, "sha256:")+".tar.gz", s.BlobPath(d), blobs[d]); err != nil {
				return err
			}
		}
		return nil
	})
}

// createTar writes a tar file at path, through a 1 MiB buffer, with what
// fill writes into it.
func createTar(path string, fill func(tw *tar.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	if err := fill(tw); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func tarBytes(tw *tar.Writer, name string, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

func tarFile(tw *tar.Writer, name, path string, size int64) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyBuffer(tw, f, make([]byte, 1<<20))
	if err == nil && n != size {
		err = fmt.Errorf("%s: %d bytes, want %d", path, n, size)
	}
	return err
}
