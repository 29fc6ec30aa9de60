package regclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
)

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "ca")
	for _, tc := range []struct {
		name    string
		o       regclient.Options
		wantMsg string // in the error
		bug     string
	}{
		{"path", regclient.Options{URL: "https://registry.example/v2"}, "no path", ""},
		{"deeper path", regclient.Options{URL: "https://registry.example/harbor/"}, "no path", ""},
		{"credentials in the URL", regclient.Options{URL: "https://admin:hunter2-in-url@registry.example"}, "credentials", ""},
		{"user in the URL", regclient.Options{URL: "https://admin@registry.example"}, "credentials", ""},
		{"ftp", regclient.Options{URL: "ftp://registry.example"}, "https://HOST", ""},
		{"no scheme", regclient.Options{URL: "registry.example:5000"}, "https://HOST", ""},
		{"missing host", regclient.Options{URL: "https://"}, "https://HOST", ""},
		{"missing host with port", regclient.Options{URL: "https://:5000"}, "https://HOST", ""}, // would dial the local machine
		{"empty", regclient.Options{}, "https://HOST", ""},
		{"unparsable", regclient.Options{URL: "https://reg istry\x7f"}, "https://HOST", ""},
		{"query", regclient.Options{URL: "https://registry.example:5000?x=1"}, "https://HOST",
			`New accepts a URL with a query ("https://registry.example:5000?x=1"): base.String() keeps "?x=1", so every request goes to "https://registry.example:5000?x=1/v2/...", i.e. to "/" with a mangled query`},
		{"fragment", regclient.Options{URL: "https://registry.example:5000#frag"}, "https://HOST",
			`New accepts a URL with a fragment ("https://registry.example:5000#frag"): every request goes to "https://registry.example:5000#frag/v2/...", i.e. to "/"`},
		{"CA without PEM", regclient.Options{URL: "https://registry.example", CAPEM: []byte("not a certificate")}, "no PEM certificate", ""},
		{"CA that is a key", regclient.Options{URL: "https://registry.example", CAPEM: []byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n")}, "no PEM certificate", ""},
		{"user without password", regclient.Options{URL: "https://registry.example", Username: "admin"}, "both a user name and a password", ""},
		{"password without user", regclient.Options{URL: "https://registry.example", Password: "x"}, "both a user name and a password", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := regclient.New(tc.o)
			if err == nil && tc.bug != "" {
				c.Close()
				t.Fatal("regression: " + tc.bug)
			}
			if err == nil {
				c.Close()
				t.Fatalf("New(%+v) accepted it", tc.o)
			}
			mustContain(t, err.Error(), tc.wantMsg)
		})
	}
	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		for _, o := range []regclient.Options{
			{URL: "https://registry.example"},
			{URL: "https://registry.example:8443/"},
			{URL: "http://127.0.0.1:5000"},
			{URL: "https://registry.example", CAPEM: ca.PEM, Username: "robot$ci", Password: "p"},
		} {
			c, err := regclient.New(o)
			if err != nil {
				t.Errorf("New(%+v): %v", o, err)
				continue
			}
			want := strings.TrimRight(o.URL, "/")
			if c.URL() != want {
				t.Errorf("URL() = %q, want %q", c.URL(), want)
			}
			if want := strings.TrimPrefix(strings.TrimPrefix(want, "https://"), "http://"); c.Host() != want {
				t.Errorf("Host() = %q, want %q", c.Host(), want)
			}
			if c.Username() != o.Username {
				t.Errorf("Username() = %q, want %q", c.Username(), o.Username)
			}
			c.Close()
		}
	})
}

func TestNewErrorDoesNotEchoPassword(t *testing.T) {
	t.Parallel()
	_, err := regclient.New(regclient.Options{URL: "https://admin:hunter2-in-url@registry.example"})
	if err == nil {
		t.Fatal("New accepted credentials in the URL")
	}
	if strings.Contains(err.Error(), "hunter2-in-url") {
		t.Fatalf("regression: New's error for a URL with credentials quotes the whole URL, password included, into a message meant for logs and the CLI: %q", err)
	}
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		e    *regclient.Error
		want string
	}{
		{&regclient.Error{Op: "push blob", Target: "h/r@sha256:ab", Status: 403, Code: "DENIED", Message: "no", Err: regclient.ErrDenied},
			"push blob h/r@sha256:ab: access denied (HTTP 403 DENIED): no"},
		{&regclient.Error{Op: "reach registry", Err: regclient.ErrUnreachable}, "reach registry: registry unreachable"},
		{&regclient.Error{Op: "list tags of", Target: "h/r", Status: 500, Err: regclient.ErrProtocol}, "list tags of h/r: unexpected answer (HTTP 500)"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if !errors.Is(tc.e, tc.e.Err) {
			t.Errorf("%v does not unwrap to its Err", tc.e)
		}
	}
}

// TestTransportErrors checks what an operator is told when no answer comes.
func TestTransportErrors(t *testing.T) {
	t.Parallel()
	good := newCA(t, "the registry's CA")
	other := newCA(t, "another CA")
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	// a port nothing listens on
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()

	plain := httptest.NewServer(ok)
	t.Cleanup(plain.Close)
	signedByOther := startTLS(t, other.loopbackLeaf(t), ok)
	forLocalhost := startTLS(t, good.issue(t, nil, []string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)), ok)
	expired := startTLS(t, good.issue(t, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)), ok)

	for _, tc := range []struct {
		name    string
		url     string
		ca      []byte
		want    error
		wantMsg []string
	}{
		{"wrong CA", signedByOther.URL, good.PEM, regclient.ErrTLS, []string{"give the registry's CA", signedByOther.Listener.Addr().String()}},
		{"no CA given", signedByOther.URL, nil, regclient.ErrTLS, []string{"give the registry's CA"}},
		{"certificate for another name", forLocalhost.URL, good.PEM, regclient.ErrTLS, []string{"certificate for other names"}},
		{"expired certificate", expired.URL, good.PEM, regclient.ErrTLS, []string{"expired"}},
		{"plain HTTP on an https URL", "https://" + plain.Listener.Addr().String(), good.PEM, regclient.ErrTLS, []string{"does not speak TLS", "plain HTTP"}},
		{"closed port", "https://" + closed, good.PEM, regclient.ErrUnreachable, []string{closed, "refused"}},
		{"closed port over http", "http://" + closed, nil, regclient.ErrUnreachable, []string{closed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, regclient.Options{URL: tc.url, CAPEM: tc.ca, Username: "admin", Password: "pw-never-shown"})
			err := c.Login(ctxFor(t))
			e := asError(t, err, tc.want)
			mustContain(t, err.Error(), tc.wantMsg...)
			mustContain(t, err.Error(), "reach registry")
			if e.Status != 0 {
				t.Errorf("Status = %d for an error without an answer", e.Status)
			}
			if strings.Contains(err.Error(), "pw-never-shown") {
				t.Errorf("the error shows the password: %v", err)
			}
			// every other sentinel is told apart
			for _, s := range []error{regclient.ErrTLS, regclient.ErrUnreachable, regclient.ErrUnauthorized, regclient.ErrProtocol} {
				if !errors.Is(s, tc.want) && errors.Is(err, s) {
					t.Errorf("%v also wraps %v", err, s)
				}
			}
		})
	}
}

func TestContextEndsTheCall(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		select { // hold the answer until the client gives up (bounded)
		case <-r.Context().Done():
		case <-release:
		case <-time.After(testTimeout):
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := newClient(t, regclient.Options{URL: srv.URL})
	ctx, cancel := context.WithTimeout(ctxFor(t), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := c.HeadManifest(ctx, "a/b", "latest")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("HeadManifest with an ended context = %v, want context.DeadlineExceeded", err)
	}
	if errors.Is(err, regclient.ErrUnreachable) {
		t.Errorf("an ended context is reported as an unreachable registry: %v", err)
	}
	var e *regclient.Error
	if !errors.As(err, &e) || e.Op != "check manifest" {
		t.Errorf("error %v does not name the operation", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the call took %s after its context ended", d)
	}
}

// TestStatusErrors checks the classification of error answers, with the
// OCI error bodies distribution, Harbor and the appliance send.
func TestStatusErrors(t *testing.T) {
	t.Parallel()
	const password = "pw-Xy9-never-shown"
	for _, tc := range []struct {
		name     string
		write    bool // PutManifest instead of GetManifest
		status   int
		body     string
		want     error
		wantCode string
		wantMsg  string
	}{
		{"unauthorized", false, 401, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, regclient.ErrUnauthorized, "UNAUTHORIZED", "authentication required"},
		{"denied on a write", true, 403, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`, regclient.ErrDenied, "DENIED", "requested access to the resource is denied"},
		{"405 to a read is no read-only mode", false, 405, `{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}`, regclient.ErrProtocol, "UNSUPPORTED", "unsupported"},
		{"denied", false, 403, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`, regclient.ErrDenied, "DENIED", "requested access to the resource is denied"},
		{"read-only (Harbor)", false, 403, `{"errors":[{"code":"DENIED","message":"The system is in read only mode. Any modification is prohibited."}]}`, regclient.ErrReadOnly, "DENIED", "read only mode"},
		{"read-only (appliance standby)", false, 403, `{"errors":[{"code":"DENIED","message":"this registry is a standby and read-only"}]}`, regclient.ErrReadOnly, "DENIED", "read-only"},
		{"readonly in one word", false, 503, `{"errors":[{"code":"UNAVAILABLE","message":"registry is readonly"}]}`, regclient.ErrReadOnly, "UNAVAILABLE", "readonly"},
		{"read-only (distribution maintenance)", true, 405, `{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}`, regclient.ErrReadOnly, "UNSUPPORTED", "unsupported"},
		{"not found", false, 404, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"latest"}}]}`, regclient.ErrNotFound, "MANIFEST_UNKNOWN", "manifest unknown"},
		{"not found without body", false, 404, ``, regclient.ErrNotFound, "", ""},
		{"unavailable", false, 503, `upstream connect error`, regclient.ErrUnreachable, "", "upstream connect error"},
		{"server error in plain text", false, 500, "database is locked\n", regclient.ErrProtocol, "", "database is locked"},
		{"server error in HTML", false, 502, "<html><body>Bad Gateway</body></html>", regclient.ErrProtocol, "", ""},
		{"several errors", false, 400, `{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"},{"code":"MANIFEST_INVALID","message":"manifest invalid"},{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`,
			regclient.ErrProtocol, "MANIFEST_INVALID", "manifest invalid; blob unknown to registry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return // no authentication asked: the error comes from the call itself
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			t.Cleanup(srv.Close)
			c := newClient(t, regclient.Options{URL: srv.URL, Username: "admin", Password: password})
			op := "read manifest"
			var err error
			if tc.write {
				op = "push manifest"
				_, err = c.PutManifest(ctxFor(t), "team/app", "v1.2", "application/vnd.oci.image.manifest.v1+json", []byte(`{"schemaVersion":2}`))
			} else {
				_, _, err = c.GetManifest(ctxFor(t), "team/app", "v1.2")
			}
			e := asError(t, err, tc.want)
			if e.Status != tc.status || e.Code != tc.wantCode {
				t.Errorf("Status, Code = %d, %q, want %d, %q", e.Status, e.Code, tc.status, tc.wantCode)
			}
			if tc.wantMsg == "" && e.Message != "" {
				t.Errorf("Message = %q, want none", e.Message)
			}
			text := err.Error()
			mustContain(t, text, op, srv.Listener.Addr().String()+"/team/app:v1.2", tc.wantMsg, fmt.Sprintf("HTTP %d", tc.status))
			if strings.Contains(text, password) {
				t.Errorf("the error shows the password: %s", text)
			}
		})
	}
}

func TestNotARegistry(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	c := newClient(t, regclient.Options{URL: srv.URL})
	err := c.Login(ctxFor(t))
	asError(t, err, regclient.ErrProtocol)
	mustContain(t, err.Error(), "is not an OCI registry", "reach registry")
	if errors.Is(err, regclient.ErrNotFound) {
		t.Errorf("a web server without /v2/ is reported as a missing thing: %v", err)
	}
	// the failed probe is not remembered: once the registry is up, calls work
	_, _, err = c.HeadManifest(ctxFor(t), "a", "latest")
	asError(t, err, regclient.ErrProtocol)
}

// TestFallbackTags checks the referrers tag schema of distribution-spec 1.1.
func TestFallbackTags(t *testing.T) {
	t.Parallel()
	d := digest.FromString("subject")
	tag := regclient.FallbackTag(d)
	if want := "sha256-" + d.Encoded(); tag != want {
		t.Fatalf("FallbackTag(%s) = %q, want %q", d, tag, want)
	}
	if !regclient.IsFallbackTag(tag) {
		t.Errorf("IsFallbackTag(FallbackTag(%s)) = false", d)
	}
	hex := d.Encoded()
	for _, tc := range []struct {
		tag  string
		want bool
	}{
		{"sha256-" + hex, true},
		{"sha256-" + strings.Repeat("0", 64), true},
		{"sha256-" + strings.ToUpper(hex), false},
		{"sha256-" + hex[:63], false},
		{"sha256-" + hex + "0", false},
		{"sha256-" + hex + ".sig", false}, // cosign's signature tag is an ordinary tag
		{"sha256-" + hex[:63] + "g", false},
		{"sha256:" + hex, false},
		{"sha512-" + hex, true}, // a sha512 subject's tag, truncated to 64 characters as the spec says
		{"sha384-" + hex, false},
		{"latest", false},
		{"sha256-", false},
		{"", false},
	} {
		if got := regclient.IsFallbackTag(tc.tag); got != tc.want {
			t.Errorf("IsFallbackTag(%q) = %v, want %v", tc.tag, got, tc.want)
		}
	}
}

func TestFallbackTagTruncates(t *testing.T) {
	t.Parallel()
	// The examples of distribution-spec 1.1, "Referrers Tag Schema".
	a64, a128 := strings.Repeat("a", 64), strings.Repeat("a", 128)
	for _, tc := range []struct{ d, want string }{
		{"sha256:" + a64, "sha256-" + a64},
		{"sha512:" + a128, "sha512-" + a64},
	} {
		got := regclient.FallbackTag(digest.Digest(tc.d))
		if got != tc.want && len(got) > 128 {
			t.Fatalf("regression: FallbackTag(%s…) = a %d-character tag; distribution-spec 1.1 truncates the encoded part to 64 characters (%q…), and tags longer than 128 characters are invalid, so a sha512 subject's fallback tag cannot be pushed", tc.d[:16], len(got), tc.want[:16])
		}
		if got != tc.want {
			t.Errorf("FallbackTag(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
