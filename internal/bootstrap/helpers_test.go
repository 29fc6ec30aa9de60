package bootstrap_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/testkit"
)

func isStaging(repo string) bool { return strings.HasPrefix(repo, importer.StagingProject+"/") }

// standbyOf is a standby node: the real registry with a lifecycle, an
// importer writing through the registry's sync writer, and a follower of
// primary.
type standbyOf struct {
	*testkit.Node
	life *bootstrap.Lifecycle
	hist *history.History
	f    *bootstrap.Follower
}

func newStandby(t *testing.T, primary *testkit.Node, projects ...string) *standbyOf {
	t.Helper()
	n := testkit.StartNode(t)
	life, err := bootstrap.OpenLifecycle(n.Dir, n.Reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := history.Open(filepath.Join(n.Dir, "imports"))
	if err != nil {
		t.Fatal(err)
	}
	imp, err := importer.New(n.Reg, hist, importer.WithSyncStore(n.Reg.SyncWriter()))
	if err != nil {
		t.Fatal(err)
	}
	f, err := bootstrap.NewFollower(life, n.Reg, imp, n.Dir, bootstrap.WithFollowerSkip(isStaging))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := life.Standby(bootstrap.StandbyRequest{
		Primary:     &bootstrap.Primary{URL: primary.URL, Projects: projects, Interval: time.Hour},
		Credentials: bootstrap.PrimaryCredentials{CAPEM: string(primary.CAPEM)},
		By:          "test", Reason: "production is up",
	}); err != nil {
		t.Fatal(err)
	}
	return &standbyOf{Node: n, life: life, hist: hist, f: f}
}
