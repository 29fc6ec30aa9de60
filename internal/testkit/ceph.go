package testkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Ceph is a real single-node Ceph cluster with its RADOS Gateway serving
// S3 on loopback, started by ../shared/ceph/ceph-up (path-style
// addressing, region us-east-1).
type Ceph struct {
	URL       string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Dir       string
	down      string
}

// cephTools are what ceph-up runs, from Debian's packages.
var cephTools = []string{"ceph-mon", "ceph-mgr", "ceph-osd", "radosgw", "ceph", "curl", "python3"}

// NeedCeph skips the test (fails it in CI) when Ceph cannot run here.
func NeedCeph(t testing.TB) {
	t.Helper()
	if SharedDir() == "" {
		missing(t, "../shared/ceph is not beside the repository (set APPLIANCE_SHARED_DIR)")
	}
	Need(t, cephTools...)
}

// LaunchCeph starts Ceph in dir (which must not exist yet) and returns once
// S3 answers (about 15 seconds). It outlives any one test: a package
// starts it once (SharedCeph) and stops it after its last test.
func LaunchCeph(ctx context.Context, dir string) (*Ceph, error) {
	shared := SharedDir()
	if shared == "" {
		return nil, errors.New("launch Ceph: ../shared not found")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(shared, "ceph", "ceph-up"), dir) //nolint:gosec // G204: the shared test script
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	c := &Ceph{Dir: dir, down: filepath.Join(shared, "ceph", "ceph-down")}
	if err := cmd.Run(); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("launch Ceph: %w\n%s%s", err, stdout.String(), stderr.String())
	}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "CEPH_S3_URL":
			c.URL = v
		case "CEPH_ACCESS_KEY":
			c.AccessKey = v
		case "CEPH_SECRET_KEY":
			c.SecretKey = v
		}
	}
	if c.URL == "" || c.AccessKey == "" || c.SecretKey == "" {
		_ = c.Stop()
		return nil, fmt.Errorf("launch Ceph: ceph-up printed no CEPH_S3_URL and keys:\n%s", stdout.String())
	}
	return c, nil
}

// Stop stops what LaunchCeph started and removes its folder.
func (c *Ceph) Stop() error {
	out, err := exec.Command(c.down, c.Dir).CombinedOutput() //nolint:gosec // G204: the shared test script
	if err != nil {
		return fmt.Errorf("stop Ceph: %w: %s", err, out)
	}
	return nil
}

// s3 runs one signed S3 request with curl and returns the HTTP status.
func (c *Ceph) s3(t testing.TB, method, path string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	verb := []string{"-X", method}
	if method == "HEAD" {
		verb = []string{"-I"} // curl -X HEAD waits for a body that never comes
	}
	args := append([]string{"-s", "-o", "/dev/null", "-w", "%{http_code}",
		"--aws-sigv4", "aws:amz:us-east-1:s3", "--user", c.AccessKey + ":" + c.SecretKey,
		"-H", "x-amz-content-sha256:UNSIGNED-PAYLOAD"}, verb...)
	out, err := exec.CommandContext(ctx, "curl", append(args, c.URL+path)...).Output() //nolint:gosec // G204: a test's own request to its own Ceph
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	var code int
	if _, err := fmt.Sscanf(string(out), "%d", &code); err != nil {
		t.Fatalf("%s %s: status %q", method, path, out)
	}
	return code
}

// CreateBucket creates bucket.
func (c *Ceph) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	if code := c.s3(t, "PUT", "/"+bucket); code != 200 {
		t.Fatalf("create bucket %s: HTTP %d", bucket, code)
	}
}

// ObjectExists tells whether key is in bucket.
func (c *Ceph) ObjectExists(t testing.TB, bucket, key string) bool {
	t.Helper()
	code := c.s3(t, "HEAD", "/"+bucket+"/"+key)
	if code != 200 && code != 404 {
		t.Fatalf("HEAD %s/%s: HTTP %d", bucket, key, code)
	}
	return code == 200
}

// DeleteObject removes key from bucket.
func (c *Ceph) DeleteObject(t testing.TB, bucket, key string) {
	t.Helper()
	if code := c.s3(t, "DELETE", "/"+bucket+"/"+key); code != 204 && code != 200 {
		t.Fatalf("DELETE %s/%s: HTTP %d", bucket, key, code)
	}
}

// CredentialFiles writes the access and secret key to files in dir, as
// storage.s3.access_key_file and secret_key_file name them.
func (c *Ceph) CredentialFiles(t testing.TB, dir string) (accessKeyFile, secretKeyFile string) {
	t.Helper()
	accessKeyFile, secretKeyFile = filepath.Join(dir, "s3-access-key"), filepath.Join(dir, "s3-secret-key")
	if err := os.WriteFile(accessKeyFile, []byte(c.AccessKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretKeyFile, []byte(c.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return accessKeyFile, secretKeyFile
}

// SharedCeph is one Ceph for a whole test package: started by the first
// test that asks for it, stopped by Stop from TestMain.
type SharedCeph struct {
	once sync.Once
	ceph *Ceph
	err  error
	dir  string
}

// Get returns the package's Ceph, starting it on the first call; it
// skips (in CI fails) the test where Ceph cannot run.
func (s *SharedCeph) Get(t testing.TB) *Ceph {
	t.Helper()
	NeedCeph(t)
	s.once.Do(func() {
		s.dir, s.err = os.MkdirTemp("", "appliance-ceph-")
		if s.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		s.ceph, s.err = LaunchCeph(ctx, filepath.Join(s.dir, "ceph"))
	})
	if s.err != nil {
		t.Fatalf("start Ceph: %v", s.err)
	}
	return s.ceph
}

// Stop stops the package's Ceph, if a test started it.
func (s *SharedCeph) Stop() {
	if s.ceph != nil {
		if err := s.ceph.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
