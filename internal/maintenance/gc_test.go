package maintenance_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/registry"
)

func removed(rep maintenance.GCReport, what string) []string {
	var out []string
	for _, r := range rep.Removed {
		if r.What == what {
			out = append(out, r.Repository+"@"+r.Digest)
		}
	}
	return out
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestGC: gc removes an untagged manifest no tag reaches and the blobs
// only it used, and a refused import's blobs and staging; it keeps
// everything tagged, index children and referrers, and what is younger
// than the grace period; a dry run changes nothing.
func TestGC(t *testing.T) {
	t.Parallel()
	s := newStack(t, false)
	ctx := context.Background()
	old := randomImage(t, 2)
	oldDigest := s.push(t, "enclave/app:v1", old).String()
	oldBlobs := layerDigests(t, old)
	cur := randomImage(t, 2)
	s.push(t, "enclave/app:v1", cur) // the tag moves: old is an orphan
	subject := randomImage(t, 1)
	s.push(t, "enclave/signed:v1", subject)
	ref := sbom(t, subject)
	refDigest := s.push(t, "enclave/signed@"+mustDigest(t, ref), ref).String()
	idx, err := random.Index(512, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	s.pushIndex(t, "enclave/multi:v1", idx)

	// A refused import: its layer is written, then an entry is refused.
	es, _ := layout("a layer of a refused import", "v1", [2]string{"blobs/sha256/" + strings.Repeat("cd", 32), "not what its name says"})
	if _, err := s.imp.Import(ctx, importer.Request{Source: "bad.tar", Reader: bytes.NewReader(tarOf(t, es...)), ToRepo: "enclave/refused"}); !errors.Is(err, importer.ErrDigestMismatch) {
		t.Fatalf("refused import = %v", err)
	}
	refusedLayer := sha("a layer of a refused import")
	if !exists(s.blobData(refusedLayer)) {
		t.Fatal("the refused import left no blob: the test proves nothing")
	}
	var refused []string // every blob of the archive the import wrote before it was refused
	for _, e := range es {
		if d, ok := strings.CutPrefix(e[0], "blobs/sha256/"); ok && exists(s.blobData("sha256:"+d)) {
			refused = append(refused, "sha256:"+d)
		}
	}
	// What a killed import leaves: a staging repository with a blob link.
	staged, err := s.reg.WriteBlob(ctx, importer.StagingProject+"/killed", registry.Descriptor{}, strings.NewReader("a blob of an import that was killed"))
	if err != nil {
		t.Fatal(err)
	}

	// Right after the pushes, the orphan is within the grace period.
	young, err := s.m.GC(ctx, maintenance.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(removed(young, "manifest"), "enclave/app@"+oldDigest) {
		t.Fatal("gc would remove a manifest pushed moments ago")
	}
	if !slices.Contains(removed(young, "blob"), "@"+refusedLayer) {
		t.Fatalf("gc would keep the refused import's blob, which no repository links: %v", removed(young, "blob"))
	}

	// Three hours on, a dry run names what goes, and removes nothing.
	before := snapshotTree(t, s.dir)
	dry, err := s.m.GC(ctx, maintenance.GCOptions{DryRun: true, Now: later()})
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshotTree(t, s.dir); len(before) != len(after) {
		t.Fatalf("a dry run changed the store: %d paths before, %d after", len(before), len(after))
	}
	wantManifests := []string{"enclave/app@" + oldDigest}
	wantBlobs := []string{"@" + staged.Digest.String(), "@" + oldDigest}
	for _, b := range append(oldBlobs, refused...) {
		wantBlobs = append(wantBlobs, "@"+b)
	}
	check := func(rep maintenance.GCReport) {
		t.Helper()
		if got := removed(rep, "manifest"); !sameSet(got, wantManifests) {
			t.Errorf("manifests removed = %v, want %v", got, wantManifests)
		}
		if got := removed(rep, "blob"); !sameSet(got, wantBlobs) {
			t.Errorf("blobs removed = %v, want %v", got, wantBlobs)
		}
		if got := removed(rep, "staging-repository"); !sameSet(got, []string{importer.StagingProject + "/killed@"}) {
			t.Errorf("staging repositories removed = %v", got)
		}
		if rep.Blobs != len(wantBlobs) || rep.Bytes <= 0 || rep.Manifests != 1 {
			t.Errorf("counts = %d blobs, %d bytes, %d manifests", rep.Blobs, rep.Bytes, rep.Manifests)
		}
	}
	check(dry)
	if !dry.DryRun {
		t.Error("the dry run's report does not say so")
	}

	rep, err := s.m.GC(ctx, maintenance.GCOptions{Now: later()})
	if err != nil {
		t.Fatal(err)
	}
	check(rep)
	for _, b := range append(append([]string{oldDigest}, oldBlobs...), refused...) {
		if exists(s.blobData(b)) {
			t.Errorf("blob %s survived gc", b)
		}
	}
	if _, err := remote.Image(s.ref(t, "enclave/app@"+oldDigest)); err == nil {
		t.Error("the orphan manifest can still be pulled")
	}
	for _, r := range []string{"enclave/app:v1", "enclave/signed:v1", "enclave/signed@" + refDigest} {
		if err := s.pull(r); err != nil {
			t.Errorf("after gc: %v", err)
		}
	}
	mi, err := remote.Index(s.ref(t, "enclave/multi:v1"))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := mi.IndexManifest()
	for _, c := range im.Manifests {
		if err := s.pull("enclave/multi@" + c.Digest.String()); err != nil {
			t.Errorf("index child after gc: %v", err)
		}
	}
	if repos, _ := s.reg.RepositoriesUnder(ctx, importer.StagingProject); len(repos) != 0 {
		t.Errorf("staging repositories left: %v", repos)
	}
	fr, err := s.m.Fsck(ctx, maintenance.FsckOptions{})
	if err != nil || !fr.OK {
		t.Fatalf("fsck after gc: %v\n%s", err, describe(fr.Problems))
	}
	again, err := s.m.GC(ctx, maintenance.GCOptions{Now: later()})
	if err != nil || len(again.Removed) != 0 {
		t.Fatalf("a second gc removed %+v (%v)", again.Removed, err)
	}
}

// TestGCKeepsABlobPushedBeforeItsManifest: a blob uploaded over /v2/
// whose manifest has not arrived yet is not collected, nor an old one a
// client found present (HEAD) just before pushing the manifest naming it.
func TestGCKeepsABlobPushedBeforeItsManifest(t *testing.T) {
	t.Parallel()
	s := newStack(t, false)
	ctx := context.Background()
	img := randomImage(t, 2)
	ls, _ := img.Layers()
	repo, err := name.NewRepository(s.host+"/enclave/slow", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, ls[0]); err != nil {
		t.Fatal(err)
	}
	rep, err := s.m.GC(ctx, maintenance.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ProtectedByGrace != 1 || rep.Blobs != 0 {
		t.Fatalf("gc of a blob pushed moments ago: %+v", rep)
	}
	s.push(t, "enclave/slow:v1", img)
	if err := s.pull("enclave/slow:v1"); err != nil {
		t.Fatalf("the push that straddled gc is broken: %v", err)
	}

	// Two blobs linked three hours ago and referenced by nothing: a
	// client finds one present (HEAD), about to push a manifest naming it.
	// (Written directly: a push over /v2/ would HEAD them first.)
	var aged []string
	for i := range 2 {
		desc, err := s.reg.WriteBlob(ctx, "enclave/slow", registry.Descriptor{}, strings.NewReader("an aged blob "+string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		d := desc.Digest
		old := time.Now().Add(-3 * time.Hour)
		for _, p := range []string{s.repoDir("enclave/slow", "_layers", "sha256", d.Encoded(), "link"), s.blobData(d.String())} {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
		aged = append(aged, d.String())
	}
	resp, err := http.Head("http://" + s.host + "/v2/enclave/slow/blobs/" + aged[0])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD blob = %d", resp.StatusCode)
	}
	rep, err = s.m.GC(ctx, maintenance.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := removed(rep, "blob"); !sameSet(got, []string{"@" + aged[1]}) {
		t.Fatalf("gc removed %v, want only the aged blob nobody asked for (%s)", got, aged[1])
	}
}

// TestGCWhilePullsGoOn: pulls of tagged images, every byte verified, go
// on while gc collects the orphans pushed meanwhile.
func TestGCWhilePullsGoOn(t *testing.T) {
	t.Parallel()
	s := newStack(t, false)
	ctx := context.Background()
	var refs []string
	for i := range 4 {
		r := "enclave/pulled:v" + string(rune('1'+i))
		s.push(t, r, randomImage(t, 3))
		refs = append(refs, r)
	}
	var (
		wg     sync.WaitGroup
		pulls  atomic.Int64
		errs   = make(chan error, 1000)
		stop   = make(chan struct{})
		stopMu sync.Once
	)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ { // bounded
				select {
				case <-stop:
					return
				default:
				}
				if err := s.pull(refs[(i+w)%len(refs)]); err != nil {
					errs <- err
				}
				pulls.Add(1)
			}
		}()
	}
	removedTotal := 0
	for round := range 5 {
		// An orphan each round: pushed, then its tag moves on.
		s.push(t, "enclave/churn:v1", randomImage(t, 2))
		s.push(t, "enclave/churn:v1", randomImage(t, 2))
		rep, err := s.m.GC(ctx, maintenance.GCOptions{Now: later()})
		if err != nil {
			t.Fatalf("gc round %d: %v", round, err)
		}
		removedTotal += rep.Blobs
	}
	stopMu.Do(func() { close(stop) })
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if removedTotal == 0 || pulls.Load() == 0 {
		t.Fatalf("gc removed %d blobs while %d pulls ran: the test proves nothing", removedTotal, pulls.Load())
	}
	if err := s.pull("enclave/churn:v1"); err != nil {
		t.Fatal(err)
	}
}

// gatedReader passes its data through, stopping before offset gate until
// the gate opens.
type gatedReader struct {
	data    []byte
	off     int
	gate    int
	reached chan struct{}
	open    chan struct{}
	once    sync.Once
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.off >= len(g.data) {
		return 0, io.EOF
	}
	if g.off == g.gate {
		g.once.Do(func() { close(g.reached) })
		<-g.open
	}
	end := len(g.data)
	if g.off < g.gate {
		end = g.gate
	}
	n := copy(p, g.data[g.off:end])
	g.off += n
	return n, nil
}

// TestGCTakesTurnsWithAnImport: gc waits for an import in flight (which
// has written blobs no tag reaches yet) and then runs; the import
// completes and is whole. When the import takes longer than gc may wait,
// gc gives up, naming it.
func TestGCTakesTurnsWithAnImport(t *testing.T) {
	t.Parallel()
	s := newStack(t, false)
	ctx := context.Background()
	big := strings.Repeat("a layer big enough to be read in pieces ", 100000) // ~4 MiB
	es, manifest := layout(big, "v1")
	data := tarOf(t, es...)
	gr := &gatedReader{data: data, gate: len(data) - 4096, reached: make(chan struct{}), open: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.imp.Import(ctx, importer.Request{Source: "slow.tar", Reader: gr, ToRepo: "enclave/slow"})
		done <- err
	}()
	<-gr.reached // the layer is in storage, in staging, tagged nowhere

	impatient, err := maintenance.New(s.reg, maintenance.WithTurnWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := impatient.GC(ctx, maintenance.GCOptions{Now: later()}); !errors.Is(err, registry.ErrBusy) || !strings.Contains(err.Error(), "import") {
		t.Fatalf("gc while an import holds its turn = %v, want ErrBusy naming the import", err)
	}
	gcDone := make(chan maintenance.GCReport, 1)
	go func() {
		rep, err := s.m.GC(ctx, maintenance.GCOptions{Now: later()})
		if err != nil {
			t.Error(err)
		}
		gcDone <- rep
	}()
	select {
	case <-gcDone:
		t.Fatal("gc ran while the import was in flight")
	case <-time.After(300 * time.Millisecond):
	}
	close(gr.open)
	if err := <-done; err != nil {
		t.Fatalf("the import gc waited for: %v", err)
	}
	rep := <-gcDone
	if len(rep.Removed) != 0 {
		t.Errorf("gc after the import removed %+v", rep.Removed)
	}
	if err := s.pull("enclave/slow:v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.pull("enclave/slow@" + manifest); err != nil {
		t.Fatal(err)
	}
	fr, err := s.m.Fsck(ctx, maintenance.FsckOptions{})
	if err != nil || !fr.OK {
		t.Fatalf("fsck after the import and gc: %v\n%s", err, describe(fr.Problems))
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
