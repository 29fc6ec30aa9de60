package server

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/audit"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// auditEntries reads the trail through the API, newest first.
func (ts *testServer) auditEntries(t *testing.T, query string) []audit.Entry {
	t.Helper()
	var ans AuditAnswer
	if got := ts.call(t, "GET", "/api/v1/audit?limit=10000&"+query, "admin", ts.admin, nil, &ans); got != 200 {
		t.Fatalf("GET /api/v1/audit?%s = %d", query, got)
	}
	return ans.Entries
}

// one finds the single entry of action whose target contains target.
func one(t *testing.T, entries []audit.Entry, action, target string) audit.Entry {
	t.Helper()
	var found []audit.Entry
	for _, e := range entries {
		if e.Action == action && strings.Contains(e.Target, target) {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d entries of %s on %q, want 1: %+v", len(found), action, target, found)
	}
	return found[0]
}

// TestAuditTrail proves that pushes over /v2/, user and project changes
// and refused writes each leave one entry naming who, from where, and the
// outcome, and that the chain verifies.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	admin := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})}
	if err := remote.Write(ts.ref(t, "library/app:1"), img, admin...); err != nil {
		t.Fatal(err)
	}
	if got := ts.call(t, "POST", "/api/v1/users", "admin", ts.admin, UserRequest{Name: "viewer", Password: "viewer-password-1", Role: "guest"}, nil); got != 201 {
		t.Fatalf("add user = %d", got)
	}
	if got := ts.call(t, "PUT", "/api/v1/projects/library", "admin", ts.admin, map[string]bool{"public": false}, nil); got != 200 {
		t.Fatalf("set project = %d", got)
	}
	// Refused: a wrong password (the token endpoint refuses it), a guest
	// (its token lacks push), and an API write with a wrong password.
	wrong := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: "not-the-password"})}
	if err := remote.Write(ts.ref(t, "library/app:2"), img, wrong...); err == nil {
		t.Fatal("a push with a wrong password succeeded")
	}
	other, _ := random.Image(512, 1)
	guest := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "viewer", Password: "viewer-password-1"})}
	if err := remote.Write(ts.ref(t, "library/other:1"), other, guest...); err == nil {
		t.Fatal("a guest pushed")
	}
	if got := ts.call(t, "DELETE", "/api/v1/users/viewer", "admin", "wrong-password", nil, nil); got != 401 {
		t.Fatalf("remove user with a wrong password = %d", got)
	}

	entries := ts.auditEntries(t, "")
	tag := one(t, entries, audit.ActionTag, "library/app:1@"+digest.String())
	if tag.Actor != "admin" || tag.Remote != "127.0.0.1" || tag.Outcome != audit.OK || tag.Status != http.StatusCreated || tag.Details["method"] != "PUT" {
		t.Fatalf("tag entry = %+v", tag)
	}
	blobs := 0
	for _, e := range entries {
		if e.Action == audit.ActionPushBlob && e.Outcome == audit.OK && strings.HasPrefix(e.Target, "library/app@sha256:") && e.Actor == "admin" {
			blobs++
		}
	}
	if blobs != 3 { // two layers and the config, each once: not a line per PATCH
		t.Fatalf("%d blob entries, want 3: %+v", blobs, entries)
	}
	u := one(t, entries, "user.add", "viewer")
	if u.Actor != "admin" || u.Remote != "127.0.0.1" || u.Outcome != audit.OK || u.Status != 201 || u.Details["role"] != "guest" {
		t.Fatalf("user entry = %+v", u)
	}
	for k, v := range u.Details {
		if strings.Contains(v, "viewer-password") {
			t.Fatalf("the password is in the trail: %s=%s", k, v)
		}
	}
	p := one(t, entries, "project.visibility", "library")
	if p.Actor != "admin" || p.Details["public"] != "false" || p.Outcome != audit.OK {
		t.Fatalf("project entry = %+v", p)
	}
	tok := one(t, entries, audit.ActionToken, "repository:library/app:")
	if tok.Actor != audit.Anonymous || tok.Details["user"] != "admin" || tok.Outcome != audit.Refused || tok.Status != 401 || tok.Remote != "127.0.0.1" {
		t.Fatalf("refused push entry = %+v", tok)
	}
	var guestRefused []audit.Entry
	for _, e := range entries {
		if e.Actor == "viewer" && strings.HasPrefix(e.Action, "registry.push") {
			guestRefused = append(guestRefused, e)
		}
	}
	if len(guestRefused) == 0 || guestRefused[0].Outcome != audit.Refused || guestRefused[0].Reason == "" {
		t.Fatalf("the guest's push left %+v", guestRefused)
	}
	rm := one(t, entries, "user.remove", "viewer")
	if rm.Actor != audit.Anonymous || rm.Details["user"] != "admin" || rm.Outcome != audit.Refused || rm.Status != 401 {
		t.Fatalf("refused API write = %+v", rm)
	}

	// A moved tag names where it was; a delete and read-only refusals too.
	if err := remote.Write(ts.ref(t, "library/app:1"), other, admin...); err != nil {
		t.Fatal(err)
	}
	otherDigest, _ := other.Digest()
	moved := one(t, ts.auditEntries(t, "action=registry.tag&target=library/app:1@"+otherDigest.String()), audit.ActionTag, "library/app:1")
	if moved.Details["previous"] != digest.String() {
		t.Fatalf("moved tag entry = %+v, want previous %s", moved, digest)
	}
	if err := remote.Delete(ts.ref(t, "library/app@"+digest.String()), admin...); err != nil {
		t.Fatal(err)
	}
	del := one(t, ts.auditEntries(t, "action=registry.delete"), audit.ActionDelete, "library/app@"+digest.String())
	if del.Actor != "admin" || del.Outcome != audit.OK || del.Details["kind"] != "manifest" {
		t.Fatalf("delete entry = %+v", del)
	}
	if got := ts.call(t, "PUT", "/api/v1/system/read-only", "admin", ts.admin, map[string]any{"read_only": true, "reason": "audit test"}, nil); got != 200 {
		t.Fatalf("read-only = %d", got)
	}
	if err := remote.Write(ts.ref(t, "library/app:3"), img, admin...); err == nil {
		t.Fatal("a push while read-only succeeded")
	}
	ro := ts.auditEntries(t, "outcome=refused&actor=admin&action=registry.")
	if len(ro) == 0 || !strings.Contains(ro[0].Reason, "read-only") {
		t.Fatalf("read-only refusal entries = %+v", ro)
	}
	sw := one(t, ts.auditEntries(t, "action=readonly"), "readonly.switch", "registry")
	if sw.Details["read_only"] != "true" || sw.Details["reason"] != "audit test" {
		t.Fatalf("read-only switch entry = %+v", sw)
	}

	// The endpoints are the admin's, and the chain holds.
	if got := ts.call(t, "GET", "/api/v1/audit", "", "", nil, nil); got != 401 {
		t.Fatalf("anonymous audit read = %d", got)
	}
	if got := ts.call(t, "GET", "/api/v1/audit?since=yesterday", "admin", ts.admin, nil, nil); got != 400 {
		t.Fatalf("bad since = %d", got)
	}
	if got := ts.call(t, "GET", "/api/v1/audit?since=1h&limit=2", "admin", ts.admin, nil, nil); got != 200 {
		t.Fatalf("since 1h = %d", got)
	}
	var rep audit.Report
	if got := ts.call(t, "GET", "/api/v1/audit/verify", "admin", ts.admin, nil, &rep); got != 200 || !rep.OK || rep.Entries < 8 || !rep.Anchor.Genesis {
		t.Fatalf("verify = %d %+v", got, rep)
	}
}

// TestAuditRemoteAddress: X-Forwarded-For is ignored unless the peer is a
// configured proxy.
func TestAuditRemoteAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		trusted []string
		want    string
	}{
		{"untrusted header", nil, "127.0.0.1"},
		{"trusted proxy", []string{"127.0.0.0/8"}, "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, func(c *config.Config) { c.Audit.TrustedProxies = tc.trusted })
			req, _ := http.NewRequest("PUT", ts.base+"/api/v1/projects/p", strings.NewReader(`{"public":false}`))
			req.SetBasicAuth("admin", ts.admin)
			req.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
			resp, err := ts.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if e := one(t, ts.auditEntries(t, ""), "project.visibility", "p"); e.Remote != tc.want {
				t.Fatalf("remote = %q, want %q", e.Remote, tc.want)
			}
		})
	}
}

// TestAuditLifecycle: a promotion leaves its start and its end, a switch
// to standby one entry for the mode and one per repository its sync
// pulls, and activate its mode change.
func TestAuditLifecycle(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	node := testkit.StartNode(t)
	admin := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})}
	if err := remote.Write(ts.ref(t, "library/app:1"), testkit.RandomImage(t, 4096, 1), admin...); err != nil {
		t.Fatal(err)
	}
	var p promote.Promotion
	if got := ts.call(t, "POST", "/api/v1/promotions", "admin", ts.admin, opsapi.PromoteRequest{Target: node.URL, TargetCA: string(node.CAPEM), All: true}, &p); got != 202 {
		t.Fatalf("promotion = %d %+v", got, p)
	}
	deadline := time.Now().Add(time.Minute)
	var end audit.Entry
	for end.Seq == 0 {
		if es := ts.auditEntries(t, "action=promotion.end"); len(es) == 1 {
			end = es[0]
		} else if time.Now().After(deadline) {
			t.Fatal("no promotion.end entry within a minute")
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	start := one(t, ts.auditEntries(t, "action=promotion."), "promotion.start", node.URL)
	if start.Actor != "admin" || start.Status != 202 || start.Details["id"] != p.ID || end.Details["id"] != p.ID ||
		end.Outcome != audit.OK || end.Actor != "admin" || end.Details["parity_ok"] != "true" {
		t.Fatalf("promotion entries: start %+v end %+v", start, end)
	}

	node.Push(t, "library/new:1", testkit.RandomImage(t, 4096, 1))
	var ans opsapi.StandbyAnswer
	if got := ts.call(t, "POST", "/api/v1/standby", "admin", ts.admin, opsapi.StandbyRequest{Primary: node.URL, PrimaryCA: string(node.CAPEM), Projects: []string{"library"}}, &ans); got != 200 || ans.SyncError != "" {
		t.Fatalf("standby = %d %+v", got, ans)
	}
	entries := ts.auditEntries(t, "")
	mode := one(t, entries, "mode.change", node.URL)
	pull := one(t, entries, "standby.pull", "library/new")
	if mode.Actor != "admin" || mode.Details["mode"] != "standby" || pull.Actor != "standby" || pull.Outcome != audit.OK ||
		pull.Details["import_id"] == "" || !strings.HasPrefix(pull.Details["tags"], "1@sha256:") || pull.Details["primary"] != node.URL {
		t.Fatalf("standby entries: mode %+v pull %+v", mode, pull)
	}
	if got := ts.call(t, "POST", "/api/v1/activate", "admin", ts.admin, opsapi.ActivateRequest{Reason: "failover drill"}, nil); got != 200 {
		t.Fatalf("activate = %d", got)
	}
	act := ts.auditEntries(t, "action=mode.change")[0]
	if act.Details["mode"] != "active" || act.Details["reason"] != "failover drill" || act.Outcome != audit.OK {
		t.Fatalf("activate entry = %+v", act)
	}
}
