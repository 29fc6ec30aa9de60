package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/config"
)

// testServer is the real appliance, in-process, on loopback ports.
type testServer struct {
	*Server
	client *http.Client
	base   string
	admin  string
}

func startServer(t *testing.T, mutate ...func(*config.Config)) *testServer {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPSAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ShutdownTimeout = 5 * time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatalf("Open: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		// A connection the transport dialed but never used is "new" to the
		// server, and graceful shutdown waits 5 s before it counts as idle.
		tr.CloseIdleConnections()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop within 10s")
		}
	})
	return &testServer{
		Server: s,
		client: &http.Client{Timeout: 30 * time.Second, Transport: tr},
		base:   "https://" + s.HTTPSAddr(),
		admin:  s.InitialAdminPassword,
	}
}

func (ts *testServer) ref(t *testing.T, r string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(ts.HTTPSAddr() + "/" + r)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// call makes an API request and decodes the answer.
func (ts *testServer) call(t *testing.T, method, path, user, pass string, body any, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			r = strings.NewReader(b)
		default:
			data, _ := json.Marshal(b)
			r = bytes.NewReader(data)
		}
	}
	req, err := http.NewRequest(method, ts.base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

// TestUsersAPI proves the permission rules and error statuses of /api/v1/users.
func TestUsersAPI(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	if ts.admin == "" {
		t.Fatal("no initial admin password")
	}
	var apiErr APIError
	steps := []struct {
		name         string
		method, path string
		user, pass   string
		body         any
		want         int
		wantMsg      string
	}{
		{"anonymous may not list users", "GET", "/api/v1/users", "", "", nil, 401, "authentication required"},
		{"wrong password", "GET", "/api/v1/users", "admin", "wrong-password", nil, 401, "invalid username or password"},
		{"admin adds a developer", "POST", "/api/v1/users", "admin", ts.admin, UserRequest{Name: "dev", Password: "developer-pass-1", Role: "developer"}, 201, ""},
		{"duplicate user", "POST", "/api/v1/users", "admin", ts.admin, UserRequest{Name: "dev", Password: "developer-pass-1"}, 409, "already exists"},
		{"weak password", "POST", "/api/v1/users", "admin", ts.admin, UserRequest{Name: "weak", Password: "short"}, 400, "at least 12"},
		{"bad role", "POST", "/api/v1/users", "admin", ts.admin, UserRequest{Name: "x", Password: "long-enough-pass", Role: "root"}, 400, "invalid role"},
		{"unknown JSON field", "POST", "/api/v1/users", "admin", ts.admin, `{"name":"y","password":"long-enough-pass","admin":true}`, 400, "unknown field"},
		{"invalid JSON", "POST", "/api/v1/users", "admin", ts.admin, `{"name":`, 400, "invalid JSON"},
		{"developer may not add users", "POST", "/api/v1/users", "dev", "developer-pass-1", UserRequest{Name: "z", Password: "long-enough-pass"}, 403, "not an admin"},
		{"developer changes own password", "PATCH", "/api/v1/users/dev", "dev", "developer-pass-1", UserRequest{Password: "developer-pass-2"}, 200, ""},
		{"old password no longer works", "GET", "/api/v1/users/dev", "dev", "developer-pass-1", nil, 401, ""},
		{"developer may not change own role", "PATCH", "/api/v1/users/dev", "dev", "developer-pass-2", UserRequest{Role: "admin"}, 403, "only an admin"},
		{"developer may not touch admin", "PATCH", "/api/v1/users/admin", "dev", "developer-pass-2", UserRequest{Password: "hijacked-password"}, 403, ""},
		{"last admin cannot be removed", "DELETE", "/api/v1/users/admin", "admin", ts.admin, nil, 409, "last admin"},
		{"last admin cannot be demoted", "PATCH", "/api/v1/users/admin", "admin", ts.admin, UserRequest{Role: "guest"}, 409, "last admin"},
		{"unknown user", "DELETE", "/api/v1/users/nobody", "admin", ts.admin, nil, 404, "no such user"},
		{"admin removes dev", "DELETE", "/api/v1/users/dev", "admin", ts.admin, nil, 204, ""},
		{"removed user is refused", "GET", "/api/v1/whoami", "dev", "developer-pass-2", nil, 401, ""},
		{"anonymous may not read the import history", "GET", "/api/v1/imports", "", "", nil, 401, "authentication required"},
		{"admin reads the import history", "GET", "/api/v1/imports", "admin", ts.admin, nil, 200, ""},
	}
	for _, st := range steps {
		apiErr = APIError{}
		var raw json.RawMessage
		got := ts.call(t, st.method, st.path, st.user, st.pass, st.body, &raw)
		if got >= 400 {
			_ = json.Unmarshal(raw, &apiErr)
		}
		if got != st.want {
			t.Fatalf("%s: %s %s = %d, want %d (%s)", st.name, st.method, st.path, got, st.want, apiErr.Error.Message)
		}
		if st.wantMsg != "" && !strings.Contains(apiErr.Error.Message, st.wantMsg) {
			t.Fatalf("%s: message %q lacks %q", st.name, apiErr.Error.Message, st.wantMsg)
		}
	}
	var users []auth.User
	if ts.call(t, "GET", "/api/v1/users", "admin", ts.admin, nil, &users) != 200 || len(users) != 1 || users[0].Name != "admin" {
		t.Fatalf("users at the end = %+v, want only admin", users)
	}
}

// TestProjectsAPI proves that configured projects are fixed, API changes
// apply to pulls at once, and private projects are hidden from anonymous lists.
func TestProjectsAPI(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) {
		c.Projects = []config.Project{{Name: "fixed", Public: false}}
	})
	var e APIError
	if got := ts.call(t, "PUT", "/api/v1/projects/fixed", "admin", ts.admin, map[string]bool{"public": true}, &e); got != 409 || !strings.Contains(e.Error.Message, "configuration file") {
		t.Fatalf("changing a configured project = %d %q, want 409", got, e.Error.Message)
	}
	if got := ts.call(t, "PUT", "/api/v1/projects/Bad!", "admin", ts.admin, map[string]bool{"public": true}, &e); got != 400 {
		t.Fatalf("invalid project name = %d, want 400", got)
	}
	if got := ts.call(t, "PUT", "/api/v1/projects/open", "admin", ts.admin, map[string]any{}, &e); got != 400 || !strings.Contains(e.Error.Message, "public") {
		t.Fatalf("missing public flag = %d %q, want 400", got, e.Error.Message)
	}
	if got := ts.call(t, "PUT", "/api/v1/projects/hidden", "", "", map[string]bool{"public": false}, nil); got != 401 {
		t.Fatalf("anonymous project change = %d, want 401", got)
	}
	if got := ts.call(t, "PUT", "/api/v1/projects/hidden", "admin", ts.admin, map[string]bool{"public": false}, nil); got != 200 {
		t.Fatalf("set hidden private = %d", got)
	}
	// Push into both a public and a private project, then read anonymously.
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})}
	for _, ref := range []string{"hidden/app:1", "open/app:1"} {
		if err := remote.Write(ts.ref(t, ref), img, opts...); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
	}
	anon := []remote.Option{remote.WithTransport(ts.client.Transport)}
	if _, err := remote.Head(ts.ref(t, "open/app:1"), anon...); err != nil {
		t.Fatalf("anonymous head of a public image: %v", err)
	}
	_, err = remote.Head(ts.ref(t, "hidden/app:1"), anon...)
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous head of a private image = %v, want 401", err)
	}
	var list []auth.Project
	ts.call(t, "GET", "/api/v1/projects", "", "", nil, &list)
	for _, p := range list {
		if p.Name == "hidden" || p.Name == "fixed" {
			t.Fatalf("anonymous project list shows private %q: %+v", p.Name, list)
		}
	}
	if len(list) != 1 || list[0].Name != "open" || !list[0].Public || list[0].Source != "default" {
		t.Fatalf("anonymous project list = %+v, want only the public open", list)
	}
	ts.call(t, "GET", "/api/v1/projects", "admin", ts.admin, nil, &list)
	if len(list) != 3 {
		t.Fatalf("admin project list = %+v, want fixed, hidden, open", list)
	}
	// Making it public takes effect at once.
	ts.call(t, "PUT", "/api/v1/projects/hidden", "admin", ts.admin, map[string]bool{"public": true}, nil)
	if _, err := remote.Head(ts.ref(t, "hidden/app:1"), anon...); err != nil {
		t.Fatalf("anonymous head after making the project public: %v", err)
	}
}

// TestTokenEndpoint proves what tokens grant: anonymous callers get pull on
// public projects only, wrong credentials get 401, and the OAuth2 password
// grant works.
func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	claims := func(tok string) []auth.ResourceActions {
		c, err := ts.tokens.Verify(tok)
		if err != nil {
			t.Fatalf("issued token does not verify: %v", err)
		}
		return c.Access
	}
	var tr tokenResponse
	if got := ts.call(t, "GET", "/service/token?service=appliance&scope=repository:lib/app:pull,push&scope=registry:catalog:*", "", "", nil, &tr); got != 200 {
		t.Fatalf("anonymous token = %d", got)
	}
	if acc := claims(tr.Token); len(acc) != 1 || acc[0].Name != "lib/app" || strings.Join(acc[0].Actions, ",") != "pull" {
		t.Fatalf("anonymous token grants %+v, want pull on lib/app only", acc)
	}
	if tr.ExpiresIn != int((15*time.Minute).Seconds()) || tr.AccessToken != tr.Token {
		t.Fatalf("token response = %+v", tr)
	}
	if got := ts.call(t, "GET", "/service/token?service=appliance&scope=repository:lib/app:push", "admin", ts.admin, nil, &tr); got != 200 {
		t.Fatalf("admin token = %d", got)
	}
	if acc := claims(tr.Token); len(acc) != 1 || strings.Join(acc[0].Actions, ",") != "push" {
		t.Fatalf("admin token grants %+v", acc)
	}
	if got := ts.call(t, "GET", "/service/token?scope=repository:lib/app:pull", "admin", "wrong", nil, nil); got != 401 {
		t.Fatalf("wrong password token = %d, want 401", got)
	}
	if got := ts.call(t, "GET", "/service/token?scope=nonsense", "", "", nil, nil); got != 400 {
		t.Fatalf("bad scope = %d, want 400", got)
	}
	if got := ts.call(t, "GET", "/service/token?service=other", "", "", nil, nil); got != 400 {
		t.Fatalf("unknown service = %d, want 400", got)
	}
	form := url.Values{"grant_type": {"password"}, "username": {"admin"}, "password": {ts.admin}, "scope": {"repository:lib/app:pull,push"}, "service": {"appliance"}}
	resp, err := ts.client.PostForm(ts.base+"/service/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&tr) != nil {
		t.Fatalf("password grant = %d", resp.StatusCode)
	}
	if acc := claims(tr.AccessToken); len(acc) != 1 || len(acc[0].Actions) != 2 {
		t.Fatalf("password grant token grants %+v", acc)
	}
	form.Set("grant_type", "refresh_token")
	resp2, err := ts.client.PostForm(ts.base+"/service/token", form)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 400 {
		t.Fatalf("refresh_token grant = %d, want 400 unsupported", resp2.StatusCode)
	}
}

// TestSystemAndHealth proves the system, whoami, health and readiness answers.
func TestSystemAndHealth(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.Hostnames = []string{"registry.enclave.test"} })
	var info SystemInfo
	if got := ts.call(t, "GET", "/api/v1/system", "", "", nil, &info); got != 200 {
		t.Fatalf("system = %d", got)
	}
	if info.Version.GoVersion == "" || info.Mode.ReadOnly || len(info.CAFingerprint) != 64 || info.Hostnames[0] != "registry.enclave.test" {
		t.Fatalf("system info = %+v", info)
	}
	var who WhoAmI
	ts.call(t, "GET", "/api/v1/whoami", "", "", nil, &who)
	if !who.Anonymous {
		t.Fatalf("whoami anonymous = %+v", who)
	}
	ts.call(t, "GET", "/api/v1/whoami", "admin", ts.admin, nil, &who)
	if who.Anonymous || who.Name != "admin" || who.Role != auth.RoleAdmin {
		t.Fatalf("whoami admin = %+v", who)
	}
	for _, base := range []string{ts.base, "http://" + ts.HTTPAddr()} {
		for _, p := range []string{"/healthz", "/readyz"} {
			resp, err := ts.client.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s%s = %d", base, p, resp.StatusCode)
			}
		}
	}
	var e APIError
	if got := ts.call(t, "PUT", "/api/v1/system/read-only", "admin", ts.admin, map[string]any{"reason": "x"}, &e); got != 400 {
		t.Fatalf("read-only without the flag = %d, want 400", got)
	}
	if got := ts.call(t, "GET", "/api/v1/nothing-here", "", "", nil, &e); got != 404 || e.Error.Code == "" {
		t.Fatalf("unknown API path = %d %+v, want a JSON 404", got, e)
	}
}

// TestJSONBodyLimit: JSON bodies over 1 MiB are refused with 413, whether
// their length is declared or they arrive chunked.
func TestJSONBodyLimit(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	big := `{"public": true, "pad": "` + strings.Repeat("x", 2<<20) + `"}`
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(big)
		if chunked {
			body = io.MultiReader(strings.NewReader(big)) // length unknown: sent chunked
		}
		req, err := http.NewRequest(http.MethodPut, ts.base+"/api/v1/projects/x", body)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("admin", ts.admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked=%v: %d, want 413", chunked, resp.StatusCode)
		}
	}
	if got := ts.call(t, "PUT", "/api/v1/projects/x", "admin", ts.admin, map[string]bool{"public": false}, nil); got != 200 {
		t.Fatalf("a small body = %d", got)
	}
}
