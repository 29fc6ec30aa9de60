package bootstrap_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestFollowerPullsNewAndMovedTags: a standby of a primary pulls what the
// primary has and it has not, while its registry stays read-only to
// everyone else; a moved tag comes in with its previous digest; a tag the
// primary no longer has is drift, not deleted.
func TestFollowerPullsNewAndMovedTags(t *testing.T) {
	t.Parallel()
	primary := testkit.StartNode(t)
	first := primary.Push(t, "nvidia/app:1.0", testkit.RandomImage(t, 64<<10, 2))
	img := testkit.RandomImage(t, 32<<10, 1)
	primary.Push(t, "nvidia/app:latest", img)
	primary.Push(t, "nvidia/app@"+mustDigest(t, testkit.SBOM(t, img)), testkit.SBOM(t, img))
	idx, err := random.Index(16<<10, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	primary.PushIndex(t, "nvidia/multi:v1", idx)
	sb := newStandby(t, primary, "nvidia")

	st, err := sb.f.SyncNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pulled) != 3 || st.LastCleanSync.IsZero() {
		t.Fatalf("first sync: %+v", st)
	}
	if got := sb.Digest(t, "nvidia/app", "1.0"); got != first.String() {
		t.Fatalf("nvidia/app:1.0 on the standby = %q, want %s", got, first)
	}
	if !sb.Reg.Mode().ReadOnly {
		t.Fatal("the standby's registry is writable after a sync")
	}
	// The referrer came too, findable the way clients look on a registry
	// without the referrers API.
	d, _ := img.Digest()
	if sb.Digest(t, "nvidia/app", regclient.FallbackTag(digest.Digest(d.String()))) == "" {
		t.Error("the SBOM's fallback tag is missing on the standby")
	}

	moved := primary.Push(t, "nvidia/app:1.0", testkit.RandomImage(t, 16<<10, 1))
	// The primary loses a repository.
	if err := primary.Reg.RemoveRepository(context.Background(), "nvidia/multi"); err != nil {
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
	if sb.Digest(t, "nvidia/multi", "v1") == "" {
		t.Error("the standby deleted a tag the primary lost")
	}
	recs, err := sb.hist.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 2 || !strings.Contains(recs[0].Source, "standby sync of nvidia/app from "+primary.URL) || recs[0].Outcome != "succeeded" {
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
