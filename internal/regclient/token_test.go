package regclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
)

// The tests here run against fakeRegistry, a fake of the documented Docker
// token protocol; Harbor and the appliance serve it for real in test/e2e.

func opener(data []byte, opened *atomic.Int32) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		if opened != nil {
			opened.Add(1)
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}
}

func TestTokenLogin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		user, pw      string
		anonymousPull bool
		want          error
		wantMsg       string
	}{
		{"right password", "alice", "alice-pw-S3cr3t", false, nil, ""},
		{"wrong password", "alice", "not-alices-pw", false, regclient.ErrUnauthorized, "the token service refused user alice"},
		{"unknown user", "mallory", "mallory-pw", false, regclient.ErrUnauthorized, "user mallory"},
		{"anonymous where allowed", "", "", true, nil, ""},
		{"anonymous where refused", "", "", false, regclient.ErrUnauthorized, "refused anonymous access"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeRegistry(t, func(f *fakeRegistry) { f.anonymousPull = tc.anonymousPull })
			c := newClient(t, regclient.Options{URL: f.srv.URL, CAPEM: f.caPEM(), Username: tc.user, Password: tc.pw})
			err := c.Login(ctxFor(t))
			if n, _ := f.counts(); n != 1 {
				t.Errorf("Login made %d token requests, want 1", n)
			}
			if got := f.lastTokenRequest().user; got != tc.user {
				t.Errorf("the token service saw user %q, want %q", got, tc.user)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Login: %v", err)
				}
				return
			}
			e := asError(t, err, tc.want)
			mustContain(t, err.Error(), "authenticate", f.host(), tc.wantMsg, "HTTP 401")
			if e.Status != http.StatusUnauthorized {
				t.Errorf("Status = %d, want 401", e.Status)
			}
			if tc.pw != "" && strings.Contains(err.Error(), tc.pw) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func TestTokenScopes(t *testing.T) {
	t.Parallel()
	f := newFakeRegistry(t, nil)
	c := f.client(t, "alice")
	ctx := ctxFor(t)
	data := []byte("layer bytes")
	d := f.putBlob("team/base", data)

	ok, err := c.HeadBlob(ctx, "team/base", d)
	if err != nil || !ok {
		t.Fatalf("HeadBlob = %v, %v; want true", ok, err)
	}
	if got, want := f.lastTokenRequest().scopes, []string{"repository:team/base:pull"}; !slices.Equal(got, want) {
		t.Errorf("HeadBlob asked for scopes %q, want %q", got, want)
	}

	// A mount needs push on the target and pull on the source in one token:
	// the fake, like distribution, mounts only then.
	var opened atomic.Int32
	mounted, err := c.PushBlob(ctx, "team/app", d, int64(len(data)), opener(data, &opened), "team/base")
	if err != nil || !mounted {
		t.Fatalf("PushBlob with mountFrom = %v, %v; want mounted", mounted, err)
	}
	if opened.Load() != 0 {
		t.Errorf("a mounted blob was opened %d times", opened.Load())
	}
	got := f.lastTokenRequest().scopes
	slices.Sort(got)
	if want := []string{"repository:team/app:pull,push", "repository:team/base:pull"}; !slices.Equal(got, want) {
		t.Errorf("the mount asked for scopes %q, want %q", got, want)
	}
	if _, ok := f.blob("team/app", d); !ok {
		t.Error("the mounted blob is not in team/app")
	}

	// A token of one repository is not used for another.
	before, _ := f.counts()
	if _, err := c.HeadBlob(ctx, "team/base", d); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadBlob(ctx, "team/other", d); err != nil {
		t.Fatal(err)
	}
	after, unauthorized := f.counts()
	if after != before+1 {
		t.Errorf("two HEADs (one cached scope, one new) made %d token requests, want 1", after-before)
	}
	if unauthorized != 1 { // the first probe of /v2/
		t.Errorf("the registry answered 401 %d times, want only the probe's", unauthorized)
	}
}

func TestTokenRenewal(t *testing.T) {
	t.Parallel()
	// expires_in 1s: the client keeps it 0.9s, and the fake refuses it
	// after 1s. Renewal must happen before the registry refuses it.
	f := newFakeRegistry(t, func(f *fakeRegistry) { f.expiresIn = 1 })
	c := f.client(t, "alice")
	ctx := ctxFor(t)
	d := f.putBlob("r", []byte("x"))
	for range 2 {
		if ok, err := c.HeadBlob(ctx, "r", d); err != nil || !ok {
			t.Fatalf("HeadBlob = %v, %v", ok, err)
		}
	}
	if n, _ := f.counts(); n != 1 {
		t.Fatalf("two calls within the token's life made %d token requests, want 1", n)
	}
	time.Sleep(1100 * time.Millisecond)
	if ok, err := c.HeadBlob(ctx, "r", d); err != nil || !ok {
		t.Fatalf("HeadBlob after expiry = %v, %v", ok, err)
	}
	n, unauthorized := f.counts()
	if n != 2 {
		t.Errorf("a call after expiry made %d token requests in all, want 2", n)
	}
	if unauthorized != 1 {
		t.Errorf("the registry answered 401 %d times: the client sent an expired token instead of renewing it", unauthorized-1)
	}
}

func TestTokenDefaultLifetimeIsCached(t *testing.T) {
	t.Parallel()
	f := newFakeRegistry(t, nil) // no expires_in: 60s by the protocol
	c := f.client(t, "alice")
	d := f.putBlob("r", []byte("x"))
	for range 5 {
		if _, err := c.HeadBlob(ctxFor(t), "r", d); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := f.counts(); n != 1 {
		t.Errorf("5 calls made %d token requests, want 1", n)
	}
}

// TestStaleTokenRetry revokes the client's token: the next call gets a
// 401, fetches a new token and succeeds on its one retry.
func TestStaleTokenRetry(t *testing.T) {
	t.Parallel()
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	blob := []byte("stale token blob")
	for _, tc := range []struct {
		name string
		call func(ctx context.Context, c *regclient.Client, f *fakeRegistry) error
		bug  string
	}{
		{"HeadBlob", func(ctx context.Context, c *regclient.Client, _ *fakeRegistry) error {
			_, err := c.HeadBlob(ctx, "r", digest.FromBytes(blob))
			return err
		}, ""},
		{"GetManifest", func(ctx context.Context, c *regclient.Client, _ *fakeRegistry) error {
			_, _, err := c.GetManifest(ctx, "r", "v1")
			return err
		}, ""},
		{"PutManifest sends the body again", func(ctx context.Context, c *regclient.Client, f *fakeRegistry) error {
			if _, err := c.PutManifest(ctx, "r", "v2", "application/vnd.oci.image.manifest.v1+json", manifest); err != nil {
				return err
			}
			if m, _ := f.manifest("r", "v2"); !bytes.Equal(m.payload, manifest) {
				return fmt.Errorf("the registry stored %q", m.payload)
			}
			return nil
		}, ""},
		{"CheckPush", func(ctx context.Context, c *regclient.Client, _ *fakeRegistry) error {
			return c.CheckPush(ctx, "r")
		}, "send retries a 401 only when r.body == nil or rebody is set; CheckPush and PushBlob start their uploads with body http.NoBody and no rebody, so a stale token (revoked, or refused early by a registry whose clock runs ahead) fails the upload start with ErrUnauthorized instead of being renewed once"},
		{"PushBlob", func(ctx context.Context, c *regclient.Client, _ *fakeRegistry) error {
			_, err := c.PushBlob(ctx, "r", digest.FromBytes(blob), int64(len(blob)), opener(blob, nil), "")
			return err
		}, "send retries a 401 only when r.body == nil or rebody is set; PushBlob's POST /blobs/uploads/ has body http.NoBody and no rebody, so a stale token fails the push with ErrUnauthorized instead of being renewed once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeRegistry(t, nil)
			f.putBlob("r", blob)
			f.manifests["r@v1"] = fakeManifest{mediaType: "application/vnd.oci.image.manifest.v1+json", payload: manifest}
			c := f.client(t, "alice")
			if err := tc.call(ctxFor(t), c, f); err != nil {
				t.Fatalf("first call: %v", err)
			}
			f.revokeTokens()
			tokens, unauthorized := f.counts()
			err := tc.call(ctxFor(t), c, f)
			if err != nil && tc.bug != "" && errors.Is(err, regclient.ErrUnauthorized) {
				t.Fatal("regression: " + tc.bug + ": " + err.Error())
			}
			if err != nil {
				t.Fatalf("call with a revoked token: %v", err)
			}
			tokens2, unauthorized2 := f.counts()
			if tokens2 != tokens+1 || unauthorized2 != unauthorized+1 {
				t.Errorf("the retry made %d token requests after %d 401s, want 1 after 1", tokens2-tokens, unauthorized2-unauthorized)
			}
		})
	}
}

func TestStaleTokenRetriedOnce(t *testing.T) {
	t.Parallel()
	f := newFakeRegistry(t, func(f *fakeRegistry) { f.rejectTokens = true })
	c := f.client(t, "alice")
	d := digest.FromString("x")
	_, err := c.HeadBlob(ctxFor(t), "r", d)
	e := asError(t, err, regclient.ErrUnauthorized)
	if e.Op != "check blob" {
		t.Errorf("Op = %q, want check blob", e.Op)
	}
	heads := 0
	for _, r := range f.requestLog() {
		if strings.HasPrefix(r, "HEAD /v2/r/blobs/") {
			heads++
		}
	}
	if heads != 2 {
		t.Errorf("a registry refusing every token got %d HEADs, want 2 (one retry)", heads)
	}
	if n, _ := f.counts(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestTokenServiceAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		configure func(f *fakeRegistry)
		want      error
		wantMsg   string
	}{
		{"access_token only", func(f *fakeRegistry) {
			f.tokenAnswer = func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"access_token":"opaque","expires_in":300}`) }
		}, nil, ""},
		{"no token", func(f *fakeRegistry) {
			f.tokenAnswer = func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"expires_in":300}`) }
		}, regclient.ErrProtocol, "sent no token"},
		{"not JSON", func(f *fakeRegistry) {
			f.tokenAnswer = func(w http.ResponseWriter) { _, _ = io.WriteString(w, `<html>login</html>`) }
		}, regclient.ErrProtocol, "token answer"},
		{"token service fails", func(f *fakeRegistry) {
			f.tokenAnswer = func(w http.ResponseWriter) {
				http.Error(w, "token signing key missing", http.StatusInternalServerError)
			}
		}, regclient.ErrProtocol, "token signing key missing"},
		{"service as the challenge names it", func(f *fakeRegistry) { f.service = "harbor-registry" }, nil, ""},
		{"challenge without realm", func(f *fakeRegistry) { f.noRealm = true }, regclient.ErrProtocol, "token service"},
		{"realm not HTTP", func(f *fakeRegistry) { f.realm = "ftp://127.0.0.1/token" }, regclient.ErrProtocol, `token service "ftp://127.0.0.1/token"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeRegistry(t, tc.configure)
			err := f.client(t, "alice").Login(ctxFor(t))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Login: %v", err)
				}
				return
			}
			asError(t, err, tc.want)
			mustContain(t, err.Error(), "authenticate", tc.wantMsg)
		})
	}
}

func TestPlainHTTPRealmGetsNoCredentials(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{"token":"stolen"}`)
	}))
	t.Cleanup(plain.Close)
	f := newFakeRegistry(t, func(f *fakeRegistry) { f.realm = plain.URL + "/token" })
	c := f.client(t, "alice")
	err := c.Login(ctxFor(t))
	asError(t, err, regclient.ErrProtocol)
	mustContain(t, err.Error(), "plain HTTP", "credentials are not sent there")
	_, err = c.HeadBlob(ctxFor(t), "r", digest.FromString("x"))
	asError(t, err, regclient.ErrProtocol)
	if n := hits.Load(); n != 0 {
		t.Errorf("the plain-HTTP token service got %d requests", n)
	}
}

func TestUploadLocationOnAnotherHost(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	elsewhere := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(elsewhere.Close)
	f := newFakeRegistry(t, func(f *fakeRegistry) { f.uploadHost = elsewhere.URL })
	c := f.client(t, "alice")
	data := []byte("blob")
	var opened atomic.Int32
	_, err := c.PushBlob(ctxFor(t), "r", digest.FromBytes(data), int64(len(data)), opener(data, &opened), "")
	asError(t, err, regclient.ErrProtocol)
	mustContain(t, err.Error(), "another host", elsewhere.URL)
	err = c.CheckPush(ctxFor(t), "r")
	asError(t, err, regclient.ErrProtocol)
	if n := hits.Load(); n != 0 {
		t.Errorf("the other host got %d requests", n)
	}
	if opened.Load() != 0 {
		t.Error("the blob was opened for an upload that cannot happen")
	}
}

func TestUploadWithoutLocation(t *testing.T) {
	t.Parallel()
	f := newFakeRegistry(t, func(f *fakeRegistry) { f.noLocation = true })
	c := f.client(t, "alice")
	err := c.CheckPush(ctxFor(t), "r")
	asError(t, err, regclient.ErrProtocol)
	mustContain(t, err.Error(), "no upload location")

	data := []byte("blob")
	var opened atomic.Int32
	_, err = c.PushBlob(ctxFor(t), "r", digest.FromBytes(data), int64(len(data)), opener(data, &opened), "")
	var puts []string
	for _, r := range f.requestLog() {
		if strings.HasPrefix(r, "PUT ") {
			puts = append(puts, r)
		}
	}
	if !errors.Is(err, regclient.ErrProtocol) || len(puts) > 0 {
		t.Fatalf("regression: PushBlob does not check for an empty Location as CheckPush does: resolve(\"\") is the POST URL itself, so it opens the blob (%d times) and PUTs all of it to %q; the caller gets %v instead of ErrProtocol \"no upload location\"", opened.Load(), puts, err)
	}
}

// failingReader returns some bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, r.err
	}
	n := min(len(p), r.n)
	clear(p[:n])
	r.n -= n
	return n, nil
}

func TestLocalBlobFailures(t *testing.T) {
	t.Parallel()
	errDisk := errors.New("read /var/lib/appliance/blobs/x: input/output error")
	data := []byte("0123456789")
	for _, tc := range []struct {
		name string
		size int64
		open func() (io.ReadCloser, error)
		bug  bool
	}{
		{"open fails", 10, func() (io.ReadCloser, error) { return nil, errDisk }, false},
		{"read fails mid-way", 1 << 20, func() (io.ReadCloser, error) {
			return io.NopCloser(&failingReader{n: 64 << 10, err: errDisk}), nil
		}, true},
		{"shorter than its size", 20, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeRegistry(t, nil)
			c := f.client(t, "alice")
			_, err := c.PushBlob(ctxFor(t), "r", digest.FromBytes(data), tc.size, tc.open, "")
			if err == nil {
				t.Fatal("PushBlob of an unreadable blob succeeded")
			}
			var e *regclient.Error
			if !errors.As(err, &e) {
				t.Fatalf("%v is not a *regclient.Error", err)
			}
			if errors.Is(err, regclient.ErrUnreachable) {
				if tc.bug {
					t.Fatalf("regression: a failure of the local blob reader during the PUT is classified as ErrUnreachable (classify's default), blaming the registry, and the cause is formatted with %%v so errors.Is(err, cause) is false: %v", err)
				}
				t.Errorf("a local failure is blamed on the registry: %v", err)
			}
			if !tc.bug && !errors.Is(err, errDisk) {
				t.Errorf("%v does not wrap the reader's error", err)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	// Tokens of 5 s, renewed after 4.5: on a loaded machine renewals happen while the
	// pushes run. (2 s tokens expired between renewal and use on a
	// machine loaded by other tests; renewal itself is TestTokenRenewal's.)
	f := newFakeRegistry(t, func(f *fakeRegistry) { f.expiresIn = 5 })
	c := f.client(t, "alice")
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Go(func() {
			repo := fmt.Sprintf("team/r%d", i%4)
			data := fmt.Appendf(nil, "blob %d", i)
			d := digest.FromBytes(data)
			if _, err := c.PushBlob(ctx, repo, d, int64(len(data)), opener(data, nil), ""); err != nil {
				errs <- err
				return
			}
			if ok, err := c.HeadBlob(ctx, repo, d); err != nil || !ok {
				errs <- fmt.Errorf("HeadBlob %s@%s = %v, %w", repo, d, ok, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range 16 {
		data := fmt.Appendf(nil, "blob %d", i)
		if _, ok := f.blob(fmt.Sprintf("team/r%d", i%4), digest.FromBytes(data)); !ok {
			t.Errorf("blob %d is missing", i)
		}
	}
}
