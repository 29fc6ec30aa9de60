package importer_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/importer"
)

// layerTar makes an uncompressed layer holding one file.
func layerTar(t *testing.T, name, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dockerSave builds a legacy docker-save archive: two images sharing a
// layer, the second image's copy of it being a hard link to the first's,
// as docker writes them.
func dockerSave(t *testing.T, corruptLayer bool) []byte {
	t.Helper()
	l1, l2 := layerTar(t, "etc/os-release", "ID=test"), layerTar(t, "app/bin", "#!/bin/true")
	cfg := func(diffs ...[]byte) []byte {
		var ids []string
		for _, d := range diffs {
			ids = append(ids, sha(d))
		}
		b, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": ids}})
		return b
	}
	c1, c2 := cfg(l1), cfg(l1, l2)
	h := func(b []byte) string { return strings.TrimPrefix(sha(b), "sha256:") }
	manifest, _ := json.Marshal([]map[string]any{
		{"Config": h(c1) + ".json", "RepoTags": []string{"busybox:1.36"}, "Layers": []string{"aaa/layer.tar"}},
		{"Config": h(c2) + ".json", "RepoTags": []string{"registry.example.org/team/app:2.0"}, "Layers": []string{"bbb/layer.tar", "ccc/layer.tar"}},
	})
	body2 := l2
	if corruptLayer {
		body2 = append(slices.Clone(l2[:len(l2)-1]), l2[len(l2)-1]^1)
	}
	return makeTar(t,
		tarEntry{name: "aaa/", typeflag: tar.TypeDir},
		tarEntry{name: "aaa/VERSION", body: []byte("1.0")},
		tarEntry{name: "aaa/json", body: []byte(`{"id":"aaa"}`)},
		tarEntry{name: "aaa/layer.tar", body: l1},
		tarEntry{name: "bbb/layer.tar", typeflag: tar.TypeLink, link: "aaa/layer.tar"},
		tarEntry{name: "ccc/layer.tar", body: body2},
		tarEntry{name: h(c1) + ".json", body: c1},
		tarEntry{name: h(c2) + ".json", body: c2},
		tarEntry{name: "manifest.json", body: manifest},
		tarEntry{name: "repositories", body: []byte(`{"busybox":{"1.36":"aaa"}}`)},
	)
}

// TestImportDockerSave imports a docker-save archive, follows the layer
// link inside the archive, and warns that the manifest was rebuilt.
func TestImportDockerSave(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec, err := e.imp.Import(context.Background(), importer.Request{Source: "save.tar", Reader: bytes.NewReader(dockerSave(t, false)), ToRepo: "enclave/saved"})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if rec.Format != importer.FormatDockerSave || len(rec.Warnings) != 2 || !strings.Contains(rec.Warnings[0], "did not survive") {
		t.Fatalf("record = %+v", rec)
	}
	for _, tag := range []string{"1.36", "2.0"} {
		img, err := remote.Image(e.ref(t, "enclave/saved:"+tag))
		if err != nil {
			t.Fatalf("pull %s: %v", tag, err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range layers {
			d, _ := l.Digest()
			if d != cf.RootFS.DiffIDs[i] {
				t.Fatalf("%s layer %d = %s, config diff id %s", tag, i, d, cf.RootFS.DiffIDs[i])
			}
		}
	}
	// --keep-names keeps the path without the registry host.
	e2 := newEnv(t)
	if _, err := e2.imp.Import(context.Background(), importer.Request{Source: "save.tar", Reader: bytes.NewReader(dockerSave(t, false)), KeepNames: true}); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"library/busybox:1.36", "team/app:2.0"} {
		if _, err := remote.Head(e2.ref(t, ref)); err != nil {
			t.Fatalf("keep-names %s: %v", ref, err)
		}
	}
}

// TestImportDockerSaveRefusesCorruptLayer: a layer that does not match the
// config's diff id is refused by name.
func TestImportDockerSaveRefusesCorruptLayer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.imp.Import(context.Background(), importer.Request{Source: "save.tar", Reader: bytes.NewReader(dockerSave(t, true)), ToRepo: "enclave/saved"})
	var ie *importer.Error
	if !errors.Is(err, importer.ErrDigestMismatch) || !errors.As(err, &ie) || ie.Entry != "ccc/layer.tar" {
		t.Fatalf("import of a corrupt layer = %v", err)
	}
	if repos := e.leftovers(t); len(repos) != 0 {
		t.Fatalf("left repositories: %v", repos)
	}
}
