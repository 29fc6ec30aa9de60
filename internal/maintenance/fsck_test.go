package maintenance_test

import (
	"bytes"
	"context"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/registry"
)

// seed fills a stack with what an appliance holds: tagged images, an
// index, a referrer, a file, a published package, an import.
type seeded struct {
	a, b, c, d string // image digests: enclave/a:v1, enclave/b:v1, enclave/c:v1, enclave/d:v1
	aLayers    []string
	cLayers    []string
	file       string
}

func seed(t *testing.T, s *stack) seeded {
	t.Helper()
	var out seeded
	imgA, imgC := randomImage(t, 2), randomImage(t, 2)
	out.a = s.push(t, "enclave/a:v1", imgA).String()
	out.aLayers = layerDigests(t, imgA)
	out.b = s.push(t, "enclave/b:v1", randomImage(t, 1)).String()
	out.c = s.push(t, "enclave/c:v1", imgC).String()
	out.cLayers = layerDigests(t, imgC)
	imgD := randomImage(t, 1)
	out.d = s.push(t, "enclave/d:v1", imgD).String()
	s.push(t, "enclave/d@"+mustDigest(t, sbom(t, imgD)), sbom(t, imgD))
	idx, err := random.Index(512, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	s.pushIndex(t, "enclave/multi:v1", idx)
	out.file = s.addFile(t, "drivers/nvidia.run", []byte("a driver, in fact a few bytes")).Name
	if s.apt != nil {
		s.addDeb(t, "hello", "1.0")
	}
	es, _ := layout("an imported layer", "v1")
	if _, err := s.imp.Import(context.Background(), importer.Request{Source: "layout.tar", Reader: bytes.NewReader(tarOf(t, es...)), ToRepo: "enclave/imported"}); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestFsckCleanStore(t *testing.T) {
	t.Parallel()
	s := newStack(t, true)
	seed(t, s)
	rep, err := s.m.Fsck(context.Background(), maintenance.FsckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Problems) != 0 || len(rep.Warnings) != 0 {
		t.Fatalf("fsck of a good store: ok=%v problems=%+v warnings=%+v", rep.OK, rep.Problems, rep.Warnings)
	}
	c := rep.Checked
	// Nine manifests and six tags, and the referrers fallback index and
	// its tag when the client finds no referrers API.
	if c.Repositories != 6 || c.Tags < 6 || c.Tags > 7 || c.Manifests < 9 || c.Manifests > 10 || c.Blobs < 15 || c.Files != 1 || c.Packages != 1 || c.AptPublishes != 1 || c.Imports != 1 {
		t.Fatalf("checked = %+v", c)
	}
}

// TestFsckNamesEveryProblem breaks the store in every way fsck knows and
// checks that each is named, and that without --repair nothing changes.
func TestFsckNamesEveryProblem(t *testing.T) {
	t.Parallel()
	s := newStack(t, true)
	sd := seed(t, s)
	// A corrupt blob: one byte of a layer of enclave/a.
	flipByte(t, s.blobData(sd.aLayers[0]))
	// A tag naming a manifest that was deleted.
	if err := os.RemoveAll(s.repoDir("enclave/b", "_manifests", "revisions", "sha256", strings.TrimPrefix(sd.b, "sha256:"))); err != nil {
		t.Fatal(err)
	}
	// A missing layer of enclave/c.
	if err := os.RemoveAll(filepath.Dir(s.blobData(sd.cLayers[0]))); err != nil {
		t.Fatal(err)
	}
	// A corrupt file in the file store.
	flipByte(t, filepath.Join(s.dir, "files", "blobs", "sha256", strings.TrimPrefix(mustEntry(t, s, sd.file).Digest, "sha256:")))
	// A tampered .deb in the apt pool.
	debs, _ := filepath.Glob(filepath.Join(s.dir, "apt", "public", "*", "pool", "main", "h", "hello", "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("published debs: %v", debs)
	}
	flipByte(t, debs[0])
	// An import record left running by a process that died, and one that
	// does not parse.
	hist := filepath.Join(s.dir, "imports")
	if err := os.WriteFile(filepath.Join(hist, "20260101T000000Z-deadbeef.json"), []byte(`{"id":"deadbeef","source":"x.tar","outcome":"running","started":"2026-01-01T00:00:00Z"}`), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hist, "20260101T000001Z-broken.json"), []byte(`{"id":`), 0o640); err != nil {
		t.Fatal(err)
	}
	before := snapshotTree(t, s.dir)

	rep, err := s.m.Fsck(context.Background(), maintenance.FsckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK {
		t.Fatal("fsck of a broken store says ok")
	}
	want := []struct{ area, kind, repo, digest, tag, file string }{
		{"registry", registry.ProblemCorruptBlob, "", sd.aLayers[0], "", ""},
		{"registry", registry.ProblemDanglingTag, "enclave/b", sd.b, "v1", ""},
		{"registry", registry.ProblemDanglingLink, "enclave/c", sd.cLayers[0], "", ""},
		{"registry", registry.ProblemMissingBlob, "enclave/c", sd.c, "", ""},
		{"files", "corrupt-file", "", "", "", sd.file},
		{"apt", "corrupt-package", "", "", "", "ubuntu/pool/main/h/hello/hello_1.0_amd64.deb"},
		{"imports", "left-running", "", "", "", "20260101T000000Z-deadbeef.json"},
		{"imports", "invalid-record", "", "", "", "20260101T000001Z-broken.json"},
	}
	for _, w := range want {
		if !slices.ContainsFunc(rep.Problems, func(p maintenance.Problem) bool {
			return p.Area == w.area && p.Kind == w.kind && p.Repository == w.repo && (w.digest == "" || p.Digest == w.digest) && p.Tag == w.tag && p.File == w.file
		}) {
			t.Errorf("fsck does not name %+v; it reports:\n%s", w, describe(rep.Problems))
		}
	}
	if len(rep.Problems) != len(want) {
		t.Errorf("fsck reports %d problems, want %d:\n%s", len(rep.Problems), len(want), describe(rep.Problems))
	}
	if !slices.ContainsFunc(rep.Problems, func(p maintenance.Problem) bool {
		return p.Kind == registry.ProblemCorruptBlob && strings.Contains(p.Detail, "enclave/a@"+sd.a)
	}) {
		t.Errorf("the corrupt blob's problem does not name the manifest that uses it:\n%s", describe(rep.Problems))
	}
	if after := snapshotTree(t, s.dir); !maps.Equal(before, after) {
		t.Fatalf("fsck without --repair changed the store")
	}
}

// TestFsckRepair: --repair removes the corrupt blob, the dangling tag and
// the dangling link, and nothing else; what lacks content afterwards is
// named; once that content is pushed again fsck is clean.
func TestFsckRepair(t *testing.T) {
	t.Parallel()
	s := newStack(t, false)
	imgA := randomImage(t, 2)
	a := s.push(t, "enclave/a:v1", imgA).String()
	aLayers := layerDigests(t, imgA)
	b := s.push(t, "enclave/b:v1", randomImage(t, 1)).String()
	s.push(t, "enclave/keep:v1", randomImage(t, 2))
	// A dangling link: a blob pushed without manifest, whose data goes.
	orphan := s.push(t, "enclave/orphan:v1", randomImage(t, 1)).String()
	flipByte(t, s.blobData(aLayers[0]))
	if err := os.RemoveAll(s.repoDir("enclave/b", "_manifests", "revisions", "sha256", strings.TrimPrefix(b, "sha256:"))); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(s.blobData(orphan))); err != nil { // the manifest's own blob
		t.Fatal(err)
	}
	rep, err := s.m.Fsck(context.Background(), maintenance.FsckOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	type rm struct{ what, repo, digest, tag string }
	var got []rm
	for _, r := range rep.Removed {
		got = append(got, rm{r.What, r.Repository, r.Digest, r.Tag})
	}
	want := []rm{
		{"blob", "", aLayers[0], ""},
		{"layer-link", "enclave/a", aLayers[0], ""},
		{"tag", "enclave/b", b, "v1"},
		{"manifest-link", "enclave/orphan", orphan, ""},
		{"tag", "enclave/orphan", orphan, "v1"},
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("repair did not remove %+v; removed %+v", w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("repair removed %d things, want %d: %+v", len(got), len(want), got)
	}
	// What is left to do: enclave/a lacks the layer that was removed.
	if len(rep.Remaining) != 1 || rep.Remaining[0].Kind != registry.ProblemMissingBlob || rep.Remaining[0].Digest != a {
		t.Fatalf("remaining after repair = %s", describe(rep.Remaining))
	}
	if err := s.pull("enclave/keep:v1"); err != nil {
		t.Fatalf("repair touched a sound image: %v", err)
	}
	// Bring the layer in again (as an import of the image would): fsck
	// is clean.
	ls, _ := imgA.Layers()
	repo, err := name.NewRepository(s.host+"/enclave/a", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, ls[0]); err != nil {
		t.Fatal(err)
	}
	again, err := s.m.Fsck(context.Background(), maintenance.FsckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.OK {
		t.Fatalf("fsck after repair and re-push:\n%s", describe(again.Problems))
	}
}

func mustEntry(t *testing.T, s *stack, name string) struct{ Digest string } {
	t.Helper()
	e, ok := s.files.Get(name)
	if !ok {
		t.Fatalf("no file %s", name)
	}
	return struct{ Digest string }{e.Digest}
}

func describe(ps []maintenance.Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.Area + " " + p.Kind + " " + p.Repository + " " + p.Digest + " " + p.Tag + " " + p.File + ": " + p.Detail + "\n")
	}
	return b.String()
}

// snapshotTree maps every file under dir to its size and modification
// time.
func snapshotTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "db" {
			return filepath.SkipDir // aptly's database: leveldb keeps its own files
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out[p] = info.ModTime().String() + " " + info.Mode().String()
		} else {
			out[p] = "dir"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
