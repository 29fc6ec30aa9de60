// Package conformance runs the OCI Distribution Specification's own
// conformance suites against the built appliance: release v1.1.1 (a
// ginkgo test binary) and the suite of the specification's main branch
// (a program writing junit.xml), both from ../shared/tools, with all four
// workflows (pull, push, content discovery, content management), the
// admin's credentials and a second namespace for cross-repository mounts.
// It fails naming every case that fails: the appliance is held to zero
// failures in both. Without ../shared/tools it skips, and in CI (the
// environment variable CI is set) it fails.
package conformance

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/testkit"
)

// suite is one conformance suite of ../shared/tools.
type suite struct {
	name      string   // also the last component of its namespace
	tool      string   // its file in ../shared/tools
	args      []string // its command line
	reportDir string   // the variable naming the folder it writes junit.xml to
}

var suites = []suite{
	{name: "v1.1.1", tool: "conformance-v1.1.1.test", args: []string{"-ginkgo.no-color"}, reportDir: "OCI_REPORT_DIR"},
	{name: "main", tool: "conformance-main", reportDir: "OCI_RESULTS_DIR"},
}

// TestConformance starts one appliance on a fresh data directory and runs
// each suite against it, in its own empty folder and namespace.
func TestConformance(t *testing.T) {
	tools := toolsDir(t)
	runSuites(t, tools, startAppliance(t), suites...)
}

// One Ceph for the package (TestConformanceS3).
var ceph testkit.SharedCeph

func TestMain(m *testing.M) {
	code := m.Run()
	ceph.Stop()
	os.Exit(code)
}

// TestConformanceS3 runs both suites against an appliance whose registry
// content is in a real Ceph object store (storage.backend s3), held to
// zero failures as on the filesystem.
func TestConformanceS3(t *testing.T) {
	tools := toolsDir(t)
	c := ceph.Get(t)
	c.CreateBucket(t, "conformance")
	ak, sk := c.CredentialFiles(t, t.TempDir())
	a := startAppliance(t, "APPLIANCE_STORAGE_BACKEND=s3", "APPLIANCE_STORAGE_S3_ENDPOINT="+c.URL,
		"APPLIANCE_STORAGE_S3_BUCKET=conformance", "APPLIANCE_STORAGE_S3_PREFIX=appliance",
		"APPLIANCE_STORAGE_S3_ACCESS_KEY_FILE="+ak, "APPLIANCE_STORAGE_S3_SECRET_KEY_FILE="+sk)
	runSuites(t, tools, a, suites...)
	if !c.ObjectExists(t, "conformance", "appliance/appliance/writer.lock") {
		t.Error("the appliance on s3 left no lock object in the bucket")
	}
}

func runSuites(t *testing.T, tools string, a *appliance, which ...suite) {
	for _, s := range which {
		t.Run(s.name, func(t *testing.T) {
			cases, out, runErr := s.run(t, a, filepath.Join(tools, s.tool))
			var passed, skipped int
			var failed []junitCase
			for _, c := range cases {
				switch {
				case c.failed():
					failed = append(failed, c)
				case c.skipped():
					skipped++
				default:
					passed++
				}
			}
			t.Logf("%s: %d passed, %d failed, %d skipped", s.name, passed, len(failed), skipped)
			for _, c := range failed {
				t.Errorf("FAILED %s\n\t%s", c.Name, c.reason())
			}
			switch {
			case runErr != nil && len(failed) == 0:
				t.Errorf("%s exited with %v and no failed case in its report:\n%s", s.tool, runErr, tail(out, 4000))
			case passed == 0:
				t.Errorf("%s passed nothing:\n%s", s.tool, tail(out, 4000))
			}
			if t.Failed() {
				t.Logf("the end of the appliance's log:\n%s", tail(a.log.String(), 4000))
			}
		})
	}
}

// toolsDir is ../shared/tools with both suites in it; without them the
// test skips (fails in CI).
func toolsDir(t *testing.T) string {
	t.Helper()
	why, dir := "", ""
	if shared := testkit.SharedDir(); shared == "" {
		why = "../shared is not beside the repository (set APPLIANCE_SHARED_DIR)"
	} else {
		dir = filepath.Join(shared, "tools")
		for _, s := range suites {
			if _, err := os.Stat(filepath.Join(dir, s.tool)); err != nil {
				why = fmt.Sprintf("the conformance suite %s is missing: %v", s.tool, err)
				break
			}
		}
	}
	if why != "" {
		if os.Getenv("CI") != "" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	return dir
}

// appliance is the running `appliance serve` the suites talk to.
type appliance struct {
	url      string // https://127.0.0.1:PORT
	caFile   string
	password string // the admin's
	log      *testkit.SyncBuffer
}

// startAppliance builds the appliance and serves it on loopback ports
// from a fresh data directory until the test ends, with env (APPLIANCE_*
// settings) added to its environment.
func startAppliance(t *testing.T, env ...string) *appliance {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "appliance")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../../cmd/appliance").CombinedOutput(); err != nil {
		t.Fatalf("build the appliance: %v\n%s", err, out)
	}
	data := t.TempDir()
	httpsAddr, httpAddr := freeAddr(t), freeAddr(t)
	a := &appliance{url: "https://" + httpsAddr, caFile: filepath.Join(data, "ca.crt"), log: &testkit.SyncBuffer{}}
	cmd := exec.Command(bin, "serve", "--data-dir", data, "--https-addr", httpsAddr, "--http-addr", httpAddr, "--log-level", "warn") //nolint:gosec // G204: the binary this test built
	cmd.Env = append(environ("APPLIANCE_", "AWS_"), env...)
	cmd.Stdout, cmd.Stderr = a.log, a.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the appliance: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("the appliance did not stop within 30s of SIGTERM")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get("http://" + httpAddr + "/healthz"); err == nil { //nolint:gosec // G107: a loopback address of this test
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("the appliance exited during its start: %v\n%s", err, a.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the appliance was not healthy within 30s:\n%s", a.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	pw, err := os.ReadFile(filepath.Join(data, "initial-admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	a.password = strings.TrimSpace(string(pw))
	return a
}

// freeAddr is a loopback address with a port the kernel just gave out.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// environ is this process's environment without the variables whose
// names start with one of prefixes, and without proxies.
func environ(prefixes ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		keep := !strings.EqualFold(k, "https_proxy") && !strings.EqualFold(k, "http_proxy")
		for _, p := range prefixes {
			keep = keep && !strings.HasPrefix(k, p)
		}
		if keep {
			env = append(env, kv)
		}
	}
	return env
}

// run runs the suite in an empty folder of its own, on a namespace of its
// own, and returns the cases of its report, its output and how it exited.
func (s suite) run(t *testing.T, a *appliance, tool string) ([]junitCase, string, error) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, s.args...) //nolint:gosec // G204: a test tool of ../shared/tools
	cmd.Dir = dir
	cmd.Env = append(environ("OCI_", "SSL_CERT"),
		"OCI_ROOT_URL="+a.url,
		"OCI_USERNAME=admin",
		"OCI_PASSWORD="+a.password,
		"SSL_CERT_FILE="+a.caFile,
		"OCI_NAMESPACE=conformance/"+s.name,
		"OCI_CROSSMOUNT_NAMESPACE=conformance/"+s.name+"-mount",
		"OCI_TEST_PULL=1",
		"OCI_TEST_PUSH=1",
		"OCI_TEST_CONTENT_DISCOVERY=1",
		"OCI_TEST_CONTENT_MANAGEMENT=1",
		s.reportDir+"="+dir,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within 3 minutes (an S3 gateway without tcp_nodelay makes every request 40 ms slower):\n%s", s.tool, tail(out.String(), 4000))
	}
	cases, err := readJUnit(filepath.Join(dir, "junit.xml"))
	if err != nil {
		t.Fatalf("%s wrote no report (%v; it exited with %v):\n%s", s.tool, err, runErr, tail(out.String(), 4000))
	}
	return cases, out.String(), runErr
}

// junitCase is one <testcase> of either suite's junit.xml: ginkgo's marks
// a failure with status="failed" and a <failure>, the main suite's with
// status="failure" and its reasons in <system-out>.
type junitCase struct {
	Name      string     `xml:"name,attr"`
	Status    string     `xml:"status,attr"`
	Failure   *junitText `xml:"failure"`
	Error     *junitText `xml:"error"`
	Skipped   *junitText `xml:"skipped"`
	SystemOut string     `xml:"system-out"`
}

type junitText struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

func (c junitCase) failed() bool {
	if c.Failure != nil || c.Error != nil {
		return true
	}
	switch c.Status {
	case "", "passed", "skipped", "pending", "disabled":
		return false
	}
	return true // failed, failure, error, panicked, interrupted, timedout, aborted
}

func (c junitCase) skipped() bool {
	return c.Skipped != nil || c.Status == "skipped" || c.Status == "pending" || c.Status == "disabled"
}

// reason is what the report says of a failure, on one line.
func (c junitCase) reason() string {
	var s string
	switch {
	case c.Failure != nil && c.Failure.Message != "":
		s = c.Failure.Message
	case c.Error != nil && c.Error.Message != "":
		s = c.Error.Message
	default:
		s = c.SystemOut
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// readJUnit reads every <testcase> of a junit.xml, in any <testsuite>.
func readJUnit(path string) ([]junitCase, error) {
	data, err := os.ReadFile(path) //nolint:gosec // G304: the report the suite wrote in this test's folder
	if err != nil {
		return nil, err
	}
	var doc struct {
		Suites []struct {
			Cases []junitCase `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	var out []junitCase
	for _, s := range doc.Suites {
		out = append(out, s.Cases...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no test case", path)
	}
	return out, nil
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// TestReadJUnit: failures are found in both suites' reports, whatever
// marks them, and skipped cases are not failures.
func TestReadJUnit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, xml              string
		failed, skipped, cases int
		reason                 string
	}{
		{"ginkgo (v1.1.1)", `<?xml version="1.0"?><testsuites><testsuite name="conformance tests">
			<testcase name="Pull manifest" status="passed"></testcase>
			<testcase name="Setup from env" status="skipped"><skipped message="skipped"></skipped></testcase>
			<testcase name="References setup" status="failed"><failure message="Expected&#xA;  &lt;string&gt;: " type="failed">[FAILED]</failure></testcase>
			<testcase name="Teardown" status="panicked"></testcase>
			</testsuite></testsuites>`, 2, 1, 4, "Expected <string>:"},
		{"main", `<testsuites><testsuite name="OCI Conformance Test">
			<testcase name="OCI Conformance Test/ping" status="passed"><system-err>GET /v2/</system-err></testcase>
			<testcase name="OCI Conformance Test/empty/referrers" status="failure"><system-out>unexpected status code, expected one of [200], received 404&#xA;</system-out></testcase>
			<testcase name="OCI Conformance Test/sha256 blobs/post cancel/blob-post-cancel" status="skipped"></testcase>
			</testsuite></testsuites>`, 1, 1, 3, "received 404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "junit.xml")
			if err := os.WriteFile(path, []byte(tc.xml), 0o600); err != nil {
				t.Fatal(err)
			}
			cases, err := readJUnit(path)
			if err != nil {
				t.Fatal(err)
			}
			var failed, skipped int
			var reasons []string
			for _, c := range cases {
				if c.failed() {
					failed++
					reasons = append(reasons, c.reason())
				} else if c.skipped() {
					skipped++
				}
			}
			if len(cases) != tc.cases || failed != tc.failed || skipped != tc.skipped || !strings.Contains(strings.Join(reasons, "|"), tc.reason) {
				t.Fatalf("%d cases, %d failed %q, %d skipped; want %d, %d (%q), %d", len(cases), failed, reasons, skipped, tc.cases, tc.failed, tc.reason, tc.skipped)
			}
		})
	}
	if _, err := readJUnit(filepath.Join(t.TempDir(), "absent.xml")); err == nil {
		t.Fatal("a missing report was read")
	}
}
