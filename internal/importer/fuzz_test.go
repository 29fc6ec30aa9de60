package importer_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
)

var (
	fuzzOnce sync.Once
	fuzzEnv  *env
)

// FuzzImport feeds arbitrary bytes to the importer: it must never panic,
// and every failure must be an *importer.Error that names the source. The
// seed corpus (testdata/fuzz/FuzzImport and the seeds below) holds real
// imgpkg tars and hand-made bad archives.
func FuzzImport(f *testing.F) {
	for _, name := range []string{"image.tar", "image-index.tar"} {
		if data, err := os.ReadFile("../../../shared/fixtures/imgpkg/" + name); err == nil {
			f.Add(data)
		}
	}
	f.Add(imgpkgTar(f, []byte("layer"), nil))
	f.Add(makeTar(f, tarEntry{name: "oci-layout", body: []byte(`{"imageLayoutVersion":"1.0.0"}`)}, tarEntry{name: "index.json", body: []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:` + string(bytes.Repeat([]byte("a"), 64)) + `","size":2}]}`)}))
	f.Add(makeTar(f, tarEntry{name: "manifest.json", body: []byte(`[{"Config":"c.json","RepoTags":["a:b"],"Layers":["l/layer.tar"]}]`)}, tarEntry{name: "c.json", body: []byte(`{}`)}))
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b, 0x08})
	// One registry for all inputs of this process, in a folder the
	// framework removes at the end.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzOnce.Do(func() { fuzzEnv = mustEnvAt(dir) })
		rec, err := fuzzEnv.imp.Import(context.Background(), importer.Request{Source: "fuzz.tar", Reader: bytes.NewReader(data), ToRepo: "fuzz/target"})
		if err != nil {
			var ie *importer.Error
			if !errors.As(err, &ie) || ie.Source != "fuzz.tar" {
				t.Fatalf("error %v (%T) is not an *importer.Error naming the source", err, err)
			}
			if rec.Outcome != history.OutcomeFailed || len(rec.Tags) != 0 {
				t.Fatalf("failed import recorded as %+v", rec)
			}
		}
	})
}
