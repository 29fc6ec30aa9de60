package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// publishDeb publishes a .deb built in Go into repo/dist through the apt API.
func (a *appliance) publishDeb(t *testing.T, repo, dist, name, version string) {
	t.Helper()
	deb := testkit.GoDeb(t, "Package: "+name+"\nVersion: "+version+"\nArchitecture: amd64\nMaintainer: test <t@example.invalid>\nDescription: a test package\n", "payload of "+name)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile("file", name+"_"+version+"_amd64.deb")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(deb)
	_ = mw.Close()
	req, err := http.NewRequest(http.MethodPost, a.base+"/api/v1/apt/repos/"+repo+"/"+dist+"/packages", &body)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", a.password)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish %s = %d", name, resp.StatusCode)
	}
}

// getJSON reads path as admin.
func (a *appliance) getJSON(t *testing.T, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.base+path, nil)
	req.SetBasicAuth("admin", a.password)
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// fill replaces the text of the field sel with value, and fails when
// there is no such field.
func fill(sel, value string) chromedp.Action[chromedp.Void] {
	s, _ := json.Marshal(sel)
	v, _ := json.Marshal(value)
	eval := chromedp.Evaluate[bool](`(() => { const f = document.querySelector(` + string(s) + `); if (!f) return false; f.value = ` + string(v) + `; return true })()`)
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		ok, err := eval(ctx, t)
		if err == nil && !ok {
			err = fmt.Errorf("no field %s on the page", sel)
		}
		return chromedp.Void{}, err
	}
}

// TestConsoleActionsInChromium drives the rest of the console in a real
// headless Chromium: the apt pages with their cloud-init snippet, the
// promotion and drift page with a real parity report, and every admin
// action besides the visibility toggle (import from a path, run the
// validation, add a user, switch to standby and activate), each once
// refused with the API's words and nothing changed, and once done. Each
// page is photographed, every action is in the audit trail, and no page
// asks for a URL outside the appliance.
func TestConsoleActionsInChromium(t *testing.T) {
	testkit.Need(t, "chromium")
	a := startAppliance(t)
	a.publishDeb(t, "ubuntu", "jammy", "nvidia-driver-550", "550.54.15-0ubuntu1")
	node := testkit.StartNode(t)
	b := startBrowser(t, a)

	b.do(t, "sign in", chromedp.Navigate(a.base+"/login"), chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"), chromedp.SendKeys(chromedp.CSS("#password"), a.password),
		chromedp.Submit(chromedp.CSS("#password")), chromedp.WaitVisible(chromedp.CSS("#mode-value")))

	// Apt: the repository, its distribution, packages, history, cloud-init.
	b.do(t, "apt", chromedp.Click(chromedp.CSS(`nav a[href="/apt-repos"]`)), chromedp.WaitVisible(chromedp.CSS("#dist-ubuntu-jammy")))
	text := b.text(t)
	wantText(t, "apt", text, "ubuntu", "jammy", "main (1)", "amd64", "#cloud-config", "deb [signed-by=$KEY_FILE] https://"+a.HTTPSAddr()+"/apt/ubuntu jammy main",
		"BEGIN PGP PUBLIC KEY BLOCK", "BEGIN CERTIFICATE")
	b.screenshot(t, "apt")
	b.do(t, "apt search", chromedp.SendKeys(chromedp.CSS("#apt-q"), "nvidia"), chromedp.Submit(chromedp.CSS("#apt-q")), chromedp.WaitVisible(chromedp.CSS(".apt-found")))
	wantText(t, "apt search", b.text(t), "nvidia-driver-550", "550.54.15-0ubuntu1")
	b.do(t, "apt search without a match", chromedp.SetValue(chromedp.CSS("#apt-q"), "cuda-nothing"), chromedp.Submit(chromedp.CSS("#apt-q")), chromedp.WaitVisible(chromedp.CSS("#no-match")))
	b.do(t, "apt distribution", chromedp.Click(chromedp.CSS(`a[href="/apt-repos/ubuntu/jammy"]`)), chromedp.WaitVisible(chromedp.CSS(".packages")))
	var pkgs []struct {
		SHA256 string `json:"sha256"`
	}
	if code := a.getJSON(t, "/api/v1/apt/repos/ubuntu/jammy/packages", &pkgs); code != http.StatusOK || len(pkgs) != 1 {
		t.Fatalf("packages = %d %v", code, pkgs)
	}
	wantText(t, "apt distribution", b.text(t), "nvidia-driver-550", pkgs[0].SHA256, "History", "add", "+nvidia-driver-550_550.54.15-0ubuntu1_amd64 (main)", "current", "cloud-init for ubuntu jammy")
	b.screenshot(t, "apt-distribution")
	b.do(t, "an apt distribution that does not exist", chromedp.Navigate(a.base+"/apt-repos/ubuntu/nosuch"), chromedp.WaitVisible(chromedp.CSS(".problem")))
	wantText(t, "unknown distribution", b.text(t), "not found")

	// Import from a path on the appliance: a relative path is refused; a
	// tampered layout is refused with its reason; the good one imports.
	dir := t.TempDir()
	good, digest := signedLayout(t, "1.0", false)
	bad, _ := signedLayout(t, "2.0", true)
	for name, data := range map[string][]byte{"good.tar": good, "bad.tar": bad} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startImport := func(path, repo string) {
		t.Helper()
		b.do(t, "imports", chromedp.Navigate(a.base+"/imports"), chromedp.WaitVisible(chromedp.CSS("#import-path")),
			fill("#import-path", path), fill("#import-repo", repo), chromedp.Click(chromedp.CSS("#start-import")),
			chromedp.WaitVisible(chromedp.CSS(".notice, .problem")))
	}
	startImport("relative/good.tar", "team/app")
	wantText(t, "refused import", b.text(t), "Nothing changed", "Nothing was imported from relative/good.tar", "must be absolute", "400")
	b.screenshot(t, "import-path-refused")
	startImport(filepath.Join(dir, "bad.tar"), "team/evil")
	wantText(t, "tampered import", b.text(t), "The import was refused", "Refused:", "digest")
	b.screenshot(t, "import-path-tampered")
	startImport(filepath.Join(dir, "good.tar"), "team/app")
	wantText(t, "import", b.text(t), "Imported: every blob was verified", "team/app", digest.String(), "succeeded")
	b.screenshot(t, "import-path")

	// Promote into a real registry, for a parity report.
	var p struct {
		ID string `json:"id"`
	}
	if code := postJSON(t, a, "/api/v1/promotions", map[string]any{"target": node.URL, "target_ca": string(node.CAPEM), "all": true}, &p); code != http.StatusAccepted {
		t.Fatalf("promotion = %d", code)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var rec struct {
			State string `json:"state"`
		}
		a.getJSON(t, "/api/v1/promotions/"+p.ID, &rec)
		if rec.State == "succeeded" {
			break
		}
		if rec.State != "running" || time.Now().After(deadline) {
			t.Fatalf("promotion state %q", rec.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.do(t, "promotion and drift", chromedp.Click(chromedp.CSS(`nav a[href="/lifecycle"]`)), chromedp.WaitVisible(chromedp.CSS("#parity-outcome")))
	wantText(t, "promotion", b.text(t), "bootstrap", node.URL, "succeeded", "Parity proven", "team/app", "1.0", "same", "No validation has run yet")
	b.screenshot(t, "lifecycle")

	// Run the validation: unparsable input is refused naming it; then a run.
	b.do(t, "validation", chromedp.Click(chromedp.CSS(`nav a[href="/validation"]`)), chromedp.WaitVisible(chromedp.CSS("#validation-form")))
	wantText(t, "validation", b.text(t), "No validation has run yet.")
	b.do(t, "bad validation input", chromedp.SetValue(chromedp.CSS("#kind"), "manifests"), fill("#input-name", "broken.yaml"),
		fill("#input-data", "kind: Pod\n  spec: [unclosed\n"), chromedp.Click(chromedp.CSS("#run-validation")), chromedp.WaitVisible(chromedp.CSS(".problem")))
	wantText(t, "bad validation", b.text(t), "Nothing changed", "The validation did not run", "broken.yaml", "400")
	b.screenshot(t, "validation-refused")
	ref := a.HTTPSAddr() + "/team/app:1.0"
	b.do(t, "validation run", chromedp.Navigate(a.base+"/validation"), chromedp.WaitVisible(chromedp.CSS("#validation-form")),
		fill("#input-name", "images.txt"), fill("#input-data", ref+"\n"), chromedp.Click(chromedp.CSS("#run-validation")),
		chromedp.WaitVisible(chromedp.CSS(".notice")))
	wantText(t, "validation result", b.text(t), "The validation ran", "Passed", "images.txt", "asked by admin", "1 references (1 distinct), 0 from outside registries, 0 in private projects, 0 missing")
	b.screenshot(t, "validation")

	// Add a user: a weak password is refused; then the user is added.
	b.do(t, "users", chromedp.Click(chromedp.CSS(`nav a[href="/users"]`)), chromedp.WaitVisible(chromedp.CSS("#user-admin")))
	addUser := func(name, pw1, pw2 string) {
		t.Helper()
		b.do(t, "add user "+name, chromedp.Navigate(a.base+"/users"), chromedp.WaitVisible(chromedp.CSS("#user-form")),
			fill("#new-name", name), fill("#new-password", pw1), fill("#new-password2", pw2), chromedp.SetValue(chromedp.CSS("#new-role"), "guest"),
			chromedp.Click(chromedp.CSS("#add-user")), chromedp.WaitVisible(chromedp.CSS(".notice, .problem")))
	}
	addUser("ops", "short", "short")
	wantText(t, "weak password", b.text(t), "Nothing changed", "User ops was not added", "password", "400")
	b.screenshot(t, "user-refused")
	addUser("ops", "a long enough password 1", "a different one entirely")
	wantText(t, "passwords differ", b.text(t), "Nothing changed", "the two passwords differ")
	if code := a.getJSON(t, "/api/v1/users/ops", nil); code != http.StatusNotFound {
		t.Fatalf("a refused user was added anyway: GET = %d", code)
	}
	addUser("ops", "a long enough password 1", "a long enough password 1")
	wantText(t, "user added", b.text(t), "User ops was added with the role guest.")
	if _, err := chromedp.Run(b.ctx, chromedp.WaitVisible(chromedp.CSS("#user-ops"))); err != nil {
		t.Fatal(err)
	}
	b.screenshot(t, "users")

	// Switch to standby: an unreachable primary is refused and the mode
	// stays; the node as primary works; then activate.
	switchStandby := func(url, ca string) {
		t.Helper()
		b.do(t, "standby "+url, chromedp.Navigate(a.base+"/lifecycle"), chromedp.WaitVisible(chromedp.CSS("#standby-form")),
			fill("#primary", url), fill("#primary_ca", ca), fill("#projects", "team"), fill("#standby-reason", "Harbor runs"),
			chromedp.Click(chromedp.CSS("#standby")), chromedp.WaitVisible(chromedp.CSS(".notice, .problem")))
	}
	switchStandby("https://127.0.0.1:1", "")
	wantText(t, "refused standby", b.text(t), "Nothing changed", "The appliance did not become a standby", "127.0.0.1:1", "Back to the form")
	if href, err := chromedp.Run(b.ctx, chromedp.AttributeValue(chromedp.CSS("#back"), "href")); err != nil || href.Value != "/lifecycle" {
		t.Fatalf("the refusal's way back = %q (%v), want /lifecycle", href.Value, err)
	}
	b.screenshot(t, "standby-refused")
	var st struct {
		Mode string `json:"mode"`
	}
	if a.getJSON(t, "/api/v1/status", &st); st.Mode != "bootstrap" {
		t.Fatalf("a refused standby changed the mode to %q", st.Mode)
	}
	switchStandby(node.URL, string(node.CAPEM))
	wantText(t, "standby", b.text(t), "now a read-only standby", "standby", "Harbor runs", "No drift: the standby holds what the primary does.")
	b.screenshot(t, "standby")
	if a.getJSON(t, "/api/v1/status", &st); st.Mode != "standby" {
		t.Fatalf("mode after the standby form = %q", st.Mode)
	}
	// A validation of the standby measures its drift from the primary.
	b.do(t, "validation in standby", chromedp.Navigate(a.base+"/validation"), chromedp.WaitVisible(chromedp.CSS("#validation-form")),
		chromedp.Click(chromedp.CSS("#run-validation")), chromedp.WaitVisible(chromedp.CSS(".notice")))
	b.do(t, "drift", chromedp.Navigate(a.base+"/lifecycle"), chromedp.WaitVisible(chromedp.CSS("#drift-summary")))
	wantText(t, "drift", b.text(t), "0 missing, 0 extra, 0 different, against the primary", "Staleness")
	b.screenshot(t, "lifecycle-standby")

	// Activate without a reason (the browser's own check removed): refused.
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[any](`document.querySelector('#activate-reason').removeAttribute('required')`)); err != nil {
		t.Fatal(err)
	}
	b.do(t, "activate without a reason", chromedp.Click(chromedp.CSS("#activate")), chromedp.WaitVisible(chromedp.CSS(".problem")))
	wantText(t, "refused activate", b.text(t), "Nothing changed", "The appliance was not activated", "reason", "400")
	if a.getJSON(t, "/api/v1/status", &st); st.Mode != "standby" {
		t.Fatalf("a refused activate changed the mode to %q", st.Mode)
	}
	b.do(t, "activate", chromedp.Navigate(a.base+"/lifecycle"), chromedp.WaitVisible(chromedp.CSS("#activate-form")), fill("#activate-reason", "drill"), chromedp.Click(chromedp.CSS("#activate")), chromedp.WaitVisible(chromedp.CSS(".notice")))
	wantText(t, "active", b.text(t), "now active", "drill")
	b.screenshot(t, "active")
	if a.getJSON(t, "/api/v1/status", &st); st.Mode != "active" {
		t.Fatalf("mode after activate = %q", st.Mode)
	}

	// A form of these pages posted without its token changes nothing.
	b.do(t, "users", chromedp.Navigate(a.base+"/users"), chromedp.WaitVisible(chromedp.CSS("#user-form")))
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[any](`document.querySelector('#user-form input[name=csrf]').remove()`)); err != nil {
		t.Fatal(err)
	}
	b.do(t, "forged add user", fill("#new-name", "forged"), fill("#new-password", "a long enough password 2"), fill("#new-password2", "a long enough password 2"),
		chromedp.Click(chromedp.CSS("#add-user")), chromedp.WaitVisible(chromedp.CSS(".problem")))
	wantText(t, "forged form", b.text(t), "Form refused", "nothing was changed")
	if code := a.getJSON(t, "/api/v1/users/forged", nil); code != http.StatusNotFound {
		t.Fatalf("a form without its token added a user: GET = %d", code)
	}

	if out := b.outside(a.base); len(out) > 0 {
		t.Fatalf("the browser asked for URLs outside the appliance: %v", out)
	}
	seen := auditSeen(t, a)
	for _, want := range []string{"import admin refused", "import admin ok", "validation.run admin refused", "validation.run admin ok",
		"user.add admin refused", "user.add admin ok", "mode.change admin failed", "mode.change admin refused", "mode.change admin ok", "console.form admin refused"} {
		if !seen[want] {
			t.Errorf("the audit trail lacks %q; it has %v", want, seen)
		}
	}
}

// postJSON posts in as admin and decodes the answer into out.
func postJSON(t *testing.T, a *appliance, path string, in, out any) int {
	t.Helper()
	body, _ := json.Marshal(in)
	req, _ := http.NewRequest(http.MethodPost, a.base+path, bytes.NewReader(body))
	req.SetBasicAuth("admin", a.password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// auditSeen is the set of "action actor outcome" in the audit trail.
func auditSeen(t *testing.T, a *appliance) map[string]bool {
	t.Helper()
	var entries struct {
		Entries []struct {
			Action, Actor, Outcome string
		} `json:"entries"`
	}
	if code := a.getJSON(t, "/api/v1/audit?limit=10000", &entries); code != http.StatusOK {
		t.Fatalf("audit = %d", code)
	}
	seen := map[string]bool{}
	for _, e := range entries.Entries {
		seen[strings.Join([]string{e.Action, e.Actor, e.Outcome}, " ")] = true
	}
	return seen
}

// TestConsoleActionRefusals: every new action's form, posted without the
// session's token, with a forged one, with an ended session, or by a
// developer, is refused in words and changes nothing; the developer sees
// none of the admin forms.
func TestConsoleActionRefusals(t *testing.T) {
	t.Parallel()
	a := startAppliance(t)
	const pw = "a-long-enough-password-1"
	if code := a.api(t, http.MethodPost, "/api/v1/users", map[string]any{"name": "dev1", "password": pw, "role": "developer"}); code != http.StatusCreated {
		t.Fatalf("add developer = %d", code)
	}
	dir := t.TempDir()
	good, _ := signedLayout(t, "1.0", false)
	layout := filepath.Join(dir, "good.tar")
	if err := os.WriteFile(layout, good, 0o600); err != nil {
		t.Fatal(err)
	}
	forms := []struct {
		path string
		form url.Values
	}{
		{"/users", url.Values{"name": {"mallory"}, "password": {pw}, "password2": {pw}, "role": {"admin"}}},
		{"/imports/start", url.Values{"path": {layout}, "to_repo": {"team/app"}}},
		{"/validation/run", url.Values{"kind": {"images"}, "data": {a.HTTPSAddr() + "/team/app:1.0\n"}}},
		{"/lifecycle/standby", url.Values{"primary": {"https://127.0.0.1:1"}}},
		{"/lifecycle/activate", url.Values{"reason": {"forged"}}},
	}
	unchanged := func(when string) {
		t.Helper()
		var st struct {
			Mode string `json:"mode"`
		}
		var recs []any
		if a.getJSON(t, "/api/v1/users/mallory", nil) != http.StatusNotFound || a.getJSON(t, "/api/v1/imports", &recs) != http.StatusOK || len(recs) != 0 ||
			a.getJSON(t, "/api/v1/validation", nil) != http.StatusNotFound || a.getJSON(t, "/api/v1/status", &st) != http.StatusOK || st.Mode != "bootstrap" {
			t.Fatalf("%s changed something: imports %v, mode %q", when, recs, st.Mode)
		}
	}
	admin := newVisitor(t, a)
	csrf := admin.signIn(t, "admin", a.password)
	for _, f := range forms {
		resp, body := admin.do(t, http.MethodPost, f.path, f.form)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST %s without the token = %d", f.path, resp.StatusCode)
		}
		wantIn(t, "POST "+f.path+" without the token", body, "Form refused", "nothing was changed")
		forged := url.Values{"csrf": {csrf + "x"}}
		for k, v := range f.form {
			forged[k] = v
		}
		if resp, _ := admin.do(t, http.MethodPost, f.path, forged); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST %s with a forged token = %d", f.path, resp.StatusCode)
		}
	}
	unchanged("a form without its token")

	dev := newVisitor(t, a)
	devCSRF := dev.signIn(t, "dev1", pw)
	for _, page := range []string{"/users", "/imports", "/validation", "/lifecycle"} {
		resp, body := dev.do(t, http.MethodGet, page, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the developer's GET %s = %d", page, resp.StatusCode)
		}
		if strings.Contains(body, `class="action"`) {
			t.Fatalf("the developer is shown an admin form on %s:\n%s", page, body)
		}
	}
	_, body := dev.do(t, http.MethodGet, "/users", nil)
	wantIn(t, "the developer's users page", body, "The user list is not shown to you", "not an admin")
	for _, f := range forms {
		form := url.Values{"csrf": {devCSRF}}
		for k, v := range f.form {
			form[k] = v
		}
		resp, body := dev.do(t, http.MethodPost, f.path, form)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("the developer's POST %s = %d:\n%s", f.path, resp.StatusCode, body)
		}
		wantIn(t, "the developer's POST "+f.path, body, "Nothing changed", "403")
	}
	unchanged("a developer's forms")

	// An ended session's forms change nothing.
	if resp, _ := dev.do(t, http.MethodPost, "/logout", url.Values{"csrf": {devCSRF}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out = %d", resp.StatusCode)
	}
	resp, _ := admin.do(t, http.MethodPost, "/logout", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out = %d", resp.StatusCode)
	}
	for _, f := range forms {
		form := url.Values{"csrf": {csrf}}
		for k, v := range f.form {
			form[k] = v
		}
		resp, body := admin.do(t, http.MethodPost, f.path, form)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("POST %s with an ended session = %d", f.path, resp.StatusCode)
		}
		wantIn(t, "POST "+f.path+" with an ended session", body, "expired or ended", "nothing was changed")
	}
	unchanged("an ended session's forms")
}
