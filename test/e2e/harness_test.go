// Package e2e runs the built appliance binary as a real process and drives
// it with the real clients users have: skopeo, crane and podman. Every
// server listens on loopback ports chosen by the kernel; every wait is
// bounded.
package e2e

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
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-dev/appliance/internal/testkit"
)

var binary string // the appliance binary built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "appliance-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "appliance")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/appliance")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build appliance:", err)
		os.Exit(1)
	}
	code := m.Run()
	stopSharedHarbor()
	ceph.Stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// appliance is one running `appliance serve` process.
type appliance struct {
	t         *testing.T
	dataDir   string
	httpsAddr string
	httpAddr  string
	cmd       *exec.Cmd
	stderr    *testkit.SyncBuffer
	done      chan error
	password  string // admin password
	exitCode  int    // of the last stopped process
	// storageEnv puts the registry's content in a bucket of its own on
	// the package's Ceph when the run is on S3 (e2eOnS3).
	storageEnv []string
}

// e2eStorageVar names the run's storage backend: unset, the appliances
// keep their content on the filesystem; "s3", every appliance a test
// starts (save those that configure storage themselves) keeps it in a
// bucket of its own on a real Ceph (make test's second run of the core
// tests, docs/architecture.md "Tests on S3").
const e2eStorageVar = "APPLIANCE_E2E_STORAGE"

// e2eOnS3 tells whether this run keeps the appliances' content on S3.
func e2eOnS3(t *testing.T) bool {
	t.Helper()
	switch v := os.Getenv(e2eStorageVar); v {
	case "", "filesystem":
		return false
	case "s3":
		return true
	default:
		t.Fatalf("%s=%q: want filesystem or s3", e2eStorageVar, v)
		return false
	}
}

var (
	bucketsMu sync.Mutex
	buckets   = map[string][]string{} // data directory -> its storage environment
)

// s3Env is the storage environment of the appliance on dataDir: a bucket
// of its own on the package's Ceph, made the first time, kept for every
// later start on the same data directory.
func s3Env(t *testing.T, dataDir string) []string {
	t.Helper()
	bucketsMu.Lock()
	defer bucketsMu.Unlock()
	if env, ok := buckets[dataDir]; ok {
		return env
	}
	c := ceph.Get(t)
	bucket := fmt.Sprintf("e2e-%d", len(buckets)+1)
	c.CreateBucket(t, bucket)
	creds, err := os.MkdirTemp("", "appliance-e2e-s3-")
	if err != nil {
		t.Fatal(err)
	}
	ak, sk := c.CredentialFiles(t, creds)
	env := []string{"APPLIANCE_STORAGE_BACKEND=s3", "APPLIANCE_STORAGE_S3_ENDPOINT=" + c.URL, "APPLIANCE_STORAGE_S3_BUCKET=" + bucket,
		"APPLIANCE_STORAGE_S3_PREFIX=appliance", "APPLIANCE_STORAGE_S3_ACCESS_KEY_FILE=" + ak, "APPLIANCE_STORAGE_S3_SECRET_KEY_FILE=" + sk}
	buckets[dataDir] = env
	return env
}

// configuresS3 tells whether the arguments name a configuration file that
// puts the content in an object store itself (TestReplicas' writer and
// replicas on one bucket).
func configuresS3(t *testing.T, args []string) bool {
	t.Helper()
	i := slices.Index(args, "--config")
	if i < 0 || i+1 >= len(args) {
		return false
	}
	data, err := os.ReadFile(args[i+1])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(data), "backend: s3")
}

// bucketOf is the bucket the appliance on dataDir keeps its content in,
// on S3 ("" on the filesystem).
func bucketOf(dataDir string) string {
	bucketsMu.Lock()
	defer bucketsMu.Unlock()
	for _, kv := range buckets[dataDir] {
		if v, ok := strings.CutPrefix(kv, "APPLIANCE_STORAGE_S3_BUCKET="); ok {
			return v
		}
	}
	return ""
}

// freeAddr returns a loopback address with a port the kernel just gave out.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// startAppliance runs the binary on dataDir and waits until it is healthy.
func startAppliance(t *testing.T, dataDir string, extra ...string) *appliance {
	t.Helper()
	a := &appliance{t: t, dataDir: dataDir, httpsAddr: freeAddr(t), httpAddr: freeAddr(t)}
	if e2eOnS3(t) && !configuresS3(t, extra) {
		a.storageEnv = s3Env(t, dataDir)
	}
	// A port just closed may be handed out again at once.
	for i := 0; i < 10 && a.httpAddr == a.httpsAddr; i++ {
		a.httpAddr = freeAddr(t)
	}
	a.start(extra...)
	t.Cleanup(func() { a.stop() })
	return a
}

var passwordRE = regexp.MustCompile(`admin / (\S+)`)

func (a *appliance) start(extra ...string) {
	t := a.t
	t.Helper()
	args := append([]string{"serve", "--data-dir", a.dataDir, "--https-addr", a.httpsAddr, "--http-addr", a.httpAddr, "--log-level", "debug"}, extra...)
	a.cmd = exec.Command(binary, args...)
	a.cmd.Env = append(cleanEnv(), a.storageEnv...)
	a.stderr = &testkit.SyncBuffer{}
	a.cmd.Stdout, a.cmd.Stderr = a.stderr, a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start appliance: %v", err)
	}
	a.done = make(chan error, 1)
	go func() { a.done <- a.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Healthy, and the log (copied from a pipe) has caught up with the
		// start banner, which comes before "appliance serving".
		resp, err := http.Get("http://" + a.httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(a.stderr.String(), "appliance serving") {
				break
			}
		}
		select {
		case err := <-a.done:
			t.Fatalf("appliance exited during start: %v\n%s", err, a.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("appliance not healthy within 30s:\n%s", a.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := passwordRE.FindStringSubmatch(a.stderr.String()); m != nil {
		a.password = m[1]
	}
	if a.storageEnv != nil && !ceph.Get(t).ObjectExists(t, bucketOf(a.dataDir), "appliance/appliance/writer.lock") {
		t.Fatalf("the appliance on S3 holds no lock object in bucket %s:\n%s", bucketOf(a.dataDir), a.stderr.String())
	}
}

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (a *appliance) stop() {
	if a.cmd == nil || a.cmd.ProcessState != nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		a.exitCode = a.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
		a.t.Errorf("appliance did not stop within 30s of SIGTERM")
	}
	a.cmd = nil
}

// kill ends the process with SIGKILL, as a crash or power cut would.
func (a *appliance) kill() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Kill()
	<-a.done
	a.cmd = nil
}

// restart stops the process and starts a new one on the same data and ports.
func (a *appliance) restart(extra ...string) {
	a.t.Helper()
	a.stop()
	a.start(extra...)
}

func (a *appliance) host() string { return a.httpsAddr }

// certDir returns a folder holding only ca.crt, as skopeo's and podman's
// --cert-dir want it (a folder with *.key files in it means client certs).
func (a *appliance) certDir() string {
	a.t.Helper()
	dir := a.t.TempDir()
	data, err := os.ReadFile(filepath.Join(a.dataDir, "ca.crt"))
	if err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), data, 0o644); err != nil {
		a.t.Fatal(err)
	}
	return dir
}

// httpClient trusts only the appliance's CA.
func (a *appliance) httpClient() *http.Client {
	a.t.Helper()
	pemBytes, err := os.ReadFile(filepath.Join(a.dataDir, "ca.crt"))
	if err != nil {
		a.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		a.t.Fatal("ca.crt holds no certificate")
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// cli runs an appliance client subcommand against this server.
func (a *appliance) cli(stdin string, args ...string) (string, error) {
	a.t.Helper()
	return a.cliEnv(nil, stdin, args...)
}

// cliEnv is cli with extra environment variables.
func (a *appliance) cliEnv(env []string, stdin string, args ...string) (string, error) {
	a.t.Helper()
	return a.cliEnvTimeout(time.Minute, env, stdin, args...)
}

// cliTimeout is cli with its own bound on the command's time.
func (a *appliance) cliTimeout(d time.Duration, stdin string, args ...string) (string, error) {
	a.t.Helper()
	return a.cliEnvTimeout(d, nil, stdin, args...)
}

func (a *appliance) cliEnvTimeout(d time.Duration, env []string, stdin string, args ...string) (string, error) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(append(cleanEnv(), "APPLIANCE_SERVER=https://"+a.httpsAddr, "APPLIANCE_CA="+filepath.Join(a.dataDir, "ca.crt")), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cleanEnv is the environment without any APPLIANCE_* settings or proxies.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "APPLIANCE_") || strings.EqualFold(k, "https_proxy") || strings.EqualFold(k, "http_proxy") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// run executes a client tool with a bounded time and returns its output.
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ociLayout writes a random image (n layers of size bytes) as an OCI layout
// tagged "latest" and returns the folder and the image's digest.
func ociLayout(t *testing.T, size int64, n int) (string, v1.Hash) {
	t.Helper()
	// OCI media types throughout: skopeo finds tags in an OCI layout only
	// for OCI manifests.
	var layers []v1.Layer
	for range n {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "latest"})); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dir, d
}
