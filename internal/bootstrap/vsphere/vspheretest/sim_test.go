package vspheretest_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere/vspheretest"
)

// These tests talk to the simulator with plain net/http, as any client in
// any process would, so that they show the contract fakes' own checks
// without the vsphere package.

const registriesPath = "/api/vcenter/namespace-management/supervisors/%s/container-image-registries"

// rawClient is a minimal vAPI client.
type rawClient struct {
	t       testing.TB
	base    string // https://127.0.0.1:PORT
	http    *http.Client
	session string
}

func newRawClient(t testing.TB, sdkURL string, caPEM []byte) *rawClient {
	t.Helper()
	u, err := url.Parse(sdkURL)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in CAPEM")
	}
	return &rawClient{
		t:    t,
		base: u.Scheme + "://" + u.Host,
		http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		},
	}
}

// login opens a session and answers the HTTP status of the login.
func (c *rawClient) login(user, password string) int {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.base+"/rest/com/vmware/cis/session", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.SetBasicAuth(user, password)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	var answer struct {
		Value string `json:"value"`
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
			c.t.Fatalf("login answer: %v", err)
		}
		c.session = answer.Value
	}
	return resp.StatusCode
}

// call sends body (JSON-encoded unless it is a string) and answers the
// status and the body of the answer.
func (c *rawClient) call(method, path string, body any) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.session != "" {
		req.Header.Set("vmware-api-session-id", c.session)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, out
}

func errorType(body []byte) string {
	var e struct {
		ErrorType string `json:"error_type"`
	}
	_ = json.Unmarshal(body, &e)
	return e.ErrorType
}

func testCA(t *testing.T) string {
	t.Helper()
	return string(vspheretest.Start(t).CAPEM) // any parseable CA will do
}

func TestFakeChecksRequests(t *testing.T) {
	t.Parallel()
	sim := vspheretest.Start(t)
	c := newRawClient(t, sim.URL, sim.CAPEM)
	regs := fmt.Sprintf(registriesPath, sim.Supervisor)

	if status, _ := c.call(http.MethodGet, regs, nil); status != http.StatusUnauthorized {
		t.Fatalf("GET without a session = %d, want 401", status)
	}
	if status := c.login(sim.Username, "not-the-password"); status != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password = %d, want 401", status)
	}
	if status := c.login(sim.Username, sim.Password); status != http.StatusOK {
		t.Fatalf("login = %d", status)
	}

	ca := testCA(t)
	good := map[string]any{"name": "boot", "image_registry": map[string]any{
		"hostname": "appliance.dc.example", "username": "u", "password": "pull-secret", "certificate_chain": ca}}
	for _, tc := range []struct {
		name       string
		method     string
		path       string
		body       any
		wantStatus int
		wantType   string
	}{
		{"unknown Supervisor", http.MethodGet, fmt.Sprintf(registriesPath, "supervisor-404"), nil, 404, "NOT_FOUND"},
		{"unknown registry", http.MethodGet, regs + "/registry-404", nil, 404, "NOT_FOUND"},
		{"unknown field", http.MethodPost, regs, map[string]any{"name": "x", "image_registry": map[string]any{"hostname": "h"}, "insecure": true}, 400, "INVALID_ARGUMENT"},
		{"no name", http.MethodPost, regs, map[string]any{"image_registry": map[string]any{"hostname": "h"}}, 400, "INVALID_ARGUMENT"},
		{"no hostname", http.MethodPost, regs, map[string]any{"name": "x", "image_registry": map[string]any{}}, 400, "INVALID_ARGUMENT"},
		{"port out of range", http.MethodPost, regs, map[string]any{"name": "x", "image_registry": map[string]any{"hostname": "h", "port": 70000}}, 400, "INVALID_ARGUMENT"},
		{"chain not PEM", http.MethodPost, regs, map[string]any{"name": "x", "image_registry": map[string]any{"hostname": "h", "certificate_chain": "junk"}}, 400, "INVALID_ARGUMENT"},
		{"trailing data", http.MethodPost, regs, `{"name":"x","image_registry":{"hostname":"h"}} {}`, 400, "INVALID_ARGUMENT"},
		{"good", http.MethodPost, regs, good, 200, ""},
		{"same name", http.MethodPost, regs, good, 400, "ALREADY_EXISTS"},
		{"service not Carvel", http.MethodPost, "/api/vcenter/namespace-management/supervisor-services", map[string]any{"custom_spec": map[string]any{}}, 400, "UNSUPPORTED"},
		{"service not base64", http.MethodPost, "/api/vcenter/namespace-management/supervisor-services", map[string]any{"carvel_spec": map[string]any{"version_spec": map[string]any{"content": "%%%"}}}, 400, "INVALID_ARGUMENT"},
	} {
		status, body := c.call(tc.method, tc.path, tc.body)
		if status != tc.wantStatus || errorType(body) != tc.wantType {
			t.Errorf("%s: %s %s = %d %s, want %d %s", tc.name, tc.method, tc.path, status, body, tc.wantStatus, tc.wantType)
		}
	}

	// The documented defaults, and the password stored but never answered.
	status, body := c.call(http.MethodGet, regs, nil)
	if status != 200 || strings.Contains(string(body), "pull-secret") || !strings.Contains(string(body), `"port":443`) {
		t.Fatalf("GET registries = %d %s; want port 443 and no password", status, body)
	}
	got := sim.Registries()
	if len(got) != 1 || got[0].Port != 443 || got[0].Password != "pull-secret" || got[0].CertificateChain != ca || got[0].Default {
		t.Fatalf("Registries() = %+v", got)
	}
	if calls := sim.Calls(); len(calls) == 0 || calls[0] != "GET "+fmt.Sprintf(registriesPath, "supervisor-404") {
		t.Fatalf("Calls() = %v; want the fake's calls only, the refused one without a session left out", calls)
	}
}

const (
	metadata = `apiVersion: data.packaging.carvel.dev/v1alpha1
kind: PackageMetadata
metadata:
  name: harbor.tanzu.vmware.com
spec:
  displayName: Harbor
`
	pkg = `apiVersion: data.packaging.carvel.dev/v1alpha1
kind: Package
metadata:
  name: harbor.tanzu.vmware.com.2.9.1
spec:
  refName: harbor.tanzu.vmware.com
  version: 2.9.1
  template:
    spec:
      fetch:
      - imgpkgBundle:
          image: appliance.dc.example/harbor@sha256:b007
`
)

func carvel(yamlText string) map[string]any {
	return map[string]any{"carvel_spec": map[string]any{"version_spec": map[string]any{
		"content": base64.StdEncoding.EncodeToString([]byte(yamlText))}}}
}

func TestFakeServiceLifecycle(t *testing.T) {
	t.Parallel()
	sim := vspheretest.Start(t)
	c := newRawClient(t, sim.URL, sim.CAPEM)
	if status := c.login(sim.Username, sim.Password); status != http.StatusOK {
		t.Fatalf("login = %d", status)
	}
	const (
		services = "/api/vcenter/namespace-management/supervisor-services"
		service  = services + "/harbor.tanzu.vmware.com"
		version  = service + "/versions/2.9.1"
	)
	installs := "/api/vcenter/namespace-management/supervisors/" + sim.Supervisor + "/supervisor-services"
	install := map[string]any{"supervisor_service": "harbor.tanzu.vmware.com", "version": "2.9.1",
		"yaml_service_config": base64.StdEncoding.EncodeToString([]byte("hostname: h\n"))}
	for _, step := range []struct {
		name       string
		method     string
		path       string
		body       any
		wantStatus int
		wantType   string
	}{
		{"package not named refName.version", http.MethodPost, services,
			carvel(metadata + "---\n" + strings.Replace(pkg, "name: harbor.tanzu.vmware.com.2.9.1", "name: harbor", 1)), 400, "INVALID_ARGUMENT"},
		{"no PackageMetadata", http.MethodPost, services, carvel(pkg), 400, "INVALID_ARGUMENT"},
		{"register", http.MethodPost, services, carvel(metadata + "---\n" + pkg), 204, ""},
		{"register again", http.MethodPost, services, carvel(metadata + "---\n" + pkg), 400, "ALREADY_EXISTS"},
		{"install while DEACTIVATED", http.MethodPost, installs, install, 400, "NOT_ALLOWED_IN_CURRENT_STATE"},
		{"unknown action", http.MethodPatch, service + "?action=start", nil, 400, "INVALID_ARGUMENT"},
		{"activate", http.MethodPatch, service + "?action=activate", nil, 204, ""},
		{"install", http.MethodPost, installs, install, 204, ""},
		{"install again", http.MethodPost, installs, install, 400, "ALREADY_EXISTS"},
		{"delete ACTIVATED version", http.MethodDelete, version, nil, 400, "NOT_ALLOWED_IN_CURRENT_STATE"},
		{"deactivate version", http.MethodPatch, version + "?action=deactivate", nil, 204, ""},
		{"delete installed version", http.MethodDelete, version, nil, 400, "RESOURCE_IN_USE"},
	} {
		status, body := c.call(step.method, step.path, step.body)
		if status != step.wantStatus || errorType(body) != step.wantType {
			t.Fatalf("%s: %s %s = %d %s, want %d %s", step.name, step.method, step.path, status, body, step.wantStatus, step.wantType)
		}
	}

	svcs := sim.Services()
	if len(svcs) != 1 || svcs[0].ID != "harbor.tanzu.vmware.com" || svcs[0].DisplayName != "Harbor" || svcs[0].State != "ACTIVATED" ||
		len(svcs[0].Versions) != 1 || svcs[0].Versions[0].State != "DEACTIVATED" ||
		svcs[0].Versions[0].Images[0] != "appliance.dc.example/harbor@sha256:b007" ||
		string(svcs[0].Versions[0].YAML) != metadata+"---\n"+pkg {
		t.Fatalf("Services() = %+v", svcs)
	}
	in := sim.Installed()
	if len(in) != 1 || in[0].Service != "harbor.tanzu.vmware.com" || in[0].Version != "2.9.1" || string(in[0].Config) != "hostname: h\n" {
		t.Fatalf("Installed() = %+v", in)
	}
}

// Environment of the child process of TestAnotherProcessReachesIt.
const (
	childURL        = "VSPHERETEST_CHILD_URL"
	childCA         = "VSPHERETEST_CHILD_CA"
	childUser       = "VSPHERETEST_CHILD_USER"
	childPassword   = "VSPHERETEST_CHILD_PASSWORD" // #nosec G101 -- the name of a variable
	childSupervisor = "VSPHERETEST_CHILD_SUPERVISOR"
)

// TestAnotherProcessReachesIt runs this test binary again as a separate
// process, as an end-to-end test runs the appliance, and has it register a
// registry over the simulator's loopback listener.
func TestAnotherProcessReachesIt(t *testing.T) {
	if u := os.Getenv(childURL); u != "" {
		ca, err := os.ReadFile(os.Getenv(childCA))
		if err != nil {
			t.Fatal(err)
		}
		c := newRawClient(t, u, ca)
		if status := c.login(os.Getenv(childUser), os.Getenv(childPassword)); status != http.StatusOK {
			t.Fatalf("login from the child = %d", status)
		}
		status, body := c.call(http.MethodPost, fmt.Sprintf(registriesPath, os.Getenv(childSupervisor)),
			map[string]any{"name": "from-child", "image_registry": map[string]any{"hostname": "child.example"}, "default_registry": true})
		if status != http.StatusOK {
			t.Fatalf("create from the child = %d %s", status, body)
		}
		return
	}
	t.Parallel()
	sim := vspheretest.Start(t)
	caFile := filepath.Join(t.TempDir(), "vcenter-ca.pem")
	if err := os.WriteFile(caFile, sim.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestAnotherProcessReachesIt$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		childURL+"="+sim.URL, childCA+"="+caFile, childUser+"="+sim.Username,
		childPassword+"="+sim.Password, childSupervisor+"="+sim.Supervisor)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := sim.Registries()
	if len(got) != 1 || got[0].Name != "from-child" || got[0].Hostname != "child.example" || got[0].Port != 443 || !got[0].Default {
		t.Fatalf("after the child ran, Registries() = %+v", got)
	}
}
