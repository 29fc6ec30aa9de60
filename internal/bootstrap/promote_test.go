package bootstrap_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/regclient"
)

// TestPromoteBetweenRegistries promotes from one real registry's storage
// into another over TLS: an image with an SBOM referrer, the same image in
// a second repository (its blobs mounted, not sent again), and a
// multi-arch index. The target has no referrers API, so the referrer is
// listed under the fallback tag; parity holds, and a second run finds
// nothing to push.
func TestPromoteBetweenRegistries(t *testing.T) {
	t.Parallel()
	src, dst := newNode(t), newNode(t)
	img := image(t, 256<<10, 3)
	app := src.push(t, "nvidia/app:1.0", img)
	src.push(t, "nvidia/app:latest", img)
	src.push(t, "nvidia/copy:1.0", img)
	ref := sbom(t, img)
	refDigest, _ := ref.Digest()
	src.push(t, "nvidia/app@"+refDigest.String(), ref)
	idx, err := random.Index(32<<10, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	multi := src.pushIndex(t, "vendor/multi:v1", idx)

	p, err := bootstrap.NewPromoter(src.reg, src.reg, public{"nvidia": true}, t.TempDir(), bootstrap.WithSkip(isStaging))
	if err != nil {
		t.Fatal(err)
	}
	target := bootstrap.Target{URL: dst.url, CAPEM: dst.caPEM}
	plan, err := p.Start(context.Background(), bootstrap.PromoteRequest{Target: target, All: true, DryRun: true, By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if plan.State != bootstrap.StatePlanned || plan.Plan.BlobsToPush == 0 || plan.Plan.Referrers != 1 || plan.TargetKind != "registry" {
		t.Fatalf("dry run: %s %+v", plan.State, plan.Plan)
	}
	if tags, _ := dst.reg.Tags(context.Background(), "nvidia/app"); len(tags) != 0 {
		t.Fatalf("a dry run pushed tags: %v", tags)
	}

	rec, err := p.Start(context.Background(), bootstrap.PromoteRequest{Target: target, All: true, Parallel: 2, By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	rec = waitDone(t, p, rec.ID)
	if rec.State != bootstrap.StateSucceeded || !rec.Parity.OK {
		t.Fatalf("promotion %s (%s), parity %+v", rec.State, rec.Error, rec.Parity)
	}
	if rec.Progress.BlobsMounted == 0 {
		t.Errorf("nvidia/copy's blobs were sent again instead of mounted: %+v", rec.Progress)
	}
	if rec.Progress.BytesDone != rec.Plan.BytesToPush {
		t.Errorf("progress counted %d bytes, the plan %d", rec.Progress.BytesDone, rec.Plan.BytesToPush)
	}
	for _, c := range []struct{ repo, tag, want string }{
		{"nvidia/app", "1.0", app.String()}, {"nvidia/app", "latest", app.String()}, {"nvidia/copy", "1.0", app.String()}, {"vendor/multi", "v1", multi.String()},
	} {
		if got := dst.digest(t, c.repo, c.tag); got != c.want {
			t.Errorf("%s:%s on the target = %q, want %s", c.repo, c.tag, got, c.want)
		}
	}
	// The referrer is listed under the fallback tag of its subject.
	fb := dst.digest(t, "nvidia/app", regclient.FallbackTag(digest.Digest(app.String())))
	if fb == "" {
		t.Fatal("no fallback tag for the SBOM's subject on the target")
	}
	refs, err := remote.Referrers(dst.ref(t, "nvidia/app@"+app.String()).(name.Digest), dst.opts...)
	if err != nil {
		t.Fatal(err)
	}
	if im, _ := refs.IndexManifest(); len(im.Manifests) != 1 || im.Manifests[0].Digest != refDigest {
		t.Fatalf("referrers on the target: %+v", im)
	}
	var refCount int
	for _, r := range rec.Parity.Repositories {
		refCount += len(r.Referrers)
	}
	if refCount != 1 {
		t.Errorf("parity lists %d referrers, want 1", refCount)
	}

	again, err := p.Start(context.Background(), bootstrap.PromoteRequest{Target: target, Projects: []string{"nvidia", "vendor"}, By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	again = waitDone(t, p, again.ID)
	if again.Plan.BlobsToPush != 0 || again.Plan.ManifestsToPush != 0 || again.Plan.TagsToSet != 0 || !again.Parity.OK {
		t.Fatalf("second run: %+v", again.Plan)
	}
	last, ok, err := p.LastParity()
	if err != nil || !ok || last.ID != again.ID {
		t.Fatalf("LastParity = %s %v %v", last.ID, ok, err)
	}
}

// TestPromoteParityNamesDifferences moves a tag on the target behind the
// promoter's back between its push and a fresh parity check: the report
// names it, and the promotion does not succeed.
func TestPromoteParityNamesDifferences(t *testing.T) {
	t.Parallel()
	src, dst := newNode(t), newNode(t)
	src.push(t, "nvidia/app:1.0", image(t, 8<<10, 1))
	dst.push(t, "nvidia/app:extra", image(t, 8<<10, 1))
	p, err := bootstrap.NewPromoter(src.reg, src.reg, public{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := p.Start(context.Background(), bootstrap.PromoteRequest{Target: bootstrap.Target{URL: dst.url, CAPEM: dst.caPEM}, All: true})
	if err != nil {
		t.Fatal(err)
	}
	rec = waitDone(t, p, rec.ID)
	if !rec.Parity.OK || len(rec.Parity.Repositories) != 1 || len(rec.Parity.Repositories[0].OnlyOnTarget) != 1 {
		t.Fatalf("parity with a tag only on the target: %+v", rec.Parity)
	}
	// Now the target's tag moves: a new promotion plans to move it back.
	other := dst.push(t, "nvidia/app:1.0", image(t, 8<<10, 1))
	plan, err := p.Start(context.Background(), bootstrap.PromoteRequest{Target: bootstrap.Target{URL: dst.url, CAPEM: dst.caPEM}, All: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	tp := plan.Plan.Repositories[0].Tags[0]
	if tp.Action != "move" || tp.TargetDigest != other.String() {
		t.Fatalf("plan for a moved tag: %+v", tp)
	}
}

// TestPromoteRefusesEverythingAtOnce: a read-only target and a project the
// appliance does not hold are both reported, before anything moves.
func TestPromoteRefusesEverythingAtOnce(t *testing.T) {
	t.Parallel()
	src, dst := newNode(t), newNode(t)
	src.push(t, "nvidia/app:1.0", image(t, 8<<10, 1))
	if _, err := dst.reg.SetReadOnly(true, "maintenance"); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	p, err := bootstrap.NewPromoter(src.reg, src.reg, public{}, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := p.Start(context.Background(), bootstrap.PromoteRequest{Target: bootstrap.Target{URL: dst.url, CAPEM: dst.caPEM}, Projects: []string{"nvidia", "ghost"}})
	var refused *bootstrap.RefusedError
	if !errors.As(err, &refused) || len(refused.Problems) != 2 {
		t.Fatalf("Start = %v, want a RefusedError with two problems", err)
	}
	all := strings.Join(refused.Problems, "\n")
	for _, want := range []string{"no repository in project ghost", "read-only"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	if rec.State != bootstrap.StateRefused {
		t.Errorf("record state %q, want refused", rec.State)
	}
	for _, bad := range []bootstrap.PromoteRequest{
		{Target: bootstrap.Target{URL: dst.url}},
		{Target: bootstrap.Target{URL: dst.url}, All: true, Projects: []string{"x"}},
		{Target: bootstrap.Target{URL: dst.url}, All: true, Parallel: 1000},
	} {
		if _, err := p.Start(context.Background(), bad); !errors.Is(err, bootstrap.ErrInvalid) {
			t.Errorf("Start(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestPromotionInterruptedByStop: a record a stopped process left running
// reads as interrupted when the promoter opens again.
func TestPromotionInterruptedByStop(t *testing.T) {
	t.Parallel()
	src := newNode(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "promotions"), 0o750); err != nil {
		t.Fatal(err)
	}
	stale := bootstrap.Promotion{ID: "abc", Target: "https://harbor.test", State: bootstrap.StateRunning, Started: time.Now().UTC()}
	data, _ := json.Marshal(stale)
	if err := os.WriteFile(filepath.Join(dir, "promotions", "20260101T000000Z-abc.json"), data, 0o640); err != nil {
		t.Fatal(err)
	}
	p, err := bootstrap.NewPromoter(src.reg, src.reg, public{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := p.Get("abc")
	if err != nil || rec.State != bootstrap.StateInterrupted || !strings.Contains(rec.Error, "pushes only what is missing") {
		t.Fatalf("after a restart: %+v %v", rec, err)
	}
	if _, err := p.Get("nope"); !errors.Is(err, bootstrap.ErrNotFound) {
		t.Fatalf("Get(nope) = %v", err)
	}
}

// TestFollowerPullsNewAndMovedTags: a standby of a primary pulls what the
// primary has and it has not, while its registry stays read-only to
// everyone else; a moved tag comes in with its previous digest; a tag the
// primary no longer has is drift, not deleted.
func TestFollowerPullsNewAndMovedTags(t *testing.T) {
	t.Parallel()
	primary := newNode(t)
	first := primary.push(t, "nvidia/app:1.0", image(t, 64<<10, 2))
	img := image(t, 32<<10, 1)
	primary.push(t, "nvidia/app:latest", img)
	primary.push(t, "nvidia/app@"+mustDigest(t, sbom(t, img)), sbom(t, img))
	idx, err := random.Index(16<<10, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	primary.pushIndex(t, "nvidia/multi:v1", idx)
	sb := newStandby(t, primary, "nvidia")

	st, err := sb.f.SyncNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pulled) != 3 || st.LastCleanSync.IsZero() {
		t.Fatalf("first sync: %+v", st)
	}
	if got := sb.digest(t, "nvidia/app", "1.0"); got != first.String() {
		t.Fatalf("nvidia/app:1.0 on the standby = %q, want %s", got, first)
	}
	if !sb.reg.Mode().ReadOnly {
		t.Fatal("the standby's registry is writable after a sync")
	}
	// The referrer came too, findable the way clients look on a registry
	// without the referrers API.
	d, _ := img.Digest()
	if sb.digest(t, "nvidia/app", regclient.FallbackTag(digest.Digest(d.String()))) == "" {
		t.Error("the SBOM's fallback tag is missing on the standby")
	}

	moved := primary.push(t, "nvidia/app:1.0", image(t, 16<<10, 1))
	// The primary loses a repository.
	if err := primary.reg.RemoveRepository(context.Background(), "nvidia/multi"); err != nil {
		t.Fatal(err)
	}
	st, err = sb.f.SyncNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pulled) != 1 || st.Pulled[0].Tag != "1.0" || st.Pulled[0].Previous != first.String() || st.Pulled[0].Digest != moved.String() {
		t.Fatalf("second sync pulled %+v", st.Pulled)
	}
	var only bool
	for _, dr := range st.Drift {
		if dr.Repository == "nvidia/multi" && dr.Tag == "v1" && dr.Kind == bootstrap.DriftOnlyHere {
			only = true
		}
	}
	if !only {
		t.Errorf("drift lacks nvidia/multi:v1 only on the standby: %+v", st.Drift)
	}
	if sb.digest(t, "nvidia/multi", "v1") == "" {
		t.Error("the standby deleted a tag the primary lost")
	}
	recs, err := sb.hist.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 2 || !strings.Contains(recs[0].Source, "standby sync of nvidia/app from "+primary.url) || recs[0].Outcome != "succeeded" {
		t.Fatalf("import history: %+v", recs)
	}
	// Not a standby: no sync.
	if _, err := sb.life.Activate("test", "failover drill"); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.f.SyncNow(context.Background()); !errors.Is(err, bootstrap.ErrBadTransition) {
		t.Fatalf("sync while active = %v, want ErrBadTransition", err)
	}
}

func mustDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
