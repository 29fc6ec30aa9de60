package promote

import (
	"context"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestParityNamesEveryDifference reads a target that lost a tag, moved
// another and lacks a referrer: the report counts three differences and
// names them, and shows a tag only the target has without counting it.
func TestParityNamesEveryDifference(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := testkit.StartNode(t), testkit.StartNode(t)
	img := testkit.RandomImage(t, 8<<10, 1)
	src.Push(t, "nvidia/app:1.0", img)
	src.Push(t, "nvidia/app:kept", img)
	src.Push(t, "nvidia/app:moved", img)
	ref := testkit.SBOM(t, img)
	d, _ := ref.Digest()
	src.Push(t, "nvidia/app@"+d.String(), ref)
	rc, err := loadRepo(ctx, src.Reg, "nvidia/app")
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.referrers) != 1 || len(rc.tags) != 3 {
		t.Fatalf("loaded %d tags and %d referrers, want 3 and 1", len(rc.tags), len(rc.referrers))
	}
	// The target: "kept" right, "moved" elsewhere, "1.0" missing, no
	// referrer, and a tag of its own.
	dst.Push(t, "nvidia/app:kept", img)
	dst.Push(t, "nvidia/app:moved", testkit.RandomImage(t, 8<<10, 1))
	dst.Push(t, "nvidia/app:prod-only", testkit.RandomImage(t, 8<<10, 1))
	c, err := regclient.New(regclient.Options{URL: dst.URL, CAPEM: dst.CAPEM})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	par, err := checkParity(ctx, c, []*repoContent{rc}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if par.OK || par.Differences != 3 {
		t.Fatalf("parity OK=%v with %d differences, want 3: %+v", par.OK, par.Differences, par)
	}
	status := map[string]string{}
	for _, tp := range par.Repositories[0].Tags {
		status[tp.Tag] = tp.Status
	}
	if status["kept"] != ParitySame || status["moved"] != ParityDifferent || status["1.0"] != ParityMissing {
		t.Errorf("tag statuses: %v", status)
	}
	if refs := par.Repositories[0].Referrers; len(refs) != 1 || refs[0].Status != ParityMissing {
		t.Errorf("referrers: %+v", refs)
	}
	if only := par.Repositories[0].OnlyOnTarget; len(only) != 1 || only[0] != "prod-only" {
		t.Errorf("only on the target: %v", only)
	}
	sum := par.Summary()
	for _, want := range []string{"nvidia/app:1.0 missing", "nvidia/app:moved different", "referrer"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary %q lacks %q", sum, want)
		}
	}
}
