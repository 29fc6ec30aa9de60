package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// An operation is what a fault strikes, on an appliance that already
// holds committed content.
type operation interface {
	// interrupt starts the operation, causes the fault once it is proven
	// to be under way, and returns with the appliance serving again:
	// restarted after a kill, or with the space freed after a full disk.
	interrupt(t *testing.T)
	// nothingVisible checks that nothing the operation half wrote shows.
	nothingVisible(t *testing.T)
	// repeat runs the operation again and checks that it completed.
	repeat(t *testing.T)
}

// TestFaults strikes each operation that writes with a fault: kill -9
// during an import, a push, a promotion and a gc; a full disk during an
// import and a push. After each, everything committed before is served
// with the same digests, nothing half written is visible, fsck finds no
// problem and no warning, the audit trail's chain verifies, and running
// the operation again completes it; after a clean restart all of that
// still holds.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		needs []string // beside skopeo
		tmpfs string   // the size of a tmpfs for the data dir; "": the test's temp dir
		op    func(t *testing.T, a *appliance, committed image) operation
	}{
		{"kill during import", nil, "", newKilledImport},
		{"kill during push", nil, "", newKilledPush},
		{"kill during promotion", []string{"docker-registry"}, "", newKilledPromotion},
		// On a tmpfs fsync costs nothing: the garbage is quick to make.
		{"kill during gc", nil, "512m", newKilledGC},
		{"full disk during import", nil, "64m", newFullImport(8 << 20)},
		{"full disk as an import begins", nil, "64m", newFullImport(int64(os.Getpagesize()))},
		{"full disk during push", nil, "64m", newFullPush},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.Need(t, append([]string{"skopeo"}, tc.needs...)...)
			t.Parallel()
			dataDir := t.TempDir()
			if tc.tmpfs != "" {
				dataDir = filepath.Join(smallDisk(t, tc.tmpfs), "data")
			}
			a := startAppliance(t, dataDir)
			committed := seedImage(t, a, "committed/app:1", 256<<10, 2)
			op := tc.op(t, a, committed)

			op.interrupt(t)
			assertServed(t, a, committed)
			op.nothingVisible(t)
			assertSound(t, a)

			op.repeat(t)
			assertServed(t, a, committed)
			assertSound(t, a)

			a.restart()
			assertServed(t, a, committed)
			assertSound(t, a)
		})
	}
}

// killedImport is `appliance import` of a 48 MiB layout, uploaded through
// a throttle so that it takes seconds, killed once the registry holds
// 16 MiB of it.
type killedImport struct {
	a      *appliance
	layout string
	digest string
}

func newKilledImport(t *testing.T, a *appliance, _ image) operation {
	dir, d := ociLayout(t, 8<<20, 6)
	return &killedImport{a: a, layout: dir, digest: d.String()}
}

func (k *killedImport) interrupt(t *testing.T) {
	a := k.a
	proxy := startThrottle(t, a.host(), 8<<20)
	before := storedBytes(t, a)
	done := make(chan cliResult, 1)
	go func() {
		out, err := a.cliEnvTimeout(2*time.Minute, []string{"APPLIANCE_SERVER=https://" + proxy.addr()}, a.password+"\n",
			"import", "--to-repo", "fault/import", k.layout, "--username", "admin", "--password-stdin")
		done <- cliResult{out, err}
	}()
	waitFor(t, "the import to write 16 MiB", time.Minute, func() bool {
		return importOutcome(t, a, filepath.Base(k.layout)) == history.OutcomeRunning &&
			storedBytes(t, a) >= before+16<<20
	})
	t.Logf("killed with %d MiB of the import in storage", (storedBytes(t, a)-before)>>20)
	a.kill()
	r := <-done
	mustFail(t, "the killed import", r.out, r.err)
	a.start()
}

func (k *killedImport) nothingVisible(t *testing.T) {
	assertNoTags(t, k.a, "fault/import")
	if hasStaging(t, k.a) {
		t.Error("the killed import's staging repository survived the restart")
	}
	assertImportRecorded(t, k.a, filepath.Base(k.layout), history.OutcomeInterrupted)
}

func (k *killedImport) repeat(t *testing.T) {
	out, err := k.a.cliLong(k.a.password+"\n", "import", "--to-repo", "fault/import", k.layout, "--username", "admin", "--password-stdin")
	mustOK(t, "the import run again", out, err)
	assertTag(t, k.a, "fault/import:latest", k.digest)
}

// killedPush is a skopeo push of a 32 MiB image through a throttle,
// killed once 12 MiB have passed and before the manifest.
type killedPush struct {
	a      *appliance
	layout string
	img    image
}

func newKilledPush(t *testing.T, a *appliance, _ image) operation {
	dir, _ := ociLayout(t, 8<<20, 4)
	return &killedPush{a: a, layout: dir, img: layoutImage(t, dir, "fault/push:1")}
}

func (k *killedPush) interrupt(t *testing.T) {
	a := k.a
	proxy := startThrottle(t, a.host(), 2<<20)
	certs := a.certDir()
	done := make(chan cliResult, 1)
	go func() {
		out, err := run(t, nil, "skopeo", "copy", "--dest-cert-dir", certs, "--dest-creds", "admin:"+a.password,
			"oci:"+k.layout+":latest", "docker://"+proxy.addr()+"/"+k.img.ref)
		done <- cliResult{out, err}
	}()
	waitFor(t, "skopeo to send 12 MiB", time.Minute, func() bool { return proxy.moved.Load() >= 12<<20 })
	if code, _, _ := status(t, a, http.MethodHead, "/v2/fault/push/manifests/1", "admin", a.password); code != http.StatusNotFound {
		t.Fatalf("the manifest arrived before the kill (HEAD: %d): the push was not stopped midway", code)
	}
	t.Logf("killed with %d MiB through the proxy", proxy.moved.Load()>>20)
	a.kill()
	r := <-done
	mustFail(t, "the killed push", r.out, r.err)
	a.start()
}

func (k *killedPush) nothingVisible(t *testing.T) { assertNoTags(t, k.a, "fault/push") }

func (k *killedPush) repeat(t *testing.T) {
	out, err := pushOCI(t, k.a, k.layout, k.img.ref, "admin:"+k.a.password)
	mustOK(t, "the push run again", out, err)
	assertServed(t, k.a, k.img)
}

// killedPromotion is `appliance promote --all` into Debian's
// docker-registry (TLS) through a throttle, the appliance killed once
// 20 MiB of a 48 MiB model have been sent.
type killedPromotion struct {
	a     *appliance
	reg   *tlsRegistry
	proxy *throttle
	pass  string
	repos []string
	want  map[string]map[string]string
}

func newKilledPromotion(t *testing.T, a *appliance, _ image) operation {
	seedImage(t, a, "promote/model:1", 8<<20, 6)
	reg := startTLSRegistry(t)
	repos := []string{"committed/app", "promote/model"}
	return &killedPromotion{a: a, reg: reg, proxy: startThrottle(t, reg.Host, 8<<20), pass: writeSecret(t, reg.password),
		repos: repos, want: applianceView(t, a).content(t, repos...)}
}

func (k *killedPromotion) args() []string {
	return promoteArgs("https://"+k.proxy.addr(), k.reg.caFile, "promoter", k.pass, "--all")
}

func (k *killedPromotion) interrupt(t *testing.T) {
	done := make(chan cliResult, 1)
	go func() {
		out, err := k.a.cliLong(k.a.password+"\n", k.args()...)
		done <- cliResult{out, err}
	}()
	waitPromotionBytes(t, k.a, 20<<20)
	var rec promote.Promotion
	if err := getJSON(k.a, "/api/v1/promotions/latest", &rec); err == nil && rec.Plan != nil {
		t.Logf("killed with %d MiB of %d sent", rec.Progress.BytesDone>>20, rec.Plan.BytesToPush>>20)
	}
	k.a.kill()
	r := <-done
	mustFail(t, "the killed promotion", r.out, r.err)
	k.a.start()
}

func (k *killedPromotion) nothingVisible(t *testing.T) {
	var rec promote.Promotion
	if err := getJSON(k.a, "/api/v1/promotions/latest", &rec); err != nil || rec.State != promote.StateInterrupted {
		t.Errorf("after the kill the promotion is %q (%v), want %q", rec.State, err, promote.StateInterrupted)
	}
	out, err := k.a.cli(k.a.password+"\n", "promotions", "--username", "admin", "--password-stdin")
	mustOK(t, "appliance promotions", out, err)
	if !strings.Contains(out, promote.StateInterrupted) {
		t.Errorf("appliance promotions does not show the killed promotion interrupted:\n%s", out)
	}
	// Tags go last: the target names nothing it does not hold.
	target := newRegView(t, k.reg.Host, k.reg.caFile, "promoter", k.reg.password)
	for _, repo := range k.repos {
		if tags := target.tagsOrNone(t, repo); len(tags) != 0 {
			t.Errorf("the killed promotion left tags on the target: %s %v", repo, tags)
		}
	}
}

func (k *killedPromotion) repeat(t *testing.T) {
	k.proxy.rate.Store(0)
	rec, out, err := promoteJSON(t, k.a, k.args()...)
	mustOK(t, "the promotion run again", out, err)
	if rec.State != promote.StateSucceeded || rec.Parity == nil || !rec.Parity.OK || rec.Plan == nil || rec.Plan.BlobsPresent == 0 {
		t.Fatalf("the promotion run again: %s, parity %+v, plan %+v (want blobs the first run sent)", rec.State, rec.Parity, rec.Plan)
	}
	sameContent(t, "docker-registry", k.want, newRegView(t, k.reg.Host, k.reg.caFile, "promoter", k.reg.password).content(t, k.repos...))
}

// killedGC is a gc of thousands of unreferenced blobs (those a refused
// import wrote) and of a manifest no tag reaches (a tag moved from it
// three hours ago), killed three times in the middle of its sweep.
type killedGC struct {
	a            *appliance
	kept, orphan image // committed/moved:1 now, and what it named before
}

// junkBlobs is how many blobs the refused import writes: enough for gc
// to take half a second or so to remove them on a tmpfs, a window that a
// poll every few milliseconds does not miss.
const junkBlobs = 15000

func newKilledGC(t *testing.T, a *appliance, _ image) operation {
	orphan := seedImage(t, a, "committed/moved:1", 4<<10, 2)
	kept := seedImage(t, a, "committed/moved:1", 4<<10, 2)
	// Aged past the grace period: the orphan's manifest and layer links.
	repo := filepath.Join(a.dataDir, "registry", "docker", "registry", "v2", "repositories", "committed", "moved")
	old := time.Now().Add(-3 * time.Hour)
	links := []string{filepath.Join(repo, "_manifests", "revisions", "sha256", strings.TrimPrefix(orphan.digest, "sha256:"), "link")}
	for _, b := range orphan.blobs {
		links = append(links, filepath.Join(repo, "_layers", "sha256", strings.TrimPrefix(b, "sha256:"), "link"))
	}
	for _, l := range links {
		if err := os.Chtimes(l, old, old); err != nil {
			t.Fatal(err)
		}
	}

	refused, _ := ociLayout(t, 1<<10, 1)
	for range junkBlobs {
		b := make([]byte, 64)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(refused, "blobs", "sha256", fmt.Sprintf("%x", sha256.Sum256(b))), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(refused, "blobs", "sha256", strings.Repeat("f", 64)), []byte("not what its name says"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := a.cliLong(a.password+"\n", "import", "--to-repo", "fault/refused", refused, "--username", "admin", "--password-stdin")
	mustFail(t, "the import of a tampered layout", out, err, "does not match its digest")
	// The registry also protects, for the grace period, the blobs clients
	// asked about (skopeo asks before every upload); it remembers those
	// in memory only.
	a.restart()

	plan := gcPlan(t, a)
	doomed := map[string]bool{}
	for _, r := range plan.Removed {
		doomed[r.What+" "+r.Digest] = true
	}
	want := []string{"manifest " + orphan.digest, "blob " + orphan.digest}
	for _, b := range orphan.blobs {
		want = append(want, "blob "+b)
	}
	for _, w := range want {
		if !doomed[w] {
			t.Fatalf("gc --dry-run would not remove the orphan's %s", w)
		}
	}
	// The refused import wrote most of its junk (those in flight when it
	// was refused may be cut short).
	if plan.Manifests != 1 || plan.Blobs < junkBlobs*9/10 {
		t.Fatalf("gc would remove %d manifests and %d blobs, want the orphan and most of the %d blobs of junk", plan.Manifests, plan.Blobs, junkBlobs)
	}
	return &killedGC{a: a, kept: kept, orphan: orphan}
}

func (k *killedGC) interrupt(t *testing.T) {
	a := k.a
	garbage := gcPlan(t, a).Blobs
	remaining := garbage
	for i := range 3 {
		// Each run is killed once it removed a third of what is left,
		// counted from where the last run stopped (a loaded machine may
		// let the poll see a run go further than asked).
		stopAt := blobCount(t, a) - max(1, remaining/3)
		done := make(chan cliResult, 1)
		go func() {
			out, err := a.cliLong(a.password+"\n", "gc", "--username", "admin", "--password-stdin")
			done <- cliResult{out, err}
		}()
		deadline := time.Now().Add(time.Minute)
		for blobCount(t, a) > stopAt {
			select {
			case r := <-done:
				t.Fatalf("kill %d: gc ended before %d blobs were left (%v): %s", i+1, stopAt, r.err, r.out)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: gc did not come down to %d blobs within a minute", i+1, stopAt)
			}
			time.Sleep(2 * time.Millisecond)
		}
		a.kill()
		r := <-done
		mustFail(t, "the killed gc", r.out, r.err)
		if strings.Contains(a.stderr.String(), "registry garbage collected") {
			t.Fatalf("kill %d: the gc had finished", i+1)
		}
		a.start()
		// Proof that it was stopped midway: some of the garbage is gone,
		// not all of it.
		left := gcPlan(t, a)
		if left.Blobs == 0 || left.Blobs >= remaining {
			t.Fatalf("kill %d: gc would now remove %d blobs, %d before this run: the kill did not strike during the sweep", i+1, left.Blobs, remaining)
		}
		t.Logf("kill %d: %d of %d blobs of garbage left", i+1, left.Blobs, garbage)
		remaining = left.Blobs
		assertServed(t, a, k.kept)
		k.nothingVisible(t)
		assertSound(t, a)
	}
}

// nothingVisible: the orphan manifest went before any blob did, so it
// cannot be pulled with some of its blobs gone.
func (k *killedGC) nothingVisible(t *testing.T) {
	if code, _, _ := status(t, k.a, http.MethodHead, "/v2/committed/moved/manifests/"+k.orphan.digest, "admin", k.a.password); code != http.StatusNotFound {
		t.Fatalf("the orphan manifest after the killed gc: HEAD = %d, want 404", code)
	}
}

func (k *killedGC) repeat(t *testing.T) {
	out, err := k.a.cliLong(k.a.password+"\n", "gc", "--username", "admin", "--password-stdin")
	mustOK(t, "gc run again", out, err)
	if left := gcPlan(t, k.a); left.Manifests != 0 || left.Blobs != 0 {
		t.Fatalf("after gc ran again it would still remove %d manifests and %d blobs", left.Manifests, left.Blobs)
	}
	assertServed(t, k.a, k.kept)
}

// fullImport is `appliance import` of a 16 MiB layout with little left on
// the appliance's disk: half a layer (the import writes, then meets the
// full disk), or a page (only the import's record fits: its first blob
// meets the full disk, and nothing it wrote can be removed to make room).
type fullImport struct {
	a         *appliance
	committed image
	leave     int64
	layout    string
	digest    string
}

func newFullImport(leave int64) func(t *testing.T, a *appliance, committed image) operation {
	return func(t *testing.T, a *appliance, committed image) operation {
		dir, d := ociLayout(t, 8<<20, 2)
		return &fullImport{a: a, committed: committed, leave: leave, layout: dir, digest: d.String()}
	}
}

func (f *fullImport) interrupt(t *testing.T) {
	a := f.a
	filler := fill(t, a.dataDir, f.leave)
	out, err := a.cliLong(a.password+"\n", "import", "--to-repo", "fault/import", f.layout, "--username", "admin", "--password-stdin")
	mustFail(t, "an import onto a full disk", out, err, "no space left on device")
	assertServed(t, a, f.committed) // while the disk is still full
	f.nothingVisible(t)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
}

func (f *fullImport) nothingVisible(t *testing.T) {
	assertNoTags(t, f.a, "fault/import")
	if hasStaging(t, f.a) {
		t.Error("the failed import left its staging repository")
	}
	assertImportRecorded(t, f.a, filepath.Base(f.layout), history.OutcomeFailed)
}

func (f *fullImport) repeat(t *testing.T) {
	out, err := f.a.cliLong(f.a.password+"\n", "import", "--to-repo", "fault/import", f.layout, "--username", "admin", "--password-stdin")
	mustOK(t, "the import run again", out, err)
	assertTag(t, f.a, "fault/import:latest", f.digest)
}

// fullPush is a skopeo push of a 16 MiB image with 8 MiB left on the
// appliance's disk.
type fullPush struct {
	a         *appliance
	committed image
	layout    string
	img       image
}

func newFullPush(t *testing.T, a *appliance, committed image) operation {
	dir, _ := ociLayout(t, 8<<20, 2)
	return &fullPush{a: a, committed: committed, layout: dir, img: layoutImage(t, dir, "fault/push:1")}
}

func (f *fullPush) interrupt(t *testing.T) {
	a := f.a
	filler := fill(t, a.dataDir, 8<<20)
	out, err := pushOCI(t, a, f.layout, f.img.ref, "admin:"+a.password)
	mustFail(t, "a push onto a full disk", out, err, "writing blob")
	// skopeo shows only the status of a 5xx answer ("500 Internal Server
	// Error"), not the OCI error in its body. That error names the full
	// disk: the same upload with go-containerregistry, which shows it.
	layer, err := random.Layer(1<<20, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	v := applianceView(t, a)
	noRetry := []remote.Option{remote.WithRetryPredicate(func(error) bool { return false }), remote.WithRetryStatusCodes()}
	err = remote.WriteLayer(v.ref(t, f.img.ref).Context(), layer, append(v.opts, noRetry...)...)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("a blob upload onto a full disk = %v, want an error naming no space left on device", err)
	}
	assertServed(t, a, f.committed) // while the disk is still full
	f.nothingVisible(t)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
}

func (f *fullPush) nothingVisible(t *testing.T) { assertNoTags(t, f.a, "fault/push") }

func (f *fullPush) repeat(t *testing.T) {
	out, err := pushOCI(t, f.a, f.layout, f.img.ref, "admin:"+f.a.password)
	mustOK(t, "the push run again", out, err)
	assertServed(t, f.a, f.img)
}
