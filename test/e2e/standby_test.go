package e2e

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestStandbyFollowsHarbor is the hand-over's second half against a real
// Harbor: after the promotion the appliance becomes its standby. It
// refuses pushes with an OCI DENIED error naming its primary, keeps
// serving pulls, apt and files, stays a standby across a restart, picks up
// an image pushed to production after the switch and a tag moved there
// (each an import in the history), reports a tag production no longer
// has, and shows mode and lag in status and metrics. After activate,
// pushes work; `standby` again returns it to following.
func TestStandbyFollowsHarbor(t *testing.T) {
	testkit.Need(t, "skopeo")
	h := sharedHarbor(t)
	a := startAppliance(t, t.TempDir())
	repos, _ := seed(t, a, "sb")
	pass := writeSecret(t, h.Password)
	out, err := a.cliLong(a.password+"\n", promoteArgs(h.URL, h.CAFile, h.Admin, pass, "--projects", "sb-nvidia,sb-vendor")...)
	mustOK(t, "promote", out, err)

	// A bad primary changes nothing.
	out, err = a.cliLong(a.password+"\n", "standby", "--primary", h.URL, "--primary-ca", h.CAFile, "--primary-user", h.Admin,
		"--primary-password-file", writeSecret(t, "wrong"), "--username", "admin", "--password-stdin")
	mustFail(t, "standby with a wrong password", out, err, "credentials refused", "nothing changed")
	var st opsapi.Status
	if err := getJSON(a, "/api/v1/status", &st); err != nil || st.Mode != bootstrap.ModeBootstrap || st.ReadOnly.ReadOnly {
		t.Fatalf("after a refused standby: %v %+v", err, st)
	}

	out, err = a.cliLong(a.password+"\n", "standby", "--primary", h.URL, "--primary-ca", h.CAFile, "--primary-user", h.Admin,
		"--primary-password-file", pass, "--projects", "sb-nvidia,sb-vendor", "--reason", "production Harbor is live", "--username", "admin", "--password-stdin")
	mustOK(t, "standby", out, err)
	if !strings.Contains(out, "standby of "+h.URL) || !strings.Contains(out, "drift: none") {
		t.Errorf("standby output:\n%s", out)
	}

	// Pushes are refused, with the primary named; pulls, apt and files go on.
	img, _ := ociLayout(t, 8<<10, 1)
	out, err = pushOCI(t, a, img, "sb-nvidia/new:1", "admin:"+a.password)
	mustFail(t, "push to the standby", out, err, "denied", "standby of "+h.URL)
	out, err = inspectDigest(t, a, "sb-nvidia/gpu-operator:v24.9", "")
	mustOK(t, "anonymous pull from the standby", out, err)
	for _, path := range []string{"/apt/key.gpg", "/files/", "/ca.crt"} {
		resp, err := http.Get("http://" + a.httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s from the standby: %d", path, resp.StatusCode)
		}
	}
	out, err = a.cli(a.password+"\n", "readonly", "disable", "--username", "admin", "--password-stdin")
	mustFail(t, "readonly disable on a standby", out, err, "appliance activate")

	// Production moves on: a new image, a moved tag, a removed tag.
	prod := newRegView(t, h.Host, h.CAFile, h.Admin, h.Password)
	newDigest := prod.write(t, "sb-nvidia/driver:550", randomImage(t, 32<<10, 2))
	moved := prod.write(t, "sb-nvidia/gpu-operator:latest", randomImage(t, 16<<10, 1))
	prod.write(t, "sb-vendor/private-driver:1", randomImage(t, 8<<10, 1))
	if code, body := h.API(t, http.MethodDelete, "/api/v2.0/projects/sb-nvidia/repositories/gpu-operator/artifacts/"+url.PathEscape("v24.9")+"/tags/v24.9", ""); code != http.StatusOK {
		t.Fatalf("remove tag v24.9 in Harbor: %d %s", code, body)
	}
	a.restart()
	if err := getJSON(a, "/api/v1/status", &st); err != nil || st.Mode != bootstrap.ModeStandby || !st.ReadOnly.ReadOnly {
		t.Fatalf("after a restart the standby is %+v (%v)", st, err)
	}
	out, err = a.cliLong(a.password+"\n", "standby", "--sync", "--username", "admin", "--password-stdin")
	mustOK(t, "sync", out, err)
	for _, want := range []string{"pulled sb-nvidia/driver:550", "pulled sb-nvidia/gpu-operator:latest", "moved from", "only-on-standby"} {
		if !strings.Contains(out, want) {
			t.Errorf("sync output lacks %q:\n%s", want, out)
		}
	}
	standby := applianceView(t, a)
	if got := standby.digest(t, "sb-nvidia/driver:550"); got != newDigest {
		t.Errorf("the standby's driver:550 is %s, production's %s", got, newDigest)
	}
	if got := standby.digest(t, "sb-nvidia/gpu-operator:latest"); got != moved {
		t.Errorf("the standby's gpu-operator:latest is %s, production's %s", got, moved)
	}
	out, err = a.cli(a.password+"\n", "imports", "--username", "admin", "--password-stdin")
	mustOK(t, "imports", out, err)
	if !strings.Contains(out, "standby sync of sb-nvidia/driver from "+h.URL) {
		t.Errorf("the import history lacks the sync:\n%s", out)
	}
	if err := getJSON(a, "/api/v1/status", &st); err != nil || st.Standby == nil || st.Standby.LastCleanSync.IsZero() {
		t.Fatalf("status after the sync: %v %+v", err, st.Standby)
	}
	foundDrift := false
	for _, d := range st.Standby.Drift {
		if d.Repository == "sb-nvidia/gpu-operator" && d.Tag == "v24.9" && d.Kind == bootstrap.DriftOnlyHere {
			foundDrift = true
		}
	}
	if !foundDrift {
		t.Errorf("drift does not report v24.9 (gone from production): %+v", st.Standby.Drift)
	}
	// What a sync names of a private project is shown to those who may
	// pull from it only: the admin sees the private tag pulled, an
	// anonymous caller sees the public project's and nothing of sb-vendor.
	if !slices.ContainsFunc(st.Standby.Pulled, func(p bootstrap.PulledTag) bool { return p.Repository == "sb-vendor/private-driver" }) {
		t.Errorf("the admin's status lacks the private project's new tag: %+v", st.Standby.Pulled)
	}
	for _, path := range []string{"/api/v1/status", "/api/v1/standby"} {
		code, _, body := status(t, a, http.MethodGet, path, "", "")
		if code != http.StatusOK || !strings.Contains(body, "sb-nvidia/driver") || strings.Contains(body, "sb-vendor") {
			t.Errorf("anonymous GET %s = %d, want the public project's tags and nothing of the private one: %s", path, code, body)
		}
	}
	metrics := getText(t, "http://"+a.httpAddr+"/metrics")
	for _, want := range []string{`appliance_mode{mode="standby"} 1`, `appliance_mode{mode="bootstrap"} 0`, "appliance_standby_lag_seconds ", "appliance_standby_last_sync_timestamp_seconds "} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Failover: writable, recorded with its reason; then back to following.
	out, err = a.cli(a.password+"\n", "activate", "--username", "admin", "--password-stdin")
	mustFail(t, "activate without a reason", out, err, "--reason is required")
	out, err = a.cli(a.password+"\n", "activate", "--reason", "Harbor lost its storage", "--username", "admin", "--password-stdin")
	mustOK(t, "activate", out, err)
	out, err = pushOCI(t, a, img, "sb-nvidia/new:1", "admin:"+a.password)
	mustOK(t, "push after activate", out, err)
	out, err = a.cli(a.password+"\n", "standby", "--sync", "--username", "admin", "--password-stdin")
	mustFail(t, "sync while active", out, err, "only a standby")
	out, err = a.cliLong(a.password+"\n", "standby", "--reason", "Harbor is back", "--username", "admin", "--password-stdin")
	mustOK(t, "standby again", out, err)
	out, err = pushOCI(t, a, img, "sb-nvidia/new:2", "admin:"+a.password)
	mustFail(t, "push after returning to standby", out, err, "standby of "+h.URL)
	out, err = a.cli(a.password+"\n", "status", "--username", "admin", "--password-stdin")
	mustOK(t, "status", out, err)
	for _, want := range []string{"mode: standby", "bootstrap → standby by admin", "standby → active by admin", "Harbor lost its storage", "active → standby by admin", "lag: "} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	_ = repos
}

func getText(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}
