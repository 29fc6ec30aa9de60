package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/config"
)

// TestTLSPolicy asks openssl for each kind of handshake: TLS 1.0 and 1.1,
// TLS 1.2 without ECDHE or without an AEAD cipher, and a group outside
// X25519 and P-256 are refused by the appliance (the client offers them:
// SECLEVEL=0 lifts OpenSSL's own floor); TLS 1.2 with ECDHE and AES-GCM
// or ChaCha20-Poly1305, and TLS 1.3, are accepted.
func TestTLSPolicy(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	ts := startServer(t)
	for _, tc := range []struct {
		name   string
		args   []string
		accept string // the protocol and cipher openssl reports; "" when refused
	}{
		{"TLS 1.0", []string{"-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"}, ""},
		{"TLS 1.1", []string{"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"}, ""},
		{"RSA key exchange, CBC", []string{"-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0"}, ""},
		{"RSA key exchange, GCM", []string{"-tls1_2", "-cipher", "AES128-GCM-SHA256"}, ""},
		{"ECDHE, CBC", []string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0"}, ""},
		{"ECDHE over P-384 only", []string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-groups", "secp384r1"}, ""},
		{"TLS 1.2 ECDHE AES-128-GCM", []string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"}, "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"},
		{"TLS 1.2 ECDHE AES-256-GCM over P-256", []string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384", "-groups", "P-256"}, "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384"},
		{"TLS 1.2 ECDHE ChaCha20-Poly1305", []string{"-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"}, "TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305"},
		{"TLS 1.3", []string{"-tls1_3"}, "TLSv1.3 TLS_AES_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"s_client", "-connect", ts.HTTPSAddr(), "-servername", "localhost"}, tc.args...)
			cmd := exec.CommandContext(ctx, openssl, args...) //nolint:gosec // the test's own arguments
			cmd.Stdin = strings.NewReader("")
			out, err := cmd.CombinedOutput()
			got := negotiated(string(out))
			if tc.accept == "" {
				if err == nil || got != "" {
					t.Fatalf("openssl %s was accepted (%q):\n%s", strings.Join(tc.args, " "), got, out)
				}
				// The appliance refused it: openssl offered it and got an alert back.
				if !strings.Contains(string(out), "alert") {
					t.Fatalf("openssl %s failed without an alert from the server (did the client offer it?):\n%s", strings.Join(tc.args, " "), out)
				}
				return
			}
			if err != nil || !strings.HasPrefix(got, tc.accept) {
				t.Fatalf("openssl %s = %q (%v), want %q:\n%s", strings.Join(tc.args, " "), got, err, tc.accept, out)
			}
		})
	}
}

// negotiated reads "PROTOCOL CIPHER" from s_client's output, or "".
func negotiated(out string) string {
	for _, line := range strings.Split(out, "\n") {
		// "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"
		if rest, ok := strings.CutPrefix(line, "New, "); ok {
			proto, cipher, ok := strings.Cut(rest, ", Cipher is ")
			if ok && cipher != "(NONE)" {
				return proto + " " + strings.TrimSpace(cipher)
			}
		}
	}
	return ""
}

// TestTLSPolicyGo: the same floor as Go clients see it, without openssl.
func TestTLSPolicyGo(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"TLS 1.1", &tls.Config{MaxVersion: tls.VersionTLS11}, false},
		{"ECDHE with CBC", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, false},
		{"P-384 only", &tls.Config{MaxVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.CurveP384}}, false},
		{"TLS 1.2", &tls.Config{MaxVersion: tls.VersionTLS12}, true},
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, true},
	} {
		cfg := tc.cfg
		cfg.InsecureSkipVerify = true //nolint:gosec // the handshake's parameters are under test, not the certificate
		conn, err := tls.Dial("tcp", ts.HTTPSAddr(), cfg)
		if err == nil {
			_ = conn.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: handshake error %v, want success %v", tc.name, err, tc.ok)
		}
	}
}

// TestHSTS: every HTTPS answer carries Strict-Transport-Security, errors
// and /v2/ included; no answer of the plain listener does, redirects
// included.
func TestHSTS(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	noRedirect := &http.Client{Transport: ts.client.Transport, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		url  string
		want string
	}{
		{ts.base + "/api/v1/system", hstsValue},
		{ts.base + "/api/v1/users", hstsValue}, // 401
		{ts.base + "/api/v1/nothing-here", hstsValue},
		{ts.base + "/service/token?service=appliance", hstsValue},
		{ts.base + "/v2/", hstsValue}, // 401, from distribution
		{ts.base + "/v2/library/app/tags/list", hstsValue},
		{ts.base + "/files/", hstsValue},
		{ts.base + "/ca.crt", hstsValue},
		{ts.base + "/healthz", hstsValue},
		{"http://" + ts.HTTPAddr() + "/healthz", ""},
		{"http://" + ts.HTTPAddr() + "/ca.crt", ""},
		{"http://" + ts.HTTPAddr() + "/files/", ""},
		{"http://" + ts.HTTPAddr() + "/api/v1/system", ""}, // 308 to HTTPS
		{"http://" + ts.HTTPAddr() + "/v2/", ""},
	} {
		resp, err := noRedirect.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Strict-Transport-Security"); got != tc.want {
			t.Errorf("GET %s (%d): Strict-Transport-Security %q, want %q", tc.url, resp.StatusCode, got, tc.want)
		}
	}
}

// TestRequestLimits: a header block beyond 64 KiB is refused on both
// listeners (431 over HTTP/1.1; over HTTP/2 the client is told the limit
// and does not send it), a form or JSON body beyond 1 MiB is refused
// (413) outside the streamed routes, and the streamed routes (imports,
// apt uploads) still read bodies larger than that.
func TestRequestLimits(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	// ts.client speaks HTTP/1.1 (a custom TLS configuration turns HTTP/2 off).
	h1Client := ts.client
	big := strings.Repeat("x", 70<<10)
	for _, base := range []string{ts.base, "http://" + ts.HTTPAddr()} {
		req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
		req.Header.Set("X-Padding", big)
		resp, err := h1Client.Do(req)
		if err != nil {
			t.Fatalf("%s with a 70 KiB header: %v", base, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%s with a 70 KiB header over HTTP/1.1 = %d, want 431", base, resp.StatusCode)
		}
		req, _ = http.NewRequest(http.MethodGet, base+"/healthz", nil)
		req.Header.Set("X-Padding", strings.Repeat("x", 32<<10))
		resp, err = h1Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s with a 32 KiB header = %d, want 200", base, resp.StatusCode)
		}
	}
	// Over HTTP/2 the server announces the limit; whether the client
	// sends the request anyway (and loses the connection) or not, it is
	// not served. A smaller header is.
	for _, tc := range []struct {
		size int
		ok   bool
	}{{70 << 10, false}, {32 << 10, true}} {
		h2 := ts.client.Transport.(*http.Transport).Clone()
		h2.ForceAttemptHTTP2 = true
		req, _ := http.NewRequest(http.MethodGet, ts.base+"/healthz", nil)
		req.Header.Set("X-Padding", strings.Repeat("x", tc.size))
		resp, err := (&http.Client{Transport: h2, Timeout: 30 * time.Second}).Do(req)
		served := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("HTTP/2 was not negotiated: %s", resp.Proto)
			}
		}
		h2.CloseIdleConnections()
		if served != tc.ok {
			t.Fatalf("a %d KiB header over HTTP/2: served %v (%v), want %v", tc.size>>10, served, err, tc.ok)
		}
	}

	post := func(path, contentType string, body io.Reader) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, ts.base+path, body)
		req.SetBasicAuth("admin", ts.admin)
		req.Header.Set("Content-Type", contentType)
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	form := "grant_type=password&username=admin&password=" + url.QueryEscape(ts.admin) + "&pad=" + strings.Repeat("x", 2<<20)
	if got := post("/service/token", "application/x-www-form-urlencoded", strings.NewReader(form)); got != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 2 MiB token form = %d, want 413", got)
	}
	if got := post("/service/token", "application/x-www-form-urlencoded", io.MultiReader(strings.NewReader(form))); got != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 2 MiB chunked token form = %d, want 413", got)
	}
	if got := post("/api/v1/activate", "application/json", strings.NewReader(`{"reason":"`+strings.Repeat("x", 2<<20)+`"}`)); got != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 2 MiB JSON body = %d, want 413", got)
	}
	// 3 MiB of garbage is read to the end and refused for what it is, not for its size.
	if got := post("/api/v1/imports?source=junk.tar", "application/x-tar", bytes.NewReader(bytes.Repeat([]byte{1}, 3<<20))); got != http.StatusUnprocessableEntity {
		t.Fatalf("a 3 MiB archive = %d, want 422 (refused by the importer, not for its size)", got)
	}
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	part, _ := w.CreateFormFile("file", "junk_1.0_amd64.deb")
	_, _ = part.Write(bytes.Repeat([]byte{1}, 3<<20))
	_ = w.Close()
	if got := post("/api/v1/apt/repos/r/d/packages", w.FormDataContentType(), &mp); got != http.StatusUnprocessableEntity {
		t.Fatalf("a 3 MiB package upload = %d, want 422 (not a .deb, not too large)", got)
	}
}

// TestLoginRateLimit: once an address has failed auth.login_failures
// logins within the window, its next login is refused with 429 and
// Retry-After on every path that takes a password (the API, both forms of
// the token endpoint, /v2/ with Basic credentials), the right password
// included; anonymous requests from it go on. (That the lockout ends
// with the window is TestLoginLimiter's, on a clock of its own: here the
// window is long enough for a loaded machine.)
func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) {
		c.Auth.LoginFailures, c.Auth.LoginWindow = 3, 10*time.Minute
		c.Projects = []config.Project{{Name: "pub", Public: true}}
	})
	pushRandom(t, ts, "pub/app:1")

	type answer struct {
		StatusCode int
		Header     http.Header
	}
	do := func(method, path, user, pass string, body io.Reader) answer {
		t.Helper()
		req, _ := http.NewRequest(method, ts.base+path, body)
		if user != "" || pass != "" {
			req.SetBasicAuth(user, pass)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return answer{resp.StatusCode, resp.Header}
	}
	for i := range 3 {
		if resp := do(http.MethodGet, "/api/v1/whoami", "admin", "wrong-password-"+strings.Repeat("x", i), nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failed login %d = %d, want 401", i+1, resp.StatusCode)
		}
	}
	form := func(pass string) io.Reader {
		return strings.NewReader("grant_type=password&service=appliance&username=admin&password=" + url.QueryEscape(pass))
	}
	for _, tc := range []struct {
		name string
		resp answer
	}{
		{"the API, right password", do(http.MethodGet, "/api/v1/whoami", "admin", ts.admin, nil)},
		{"the API, wrong password", do(http.MethodGet, "/api/v1/whoami", "admin", "wrong-password", nil)},
		{"the token endpoint, GET", do(http.MethodGet, "/service/token?service=appliance", "admin", ts.admin, nil)},
		{"the token endpoint, POST", do(http.MethodPost, "/service/token", "", "", form(ts.admin))},
		{"/v2/ with Basic", do(http.MethodGet, "/v2/pub/app/manifests/1", "admin", ts.admin, nil)},
	} {
		if tc.resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s while locked out = %d, want 429", tc.name, tc.resp.StatusCode)
		}
		if ra, err := strconv.Atoi(tc.resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 600 {
			t.Fatalf("%s: Retry-After %q, want 1 to 600 seconds", tc.name, tc.resp.Header.Get("Retry-After"))
		}
	}
	// The error names the problem.
	var apiErr APIError
	if code := ts.call(t, http.MethodGet, "/api/v1/whoami", "admin", ts.admin, nil, &apiErr); code != http.StatusTooManyRequests ||
		apiErr.Error.Code != "TOO_MANY_REQUESTS" || !strings.Contains(apiErr.Error.Message, "too many failed logins from 127.0.0.1") {
		t.Fatalf("locked-out API call = %d %+v", code, apiErr)
	}
	// Anonymous requests are not logins: a public pull goes on.
	if resp := do(http.MethodGet, "/api/v1/projects", "", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("anonymous API call while locked out = %d, want 200", resp.StatusCode)
	}
	if _, err := remote.Image(ts.ref(t, "pub/app:1"), remote.WithTransport(ts.client.Transport)); err != nil {
		t.Fatalf("anonymous pull while locked out: %v", err)
	}
}

// pushRandom pushes a small random image as the admin.
func pushRandom(t *testing.T, ts *testServer, ref string) {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ts.ref(t, ref), img, remote.WithTransport(ts.client.Transport),
		remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}
