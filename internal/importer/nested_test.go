package importer_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/importer"
)

// nestedBundleTar wraps the fixture bundle in a parent bundle whose
// images.yml names the fixture bundle and app2, as `imgpkg copy --to-tar`
// of a bundle of bundles would write it.
func nestedBundleTar(t *testing.T) ([]byte, string) {
	t.Helper()
	data, err := os.ReadFile(fixture(t, "bundle.tar"))
	if err != nil {
		t.Fatal(err)
	}
	var mj []map[string]any
	var blobs []tarEntry
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if h.Name == "manifest.json" {
			if err := json.Unmarshal(body, &mj); err != nil {
				t.Fatal(err)
			}
			continue
		}
		blobs = append(blobs, tarEntry{name: h.Name, body: body})
	}
	// The inner bundle is no longer the root.
	for _, e := range mj {
		if img, ok := e["Image"].(map[string]any); ok && img != nil {
			if labels, ok := img["Labels"].(map[string]any); ok {
				delete(labels, "dev.carvel.imgpkg.copy.root-bundle")
			}
		}
	}
	// The parent bundle's one layer: .imgpkg/images.yml.
	yml := "apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\nimages:\n" +
		"- image: 127.0.0.1:5001/fixtures/bundle@" + bundle + "\n" +
		"- image: 127.0.0.1:5001/fixtures/app2@" + app2 + "\n"
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	_ = tw.WriteHeader(&tar.Header{Name: ".imgpkg/images.yml", Mode: 0o600, Size: int64(len(yml))})
	_, _ = tw.Write([]byte(yml))
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tb.Bytes())
	_ = zw.Close()
	layer := gz.Bytes()
	config := fmt.Sprintf(`{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[%q]},"config":{"Labels":{"dev.carvel.imgpkg.bundle":"true"}}}`, sha(tb.Bytes()))
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":%q},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":%d,"digest":%q}]}`,
		len(config), sha([]byte(config)), len(layer), sha(layer))
	parent := sha([]byte(manifest))
	mj = append(mj, map[string]any{"ImageIndex": nil, "Image": map[string]any{
		"Refs":     []string{"127.0.0.1:5001/fixtures/parent@" + parent},
		"Layers":   []map[string]any{{"MediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "Digest": sha(layer), "Size": len(layer)}},
		"Config":   map[string]any{"Digest": sha([]byte(config)), "Raw": config},
		"Manifest": map[string]any{"MediaType": "application/vnd.docker.distribution.manifest.v2+json", "Digest": parent, "Raw": manifest},
		"Tag":      "v2", "OrigRef": "127.0.0.1:5001/fixtures/parent:v2",
		"Labels": map[string]string{"dev.carvel.imgpkg.copy.root-bundle": ""},
	}})
	blobs = append(blobs, tarEntry{name: "sha256-" + hexOf(sha(layer)) + ".tar.gz", body: layer})
	slices.SortFunc(blobs, func(a, b tarEntry) int { return strings.Compare(a.name, b.name) })
	mjData, _ := json.Marshal(mj)
	return makeTar(t, append([]tarEntry{{name: "manifest.json", body: mjData}}, blobs...)...), parent
}

// TestImportNestedBundle: each bundle gets its locations image; the
// parent's lists the inner bundle with isBundle: true; the root bundle's
// own tag (v2) is applied.
func TestImportNestedBundle(t *testing.T) {
	t.Parallel()
	data, parent := nestedBundleTar(t)
	e := newEnv(t)
	if _, err := e.imp.Import(context.Background(), importer.Request{Source: "nested.tar", Reader: bytes.NewReader(data), ToRepo: "enclave/nested"}); err != nil {
		t.Fatalf("import: %v", err)
	}
	tags := e.tags(t, "enclave/nested")
	for _, want := range []string{"v2", "sha256-" + hexOf(parent) + ".image-locations.imgpkg", "sha256-" + hexOf(bundle) + ".image-locations.imgpkg"} {
		if !slices.Contains(tags, want) {
			t.Fatalf("tag %s missing: %v", want, tags)
		}
	}
	inner, err := remote.Head(e.ref(t, "enclave/nested:sha256-"+hexOf(bundle)+".image-locations.imgpkg"))
	if err != nil || inner.Digest.String() != "sha256:485a54e7f6feea14973624b6dd91fc9418c57b7a623c2f93a366cf28d914540a" {
		t.Fatalf("inner locations image = %v, %v; want imgpkg's digest", inner, err)
	}
	loc, err := remote.Image(e.ref(t, "enclave/nested:sha256-"+hexOf(parent)+".image-locations.imgpkg"))
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := loc.Layers()
	rc, _ := ls[0].Uncompressed()
	tr := tar.NewReader(rc)
	var yml []byte
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "image-locations.yml" {
			yml, _ = io.ReadAll(tr)
		}
	}
	want := "---\napiVersion: imgpkg.carvel.dev/v1alpha1\nimages:\n" +
		"- image: 127.0.0.1:5001/fixtures/app2@" + app2 + "\n  isBundle: false\n" +
		"- image: 127.0.0.1:5001/fixtures/bundle@" + bundle + "\n  isBundle: true\n" +
		"kind: ImageLocations\n"
	if string(yml) != want {
		t.Fatalf("parent image-locations.yml:\n%s\nwant:\n%s", yml, want)
	}
}
