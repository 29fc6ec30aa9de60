package mirror_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/aptrepo/mirror"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// upstream is a real signed apt archive, published by this package's own
// Open and Add: alpha depends on beta, beta on nothing, gamma and epsilon
// stand alone.
type upstream struct {
	repos            *aptrepo.Repos
	keyring, armored string // its public key, binary and armored
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	r, _ := newRepos(t)
	var debs []aptrepo.Deb
	for _, p := range []pkg{
		{Name: "alpha", Version: "1.0", Arch: "amd64", Depends: "beta (>= 1.0)"},
		{Name: "beta", Version: "1.0", Arch: "amd64"},
		{Name: "gamma", Version: "2.0", Arch: "amd64"},
		{Name: "epsilon", Version: "1:2.0-1", Arch: "all"},
	} {
		debs = append(debs, aptrepo.DebBytes(p.file(), testkit.GoDeb(t, p.control(), p.Name+" payload")))
	}
	if _, err := r.Add(t.Context(), "ubuntu", "noble", "main", debs, "test"); err != nil {
		t.Fatal(err)
	}
	bin, arm := r.PublicKey()
	dir := t.TempDir()
	u := &upstream{repos: r, keyring: filepath.Join(dir, "upstream.gpg"), armored: filepath.Join(dir, "upstream.asc")}
	if err := os.WriteFile(u.keyring, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(u.armored, arm, 0o644); err != nil {
		t.Fatal(err)
	}
	return u
}

// serve serves the archive on loopback through wrap (nil: as it is) and
// returns the archive root's URL.
func (u *upstream) serve(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	h := u.repos.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/ubuntu"
}

func (u *upstream) spec(url string, packages ...string) mirror.Spec {
	return mirror.Spec{URL: url, Distributions: []string{"noble"}, Packages: packages, Keyring: u.keyring}
}

// countDebs counts the requests for .deb files.
func countDebs(n *atomic.Int64) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.HasSuffix(req.URL.Path, ".deb") {
				n.Add(1)
			}
			h.ServeHTTP(w, req)
		})
	}
}

// tamper alters the body of the responses whose path match picks.
func tamper(match func(path string) bool, alter func([]byte) []byte) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if !match(req.URL.Path) {
				h.ServeHTTP(w, req)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body := alter(bytes.Clone(rec.Body.Bytes()))
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body)
		})
	}
}

func flipMiddleByte(b []byte) []byte {
	if len(b) > 0 {
		b[len(b)/2] ^= 0xff
	}
	return b
}

func sha256File(t *testing.T, path string) (string, int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), int64(len(data))
}

// TestMirror fetches alpha and gets beta with it, not gamma; with the
// armored key too; and a second run finds everything in place and fetches
// nothing.
func TestMirror(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	var debs atomic.Int64
	url := u.serve(t, countDebs(&debs))
	dir := t.TempDir()

	got, err := mirror.Fetch(t.Context(), u.spec(url, "alpha"), dir, nil)
	if err != nil {
		t.Fatalf("Mirror: %v", err)
	}
	if len(got) != 2 || got[0].Name != "alpha" || got[1].Name != "beta" {
		t.Fatalf("Mirror(alpha) = %+v, want alpha and beta", got)
	}
	for _, p := range got {
		if p.Version != "1.0" || p.Architecture != "amd64" || p.Distribution != "noble" || p.Component != "main" {
			t.Errorf("%s: %+v", p.Name, p)
		}
		if want := "pool/main/" + p.Name[:1] + "/" + p.Name + "/" + p.Name + "_1.0_amd64.deb"; p.Filename != want {
			t.Errorf("%s: Filename %q, want %q", p.Name, p.Filename, want)
		}
		if p.Path != filepath.Join(dir, p.Name+"_1.0_amd64.deb") {
			t.Errorf("%s: Path %q", p.Name, p.Path)
		}
		sum, size := sha256File(t, p.Path)
		if sum != p.SHA256 || size != p.Size {
			t.Errorf("%s: the file has sha256 %s and %d bytes, Mirror says %s and %d", p.Name, sum, size, p.SHA256, p.Size)
		}
	}
	// The upstream's own view agrees.
	pkgs, err := u.repos.Packages(t.Context(), "ubuntu", "noble")
	if err != nil {
		t.Fatal(err)
	}
	for _, up := range pkgs {
		for _, p := range got {
			if up.Name == p.Name && (up.SHA256 != p.SHA256 || up.Filename != p.Filename) {
				t.Errorf("%s: upstream has %s %s, Mirror says %s %s", p.Name, up.Filename, up.SHA256, p.Filename, p.SHA256)
			}
		}
	}
	if n := debs.Load(); n != 2 {
		t.Errorf("first run fetched %d .deb files, want 2", n)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want the 2 packages (no staging folder left)", len(entries))
	}

	// Again, with the armored key: nothing is fetched again.
	spec := u.spec(url, "alpha")
	spec.Keyring = u.armored
	again, err := mirror.Fetch(t.Context(), spec, dir, nil)
	if err != nil {
		t.Fatalf("second Mirror: %v", err)
	}
	if len(again) != 2 || again[0] != got[0] || again[1] != got[1] {
		t.Fatalf("second Mirror = %+v, want %+v", again, got)
	}
	if n := debs.Load(); n != 2 {
		t.Errorf("the second run fetched %d .deb files, want none", n-2)
	}

	// A file damaged in place (same size) and one missing are fetched
	// again, and only they.
	if err := os.WriteFile(got[0].Path, make([]byte, got[0].Size), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(got[1].Path); err != nil {
		t.Fatal(err)
	}
	if _, err := mirror.Fetch(t.Context(), spec, dir, nil); err != nil {
		t.Fatalf("third Mirror: %v", err)
	}
	if n := debs.Load(); n != 4 {
		t.Errorf("the third run fetched %d .deb files, want 2", n-2)
	}
	for _, p := range got {
		if sum, _ := sha256File(t, p.Path); sum != p.SHA256 {
			t.Errorf("%s not repaired", p.Name)
		}
	}
}

// TestMirrorRetries: a package whose download breaks off, and one
// answered 503, are tried again.
func TestMirrorRetries(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	var alphas, betas atomic.Int64
	url := u.serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			switch {
			case strings.HasSuffix(req.URL.Path, "/alpha_1.0_amd64.deb") && alphas.Add(1) == 1:
				http.Error(w, "busy", http.StatusServiceUnavailable)
			case strings.HasSuffix(req.URL.Path, "/beta_1.0_amd64.deb") && betas.Add(1) == 1:
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				w.Header().Set("Content-Length", strconv.Itoa(rec.Body.Len()))
				_, _ = w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
				panic(http.ErrAbortHandler) // the connection drops half-way
			default:
				h.ServeHTTP(w, req)
			}
		})
	})
	got, err := mirror.Fetch(t.Context(), u.spec(url, "alpha"), t.TempDir(), nil)
	if err != nil {
		t.Fatalf("Mirror: %v", err)
	}
	if len(got) != 2 || alphas.Load() != 2 || betas.Load() != 2 {
		t.Fatalf("Mirror = %+v after %d requests for alpha and %d for beta, want both after 2 each", got, alphas.Load(), betas.Load())
	}
	for _, p := range got {
		if sum, _ := sha256File(t, p.Path); sum != p.SHA256 {
			t.Errorf("%s: wrong content", p.Name)
		}
	}
}

// TestMirrorEpochAndAll: a version with an epoch and an "all" package.
func TestMirrorEpochAndAll(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	dir := t.TempDir()
	got, err := mirror.Fetch(t.Context(), u.spec(u.serve(t, nil), "epsilon", "gamma (>= 2.0)"), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "epsilon" || got[1].Name != "gamma" {
		t.Fatalf("Mirror = %+v", got)
	}
	if got[0].Version != "1:2.0-1" || got[0].Architecture != "all" || filepath.Base(got[0].Path) != "epsilon_1%3a2.0-1_all.deb" {
		t.Fatalf("epsilon: %+v", got[0])
	}
}

// otherKeyring writes the public key of a key that did not sign the
// upstream (a quick EdDSA one).
func otherKeyring(t *testing.T) string {
	t.Helper()
	e, err := openpgp.NewEntity("someone else", "", "", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other.gpg")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// closedURL is a loopback URL nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/ubuntu"
}

func TestMirrorRefuses(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	suffix := func(s ...string) func(string) bool {
		return func(p string) bool {
			for _, x := range s {
				if strings.HasSuffix(p, x) {
					return true
				}
			}
			return false
		}
	}
	for _, tc := range []struct {
		name    string
		wrap    func(http.Handler) http.Handler
		edit    func(spec *mirror.Spec)
		wantErr error
		wantIn  []string // the message names these ("URL": the upstream's)
	}{
		{"a wrong keyring", nil, func(s *mirror.Spec) { s.Keyring = otherKeyring(t) },
			aptrepo.ErrSignature, []string{"URL", "noble", "InRelease", "not in keyring", "other.gpg"}},
		{"a tampered Release", tamper(suffix("/InRelease", "/Release"), func(b []byte) []byte {
			return bytes.Replace(b, []byte("Codename: noble"), []byte("Codename: nobly"), 1)
		}), nil, aptrepo.ErrSignature, []string{"URL", "noble", "does not match the signed text"}},
		{"a tampered Packages", tamper(func(p string) bool { return strings.Contains(p, "/binary-amd64/Packages") }, flipMiddleByte),
			nil, aptrepo.ErrChecksum, []string{"URL", "noble", "binary-amd64/Packages", "signed Release"}},
		{"a tampered package", tamper(suffix("/beta_1.0_amd64.deb"), flipMiddleByte),
			nil, aptrepo.ErrChecksum, []string{"URL", "noble", "pool/main/b/beta/beta_1.0_amd64.deb", "sha256"}},
		{"a truncated package", tamper(suffix("/beta_1.0_amd64.deb"), func(b []byte) []byte { return b[:len(b)-1] }),
			nil, aptrepo.ErrChecksum, []string{"pool/main/b/beta/beta_1.0_amd64.deb"}},
		{"an oversized package", tamper(suffix("/beta_1.0_amd64.deb"), func(b []byte) []byte { return append(b, make([]byte, 4096)...) }),
			nil, aptrepo.ErrChecksum, []string{"pool/main/b/beta/beta_1.0_amd64.deb", "larger than"}},
		{"an unknown package", nil, func(s *mirror.Spec) { s.Packages = []string{"alpha", "zeta"} },
			aptrepo.ErrNotFound, []string{"URL", `"zeta"`, "noble"}},
		{"an unknown distribution", nil, func(s *mirror.Spec) { s.Distributions = []string{"jammy"} },
			aptrepo.ErrNotFound, []string{"URL", "jammy", "404"}},
		{"an unknown component", nil, func(s *mirror.Spec) { s.Components = []string{"universe"} },
			aptrepo.ErrNotFound, []string{"URL", "noble", "component universe"}},
		{"an unknown architecture", nil, func(s *mirror.Spec) { s.Architectures = []string{"riscv64"} },
			aptrepo.ErrNotFound, []string{"URL", "noble", "architecture riscv64"}},
		{"an unreachable upstream", nil, func(s *mirror.Spec) { s.URL = closedURL(t) },
			aptrepo.ErrUnreachable, []string{"URL", "noble", "refused"}},
		{"a failing upstream", func(http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
		}, nil, aptrepo.ErrUnreachable, []string{"URL", "noble", "502"}},
		{"no keyring", nil, func(s *mirror.Spec) { s.Keyring = "" }, aptrepo.ErrInvalid, []string{"keyring"}},
		{"a keyring that is not one", nil, func(s *mirror.Spec) {
			s.Keyring = filepath.Join(t.TempDir(), "junk.gpg")
			_ = os.WriteFile(s.Keyring, []byte("junk"), 0o644)
		}, aptrepo.ErrInvalid, []string{"junk.gpg"}},
		{"an ftp URL", nil, func(s *mirror.Spec) { s.URL = "ftp://example.com/debian" }, aptrepo.ErrInvalid, []string{"ftp://example.com/debian"}},
		{"a flat repository", nil, func(s *mirror.Spec) { s.Distributions = []string{"./"} }, aptrepo.ErrInvalid, []string{"flat"}},
		{"no packages", nil, func(s *mirror.Spec) { s.Packages = nil }, aptrepo.ErrInvalid, []string{"packages"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := u.serve(t, tc.wrap)
			spec := u.spec(url, "alpha")
			if tc.edit != nil {
				tc.edit(&spec)
			}
			dir := t.TempDir()
			got, err := mirror.Fetch(t.Context(), spec, dir, nil)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Mirror = %+v, %v; want %v", got, err, tc.wantErr)
			}
			var e *aptrepo.Error
			if !errors.As(err, &e) {
				t.Fatalf("%v is not an *aptrepo.Error", err)
			}
			for _, s := range tc.wantIn {
				if s == "URL" {
					s = spec.URL
				}
				if !strings.Contains(err.Error(), s) {
					t.Errorf("the error does not name %q: %v", s, err)
				}
			}
			t.Log(err)
			// Nothing unverified is left in dir.
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if e.Name() == "beta_1.0_amd64.deb" || strings.HasPrefix(e.Name(), ".") {
					t.Errorf("%s left in dir", e.Name())
				}
			}
		})
	}
}

// TestMirrorCancel cancels in the middle of downloading a package: Mirror
// returns promptly with the context's error and leaves no staging behind.
func TestMirrorCancel(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	started := make(chan struct{}, 10)
	url := u.serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.HasSuffix(req.URL.Path, ".deb") {
				started <- struct{}{}
				<-req.Context().Done() // hang until the client goes away
				return
			}
			h.ServeHTTP(w, req)
		})
	})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		cancel()
	}()
	dir := t.TempDir()
	start := time.Now()
	_, err := mirror.Fetch(ctx, u.spec(url, "alpha"), dir, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Mirror = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Mirror took %v to notice the cancellation", d)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("dir holds %d entries after a cancelled run", len(entries))
	}

	// A context cancelled before the call: nothing is fetched.
	_, err = mirror.Fetch(ctx, u.spec(url, "alpha"), dir, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Mirror with a cancelled context = %v", err)
	}

	// A deadline, which aptly's downloader alone would retry after a
	// sleep of a second, then two.
	ctx, cancel2 := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel2()
	start = time.Now()
	_, err = mirror.Fetch(ctx, u.spec(url, "alpha"), dir, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Mirror past its deadline = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Mirror took %v to notice its deadline", d)
	}
}
