package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// pushOCI copies an OCI layout into the appliance with skopeo.
func pushOCI(t *testing.T, a *appliance, layoutDir, ref, creds string) (string, error) {
	t.Helper()
	args := []string{"copy", "--dest-cert-dir", a.certDir()}
	if creds != "" {
		args = append(args, "--dest-creds", creds)
	} else {
		args = append(args, "--dest-no-creds")
	}
	args = append(args, "oci:"+layoutDir+":latest", "docker://"+a.host()+"/"+ref)
	return run(t, nil, "skopeo", args...)
}

// inspectDigest asks skopeo for a manifest digest, anonymously or not.
func inspectDigest(t *testing.T, a *appliance, ref, creds string) (string, error) {
	t.Helper()
	args := []string{"inspect", "--cert-dir", a.certDir(), "--format", "{{.Digest}}"}
	if creds != "" {
		args = append(args, "--creds", creds)
	} else {
		args = append(args, "--no-creds")
	}
	out, err := run(t, nil, "skopeo", append(args, "docker://"+a.host()+"/"+ref)...)
	return strings.TrimSpace(out), err
}

func mustOK(t *testing.T, what, out string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
}

func mustFail(t *testing.T, what, out string, err error, wantInOutput ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want failure\n%s", what, out)
	}
	for _, w := range wantInOutput {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(w)) {
			t.Fatalf("%s failed without %q in its output:\n%s", what, w, out)
		}
	}
}

// status performs an HTTPS request and returns the status and body.
func status(t *testing.T, a *appliance, method, path, user, pass string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+a.host()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := a.httpClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// TestRealClients proves, with skopeo, crane and podman against a running
// appliance, the access rules of issue 2: anonymous pull from a public
// project, 401 for anonymous push and for a wrong password, push with
// credentials, private projects closed to anonymous callers on manifests,
// blobs and tag lists alike, and read-only mode refusing pushes while pulls
// go on.
func TestRealClients(t *testing.T) {
	testkit.Need(t, "skopeo", "crane")
	a := startAppliance(t, t.TempDir())
	if a.password == "" {
		t.Fatalf("first start printed no admin password:\n%s", a.stderr.String())
	}
	admin := "admin:" + a.password
	img, digest := ociLayout(t, 64<<10, 2)

	t.Run("GET /v2/ challenges anonymous callers", func(t *testing.T) {
		code, h, _ := status(t, a, http.MethodGet, "/v2/", "", "")
		if code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), `Bearer realm="https://`+a.host()+`/service/token"`) {
			t.Fatalf("GET /v2/ anonymous = %d %q, want 401 with a Bearer challenge", code, h.Get("WWW-Authenticate"))
		}
		if code, _, _ := status(t, a, http.MethodGet, "/v2/", "admin", a.password); code != http.StatusOK {
			t.Fatalf("GET /v2/ as admin = %d, want 200", code)
		}
	})

	t.Run("push with credentials, anonymous pull", func(t *testing.T) {
		out, err := pushOCI(t, a, img, "library/app:1.0", admin)
		mustOK(t, "skopeo push with credentials", out, err)
		got, err := inspectDigest(t, a, "library/app:1.0", "")
		mustOK(t, "anonymous skopeo inspect", got, err)
		if got != digest.String() {
			t.Fatalf("anonymous pull digest = %s, want %s", got, digest)
		}
		out, err = run(t, []string{"SSL_CERT_FILE=" + filepath.Join(a.dataDir, "ca.crt")}, "crane", "digest", a.host()+"/library/app:1.0")
		mustOK(t, "anonymous crane digest", out, err)
		if strings.TrimSpace(out) != digest.String() {
			t.Fatalf("crane digest = %s, want %s", out, digest)
		}
		pulled := t.TempDir()
		out, err = run(t, nil, "skopeo", "copy", "--src-cert-dir", a.certDir(), "--src-no-creds", "docker://"+a.host()+"/library/app:1.0", "oci:"+pulled+":x")
		mustOK(t, "anonymous skopeo copy (full pull)", out, err)
		out, err = run(t, []string{"SSL_CERT_FILE=" + filepath.Join(a.dataDir, "ca.crt")}, "crane", "pull", "--format", "oci", a.host()+"/library/app:1.0", t.TempDir())
		mustOK(t, "anonymous crane pull", out, err)
	})

	t.Run("curl pulls a large blob over HTTP/1.1 and HTTP/2", func(t *testing.T) {
		testkit.Need(t, "curl")
		big, _ := ociLayout(t, 12<<20+333, 1)
		out, err := pushOCI(t, a, big, "library/big:1", admin)
		mustOK(t, "skopeo push of a 12 MiB layer", out, err)
		layer := firstLayer(t, big)
		var tok struct{ Token string }
		code, _, body := status(t, a, http.MethodGet, "/service/token?service=appliance&scope=repository:library/big:pull", "", "")
		if code != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil || tok.Token == "" {
			t.Fatalf("anonymous token = %d %s", code, body)
		}
		for _, proto := range []string{"1.1", "2"} {
			dest := filepath.Join(t.TempDir(), "blob")
			out, err := run(t, nil, "curl", "-sS", "--fail", "--http"+proto, "--cacert", filepath.Join(a.dataDir, "ca.crt"),
				"-H", "Authorization: Bearer "+tok.Token, "-o", dest, "-w", "%{http_version}",
				"https://"+a.host()+"/v2/library/big/blobs/"+layer)
			mustOK(t, "curl --http"+proto+" blob pull", out, err)
			if strings.TrimSpace(out) != proto {
				t.Fatalf("curl --http%s spoke HTTP/%s", proto, out)
			}
			b, err := os.ReadFile(dest)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("sha256:%x", sha256.Sum256(b)); got != layer {
				t.Fatalf("curl --http%s: %d bytes with digest %s, want %s", proto, len(b), got, layer)
			}
		}
	})

	t.Run("anonymous push gets 401", func(t *testing.T) {
		out, err := pushOCI(t, a, img, "library/anon:1", "")
		mustFail(t, "anonymous skopeo push", out, err, "unauthorized")
		code, h, _ := status(t, a, http.MethodPost, "/v2/library/anon/blobs/uploads/", "", "")
		if code != http.StatusUnauthorized || !strings.Contains(h.Get("WWW-Authenticate"), `scope="repository:library/anon:pull,push"`) {
			t.Fatalf("anonymous upload = %d %q, want 401 with a push scope", code, h.Get("WWW-Authenticate"))
		}
		out, err = run(t, []string{"SSL_CERT_FILE=" + filepath.Join(a.dataDir, "ca.crt")}, "crane", "copy", a.host()+"/library/app:1.0", a.host()+"/library/anon:crane")
		mustFail(t, "anonymous crane copy", out, err, "unauthorized")
	})

	t.Run("wrong password gets 401", func(t *testing.T) {
		out, err := pushOCI(t, a, img, "library/wrong:1", "admin:not-the-password")
		mustFail(t, "skopeo push with a wrong password", out, err, "unauthorized")
		code, _, _ := status(t, a, http.MethodGet, "/service/token?service=appliance&scope=repository:library/wrong:push", "admin", "not-the-password")
		if code != http.StatusUnauthorized {
			t.Fatalf("token with a wrong password = %d, want 401", code)
		}
		code, _, _ = status(t, a, http.MethodGet, "/v2/library/app/manifests/1.0", "admin", "not-the-password")
		if code != http.StatusUnauthorized {
			t.Fatalf("Basic with a wrong password on /v2/ = %d, want 401", code)
		}
	})

	t.Run("private project", func(t *testing.T) {
		out, err := a.cli(a.password+"\n", "project", "set", "secret", "--private", "--username", "admin", "--password-stdin")
		mustOK(t, "appliance project set --private", out, err)
		out, err = pushOCI(t, a, img, "secret/app:1.0", admin)
		mustOK(t, "push to a private project", out, err)

		got, err := inspectDigest(t, a, "secret/app:1.0", "")
		mustFail(t, "anonymous inspect of a private image", got, err, "unauthorized")
		got, err = inspectDigest(t, a, "secret/app:1.0", admin)
		mustOK(t, "inspect of a private image with credentials", got, err)
		if got != digest.String() {
			t.Fatalf("private digest = %s, want %s", got, digest)
		}
		// A guest may pull private projects but not push.
		pwFile := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pwFile, []byte("guest-password-123\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err = a.cli(a.password+"\n", "user", "add", "reader", "--role", "guest", "--new-password-file", pwFile, "--username", "admin", "--password-stdin")
		mustOK(t, "appliance user add reader", out, err)
		got, err = inspectDigest(t, a, "secret/app:1.0", "reader:guest-password-123")
		mustOK(t, "guest pull from a private project", got, err)
		out, err = pushOCI(t, a, img, "secret/other:1", "reader:guest-password-123")
		mustFail(t, "guest push", out, err, "unauthorized")

		// Manifests, blobs and tag lists alike: 401 anonymous, 200 with credentials.
		layer := firstLayer(t, img)
		for _, path := range []string{
			"/v2/secret/app/manifests/1.0",
			"/v2/secret/app/manifests/" + digest.String(),
			"/v2/secret/app/blobs/" + layer,
			"/v2/secret/app/tags/list",
		} {
			if code, _, _ := status(t, a, http.MethodGet, path, "", ""); code != http.StatusUnauthorized {
				t.Errorf("anonymous GET %s = %d, want 401", path, code)
			}
			if code, _, _ := status(t, a, http.MethodHead, path, "", ""); code != http.StatusUnauthorized {
				t.Errorf("anonymous HEAD %s = %d, want 401", path, code)
			}
			if code, _, body := status(t, a, http.MethodGet, path, "admin", a.password); code != http.StatusOK {
				t.Errorf("GET %s with credentials = %d, want 200: %s", path, code, body)
			}
		}
		// The same paths in a public project answer anonymously.
		if code, _, _ := status(t, a, http.MethodGet, "/v2/library/app/tags/list", "", ""); code != http.StatusOK {
			t.Errorf("anonymous tag list of a public project = %d, want 200", code)
		}
		// An anonymous token carries no pull right on a private project.
		var tok struct{ Token string }
		code, _, body := status(t, a, http.MethodGet, "/service/token?service=appliance&scope=repository:secret/app:pull", "", "")
		if code != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil {
			t.Fatalf("anonymous token = %d %s", code, body)
		}
		req, _ := http.NewRequest(http.MethodGet, "https://"+a.host()+"/v2/secret/app/manifests/1.0", nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err := a.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("private manifest with an anonymous token = %d, want 401", resp.StatusCode)
		}
	})

	t.Run("podman", func(t *testing.T) {
		if _, err := exec.LookPath("podman"); err != nil {
			t.Skip("podman is not installed")
		}
		store := t.TempDir()
		if err := os.WriteFile(filepath.Join(store, "auth.json"), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		podman := func(args ...string) (string, error) {
			base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
			return run(t, []string{"REGISTRY_AUTH_FILE=" + filepath.Join(store, "auth.json")}, "podman", append(base, args...)...)
		}
		if out, err := podman("info"); err != nil {
			t.Skipf("podman does not run on this machine: %v\n%s", err, out)
		}
		out, err := podman("pull", "--cert-dir", a.certDir(), a.host()+"/library/app:1.0")
		mustOK(t, "anonymous podman pull", out, err)
		out, err = podman("push", "--cert-dir", a.certDir(), a.host()+"/library/app:1.0", a.host()+"/library/podman:anon")
		mustFail(t, "anonymous podman push", out, err, "unauthorized")
		out, err = podman("push", "--cert-dir", a.certDir(), "--creds", admin, a.host()+"/library/app:1.0", a.host()+"/library/podman:1")
		mustOK(t, "podman push with credentials", out, err)
		out, err = podman("login", "--cert-dir", a.certDir(), "-u", "admin", "-p", "wrong-password-here", a.host())
		mustFail(t, "podman login with a wrong password", out, err, "invalid username/password")
	})

	t.Run("read-only mode", func(t *testing.T) {
		out, err := a.cli(a.password+"\n", "readonly", "enable", "--reason", "cold standby of harbor.test", "--username", "admin", "--password-stdin")
		mustOK(t, "appliance readonly enable", out, err)
		out, err = pushOCI(t, a, img, "library/ro:1", admin)
		mustFail(t, "push in read-only mode", out, err, "read-only mode", "cold standby of harbor.test")
		code, _, body := status(t, a, http.MethodDelete, "/v2/library/app/manifests/"+digest.String(), "admin", a.password)
		if code != http.StatusForbidden || !strings.Contains(body, `"code":"DENIED"`) || !strings.Contains(body, "read-only") {
			t.Fatalf("delete in read-only mode = %d %s, want 403 DENIED explaining read-only", code, body)
		}
		got, err := inspectDigest(t, a, "library/app:1.0", "")
		mustOK(t, "pull in read-only mode", got, err)
		out, err = a.cli("", "readonly", "status")
		mustOK(t, "appliance readonly status", out, err)
		if !strings.Contains(out, "read-only since") {
			t.Fatalf("readonly status = %q", out)
		}
		out, err = a.cli(a.password+"\n", "readonly", "disable", "--username", "admin", "--password-stdin")
		mustOK(t, "appliance readonly disable", out, err)
		out, err = pushOCI(t, a, img, "library/ro:1", admin)
		mustOK(t, "push after read-only mode ends", out, err)
	})

	t.Run("metrics, ca.crt and redirects on plain HTTP", func(t *testing.T) {
		resp, err := http.Get("http://" + a.httpAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`appliance_http_requests_total{code="200",method="GET",route="v2_manifest"}`,
			`appliance_http_request_duration_seconds_bucket{method="GET",route="v2_blob"`,
			`appliance_http_response_bytes_total{route="v2_blob"}`,
			"appliance_storage_used_bytes ",
			"appliance_read_only 0",
			"process_resident_memory_bytes",
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
		if strings.Contains(string(body), "appliance_storage_used_bytes 0\n") {
			t.Errorf("storage used is 0 after pushes")
		}
		resp, err = http.Get("http://" + a.httpAddr + "/ca.crt")
		if err != nil {
			t.Fatal(err)
		}
		served, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		onDisk, _ := os.ReadFile(filepath.Join(a.dataDir, "ca.crt"))
		if string(served) != string(onDisk) {
			t.Errorf("/ca.crt differs from <data-dir>/ca.crt")
		}
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err = noFollow.Get("http://" + a.httpAddr + "/v2/library/app/tags/list")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://"+a.host()+"/v2/library/app/tags/list" {
			t.Fatalf("plain /v2/ = %d → %q, want 308 to HTTPS", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

// firstLayer returns the digest of the first layer in an OCI layout's image.
func firstLayer(t *testing.T, layoutDir string) string {
	t.Helper()
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	readJSON(t, filepath.Join(layoutDir, "index.json"), &idx)
	var m struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	readJSON(t, filepath.Join(layoutDir, "blobs", "sha256", strings.TrimPrefix(idx.Manifests[0].Digest, "sha256:")), &m)
	return m.Layers[0].Digest
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
