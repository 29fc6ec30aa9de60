package promote_test

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
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestPromoteBetweenRegistries promotes from one real registry's storage
// into another over TLS: an image with an SBOM referrer, the same image in
// a second repository (its blobs mounted, not sent again), and a
// multi-arch index. The target serves the referrers API, so the referrer
// is pushed by digest and listed there, with no fallback tag; parity
// holds, and a second run finds nothing to push.
func TestPromoteBetweenRegistries(t *testing.T) {
	t.Parallel()
	src, dst := testkit.StartNode(t), testkit.StartNode(t)
	img := testkit.RandomImage(t, 256<<10, 3)
	app := src.Push(t, "nvidia/app:1.0", img)
	src.Push(t, "nvidia/app:latest", img)
	src.Push(t, "nvidia/copy:1.0", img)
	ref := testkit.SBOM(t, img)
	refDigest, _ := ref.Digest()
	src.Push(t, "nvidia/app@"+refDigest.String(), ref)
	idx, err := random.Index(32<<10, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	multi := src.PushIndex(t, "vendor/multi:v1", idx)

	p, err := promote.NewPromoter(src.Reg, src.Reg, public{"nvidia": true}, t.TempDir(), promote.WithSkip(isStaging))
	if err != nil {
		t.Fatal(err)
	}
	target := promote.Target{URL: dst.URL, CAPEM: dst.CAPEM}
	plan, err := p.Start(context.Background(), promote.Request{Target: target, All: true, DryRun: true, By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if plan.State != promote.StatePlanned || plan.Plan.BlobsToPush == 0 || plan.Plan.Referrers != 1 || plan.TargetKind != "registry" {
		t.Fatalf("dry run: %s %+v", plan.State, plan.Plan)
	}
	if tags, _ := dst.Reg.Tags(context.Background(), "nvidia/app"); len(tags) != 0 {
		t.Fatalf("a dry run pushed tags: %v", tags)
	}

	rec, err := p.Start(context.Background(), promote.Request{Target: target, All: true, Parallel: 2, By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	rec = waitDone(t, p, rec.ID)
	if rec.State != promote.StateSucceeded || !rec.Parity.OK {
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
		if got := dst.Digest(t, c.repo, c.tag); got != c.want {
			t.Errorf("%s:%s on the target = %q, want %s", c.repo, c.tag, got, c.want)
		}
	}
	// A target with the referrers API needs no fallback tag.
	if fb := dst.Digest(t, "nvidia/app", regclient.FallbackTag(digest.Digest(app.String()))); fb != "" {
		t.Errorf("a fallback tag (%s) on a target that serves the referrers API", fb)
	}
	refs, err := remote.Referrers(dst.Ref(t, "nvidia/app@"+app.String()).(name.Digest), dst.Opts...)
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

	again, err := p.Start(context.Background(), promote.Request{Target: target, Projects: []string{"nvidia", "vendor"}, By: "test"})
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
	src, dst := testkit.StartNode(t), testkit.StartNode(t)
	src.Push(t, "nvidia/app:1.0", testkit.RandomImage(t, 8<<10, 1))
	dst.Push(t, "nvidia/app:extra", testkit.RandomImage(t, 8<<10, 1))
	p, err := promote.NewPromoter(src.Reg, src.Reg, public{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := p.Start(context.Background(), promote.Request{Target: promote.Target{URL: dst.URL, CAPEM: dst.CAPEM}, All: true})
	if err != nil {
		t.Fatal(err)
	}
	rec = waitDone(t, p, rec.ID)
	if !rec.Parity.OK || len(rec.Parity.Repositories) != 1 || len(rec.Parity.Repositories[0].OnlyOnTarget) != 1 {
		t.Fatalf("parity with a tag only on the target: %+v", rec.Parity)
	}
	// Now the target's tag moves: a new promotion plans to move it back.
	other := dst.Push(t, "nvidia/app:1.0", testkit.RandomImage(t, 8<<10, 1))
	plan, err := p.Start(context.Background(), promote.Request{Target: promote.Target{URL: dst.URL, CAPEM: dst.CAPEM}, All: true, DryRun: true})
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
	src, dst := testkit.StartNode(t), testkit.StartNode(t)
	src.Push(t, "nvidia/app:1.0", testkit.RandomImage(t, 8<<10, 1))
	if _, err := dst.Reg.SetReadOnly(true, "maintenance"); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	p, err := promote.NewPromoter(src.Reg, src.Reg, public{}, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := p.Start(context.Background(), promote.Request{Target: promote.Target{URL: dst.URL, CAPEM: dst.CAPEM}, Projects: []string{"nvidia", "ghost"}})
	var refused *promote.RefusedError
	if !errors.As(err, &refused) || len(refused.Problems) != 2 {
		t.Fatalf("Start = %v, want a RefusedError with two problems", err)
	}
	all := strings.Join(refused.Problems, "\n")
	for _, want := range []string{"no repository in project ghost", "read-only"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	if rec.State != promote.StateRefused {
		t.Errorf("record state %q, want refused", rec.State)
	}
	for _, bad := range []promote.Request{
		{Target: promote.Target{URL: dst.URL}},
		{Target: promote.Target{URL: dst.URL}, All: true, Projects: []string{"x"}},
		{Target: promote.Target{URL: dst.URL}, All: true, Parallel: 1000},
	} {
		if _, err := p.Start(context.Background(), bad); !errors.Is(err, promote.ErrInvalid) {
			t.Errorf("Start(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestPromotionInterruptedByStop: a record a stopped process left running
// reads as interrupted when the promoter opens again.
func TestPromotionInterruptedByStop(t *testing.T) {
	t.Parallel()
	src := testkit.StartNode(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "promotions"), 0o750); err != nil {
		t.Fatal(err)
	}
	stale := promote.Promotion{ID: "abc", Target: "https://harbor.test", State: promote.StateRunning, Started: time.Now().UTC()}
	data, _ := json.Marshal(stale)
	if err := os.WriteFile(filepath.Join(dir, "promotions", "20260101T000000Z-abc.json"), data, 0o640); err != nil {
		t.Fatal(err)
	}
	p, err := promote.NewPromoter(src.Reg, src.Reg, public{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := p.Get("abc")
	if err != nil || rec.State != promote.StateInterrupted || !strings.Contains(rec.Error, "pushes only what is missing") {
		t.Fatalf("after a restart: %+v %v", rec, err)
	}
	if _, err := p.Get("nope"); !errors.Is(err, promote.ErrNotFound) {
		t.Fatalf("Get(nope) = %v", err)
	}
}

type public map[string]bool

func (p public) Public(project string) bool { return p[project] }

func isStaging(repo string) bool { return strings.HasPrefix(repo, "appliance-import-staging/") }

// waitDone polls a promotion (bounded) until it leaves the running state.
func waitDone(t *testing.T, p *promote.Promoter, id string) promote.Promotion {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		rec, err := p.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != promote.StateRunning {
			return rec
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("promotion %s still running after a minute", id)
	return promote.Promotion{}
}

// TestPromoteWarnsOfPartialIndexes: an index whose platforms the
// appliance holds only in part (as a bundle carrying some platforms leaves
// it) is named in the plan's warnings before anything moves.
func TestPromoteWarnsOfPartialIndexes(t *testing.T) {
	t.Parallel()
	src, dst := testkit.StartNode(t), testkit.StartNode(t)
	idx, err := random.Index(8<<10, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	src.PushIndex(t, "vendor/multi:v1", idx)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	gone := im.Manifests[0].Digest
	if err := remote.Delete(src.Ref(t, "vendor/multi@"+gone.String()), src.Opts...); err != nil {
		t.Fatal(err)
	}
	p, err := promote.NewPromoter(src.Reg, src.Reg, public{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	plan, err := p.Start(context.Background(), promote.Request{Target: promote.Target{URL: dst.URL, CAPEM: dst.CAPEM}, All: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], gone.String()) || !strings.Contains(plan.Warnings[0], "does not hold") {
		t.Fatalf("warnings: %q", plan.Warnings)
	}
}
