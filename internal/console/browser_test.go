package console_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/server"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// appliance is the real appliance, in-process on loopback.
type appliance struct {
	*server.Server
	client   *http.Client
	base     string
	password string
	certDir  string
}

func startAppliance(t *testing.T, mutate ...func(*config.Config)) *appliance {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPSAddr, cfg.HTTPAddr = "127.0.0.1:0", ""
	cfg.ShutdownTimeout = 5 * time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatalf("Open: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("the appliance did not stop within 10s")
		}
	})
	certDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), s.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return &appliance{Server: s, client: &http.Client{Timeout: 60 * time.Second, Transport: tr},
		base: "https://" + s.HTTPSAddr(), password: s.InitialAdminPassword, certDir: certDir}
}

// importTar posts an archive to the import API as admin.
func (a *appliance) importTar(t *testing.T, source, toRepo string, data []byte) int {
	t.Helper()
	q := url.Values{"source": {source}, "to_repo": {toRepo}}
	req, err := http.NewRequest(http.MethodPost, a.base+"/api/v1/imports?"+q.Encode(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", a.password)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// signedLayout is an OCI layout tar of a random image tagged tag and a
// cosign-style signature of it (tag sha256-<hex>.sig); tamper damages the
// image's layer bytes (keeping their name) when set.
func signedLayout(t *testing.T, tag string, tamper bool, more ...string) ([]byte, v1.Hash) {
	t.Helper()
	img, err := random.Image(2048, 1)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	ref := func(n string) layout.Option {
		return layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": n})
	}
	if err := p.AppendImage(img, ref(tag)); err != nil {
		t.Fatal(err)
	}
	for _, m := range more {
		if err := p.AppendImage(img, ref(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.AppendImage(sig, ref("sha256-"+d.Hex+".sig")); err != nil {
		t.Fatal(err)
	}
	if tamper {
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		ld, err := layers[0].Digest()
		if err != nil {
			t.Fatal(err)
		}
		blob := filepath.Join(dir, "blobs", "sha256", ld.Hex)
		b, err := os.ReadFile(blob)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(blob, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err = filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), d
}

// browser is a headless Debian Chromium that trusts only the appliance's
// certificate and records every request it makes.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	requests []string
	shots    string
}

func startBrowser(t *testing.T, a *appliance) *browser {
	t.Helper()
	testkit.Need(t, "chromium")
	chromium, _ := exec.LookPath("chromium")
	// Trust the appliance's server certificate by its public key.
	conn, err := tls.Dial("tcp", a.HTTPSAddr(), &tls.Config{RootCAs: a.client.Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("dial the appliance: %v", err)
	}
	spki := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	_ = conn.Close()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,InterestFeedContentSuggestions"),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	b := &browser{ctx: ctx, shots: t.ArtifactDir()}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			b.mu.Lock()
			b.requests = append(b.requests, e.Request.URL)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots of each page: %s", b.shots)
	return b
}

// do runs steps within 30 s.
func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// text is the visible text of the page's main element.
func (b *browser) text(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	return s
}

func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o600); err != nil {
		t.Fatal(err)
	}
}

// dark switches the emulated prefers-color-scheme to dark, or back.
func (b *browser) dark(t *testing.T, on bool) {
	t.Helper()
	scheme := "light"
	if on {
		scheme = "dark"
	}
	if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}}); err != nil {
		t.Fatalf("emulate %s: %v", scheme, err)
	}
}

// outside lists the requests to anything but the appliance.
func (b *browser) outside(base string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, u := range b.requests {
		if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "data:") {
			out = append(out, u)
		}
	}
	return out
}

func wantText(t *testing.T, page, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Fatalf("the %s page does not say %q; it says:\n%s", page, w, text)
		}
	}
}

// TestConsoleInChromium drives the console in a real headless Chromium:
// sign in, see an imported repository with its tag and signature, make
// its project private and see an anonymous skopeo pull refused, see a
// tampered import's refusal with its reason, and a form without its CSRF
// token refused. Every page is photographed, and no page asks for a URL
// outside the appliance.
func TestConsoleInChromium(t *testing.T) {
	testkit.Need(t, "chromium", "skopeo")
	a := startAppliance(t)
	good, digest := signedLayout(t, "1.0", false)
	if code := a.importTar(t, "app-1.0.tar", "team/app", good); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("import of the signed layout = %d", code)
	}
	bad, _ := signedLayout(t, "2.0", true)
	if code := a.importTar(t, "tampered.tar", "team/evil", bad); code < 400 {
		t.Fatalf("import of the tampered layout = %d, want a refusal", code)
	}
	skopeo := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "skopeo", "inspect", "--raw", "--cert-dir", a.certDir, "docker://"+a.HTTPSAddr()+"/team/app:1.0")
		cmd.Env = append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(t.TempDir(), "auth.json"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	if err := skopeo(); err != nil {
		t.Fatalf("anonymous skopeo inspect of the public project: %v", err)
	}

	b := startBrowser(t, a)

	// Unknown page, then the sign-in page for a console without a session.
	b.do(t, "open the console", chromedp.Navigate(a.base+"/"), chromedp.WaitVisible(chromedp.CSS("#username")))
	b.screenshot(t, "login")
	b.do(t, "a wrong password", chromedp.SendKeys(chromedp.CSS("#username"), "admin"), chromedp.SendKeys(chromedp.CSS("#password"), "wrong"),
		chromedp.Submit(chromedp.CSS("#password")), chromedp.WaitVisible(chromedp.CSS(".problem")))
	wantText(t, "sign-in", b.text(t), "The user name or the password is wrong.")
	b.screenshot(t, "login-wrong-password")
	b.do(t, "sign in", chromedp.SendKeys(chromedp.CSS("#username"), "admin"), chromedp.SendKeys(chromedp.CSS("#password"), a.password),
		chromedp.Submit(chromedp.CSS("#password")), chromedp.WaitVisible(chromedp.CSS("#mode-value")))
	wantText(t, "overview", b.text(t), "Mode", "bootstrap", "Storage used", "Storage free", "No validation has run yet.", "Last import", "tampered.tar", "failed")
	if free, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("#storage-free"))); err != nil || free == "0 B" || free == "" {
		t.Fatalf("storage free = %q (%v)", free, err)
	}
	b.screenshot(t, "overview")

	// The repository, its tag, digest and signature.
	b.do(t, "projects", chromedp.Click(chromedp.CSS(`nav a[href="/projects"]`)), chromedp.WaitVisible(chromedp.CSS("#project-team")))
	wantText(t, "projects", b.text(t), "team", "public")
	b.screenshot(t, "projects")
	b.do(t, "project team", chromedp.Click(chromedp.CSS(`a[href="/projects/team"]`)), chromedp.WaitVisible(chromedp.CSS(`a[href="/repositories/team/app"]`)))
	b.screenshot(t, "project")
	b.do(t, "repository", chromedp.Click(chromedp.CSS(`a[href="/repositories/team/app"]`)), chromedp.WaitVisible(chromedp.CSS("#tag-1\\.0")))
	text := b.text(t)
	wantText(t, "repository", text, "1.0", digest.String(), "signed", "app-1.0.tar")
	if strings.Contains(text, ".sig") {
		t.Fatalf("the signature's tag is listed as a tag of its own:\n%s", text)
	}
	b.screenshot(t, "repository")
	b.dark(t, true)
	b.screenshot(t, "repository-dark")
	b.dark(t, false)
	b.do(t, "search for a tag that is not there", chromedp.SendKeys(chromedp.CSS("#q"), "nomatch"), chromedp.Submit(chromedp.CSS("#q")),
		chromedp.WaitVisible(chromedp.CSS("#no-tags")))
	wantText(t, "repository search", b.text(t), "0 tags match", "No tags.")

	b.do(t, "files", chromedp.Click(chromedp.CSS(`nav a[href="/files-store"]`)), chromedp.WaitVisible(chromedp.CSS("#no-files")))
	b.screenshot(t, "files")

	// Copy-ready lines to consume it.
	b.do(t, "consume", chromedp.Click(chromedp.CSS(`nav a[href="/consume"]`)), chromedp.WaitVisible(chromedp.CSS("#pull-lines")))
	wantText(t, "consume", b.text(t), "podman pull "+a.HTTPSAddr()+"/team/app:TAG", "BEGIN CERTIFICATE", "hosts.toml")
	b.screenshot(t, "consume")

	// A form without its CSRF token is refused, and changes nothing.
	b.do(t, "projects", chromedp.Navigate(a.base+"/projects"), chromedp.WaitVisible(chromedp.CSS("#make-private-team")))
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[any](`document.querySelector('#project-team input[name=csrf]').remove()`)); err != nil {
		t.Fatal(err)
	}
	b.do(t, "post without the token", chromedp.Click(chromedp.CSS("#make-private-team")), chromedp.WaitVisible(chromedp.CSS(".problem")))
	wantText(t, "refused form", b.text(t), "Form refused", "nothing was changed")
	b.screenshot(t, "csrf-refused")
	if err := skopeo(); err != nil {
		t.Fatalf("a refused form changed the project: anonymous pull now fails: %v", err)
	}

	// Make the project private; an anonymous skopeo is refused.
	b.do(t, "make private", chromedp.Navigate(a.base+"/projects"), chromedp.WaitVisible(chromedp.CSS("#make-private-team")),
		chromedp.Click(chromedp.CSS("#make-private-team")), chromedp.WaitVisible(chromedp.CSS(".notice")))
	wantText(t, "projects", b.text(t), "team is now private")
	b.screenshot(t, "project-private")
	if err := skopeo(); err == nil {
		t.Fatal("an anonymous skopeo inspect of the now private project succeeded")
	}

	// The tampered import's refusal, with its reason.
	b.do(t, "imports", chromedp.Click(chromedp.CSS(`nav a[href="/imports"]`)), chromedp.WaitVisible(chromedp.CSS(".imports")))
	wantText(t, "imports", b.text(t), "tampered.tar", "failed", "app-1.0.tar", "succeeded")
	b.screenshot(t, "imports")
	b.do(t, "the refused import", chromedp.Click(chromedp.Search(`//a[text()="tampered.tar"]`)), chromedp.WaitVisible(chromedp.CSS("#refusal")))
	wantText(t, "refused import", b.text(t), "Refused:", "digest")
	b.screenshot(t, "import-refused")

	// Bad input: an unknown page, a project name that is not valid.
	b.do(t, "unknown page", chromedp.Navigate(a.base+"/no/such/page"), chromedp.WaitVisible(chromedp.CSS(".problem")))
	wantText(t, "unknown", b.text(t), "No such page", "/no/such/page")
	b.screenshot(t, "not-found")
	b.do(t, "invalid project", chromedp.Navigate(a.base+"/projects/Not_Valid!"), chromedp.WaitVisible(chromedp.CSS(".problem")))
	wantText(t, "invalid project", b.text(t), "not a valid project name")

	// Sign out: the session is gone.
	b.do(t, "sign out", chromedp.Click(chromedp.CSS(`.who button`)), chromedp.WaitVisible(chromedp.CSS("#username")))
	b.do(t, "after sign-out", chromedp.Navigate(a.base+"/projects"), chromedp.WaitVisible(chromedp.CSS("#username")))
	if loc, err := chromedp.Run(b.ctx, chromedp.Location()); err != nil || loc != a.base+"/login" {
		t.Fatalf("after sign-out /projects led to %q (%v), want the sign-in page", loc, err)
	}

	if out := b.outside(a.base); len(out) > 0 {
		t.Fatalf("the browser asked for URLs outside the appliance: %v", out)
	}
	if n := len(b.requests); n < 10 {
		t.Fatalf("only %d requests recorded: the recorder does not see the pages", n)
	}
	var entries struct {
		Entries []struct {
			Action, Actor, Outcome string
		} `json:"entries"`
	}
	req, _ := http.NewRequest(http.MethodGet, a.base+"/api/v1/audit", nil)
	req.SetBasicAuth("admin", a.password)
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries.Entries {
		seen[e.Action+" "+e.Actor+" "+e.Outcome] = true
	}
	for _, want := range []string{"console.login anonymous refused", "console.login admin ok", "console.form admin refused",
		"project.visibility admin ok", "console.logout admin ok"} {
		if !seen[want] {
			t.Errorf("the audit trail lacks %q; it has %v", want, seen)
		}
	}
}
