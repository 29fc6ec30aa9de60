package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestRestartKeepsEverything proves that content, users, the admin password,
// the CA, project visibility and read-only mode survive a restart, that the
// first start alone creates the admin password, and that TLS verifies with
// <data-dir>/ca.crt alone under every default name.
func TestRestartKeepsEverything(t *testing.T) {
	testkit.Need(t, "skopeo")
	dataDir := t.TempDir()
	a := startAppliance(t, dataDir, "--hostname", "registry.enclave.test")
	admin := "admin:" + a.password
	if a.password == "" {
		t.Fatal("no admin password printed on first start")
	}
	fileBytes, err := os.ReadFile(filepath.Join(dataDir, "initial-admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(fileBytes)) != a.password {
		t.Fatalf("initial-admin-password holds %q, printed %q", fileBytes, a.password)
	}
	if fi, _ := os.Stat(filepath.Join(dataDir, "initial-admin-password")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("initial-admin-password mode = %v, want 0600", fi.Mode().Perm())
	}
	img, digest := ociLayout(t, 32<<10, 1)
	out, err := pushOCI(t, a, img, "nvidia/gpu-operator:v24.9", admin)
	mustOK(t, "push", out, err)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("developer-password-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = a.cli(a.password+"\n", "user", "add", "ci", "--new-password-file", pw, "--username", "admin", "--password-stdin")
	mustOK(t, "user add", out, err)
	out, err = a.cli(a.password+"\n", "project", "set", "vendor", "--private", "--username", "admin", "--password-stdin")
	mustOK(t, "project set", out, err)
	out, err = a.cli(a.password+"\n", "readonly", "enable", "--reason", "survives restarts", "--username", "admin", "--password-stdin")
	mustOK(t, "readonly enable", out, err)
	caBefore, _ := os.ReadFile(filepath.Join(dataDir, "ca.crt"))
	certBefore, _ := os.ReadFile(filepath.Join(dataDir, "server.crt"))

	a.restart("--hostname", "registry.enclave.test")

	if strings.Contains(a.stderr.String(), "admin /") {
		t.Fatalf("second start printed an admin password again:\n%s", a.stderr.String())
	}
	if caAfter, _ := os.ReadFile(filepath.Join(dataDir, "ca.crt")); !bytes.Equal(caBefore, caAfter) {
		t.Fatal("the CA changed across a restart")
	}
	if certAfter, _ := os.ReadFile(filepath.Join(dataDir, "server.crt")); !bytes.Equal(certBefore, certAfter) {
		t.Fatal("the server certificate was re-issued although nothing changed")
	}
	got, err := inspectDigest(t, a, "nvidia/gpu-operator:v24.9", "")
	mustOK(t, "anonymous pull after restart", got, err)
	if got != digest.String() {
		t.Fatalf("digest after restart = %s, want %s", got, digest)
	}
	out, err = pushOCI(t, a, img, "nvidia/other:1", "ci:developer-password-1")
	mustFail(t, "push while read-only after restart", out, err, "survives restarts")
	out, err = a.cli(a.password+"\n", "readonly", "disable", "--username", "admin", "--password-stdin")
	mustOK(t, "admin password after restart", out, err)
	out, err = pushOCI(t, a, img, "vendor/app:1", "ci:developer-password-1")
	mustOK(t, "user created before the restart pushes", out, err)
	if _, err := inspectDigest(t, a, "vendor/app:1", ""); err == nil {
		t.Fatal("private project became public across a restart")
	}

	// TLS verifies with ca.crt alone, under each name the certificate must carry.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caBefore)
	_, port, _ := net.SplitHostPort(a.httpsAddr)
	for _, name := range []string{"127.0.0.1", "localhost", "registry.enclave.test"} {
		dialer := &net.Dialer{Timeout: 5 * time.Second}
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, a.httpsAddr)
			},
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + net.JoinHostPort(name, port) + "/healthz")
		if err != nil {
			t.Fatalf("TLS with ca.crt alone as %s: %v", name, err)
		}
		resp.Body.Close()
	}
	host, _ := os.Hostname()
	leaf := serverLeaf(t, dataDir)
	if err := leaf.VerifyHostname(host); err != nil {
		t.Errorf("certificate lacks the machine's host name %q: %v", host, err)
	}
}

func serverLeaf(t *testing.T, dataDir string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	certs := parsePEMCerts(t, data)
	return certs[0]
}

func parsePEMCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate")
	}
	return out
}

// TestStartupErrors proves that common faults stop the appliance with one
// clear line naming the problem, before anything is created.
func TestStartupErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	corrupt := t.TempDir()
	{
		a := startAppliance(t, corrupt)
		a.stop()
		if err := os.WriteFile(filepath.Join(corrupt, "ca.key"), []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	badYAML := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badYAML, []byte("data_dir: /tmp/x\nhttps_adr: \":9443\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"port in use", []string{"--data-dir", t.TempDir(), "--https-addr", busy.Addr().String(), "--http-addr", "127.0.0.1:0"},
			[]string{"https_addr " + busy.Addr().String() + ": address already in use"}},
		{"data dir not writable", []string{"--data-dir", filepath.Join(notADir, "data"), "--https-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"},
			[]string{"data dir " + filepath.Join(notADir, "data"), "not a directory"}},
		{"corrupt key", []string{"--data-dir", corrupt, "--https-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"},
			[]string{filepath.Join(corrupt, "ca.key"), "corrupt"}},
		{"every invalid setting at once", []string{"--https-addr", "nonsense", "--log-level", "loud", "--hostname", "bad_name!"},
			[]string{"https_addr \"nonsense\"", "log.level \"loud\"", "\"bad_name!\""}},
		{"unknown key in the file", []string{"--config", badYAML},
			[]string{"https_adr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, append([]string{"serve"}, tc.args...)...)
			cmd.Env = cleanEnv()
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("serve %v = %v, want exit 1\n%s", tc.args, err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if !strings.HasPrefix(string(out), "appliance: ") {
				t.Errorf("error is not one line starting with \"appliance: \":\n%s", out)
			}
		})
	}
	// The corrupt key was reported, not replaced.
	if data, _ := os.ReadFile(filepath.Join(corrupt, "ca.key")); !strings.Contains(string(data), "bm90IGEga2V5") {
		t.Fatal("the corrupt ca.key was overwritten")
	}
}

// TestGracefulShutdown proves that SIGTERM ends the process cleanly (exit 0)
// with a log of the shutdown.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	a := startAppliance(t, t.TempDir(), "--shutdown-timeout", "5s")
	a.stop()
	if code := a.exitCode; code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0\n%s", code, a.stderr.String())
	}
	for _, want := range []string{"shutting down", "stopped"} {
		if !strings.Contains(a.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, a.stderr.String())
		}
	}
}

// TestVersion proves `appliance version` names version, commit and Go.
func TestVersion(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"appliance ", "commit: ", "go: go1."} {
		if !strings.Contains(string(out), want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}
