package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// ceph is one Ceph for the package (TestReplicas), stopped by TestMain.
var ceph testkit.SharedCeph

// replicaPoll is the replicas' poll interval in these tests: the bound
// within which a change on the writer holds on every replica.
const replicaPoll = 500 * time.Millisecond

// TestReplicas runs one writer and two read-only replicas on the same
// bucket of a real Ceph, behind Debian's haproxy with the example
// configuration of configs/haproxy.cfg (docs/operations.md): an image
// imported on the writer pulls through the load balancer from every
// replica with the same digest; a project made private on the writer is
// refused to anonymous callers on every replica within the poll bound,
// and a tag moved on the writer is served moved within it; a token of one
// replica (or of the writer) verifies on another; kill -9 of a replica
// loses no pull that skopeo retried; a push and an API change on a
// replica are refused with a message that names the writer.
func TestReplicas(t *testing.T) {
	testkit.Need(t, "skopeo", "haproxy")
	c := ceph.Get(t)
	c.CreateBucket(t, "replicas")
	ak, sk := c.CredentialFiles(t, t.TempDir())
	config := func(role string) string {
		return writeTemp(t, fmt.Sprintf(`role: %s
replica:
  poll_interval: %s
storage:
  backend: s3
  s3:
    endpoint: %s
    bucket: replicas
    prefix: site-a
    access_key_file: %s
    secret_key_file: %s
`, role, replicaPoll, c.URL, ak, sk))
	}

	writer := startAppliance(t, t.TempDir(), "--config", config("writer"))
	if writer.password == "" {
		t.Fatalf("the writer printed no admin password:\n%s", writer.stderr.String())
	}
	in, admin := writer.password+"\n", []string{"--username", "admin", "--password-stdin"}
	// One CA for all: the replicas start with the writer's, and issue
	// their own server certificates from it.
	var replicas []*appliance
	for range 2 {
		dir := t.TempDir()
		for _, f := range []string{"ca.crt", "ca.key"} {
			data, err := os.ReadFile(filepath.Join(writer.dataDir, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		r := startAppliance(t, dir, "--config", config("replica"))
		if r.password != "" || strings.Contains(r.stderr.String(), "initial-admin-password") {
			t.Errorf("a replica created an admin account of its own:\n%s", r.stderr.String())
		}
		replicas = append(replicas, r)
	}
	lb := startHAProxy(t, replicas)
	certs := writer.certDir()

	// An image imported on the writer pulls from every replica, directly
	// and through the load balancer, with the writer's digest.
	layoutDir, digest := ociLayout(t, 4<<20, 3)
	out, err := writer.cli(in, append([]string{"import", "--to-repo", "library/app", layoutDir}, admin...)...)
	mustOK(t, "import on the writer", out, err)
	for _, host := range []string{writer.host(), replicas[0].host(), replicas[1].host(), lb.addr} {
		got, err := skopeoDigest(t, certs, host, "library/app:latest", "")
		if err != nil || got != digest.String() {
			t.Fatalf("library/app:latest at %s = %s, %v; want %s", host, got, err, digest)
		}
	}
	before := blobBytes(t, replicas)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := skopeoPull(t, certs, lb.addr, "library/app:latest", digest.String()); err != nil {
				errs <- fmt.Errorf("pull %d through the load balancer: %w\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := blobBytes(t, replicas)
	for i := range replicas {
		if after[i] <= before[i] {
			t.Errorf("replica %d served no blob bytes to the pulls through the load balancer (%.0f before, %.0f after)", i+1, before[i], after[i])
		}
	}

	// Private on the writer: refused to anonymous callers on every replica
	// within the bound.
	out, err = writer.cli(in, append([]string{"project", "set", "library", "--private"}, admin...)...)
	mustOK(t, "project set library --private", out, err)
	since := time.Now()
	waitReplicas(t, replicas, "an anonymous manifest GET answered 401", since, func(r *appliance) bool {
		code, _, _ := status(t, r, http.MethodGet, "/v2/library/app/manifests/latest", "", "")
		return code == http.StatusUnauthorized
	})
	if out, err := skopeoDigest(t, certs, lb.addr, "library/app:latest", ""); err == nil {
		t.Fatalf("an anonymous pull of the private project through the load balancer worked: %s", out)
	}
	if got, err := skopeoDigest(t, certs, lb.addr, "library/app:latest", "admin:"+writer.password); err != nil || got != digest.String() {
		t.Fatalf("the writer's admin through the load balancer: %s, %v", got, err)
	}

	// A token from one replica, and one from the writer, verify on the other.
	for _, from := range []*appliance{replicas[0], writer} {
		tok := token(t, from, "library/app", "admin", writer.password)
		code := bearerStatus(t, replicas[1], "/v2/library/app/manifests/latest", tok)
		if code != http.StatusOK {
			t.Errorf("a token of %s on replica 2: HTTP %d, want 200", from.host(), code)
		}
	}

	// A tag moved on the writer is served moved within the bound, though
	// the replicas had it cached.
	moved, movedDigest := ociLayout(t, 64<<10, 1)
	out, err = run(t, nil, "skopeo", "copy", "--dest-cert-dir", certs, "--dest-creds", "admin:"+writer.password,
		"oci:"+moved+":latest", "docker://"+writer.host()+"/library/app:latest")
	mustOK(t, "push of a new library/app:latest to the writer", out, err)
	since = time.Now()
	waitReplicas(t, replicas, "the moved tag served", since, func(r *appliance) bool {
		_, h, _ := status(t, r, http.MethodGet, "/v2/library/app/manifests/latest", "admin", writer.password)
		return h.Get("Docker-Content-Digest") == movedDigest.String()
	})
	out, err = writer.cli(in, append([]string{"project", "set", "library", "--public"}, admin...)...)
	mustOK(t, "project set library --public", out, err)
	out, err = run(t, nil, "skopeo", "copy", "--dest-cert-dir", certs, "--dest-creds", "admin:"+writer.password,
		"oci:"+layoutDir+":latest", "docker://"+writer.host()+"/library/app:latest")
	mustOK(t, "push of the first image back", out, err)
	waitReplicas(t, replicas, "public again with the first image", time.Now(), func(r *appliance) bool {
		_, h, _ := status(t, r, http.MethodGet, "/v2/library/app/manifests/latest", "", "")
		return h.Get("Docker-Content-Digest") == digest.String()
	})

	// kill -9 of one replica while pulls run through the load balancer:
	// every pull the client retried completes, with the right digest.
	// skopeo retries (--retry-times) what fails to connect, but Debian's
	// skopeo 1.9 neither resumes a blob cut in its first MiB nor retries
	// the unexpected EOF of one: such a pull is run again, as kubelet's
	// back-off runs a failed pull again, and then lands on the survivor.
	type pullResult struct {
		runs int
		err  error
	}
	served := blobBytes(t, replicas[:1])[0]
	pulls := make(chan pullResult, 6)
	for i := range cap(pulls) {
		go func() {
			var res pullResult
			for res.runs < 3 {
				res.runs++
				out, err := skopeoPull(t, certs, lb.addr, "library/app:latest", digest.String())
				if err == nil {
					res.err = nil
					break
				}
				res.err = fmt.Errorf("pull %d, run %d: %w\n%s", i, res.runs, err, out)
			}
			pulls <- res
		}()
	}
	// Killed once it streams blobs to the pulls.
	for deadline := time.Now().Add(30 * time.Second); blobBytes(t, replicas[:1])[0] == served; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("replica 1 served no blob to the pulls within 30s")
		}
	}
	replicas[0].kill()
	rerun := 0
	for range cap(pulls) {
		res := <-pulls
		if res.err != nil {
			t.Errorf("a pull lost to the killed replica: %v", res.err)
		}
		if res.runs > 1 {
			rerun++
		}
	}
	t.Logf("%d of %d pulls were cut by the kill and completed when run again", rerun, cap(pulls))
	lb.waitDown(t, "replica1")

	// A push to a replica, through the load balancer, is refused with the
	// writer's name; so is a change through a replica's API.
	out, err = run(t, nil, "skopeo", "copy", "--retry-times", "0", "--dest-cert-dir", certs, "--dest-creds", "admin:"+writer.password,
		"oci:"+moved+":latest", "docker://"+lb.addr+"/library/pushed:1")
	mustFail(t, "a push to a replica", out, err, "read-only replica", "writer", writer.host())
	out, err = replicas[1].cli(in, append([]string{"project", "set", "other", "--private"}, admin...)...)
	mustFail(t, "project set on a replica", out, err, "read-only replica", writer.host())
	code, _, body := status(t, replicas[1], http.MethodPost, "/api/v1/users", "admin", writer.password)
	if code != http.StatusForbidden || !strings.Contains(body, "READ_ONLY_REPLICA") || !strings.Contains(body, writer.host()) {
		t.Errorf("POST /api/v1/users on a replica: HTTP %d %s; want 403 READ_ONLY_REPLICA naming %s", code, body, writer.host())
	}
	code, _, body = status(t, replicas[1], http.MethodGet, "/api/v1/replication", "", "")
	var rep struct {
		Role   string `json:"role"`
		Writer string `json:"writer"`
		State  struct {
			Version uint64 `json:"version"`
			Error   string `json:"error"`
		} `json:"state"`
	}
	if err := json.Unmarshal([]byte(body), &rep); code != http.StatusOK || err != nil || rep.Role != "replica" ||
		!strings.Contains(rep.Writer, writer.host()) || rep.State.Version < 3 || rep.State.Error != "" {
		t.Errorf("GET /api/v1/replication on a replica: HTTP %d %s", code, body)
	}

	// gc is the writer's: a replica refuses it, naming the writer; on the
	// writer it runs on the bucket.
	out, err = replicas[1].cli(in, append([]string{"gc", "--dry-run"}, admin...)...)
	mustFail(t, "gc on a replica", out, err, "read-only replica", writer.host())
	out, err = writer.cliLong(in, append([]string{"gc", "--dry-run"}, admin...)...)
	mustOK(t, "gc --dry-run on the writer", out, err)

	// A replica's status shows the mode of the writer it follows, and
	// its role: the writer's read-only switch reaches it within the bound.
	replicaStatus := func(r *appliance) (st struct {
		Mode     string `json:"mode"`
		Role     string `json:"role"`
		Writer   string `json:"writer"`
		ReadOnly struct {
			ReadOnly bool   `json:"read_only"`
			Reason   string `json:"reason"`
		} `json:"read_only"`
	}) {
		code, _, body := status(t, r, http.MethodGet, "/api/v1/status", "", "")
		if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil {
			t.Fatalf("GET /api/v1/status on a replica: HTTP %d %s", code, body)
		}
		return st
	}
	if st := replicaStatus(replicas[1]); st.Role != "replica" || !strings.Contains(st.Writer, writer.host()) || st.Mode != "bootstrap" || st.ReadOnly.ReadOnly {
		t.Errorf("status of a replica: %+v; want role replica, writer %s, the writer's mode bootstrap, read-write", st, writer.host())
	}
	out, err = writer.cli(in, append([]string{"readonly", "enable", "--reason", "writer maintenance"}, admin...)...)
	mustOK(t, "readonly enable on the writer", out, err)
	waitReplicas(t, replicas[1:], "read-only in its status", time.Now(), func(r *appliance) bool {
		st := replicaStatus(r)
		return st.ReadOnly.ReadOnly && st.ReadOnly.Reason == "writer maintenance"
	})
	out, err = replicas[1].cli("", "status")
	mustOK(t, "status on a replica", out, err)
	if !strings.Contains(out, "role: read-only replica of") || !strings.Contains(out, "(the writer's, which this replica follows)") || !strings.Contains(out, "read-only (writer maintenance)") {
		t.Errorf("appliance status on a replica:\n%s", out)
	}
}

// waitReplicas polls every replica until ok holds on each, within twice
// the poll interval and a second of slack after since.
func waitReplicas(t *testing.T, replicas []*appliance, what string, since time.Time, ok func(*appliance) bool) {
	t.Helper()
	deadline := since.Add(2*replicaPoll + time.Second)
	for i, r := range replicas {
		for !ok(r) {
			if time.Now().After(deadline) {
				t.Fatalf("replica %d: not %s within %s", i+1, what, deadline.Sub(since))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("%s on every replica after %s", what, time.Since(since).Round(time.Millisecond))
}

func skopeoDigest(t *testing.T, certs, host, ref, creds string) (string, error) {
	t.Helper()
	args := []string{"inspect", "--cert-dir", certs, "--format", "{{.Digest}}", "--no-creds"}
	if creds != "" {
		args[len(args)-1] = "--creds=" + creds
	}
	out, err := run(t, nil, "skopeo", append(args, "docker://"+host+"/"+ref)...)
	return strings.TrimSpace(out), err
}

// skopeoPull copies ref into a fresh OCI layout (skopeo checks every
// blob's digest) with retries, and checks the manifest's digest.
func skopeoPull(t *testing.T, certs, host, ref, want string) (string, error) {
	t.Helper()
	dst := t.TempDir()
	out, err := run(t, nil, "skopeo", "copy", "--retry-times", "5", "--src-cert-dir", certs, "--src-no-creds",
		"docker://"+host+"/"+ref, "oci:"+dst+":x")
	if err != nil {
		return out, err
	}
	index, err := os.ReadFile(filepath.Join(dst, "index.json"))
	if err != nil {
		return out, err
	}
	if !strings.Contains(string(index), want) {
		return string(index), fmt.Errorf("the pulled index names no %s", want)
	}
	return out, nil
}

var blobBytesRE = regexp.MustCompile(`(?m)^appliance_http_response_bytes_total\{route="v2_blob"\} (\S+)$`)

// blobBytes reads the blob bytes each replica has served from its metrics.
func blobBytes(t *testing.T, replicas []*appliance) []float64 {
	t.Helper()
	out := make([]float64, len(replicas))
	for i, r := range replicas {
		resp, err := http.Get("http://" + r.httpAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if m := blobBytesRE.FindSubmatch(body); m != nil {
			if _, err := fmt.Sscan(string(m[1]), &out[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

// token asks a's token service for a pull token on repo.
func token(t *testing.T, a *appliance, repo, user, pass string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+a.host()+"/service/token?service=appliance&scope=repository:"+repo+":pull", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	resp, err := a.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Token == "" {
		t.Fatalf("token from %s: HTTP %d, %v", a.host(), resp.StatusCode, err)
	}
	return body.Token
}

func bearerStatus(t *testing.T, a *appliance, path, tok string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+a.host()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := a.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// haproxy is Debian's haproxy running configs/haproxy.cfg with loopback
// addresses.
type haproxy struct {
	addr, socket string
}

var serverLineRE = regexp.MustCompile(`(?m)^(\s*server replica(\d+) )\S+:8443 check port 8080$`)

// startHAProxy runs configs/haproxy.cfg, the example of
// docs/operations.md, with its bind and server lines pointed at the
// replicas, and waits until haproxy finds every replica up.
func startHAProxy(t *testing.T, replicas []*appliance) *haproxy {
	t.Helper()
	example, err := os.ReadFile(filepath.Join("..", "..", "configs", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h := &haproxy{addr: freeAddr(t), socket: filepath.Join(dir, "haproxy.sock")}
	cfg := string(example)
	for _, r := range []struct{ old, new string }{
		{"bind :8443", "bind " + h.addr},
		{"stats socket /run/haproxy/appliance.sock", "stats socket " + h.socket},
	} {
		if !strings.Contains(cfg, r.old) {
			t.Fatalf("configs/haproxy.cfg has no %q", r.old)
		}
		cfg = strings.Replace(cfg, r.old, r.new, 1)
	}
	if n := len(serverLineRE.FindAllString(cfg, -1)); n != 3 {
		t.Fatalf("configs/haproxy.cfg has %d replica server lines, want the 3 of docs/operations.md", n)
	}
	cfg = serverLineRE.ReplaceAllStringFunc(cfg, func(line string) string {
		m := serverLineRE.FindStringSubmatch(line)
		var i int
		_, _ = fmt.Sscan(m[2], &i)
		if i > len(replicas) {
			return ""
		}
		_, port, _ := net.SplitHostPort(replicas[i-1].httpAddr)
		return m[1] + replicas[i-1].httpsAddr + " check port " + port
	})
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command("haproxy", "-db", "-f", path)
	log := &testkit.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for i := range replicas {
		for h.state(t, fmt.Sprintf("replica%d", i+1)) != "UP" {
			if time.Now().After(deadline) {
				t.Fatalf("haproxy does not find replica%d up within 20s (%q):\n%s", i+1, h.state(t, fmt.Sprintf("replica%d", i+1)), log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return h
}

// state is what haproxy's stats socket says of server in the replicas
// backend ("UP", "DOWN", …), or "" while it does not answer.
func (h *haproxy) state(t *testing.T, server string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", h.socket)
	if err != nil {
		return ""
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "show stat\n"); err != nil {
		return ""
	}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) > 17 && f[0] == "replicas" && f[1] == server {
			return f[17]
		}
	}
	return ""
}

// waitDown waits (bounded) until haproxy takes server out.
func (h *haproxy) waitDown(t *testing.T, server string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.HasPrefix(h.state(t, server), "DOWN") {
		if time.Now().After(deadline) {
			t.Fatalf("haproxy still has %s %q after 15s", server, h.state(t, server))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
