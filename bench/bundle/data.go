package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

// blobRef is one blob of the data set, as the upstream serves it.
type blobRef struct {
	repo, digest string
	size         int64
	manifest     bool // fetched from /manifests/, not /blobs/
}

// imageRef is one pushed image.
type imageRef struct {
	name   string // img1
	repo   string // bench/img1
	ref    string // HOST/bench/img1:1.0
	digest string // of the manifest
}

// dataset is one bundle's worth of images in the upstream registry.
type dataset struct {
	label      string // "2048 MiB"
	sizeMiB    int
	layerBytes int64 // each layer
	images     []imageRef
	blobs      []blobRef // manifests, configs and layers: what a bundle carries
	payload    int64     // their bytes
	spec       string    // bundle spec file listing the images
}

// fileLayer is a v1.Layer read from a .tar.gz file whose digests are
// known, so nothing is held in memory and nothing is hashed twice.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// makeDataset generates images × layers random layers of about sizeMiB in
// all, pushes them to the upstream as HOST/<repoPrefix>imgN:1.0 with
// go-containerregistry, deletes the layer files, and writes the bundle spec.
func makeDataset(ctx context.Context, o options, up *upstream, work, label, repoPrefix string, sizeMiB int) (*dataset, error) {
	n := o.images * o.layers
	layerBytes := (int64(sizeMiB) << 20) / int64(n)
	if layerBytes < 1<<20 {
		return nil, fmt.Errorf("%d MiB in %d layers: layers under 1 MiB", sizeMiB, n)
	}
	ds := &dataset{label: label, sizeMiB: sizeMiB, layerBytes: layerBytes}
	dir := filepath.Join(work, "layers-"+slug(label))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	// Generate the layers, two at a time (on 2 cores).
	layers := make([]*fileLayer, n)
	err := benchkit.Parallel(ctx, n, func(i int) error {
		l, err := writeLayer(dir, layerBytes, o.seed, uint64(sizeMiB), i) //nolint:gosec // positive
		layers[i] = l
		return err
	})
	if err != nil {
		return nil, err
	}

	// Push, image by image.
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	var spec []byte
	spec = fmt.Appendf(spec, "# bench/bundle: %s in %d images × %d layers\nname: bundle-bench-%s\nimages:\n", label, o.images, o.layers, slug(label))
	for i := range o.images {
		im := imageRef{name: fmt.Sprintf("img%d", i+1)}
		im.repo = "bench/" + repoPrefix + im.name
		im.ref = up.host + "/" + im.repo + ":1.0"
		img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Architecture: "amd64", OS: "linux",
			Config: v1.Config{Labels: map[string]string{"org.example.bench": label + " " + im.name}}})
		if err != nil {
			return nil, err
		}
		img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
		var ls []v1.Layer
		for _, l := range layers[i*o.layers : (i+1)*o.layers] {
			ls = append(ls, l)
		}
		if img, err = mutate.AppendLayers(img, ls...); err != nil {
			return nil, err
		}
		ref, err := name.ParseReference(im.ref, name.Insecure)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(tr), remote.WithJobs(2)); err != nil {
			return nil, fmt.Errorf("push %s: %w", im.ref, err)
		}
		raw, err := img.RawManifest()
		if err != nil {
			return nil, err
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			return nil, err
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		cd, err := img.ConfigName()
		if err != nil {
			return nil, err
		}
		im.digest = d.String()
		ds.blobs = append(ds.blobs, blobRef{repo: im.repo, digest: im.digest, size: int64(len(raw)), manifest: true},
			blobRef{repo: im.repo, digest: cd.String(), size: int64(len(cfg))})
		for _, l := range ls {
			fl := l.(*fileLayer)
			ds.blobs = append(ds.blobs, blobRef{repo: im.repo, digest: fl.digest.String(), size: fl.size})
		}
		ds.images = append(ds.images, im)
		spec = fmt.Appendf(spec, "  - ref: %s\n", im.ref)
	}
	for _, b := range ds.blobs {
		ds.payload += b.size
	}
	ds.spec = filepath.Join(work, "spec-"+slug(label)+".yaml")
	if err := os.WriteFile(ds.spec, spec, 0o644); err != nil {
		return nil, err
	}
	benchkit.Logf("pushed %s: %d images, %d blobs, %d bytes (%.1f MiB), layers of %.1f MiB", label, len(ds.images), len(ds.blobs), ds.payload, benchkit.MiB(ds.payload), benchkit.MiB(layerBytes))
	return ds, nil
}

// writeLayer writes one layer file: a gzip stream of stored (uncompressed)
// blocks around a tar of one file of ChaCha8 random bytes, about size bytes
// in all. Nothing can compress it, and every tool sees a real .tar.gz.
func writeLayer(dir string, size int64, seed, set uint64, i int) (*fileLayer, error) {
	path := filepath.Join(dir, fmt.Sprintf("layer-%d.tar.gz", i))
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	l, err := benchkit.WriteLayer(f, size, seed, set, uint64(i)) //nolint:gosec // small
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	digest, err := v1.NewHash(l.Digest)
	if err != nil {
		return nil, err
	}
	diffID, err := v1.NewHash(l.DiffID)
	if err != nil {
		return nil, err
	}
	return &fileLayer{path: path, size: l.Size, digest: digest, diffID: diffID}, nil
}
