package testkit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DockerRegistryOptions says how StartDockerRegistry configures the
// registry. The zero value is plain HTTP, no authentication, no access log
// and no deletes.
type DockerRegistryOptions struct {
	// CertFile and KeyFile, when set, make the registry serve TLS with this
	// certificate (for 127.0.0.1) and key.
	CertFile, KeyFile string
	// RootCAs trusts CertFile; StartDockerRegistry probes the registry
	// over TLS with it. It is required with CertFile.
	RootCAs *x509.CertPool
	// Htpasswd, when set, is the path of an htpasswd file (bcrypt): the
	// registry then asks for basic authentication in the realm "vendor".
	Htpasswd string
	// AccessLog makes the registry log at level info with one line per
	// request (in Log); without it, it logs warnings only.
	AccessLog bool
	// Delete lets clients delete manifests and blobs.
	Delete bool
	// ReadOnly turns on distribution's read-only maintenance mode.
	ReadOnly bool
}

// DockerRegistry is a running Debian docker-registry.
type DockerRegistry struct {
	// Host is the registry's address, "127.0.0.1:port".
	Host string
	// Log is everything the registry wrote to stdout and stderr.
	Log *SyncBuffer

	t       testing.TB
	opts    DockerRegistryOptions
	cfgPath string
	stop    func()
}

// startTimeout bounds the wait for a new registry to answer.
const startTimeout = 15 * time.Second

// StartDockerRegistry runs Debian's docker-registry (distribution 2.8) on a
// free loopback port, with its storage in a temporary folder, and waits
// until GET /v2/ answers. The registry stops when the test ends. The test
// is skipped (failed in CI) without docker-registry and fails, with the
// registry's log, when it does not start.
func StartDockerRegistry(t testing.TB, o DockerRegistryOptions) *DockerRegistry {
	t.Helper()
	Need(t, "docker-registry")
	tlsOn := o.CertFile != "" || o.KeyFile != ""
	if tlsOn && (o.CertFile == "" || o.KeyFile == "" || o.RootCAs == nil) {
		t.Fatal("start docker-registry: TLS needs CertFile, KeyFile and RootCAs together")
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start docker-registry: find a free port: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(registryConfig(o, filepath.Join(dir, "storage"), addr)), 0o600); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}

	r := &DockerRegistry{Host: addr, Log: &SyncBuffer{}, t: t, opts: o, cfgPath: cfgPath}
	r.launch()
	t.Cleanup(r.Stop)
	return r
}

// launch starts the process and waits until GET /v2/ answers.
func (r *DockerRegistry) launch() {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "docker-registry", "serve", r.cfgPath) //nolint:gosec // G204: a fixed program; cfgPath is the config written above
	cmd.Env = registryEnv()
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdout, cmd.Stderr = r.Log, r.Log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start docker-registry: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	r.stop = func() { cancel(); <-exited }

	o := r.opts
	tlsOn := o.CertFile != ""
	scheme, client := "http", &http.Client{Timeout: 2 * time.Second}
	if tlsOn {
		scheme = "https"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12}}
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(scheme + "://" + r.Host + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("start docker-registry: it exited (%v):\n%s", waitErr, r.Log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("start docker-registry: GET /v2/ did not answer within %s: %v\n%s", startTimeout, err, r.Log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the registry process (as a crash or an outage would, from a
// client's view); its storage stays for Restart.
func (r *DockerRegistry) Stop() {
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
}

// Restart starts the registry again on the same port and storage.
func (r *DockerRegistry) Restart() {
	r.t.Helper()
	r.Stop()
	r.launch()
}

// SetReadOnly restarts the registry with distribution's read-only
// maintenance mode on or off.
func (r *DockerRegistry) SetReadOnly(on bool) {
	r.t.Helper()
	r.opts.ReadOnly = on
	if err := os.WriteFile(r.cfgPath, []byte(registryConfig(r.opts, r.storage(), r.Host)), 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.Restart()
}

func (r *DockerRegistry) storage() string { return filepath.Join(filepath.Dir(r.cfgPath), "storage") }

// registryConfig is docker-registry's config.yml for o.
func registryConfig(o DockerRegistryOptions, storage, addr string) string {
	var b strings.Builder
	b.WriteString("version: 0.1\nlog:\n")
	if o.AccessLog {
		b.WriteString("  level: info\n")
	} else {
		b.WriteString("  level: warn\n  accesslog:\n    disabled: true\n")
	}
	fmt.Fprintf(&b, "storage:\n  filesystem:\n    rootdirectory: %q\n", storage)
	if o.Delete {
		b.WriteString("  delete:\n    enabled: true\n")
	}
	if o.ReadOnly {
		b.WriteString("  maintenance:\n    readonly:\n      enabled: true\n")
	}
	fmt.Fprintf(&b, "http:\n  addr: %s\n  secret: testkit-docker-registry\n", addr)
	if o.CertFile != "" {
		fmt.Fprintf(&b, "  tls:\n    certificate: %q\n    key: %q\n", o.CertFile, o.KeyFile)
	}
	if o.Htpasswd != "" {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: vendor\n    path: %q\n", o.Htpasswd)
	}
	return b.String()
}

// registryEnv is the environment without REGISTRY_* variables, which
// docker-registry would take as settings overriding its config.yml (podman's
// REGISTRY_AUTH_FILE among them).
func registryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return env
}
