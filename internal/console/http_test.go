package console_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/config"
)

// visitor is a browser without a browser: a cookie jar over the
// appliance's TLS, redirects not followed, so each answer can be looked at.
type visitor struct {
	a  *appliance
	hc *http.Client
}

func newVisitor(t *testing.T, a *appliance) *visitor {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &visitor{a: a, hc: &http.Client{Transport: a.client.Transport, Jar: jar, Timeout: a.client.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// answer is a response, its body read and closed.
type answer struct {
	StatusCode int
	Header     http.Header
}

func (v *visitor) do(t *testing.T, method, path string, form url.Values) (answer, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, v.a.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := v.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{StatusCode: resp.StatusCode, Header: resp.Header}, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return html.UnescapeString(m[1])
}

// signIn signs in as name and returns the session's CSRF token.
func (v *visitor) signIn(t *testing.T, name, password string) string {
	t.Helper()
	_, page := v.do(t, http.MethodGet, "/login", nil)
	resp, body := v.do(t, http.MethodPost, "/login", url.Values{"csrf": {csrfOf(t, page)}, "username": {name}, "password": {password}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("sign-in as %s = %d %s:\n%s", name, resp.StatusCode, resp.Header.Get("Location"), body)
	}
	_, page = v.do(t, http.MethodGet, "/", nil)
	return csrfOf(t, page)
}

func (a *appliance) api(t *testing.T, method, path string, in any) int {
	t.Helper()
	b, _ := json.Marshal(in)
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", a.password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func wantIn(t *testing.T, what, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Fatalf("%s does not contain %q:\n%s", what, w, body)
		}
	}
}

// TestConsoleRefusals: the cookies' attributes and the pages' headers; a
// sign-in form without its token, a post without the session's token, a
// post with an ended session, an invalid project name: each refused with
// words and nothing changed; the login rate limit holds for the console;
// unknown paths of the API stay JSON.
func TestConsoleRefusals(t *testing.T) {
	t.Parallel()
	a := startAppliance(t, func(c *config.Config) { c.Auth.LoginFailures = 3 })
	if code := a.api(t, http.MethodPut, "/api/v1/projects/team", map[string]bool{"public": true}); code != http.StatusOK {
		t.Fatalf("create project team = %d", code)
	}
	v := newVisitor(t, a)

	// Not signed in: sent to the sign-in page.
	resp, _ := v.do(t, http.MethodGet, "/projects", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("GET /projects without a session = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	// A sign-in post without the form's token.
	resp, body := v.do(t, http.MethodPost, "/login", url.Values{"username": {"admin"}, "password": {a.password}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-in without its token = %d", resp.StatusCode)
	}
	wantIn(t, "the refused sign-in", body, "security token")

	csrf := v.signIn(t, "admin", a.password)
	u, _ := url.Parse(a.base)
	var session *http.Cookie
	for _, ck := range v.hc.Jar.Cookies(u) {
		if ck.Name == "appliance_session" {
			session = ck
		}
	}
	if session == nil || len(session.Value) < 40 {
		t.Fatalf("no random session cookie: %v", v.hc.Jar.Cookies(u))
	}
	resp, body = v.do(t, http.MethodGet, "/", nil)
	h := resp.Header
	if h.Get("Strict-Transport-Security") == "" || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") ||
		h.Get("Cache-Control") != "no-store" || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("overview headers: %v", h)
	}
	if strings.Contains(body, "http://") || regexp.MustCompile(`(src|href)="https?:`).MatchString(body) {
		t.Fatalf("the overview names an outside URL:\n%s", body)
	}
	// The cookie's attributes, as the server set them.
	raw := signInRaw(t, a)
	for _, attr := range []string{"Secure", "HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"} {
		if !strings.Contains(raw, attr) {
			t.Fatalf("the session cookie lacks %s: %s", attr, raw)
		}
	}

	// A post without the session's token: refused, the project unchanged.
	resp, body = v.do(t, http.MethodPost, "/projects/team/visibility", url.Values{"visibility": {"private"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("post without the token = %d", resp.StatusCode)
	}
	wantIn(t, "the refused form", body, "Form refused", "nothing was changed")
	resp, body = v.do(t, http.MethodPost, "/projects/team/visibility", url.Values{"visibility": {"private"}, "csrf": {"forged" + csrf}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("post with a forged token = %d:\n%s", resp.StatusCode, body)
	}
	_, body = v.do(t, http.MethodGet, "/projects", nil)
	wantIn(t, "projects after the refused forms", body, `id="make-private-team"`)

	// An invalid project name: the API's words, nothing changed.
	resp, body = v.do(t, http.MethodPost, "/projects/Bad%21Name/visibility", url.Values{"visibility": {"private"}, "csrf": {csrf}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid project name = %d:\n%s", resp.StatusCode, body)
	}
	wantIn(t, "the invalid name", body, "Nothing changed", "lower-case letters")
	resp, body = v.do(t, http.MethodGet, "/projects/Bad%21Name", nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("GET invalid project name = %d", resp.StatusCode)
	}
	wantIn(t, "the invalid name", body, "not a valid project name")

	// The real change.
	resp, _ = v.do(t, http.MethodPost, "/projects/team/visibility", url.Values{"visibility": {"private"}, "csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("make private = %d", resp.StatusCode)
	}
	_, body = v.do(t, http.MethodGet, "/projects", nil)
	wantIn(t, "projects after the change", body, `id="make-public-team"`)

	// Sign out; the old session's forms change nothing.
	resp, _ = v.do(t, http.MethodPost, "/logout", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out = %d", resp.StatusCode)
	}
	old := newVisitor(t, a)
	old.hc.Jar.SetCookies(u, []*http.Cookie{{Name: "appliance_session", Value: session.Value}})
	resp, body = old.do(t, http.MethodPost, "/projects/team/visibility", url.Values{"visibility": {"public"}, "csrf": {csrf}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("post with an ended session = %d", resp.StatusCode)
	}
	wantIn(t, "the ended session", body, "expired or ended", "nothing was changed")
	resp, _ = old.do(t, http.MethodGet, "/", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?expired=1" {
		t.Fatalf("GET with an ended session = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, body = old.do(t, http.MethodGet, "/login?expired=1", nil)
	wantIn(t, "the sign-in page", body, "Your session has expired or ended")

	// The rate limit: three wrong passwords, then the right one is refused too.
	w := newVisitor(t, a)
	for i := range 4 {
		_, page := w.do(t, http.MethodGet, "/login", nil)
		resp, _ = w.do(t, http.MethodPost, "/login", url.Values{"csrf": {csrfOf(t, page)}, "username": {"admin"}, "password": {"wrong"}})
		if i < 3 && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password %d = %d", i, resp.StatusCode)
		}
	}
	_, page := w.do(t, http.MethodGet, "/login", nil)
	resp, body = w.do(t, http.MethodPost, "/login", url.Values{"csrf": {csrfOf(t, page)}, "username": {"admin"}, "password": {a.password}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("sign-in from a locked-out address = %d (Retry-After %q)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	wantIn(t, "the lockout", body, "Too many failed sign-ins", "try again in")

	// Unknown pages: the console's words; unknown API paths: JSON.
	resp, body = w.do(t, http.MethodGet, "/nowhere", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /nowhere = %d", resp.StatusCode)
	}
	wantIn(t, "the unknown page", body, "No such page")
	resp, body = w.do(t, http.MethodGet, "/api/v1/nowhere", nil)
	if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /api/v1/nowhere = %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// signInRaw signs in as admin and returns the raw Set-Cookie of the session.
func signInRaw(t *testing.T, a *appliance) string {
	t.Helper()
	v := newVisitor(t, a)
	_, page := v.do(t, http.MethodGet, "/login", nil)
	resp, _ := v.do(t, http.MethodPost, "/login", url.Values{"csrf": {csrfOf(t, page)}, "username": {"admin"}, "password": {a.password}})
	for _, c := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(c, "appliance_session=") {
			return c
		}
	}
	t.Fatalf("no session cookie set: %v", resp.Header.Values("Set-Cookie"))
	return ""
}

// TestConsoleMember: a member of some projects sees the public projects
// and its own, never another private project or its repositories, and
// may not change visibility.
func TestConsoleMember(t *testing.T) {
	t.Parallel()
	a := startAppliance(t)
	for _, p := range []string{"team", "other"} {
		img, _ := signedLayout(t, "1.0", false)
		if code := a.importTar(t, p+".tar", p+"/app", img); code >= 300 {
			t.Fatalf("import into %s = %d", p, code)
		}
		if code := a.api(t, http.MethodPut, "/api/v1/projects/"+p, map[string]bool{"public": false}); code != http.StatusOK {
			t.Fatalf("make %s private = %d", p, code)
		}
	}
	const pw = "a-long-enough-password-1"
	if code := a.api(t, http.MethodPost, "/api/v1/users", map[string]any{"name": "dev1", "password": pw, "role": "developer", "projects": []string{"team"}}); code != http.StatusCreated {
		t.Fatalf("add member = %d", code)
	}
	v := newVisitor(t, a)
	csrf := v.signIn(t, "dev1", pw)
	_, body := v.do(t, http.MethodGet, "/projects", nil)
	wantIn(t, "the member's projects", body, `id="project-team"`)
	if strings.Contains(body, "other") || strings.Contains(body, "make-public") {
		t.Fatalf("the member sees another private project, or a visibility button:\n%s", body)
	}
	resp, body := v.do(t, http.MethodGet, "/repositories/team/app", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the member's repository = %d:\n%s", resp.StatusCode, body)
	}
	wantIn(t, "the member's repository", body, `id="tag-1.0"`, "signed")
	for _, path := range []string{"/repositories/other/app", "/projects/other"} {
		resp, body = v.do(t, http.MethodGet, path, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("the member's GET %s = %d:\n%s", path, resp.StatusCode, body)
		}
	}
	_, body = v.do(t, http.MethodGet, "/imports", nil)
	wantIn(t, "the member's imports page", body, "is not shown to you")
	if strings.Contains(body, "other.tar") {
		t.Fatalf("the member sees the import history:\n%s", body)
	}
	resp, body = v.do(t, http.MethodPost, "/projects/team/visibility", url.Values{"visibility": {"public"}, "csrf": {csrf}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a developer's visibility change = %d:\n%s", resp.StatusCode, body)
	}
	wantIn(t, "the refused change", body, "Nothing changed", "not an admin")
}

// TestConsoleTagPaging: 60 tags are shown 50 a page with links between
// the pages, and a search narrows them.
func TestConsoleTagPaging(t *testing.T) {
	t.Parallel()
	a := startAppliance(t)
	var more []string
	for i := 1; i < 60; i++ {
		more = append(more, fmt.Sprintf("v%03d", i))
	}
	img, _ := signedLayout(t, "v000", false, more...)
	if code := a.importTar(t, "many.tar", "team/many", img); code >= 300 {
		t.Fatalf("import = %d", code)
	}
	v := newVisitor(t, a)
	v.signIn(t, "admin", a.password)
	rows := regexp.MustCompile(`<tr id="tag-`)
	_, body := v.do(t, http.MethodGet, "/repositories/team/many", nil)
	if n := len(rows.FindAllString(body, -1)); n != 50 {
		t.Fatalf("page 1 shows %d tags, want 50:\n%s", n, body)
	}
	wantIn(t, "page 1", body, "page 1 of 2", `href="/repositories/team/many?page=2"`, `id="tag-v000"`)
	_, body = v.do(t, http.MethodGet, "/repositories/team/many?page=2", nil)
	if n := len(rows.FindAllString(body, -1)); n != 10 {
		t.Fatalf("page 2 shows %d tags, want 10", n)
	}
	wantIn(t, "page 2", body, "page 2 of 2", `rel="prev"`, `id="tag-v059"`)
	_, body = v.do(t, http.MethodGet, "/repositories/team/many?q=v05", nil)
	if n := len(rows.FindAllString(body, -1)); n != 10 {
		t.Fatalf("the search shows %d tags, want 10", n)
	}
	wantIn(t, "the search", body, "10 tags match", "page 1 of 1")
	_, body = v.do(t, http.MethodGet, "/repositories/team/many?page=99", nil)
	wantIn(t, "a page past the end", body, "page 2 of 2")
}
