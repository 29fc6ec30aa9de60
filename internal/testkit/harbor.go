package testkit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SharedDir is the workplace's shared folder (../shared beside the
// repository: the real Harbor, the conformance suites, imgpkg, the
// fixtures), or $APPLIANCE_SHARED_DIR. It is "" when neither exists.
func SharedDir() string {
	if d := os.Getenv("APPLIANCE_SHARED_DIR"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for range 10 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			shared := filepath.Join(filepath.Dir(dir), "shared")
			if _, err := os.Stat(shared); err == nil {
				return shared
			}
			return ""
		}
		dir = filepath.Dir(dir)
	}
	return ""
}

// Harbor is a real Harbor (core v2.15.2 with its own PostgreSQL, Redis
// and registry) started by ../shared/harbor/harbor-up on loopback.
type Harbor struct {
	URL      string // https://127.0.0.1:PORT (TLS through nginx) or http://…
	Host     string // 127.0.0.1:PORT
	CAFile   string // the CA of its TLS certificate ("" without TLS)
	Admin    string
	Password string
	Dir      string
	down     string
}

// harborTools are the Debian packages harbor-up runs.
var harborTools = []string{"redis-server", "docker-registry", "htpasswd", "openssl", "curl", "nginx"}

// NeedHarbor skips the test (fails it in CI) when the real Harbor cannot
// run here: not root, the shared Harbor missing, or a tool it needs.
func NeedHarbor(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "Harbor's PostgreSQL runs as the postgres user: the Harbor tests run as root (CI does)")
	}
	if SharedDir() == "" {
		missing(t, "../shared/harbor is not beside the repository (set APPLIANCE_SHARED_DIR)")
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) == 0 {
		missing(t, "PostgreSQL is not installed: apt-get install -y postgresql")
	}
	Need(t, harborTools...)
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// LaunchHarbor starts Harbor with TLS (nginx in front, a fresh CA) in dir,
// an empty folder, and returns once /api/v2.0/ping answers. Stop it with
// Stop. It outlives any one test, so that a package's tests can share it.
func LaunchHarbor(ctx context.Context, dir string) (*Harbor, error) {
	shared := SharedDir()
	if shared == "" {
		return nil, errors.New("launch Harbor: ../shared not found")
	}
	up := filepath.Join(shared, "harbor", "harbor-up")
	cmd := exec.CommandContext(ctx, up, dir) //nolint:gosec // G204: the shared test script
	cmd.Env = append(os.Environ(), "HARBOR_TLS=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("launch Harbor: %w\n%s%s", err, stdout.String(), stderr.String())
	}
	h := &Harbor{Dir: dir, down: filepath.Join(shared, "harbor", "harbor-down")}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "HARBOR_URL":
			h.URL = v
		case "HARBOR_HOST":
			h.Host = v
		case "HARBOR_CA":
			h.CAFile = v
		case "HARBOR_ADMIN":
			h.Admin = v
		case "HARBOR_PASSWORD":
			h.Password = v
		}
	}
	if h.URL == "" || h.Password == "" {
		_ = h.Stop()
		return nil, fmt.Errorf("launch Harbor: harbor-up printed no HARBOR_URL:\n%s", stdout.String())
	}
	return h, nil
}

// Stop stops what LaunchHarbor started.
func (h *Harbor) Stop() error {
	out, err := exec.Command(h.down, h.Dir).CombinedOutput() //nolint:gosec // G204: the shared test script
	if err != nil {
		return fmt.Errorf("stop Harbor: %w: %s", err, out)
	}
	return nil
}

// CertDir is a folder holding only the CA, as skopeo's --cert-dir wants.
func (h *Harbor) CertDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(h.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), data, 0o600); err != nil { //nolint:gosec // G703: dir is the test's own temporary folder
		t.Fatal(err)
	}
	return dir
}

// Client is an HTTP client trusting Harbor's CA.
func (h *Harbor) Client(t testing.TB) *http.Client {
	t.Helper()
	data, err := os.ReadFile(h.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(data)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// API calls Harbor's REST API as admin and returns the status and body.
func (h *Harbor) API(t testing.TB, method, path, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(h.Admin, h.Password)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.Client(t).Do(req)
	if err != nil {
		t.Fatalf("Harbor %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// SetReadOnly switches Harbor's read-only mode (its configuration API).
func (h *Harbor) SetReadOnly(t testing.TB, on bool) {
	t.Helper()
	if code, body := h.API(t, http.MethodPut, "/api/v2.0/configurations", fmt.Sprintf(`{"read_only": %t}`, on)); code != http.StatusOK {
		t.Fatalf("Harbor read-only %t: HTTP %d %s", on, code, body)
	}
}
