package server

import (
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/server/opsapi"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestPromotionRefusedBody: a promotion its checks refuse answers 422
// with the error and the record beside it, as the CLI reads it; a
// request refused before the promoter is a plain 400.
func TestPromotionRefusedBody(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	node := testkit.StartNode(t)
	var f PromotionFailure
	got := ts.call(t, "POST", "/api/v1/promotions", "admin", ts.admin,
		opsapi.PromoteRequest{Target: node.URL, TargetCA: string(node.CAPEM), Projects: []string{"nothere"}}, &f)
	if got != 422 || f.Error.Code != "PROMOTION_REFUSED" || f.Promotion == nil || f.Promotion.ID == "" ||
		len(f.Promotion.Problems) == 0 || !strings.Contains(strings.Join(f.Promotion.Problems, "\n"), "no repository in project nothere") {
		t.Fatalf("refused promotion = %d %+v", got, f)
	}
	f = PromotionFailure{}
	if got := ts.call(t, "POST", "/api/v1/promotions", "admin", ts.admin, opsapi.PromoteRequest{}, &f); got != 400 || f.Error.Code != "BAD_REQUEST" || f.Promotion != nil {
		t.Fatalf("promotion without a target = %d %+v", got, f)
	}
	if got := ts.call(t, "GET", "/api/v1/parity", "admin", ts.admin, nil, &f); got != 404 || f.Error.Code != "NOT_FOUND" {
		t.Fatalf("parity before any promotion = %d %+v", got, f)
	}
}
