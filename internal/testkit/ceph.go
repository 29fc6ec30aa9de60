package testkit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	if err := c.gatewayNoDelay(ctx); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("launch Ceph: %w", err)
	}
	return c, nil
}

// gatewayNoDelay restarts the RADOS Gateway ceph-up started with
// tcp_nodelay=1 on its beast frontend, as docs/operations.md asks of a
// production gateway. Without it the gateway writes a response's header
// and body in two segments and Nagle's algorithm holds the second until
// the client's delayed ACK (40 ms on Linux): every S3 request on a kept-alive
// connection takes 40 ms more, which made the conformance suite take 3½
// minutes on S3 instead of 20 s.
func (c *Ceph) gatewayNoDelay(ctx context.Context) error {
	conf := filepath.Join(c.Dir, "ceph.conf")
	data, err := os.ReadFile(conf) //nolint:gosec // G304: the file ceph-up just wrote
	if err != nil {
		return err
	}
	const key = "rgw frontends = beast "
	lines := strings.Split(string(data), "\n")
	found := false
	for i, l := range lines {
		if strings.HasPrefix(l, key) && !strings.Contains(l, "tcp_nodelay") {
			lines[i], found = l+" tcp_nodelay=1", true
		}
	}
	if !found {
		return fmt.Errorf("%s has no beast frontend to set tcp_nodelay on", conf)
	}
	pidsFile := filepath.Join(c.Dir, "pids")
	pids, err := os.ReadFile(pidsFile) //nolint:gosec // G304: ceph-up's list of its daemons
	if err != nil {
		return err
	}
	fields := strings.Fields(string(pids))
	if len(fields) == 0 {
		return fmt.Errorf("%s lists no daemon", pidsFile)
	}
	var pid int
	if _, err := fmt.Sscanf(fields[len(fields)-1], "%d", &pid); err != nil {
		return fmt.Errorf("%s: %w", pidsFile, err)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return fmt.Errorf("the last daemon of %s: %w", pidsFile, err)
	}
	if strings.TrimSpace(string(comm)) != "radosgw" {
		return fmt.Errorf("the last daemon of %s (%d) is %q, not radosgw", pidsFile, pid, strings.TrimSpace(string(comm)))
	}
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")), 0o600); err != nil { //nolint:gosec // G703: the file ceph-up wrote in the test's folder
		return err
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop radosgw %d: %w", pid, err)
	}
	for i := 0; ; i++ {
		if err := p.Signal(syscall.Signal(0)); err != nil {
			break
		}
		if i == 200 {
			return fmt.Errorf("radosgw %d did not stop within 10s", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, "log", "rgw.out"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("radosgw", "-c", conf, "-n", "client.rgw.gw", "-f") //nolint:gosec // G204: the gateway ceph-up ran, with its own configuration
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlives a test's interrupt like ceph-up's daemons
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("restart radosgw: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	// ceph-down stops the new one, not a stranger given the old pid.
	fields[len(fields)-1] = fmt.Sprint(cmd.Process.Pid)
	if err := os.WriteFile(pidsFile, []byte(strings.Join(fields, "\n")+"\n"), 0o600); err != nil { //nolint:gosec // G703: ceph-up's list in the test's folder
		return err
	}
	for i := 0; ; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("the restarted radosgw exited; see %s", logf.Name())
		case <-ctx.Done():
			return fmt.Errorf("the restarted radosgw did not answer: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if i == 600 {
			return errors.New("the restarted radosgw did not answer within 60s")
		}
	}
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
func (c *Ceph) s3(t testing.TB, method, path string, body ...string) int {
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
	for _, file := range body {
		args = append(args, "--data-binary", "@"+file)
	}
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

// listPage is one page of a ListObjectsV2 answer.
type listPage struct {
	KeyCount  int    `xml:"KeyCount"`
	Truncated bool   `xml:"IsTruncated"`
	Next      string `xml:"NextContinuationToken"`
	Contents  []struct {
		Size int64 `xml:"Size"`
	} `xml:"Contents"`
}

// list reads one page of the keys in bucket starting with prefix; query
// holds further parameters (max-keys, continuation-token).
func (c *Ceph) list(t testing.TB, bucket, prefix string, query url.Values) listPage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := url.Values{"list-type": {"2"}, "prefix": {prefix}}
	for k, v := range query {
		q[k] = v
	}
	// Encode sorts the parameters, as SigV4's canonical request wants
	// them (curl signs them in the order given).
	u := c.URL + "/" + bucket + "?" + strings.ReplaceAll(q.Encode(), "+", "%20")
	out, err := exec.CommandContext(ctx, "curl", "-s", "-f", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", c.AccessKey+":"+c.SecretKey, //nolint:gosec // G204: a test's own request to its own Ceph
		"-H", "x-amz-content-sha256:UNSIGNED-PAYLOAD", u).Output()
	if err != nil {
		t.Fatalf("list %s/%s: %v", bucket, prefix, err)
	}
	var page listPage
	if err := xml.Unmarshal(out, &page); err != nil {
		t.Fatalf("list %s/%s: %v: %s", bucket, prefix, err, out)
	}
	return page
}

// HasObjects tells whether any object's key in bucket starts with prefix.
func (c *Ceph) HasObjects(t testing.TB, bucket, prefix string) bool {
	t.Helper()
	return c.list(t, bucket, prefix, url.Values{"max-keys": {"1"}}).KeyCount > 0
}

// BytesUnder sums the sizes of the objects in bucket whose keys start
// with prefix (complete objects: a multipart upload counts once it
// completes).
func (c *Ceph) BytesUnder(t testing.TB, bucket, prefix string) int64 {
	t.Helper()
	var n int64
	query := url.Values{}
	for range 1000 {
		page := c.list(t, bucket, prefix, query)
		for _, o := range page.Contents {
			n += o.Size
		}
		if !page.Truncated || page.Next == "" {
			return n
		}
		query = url.Values{"continuation-token": {page.Next}}
	}
	t.Fatalf("list %s/%s: more than 1000 pages", bucket, prefix)
	return 0
}

// PutObject writes data as key in bucket, behind the appliance's back (a
// test's corruption of what it stored).
func (c *Ceph) PutObject(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "object")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := c.s3(t, "PUT", "/"+bucket+"/"+key, file); code != 200 {
		t.Fatalf("PUT %s/%s: HTTP %d", bucket, key, code)
	}
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
