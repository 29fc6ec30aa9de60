package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
	"github.com/appliance-dev/appliance/internal/server/validationapi"
	"github.com/appliance-dev/appliance/internal/testkit"
	"github.com/appliance-dev/appliance/internal/validate"
	"github.com/appliance-dev/appliance/internal/validate/evidence"
)

// validationFixture is a real appliance holding images, a signed bundle
// with a NIM profile and a driver, and two apt packages.
type validationFixture struct {
	*testServer
	host      string // localhost:PORT, the advertised address
	signer    *bundle.Signer
	inventory *bundle.Inventory
	profile   string // the profile file's digest
	keyDir    string
}

const nimImage = "nvcr.io/nim/meta/llama3-8b-instruct@sha256:1111111111111111111111111111111111111111111111111111111111111111"

func newValidationFixture(t *testing.T, hostnames ...string) *validationFixture {
	t.Helper()
	testkit.Need(t, "dpkg-deb", "apt-get", "gpgv")
	keyDir := t.TempDir()
	if err := bundle.GenerateKey(filepath.Join(keyDir, "release.key"), filepath.Join(keyDir, "release.pub")); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *config.Config) {
		c.Hostnames = append([]string{"localhost"}, hostnames...)
		c.Trust.Keys = []string{filepath.Join(keyDir, "release.pub")}
	})
	_, port, _ := strings.Cut(ts.HTTPSAddr(), ":")
	f := &validationFixture{testServer: ts, host: "localhost:" + port, keyDir: keyDir}
	var err error
	if f.signer, err = bundle.LoadSigner(filepath.Join(keyDir, "release.key")); err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})}
	push := func(ref string, img v1.Image) {
		if err := remote.Write(ts.ref(t, ref), img, opts...); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
	}
	img, _ := random.Image(4<<10, 2)
	push("library/app:1.0", img)
	op, _ := random.Image(4<<10, 1)
	push("nvidia/gpu-operator:v24.9.0", op)
	amd, _ := random.Image(2<<10, 1)
	arm, _ := random.Image(2<<10, 1)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	if err := remote.WriteIndex(ts.ref(t, "library/multi:2.0"), idx, opts...); err != nil {
		t.Fatal(err)
	}

	// A signed bundle: a NIM model profile and a driver, with refresh triggers.
	profile := bytes.Repeat([]byte("model weights "), 4096)
	driver := bytes.Repeat([]byte("driver "), 4096)
	f.profile = fmt.Sprintf("sha256:%x", sha256sum(profile))
	blobs := memBlobs{}
	inv := &bundle.Inventory{SchemaVersion: 1, Name: "foundation-2026-11", Created: time.Now().Add(-120 * 24 * time.Hour).UTC().Truncate(time.Second), Tool: "test"}
	for _, b := range [][]byte{profile, driver} {
		d := fmt.Sprintf("sha256:%x", sha256sum(b))
		blobs[d] = b
		inv.Blobs = append(inv.Blobs, bundle.Blob{Digest: d, Size: int64(len(b))})
	}
	inv.Artifacts = []bundle.Artifact{
		{Kind: bundle.KindFile, FileKind: "nim-profile", Source: "https://files.example/llama.tar", Destination: "llama3-8b-h100.tar", Digest: f.profile, Size: int64(len(profile)),
			Refresh: "new model or GPU type", Version: "1.0.0", Metadata: map[string]string{"image": nimImage, "profile": "8835c317", "gpu": "H100"}},
		{Kind: bundle.KindFile, FileKind: "driver", Source: "./driver.run", Destination: "NVIDIA-Linux-550.run", Digest: fmt.Sprintf("sha256:%x", sha256sum(driver)),
			Size: int64(len(driver)), Version: "550.127.05", Refresh: "driver or NVAIE version bump"},
	}
	var buf bytes.Buffer
	if err := bundle.WriteArchive(&buf, inv, []byte(`{"schemaVersion":2,"manifests":[]}`), f.signer, blobs); err != nil {
		t.Fatal(err)
	}
	f.inventory = inv
	req, _ := http.NewRequest(http.MethodPost, ts.base+"/api/v1/imports?source=foundation.tar", &buf)
	req.SetBasicAuth("admin", ts.admin)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("import: %d %s", resp.StatusCode, body)
	}

	// apt: gpu-tools depends on gpu-libs.
	debs := t.TempDir()
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	for _, d := range [][3]string{{"gpu-tools", "1.0", "gpu-libs"}, {"gpu-libs", "1.0", ""}} {
		path := buildTestDeb(t, debs, d[0], d[1], d[2])
		part, _ := w.CreateFormFile("file", filepath.Base(path))
		data, _ := os.ReadFile(path)
		_, _ = part.Write(data)
	}
	_ = w.Close()
	req, _ = http.NewRequest(http.MethodPost, ts.base+"/api/v1/apt/repos/ubuntu/noble/packages", &mp)
	req.SetBasicAuth("admin", ts.admin)
	req.Header.Set("Content-Type", w.FormDataContentType())
	resp, err = ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("apt add: %d %s", resp.StatusCode, body)
	}
	return f
}

func buildTestDeb(t *testing.T, dir, name, version, depends string) string {
	t.Helper()
	root := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: T <t@example.invalid>\nDescription: test %s\n", name, version, name)
	if depends != "" {
		control += "Depends: " + depends + "\n"
	}
	if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+"_"+version+"_all.deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, b)
	}
	return out
}

// validateReq posts a validation and decodes the answer (or the error).
func (f *validationFixture) validate(t *testing.T, req validationapi.Request) (int, validationapi.Answer, APIError) {
	t.Helper()
	var raw json.RawMessage
	code := f.call(t, http.MethodPost, "/api/v1/validation", "admin", f.admin, req, &raw)
	var ans validationapi.Answer
	var apiErr APIError
	if code == http.StatusOK {
		if err := json.Unmarshal(raw, &ans); err != nil {
			t.Fatal(err)
		}
	} else {
		_ = json.Unmarshal(raw, &apiErr)
	}
	return code, ans, apiErr
}

func in(kind, name, data string) validate.Input {
	return validate.Input{Kind: kind, Name: name, Data: []byte(data)}
}

func findings(g *validate.GateResult, severity string) []validate.Finding {
	var out []validate.Finding
	for _, f := range g.Findings {
		if f.Severity == severity {
			out = append(out, f)
		}
	}
	return out
}

func (f *validationFixture) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + f.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  template:
    spec:
      containers:
        - name: app
          image: %s/library/app:1.0
        - name: multi
          image: %s/library/multi:2.0
`

// TestValidationGates runs every gate green against the real appliance
// (pulls over loopback with the CA alone, real apt-get and gpgv), then
// makes each of images, profiles and apt red in turn.
func TestValidationGates(t *testing.T) {
	f := newValidationFixture(t)
	pods := `{"apiVersion": "v1", "items": [
  {"metadata": {"name": "gpu-operator-0"},
   "spec": {"containers": [{"name": "operator", "image": "nvcr.io/nvidia/gpu-operator:v24.9.0"}]}}
]}`
	green := validationapi.Request{Report: true, Request: validate.Request{Inputs: []validate.Input{
		in(validate.InputManifests, "k8s/app.yaml", fmt.Sprintf(deployment, f.host, f.host)),
		in(validate.InputPods, "pods.json", pods),
		in(validate.InputCloudInit, "user-data", "#cloud-config\npackages:\n  - gpu-tools\n"),
		in(validate.InputProfiles, "profiles.yaml", "profiles:\n  - id: 8835c317\n    image: "+nimImage+"\n"),
	}}}
	code, ans, apiErr := f.validate(t, green)
	if code != http.StatusOK {
		t.Fatalf("POST /api/v1/validation = %d %+v", code, apiErr)
	}
	res := ans.Result
	for _, g := range res.Gates {
		t.Logf("gate %s: %s: %s", g.Gate, g.Status, g.Summary)
		if g.Status != validate.StatusOK && g.Status != validate.StatusWarning {
			t.Errorf("gate %s: %s %s %+v", g.Gate, g.Status, g.Summary, g.Findings)
		}
	}
	if !res.OK {
		t.Fatalf("not OK: %+v", res.Gates)
	}
	// The nvcr.io image of the pods dump is reported with its local replacement.
	var nv *validate.Finding
	for _, fi := range res.Gate(validate.GateImages).Findings {
		if fi.What == "nvcr.io/nvidia/gpu-operator:v24.9.0" {
			nv = &fi
		}
	}
	if nv == nil || nv.Local != f.host+"/nvidia/gpu-operator:v24.9.0" || nv.Where != "pods.json:3" {
		t.Errorf("nvcr.io reference: %+v", nv)
	}
	if aptInfo := findings(res.Gate(validate.GateApt), validate.SeverityInfo); len(aptInfo) != 1 || !strings.Contains(aptInfo[0].Problem, "gpu-libs=1.0") {
		t.Errorf("apt resolution: %+v", res.Gate(validate.GateApt).Findings)
	}
	// Every .deb apt would fetch is in the evidence with its sha256.
	debs := 0
	for _, c := range res.Checked {
		if c.Gate == validate.GateApt && strings.HasPrefix(c.What, "package gpu-") && strings.HasPrefix(c.Digest, "sha256:") && len(c.Digest) == 71 {
			debs++
		}
	}
	if debs != 2 {
		t.Errorf("apt packages among the digests checked: %+v", res.Checked)
	}
	stale := map[string]validate.Stale{}
	for _, s := range res.Staleness {
		stale[s.Artifact] = s
	}
	if s := stale["NVIDIA-Linux-550.run"]; s.Version != "550.127.05" || s.Refresh != "driver or NVAIE version bump" || !s.Stale || s.AgeDays < 119 {
		t.Errorf("staleness of the driver: %+v", res.Staleness)
	}
	if len(res.Imports) != 1 || res.Imports[0].Bundle != "foundation-2026-11" {
		t.Errorf("imports covered: %+v", res.Imports)
	}

	// The evidence verifies (with the appliance's receipt.pub and with
	// plain openssl), and fails after a one-byte edit.
	ev := ans.Evidence
	if ev == nil {
		t.Fatal("no evidence")
	}
	keys, err := bundle.LoadTrustedKeys([]string{filepath.Join(f.cfg.DataDir, receiptPubFile)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := evidence.Verify(ev.JSON, ev.Signature, keys); err != nil {
		t.Fatalf("evidence: %v", err)
	}
	edited := bytes.Replace(ev.JSON, []byte(`"ok": true`), []byte(`"ok": truE`), 1)
	if _, _, err := evidence.Verify(edited, ev.Signature, keys); err == nil {
		t.Fatal("an edited report verifies")
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		dir := t.TempDir()
		der, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(ev.Signature)))
		_ = os.WriteFile(filepath.Join(dir, "r.json"), ev.JSON, 0o644)
		_ = os.WriteFile(filepath.Join(dir, "sig.der"), der, 0o644)
		out, err := exec.Command("openssl", "dgst", "-sha256", "-verify", filepath.Join(f.cfg.DataDir, receiptPubFile), "-signature", filepath.Join(dir, "sig.der"), filepath.Join(dir, "r.json")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verified OK") {
			t.Errorf("openssl: %v %s", err, out)
		}
	}

	// Kept, served and exported.
	var got validationapi.Answer
	if code := f.call(t, http.MethodGet, "/api/v1/validation", "admin", f.admin, nil, &got); code != http.StatusOK || got.Result == nil || !got.Result.OK {
		t.Fatalf("GET /api/v1/validation = %d %+v", code, got)
	}
	m := f.metrics(t)
	for _, want := range []string{`appliance_validation_gate_ok{gate="images"} 1`, `appliance_validation_gate_ok{gate="apt"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(m, "appliance_validation_last_success_timestamp_seconds 0\n") || !strings.Contains(m, "appliance_validation_last_success_timestamp_seconds") {
		t.Errorf("last success not exported")
	}

	t.Run("one image missing fails gate 2 naming it and its file", func(t *testing.T) {
		manifests := fmt.Sprintf(deployment, f.host, f.host) + "        - name: gone\n          image: " + f.host + "/library/missing:9.9\n"
		_, ans, _ := f.validate(t, validationapi.Request{Request: validate.Request{Inputs: []validate.Input{in(validate.InputManifests, "k8s/app.yaml", manifests),
			in(validate.InputCloudInit, "user-data", "#cloud-config\npackages: [gpu-tools]\n")}}})
		res := ans.Result
		if res.OK || res.FailedGate() != validate.GateImages {
			t.Fatalf("failed gate %q: %+v", res.FailedGate(), res.Gates)
		}
		errs := findings(res.Gate(validate.GateImages), validate.SeverityError)
		if len(errs) != 1 || errs[0].What != f.host+"/library/missing:9.9" || errs[0].Where != "k8s/app.yaml:13" {
			t.Errorf("findings: %+v", errs)
		}
		for _, g := range []string{validate.GateProfiles, validate.GateApt, validate.GateCertificates} {
			if st := res.Gate(g).Status; st != validate.StatusSkipped {
				t.Errorf("gate %s above the red one: %s", g, st)
			}
		}
		if !strings.Contains(f.metrics(t), `appliance_validation_gate_ok{gate="images"} 0`) {
			t.Error("gate_ok{images} is not 0")
		}
	})
	t.Run("an index without the platform asked fails gate 2", func(t *testing.T) {
		_, ans, _ := f.validate(t, validationapi.Request{Request: validate.Request{Platforms: []string{"linux/s390x"},
			Inputs: []validate.Input{in(validate.InputImages, "images.txt", f.host+"/library/multi:2.0\n")}}})
		errs := findings(ans.Result.Gate(validate.GateImages), validate.SeverityError)
		if len(errs) != 1 || !strings.Contains(errs[0].Problem, "linux/s390x") {
			t.Errorf("findings: %+v", ans.Result.Gate(validate.GateImages).Findings)
		}
	})
	t.Run("a missing model profile fails gate 3 naming it", func(t *testing.T) {
		_, ans, _ := f.validate(t, validationapi.Request{Request: validate.Request{Inputs: []validate.Input{
			in(validate.InputProfiles, "profiles.yaml", "profiles:\n  - id: 8835c317\n    image: "+nimImage+"\n  - id: 4f2a9b00\n    image: "+nimImage+"\n")}}})
		res := ans.Result
		if res.FailedGate() != validate.GateProfiles {
			t.Fatalf("failed gate %q: %+v", res.FailedGate(), res.Gates)
		}
		errs := findings(res.Gate(validate.GateProfiles), validate.SeverityError)
		if len(errs) != 1 || !strings.Contains(errs[0].What, "profile 4f2a9b00") || errs[0].Where != "profiles.yaml:4" {
			t.Errorf("findings: %+v", errs)
		}
	})
	t.Run("a package apt cannot resolve fails gate 4", func(t *testing.T) {
		_, ans, _ := f.validate(t, validationapi.Request{Request: validate.Request{Inputs: []validate.Input{
			in(validate.InputCloudInit, "user-data", "#cloud-config\npackages:\n  - gpu-tools\n  - cuda-toolkit-12-4\n")}}})
		res := ans.Result
		if res.FailedGate() != validate.GateApt {
			t.Fatalf("failed gate %q: %+v", res.FailedGate(), res.Gates)
		}
		errs := findings(res.Gate(validate.GateApt), validate.SeverityError)
		if len(errs) != 1 || errs[0].What != "cuda-toolkit-12-4" || errs[0].Where != "user-data:4" {
			t.Errorf("findings: %+v", errs)
		}
	})
	t.Run("drift against an inventory with one extra and one changed artifact", func(t *testing.T) {
		inv := *f.inventory
		inv.Artifacts = append([]bundle.Artifact{}, inv.Artifacts...)
		inv.Artifacts[0].Digest = "sha256:" + strings.Repeat("e", 64) // changed
		inv.Artifacts = append(inv.Artifacts, bundle.Artifact{Kind: bundle.KindFile, FileKind: "iso", Destination: "ubuntu-24.04.iso", Digest: "sha256:" + strings.Repeat("f", 64)})
		data, _ := inv.Marshal()
		sig, _ := f.signer.Sign(data)
		pub, _ := f.signer.PublicKey()
		_, ans, apiErr := f.validate(t, validationapi.Request{Request: validate.Request{Against: &validate.Against{Name: "inventory.json", Inventory: data, Signature: sig, SignerKey: pub}}})
		if ans.Result == nil {
			t.Fatalf("%+v", apiErr)
		}
		d := ans.Result.Drift
		if d == nil || d.Missing != 1 || d.Different != 1 {
			t.Fatalf("drift %+v", d)
		}
		names := map[string]string{}
		for _, x := range d.Differences {
			names[x.Kind] = x.Name
		}
		if names[validate.DriftMissing] != "ubuntu-24.04.iso" || names[validate.DriftDifferent] != "llama3-8b-h100.tar" {
			t.Errorf("differences %+v", d.Differences)
		}
		// Unsigned, and signed by a key the appliance does not trust: refused.
		for name, a := range map[string]*validate.Against{
			"unsigned": {Name: "inventory.json", Inventory: data},
			"untrusted": func() *validate.Against {
				dir := t.TempDir()
				_ = bundle.GenerateKey(filepath.Join(dir, "k"), filepath.Join(dir, "k.pub"))
				s, _ := bundle.LoadSigner(filepath.Join(dir, "k"))
				sg, _ := s.Sign(data)
				p, _ := s.PublicKey()
				return &validate.Against{Name: "inventory.json", Inventory: data, Signature: sg, SignerKey: p}
			}(),
		} {
			code, _, apiErr := f.validate(t, validationapi.Request{Request: validate.Request{Against: a}})
			if code != http.StatusBadRequest || apiErr.Error.Code != "BAD_INPUT" {
				t.Errorf("%s inventory: %d %+v", name, code, apiErr)
			}
		}
	})
	t.Run("bad input is refused, never a green gate", func(t *testing.T) {
		for name, req := range map[string]validate.Request{
			"yaml":     {Inputs: []validate.Input{in(validate.InputManifests, "bad.yaml", "kind: Pod\nspec:\n\tcontainers: []\n")}},
			"kind":     {Inputs: []validate.Input{in("helm", "x", "")}},
			"platform": {Platforms: []string{"amd64"}},
		} {
			code, _, apiErr := f.validate(t, validationapi.Request{Request: req})
			if code != http.StatusBadRequest {
				t.Errorf("%s: %d %+v", name, code, apiErr)
			}
			if name == "yaml" && !strings.Contains(apiErr.Error.Message, "bad.yaml: line 3") {
				t.Errorf("yaml error names no file and line: %s", apiErr.Error.Message)
			}
		}
	})
	// Last: it breaks the repository for what follows.
	t.Run("a changed InRelease fails gate 4 with gpgv", func(t *testing.T) {
		var changed []string
		_ = filepath.WalkDir(filepath.Join(f.cfg.DataDir, aptDir), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == "InRelease" && strings.Contains(p, "noble") {
				data, _ := os.ReadFile(p)
				if i := bytes.Index(data, []byte("Suite: ")); i >= 0 {
					data[i+7] ^= 0x20
					if os.WriteFile(p, data, 0o644) == nil {
						changed = append(changed, p)
					}
				}
			}
			return nil
		})
		if len(changed) == 0 {
			t.Fatal("no InRelease found to change")
		}
		_, ans, _ := f.validate(t, validationapi.Request{})
		res := ans.Result
		if res.FailedGate() != validate.GateApt {
			t.Fatalf("failed gate %q: %+v", res.FailedGate(), res.Gates)
		}
		errs := findings(res.Gate(validate.GateApt), validate.SeverityError)
		if len(errs) != 1 || errs[0].What != "ubuntu/noble InRelease" || !strings.Contains(errs[0].Problem, "gpgv") {
			t.Errorf("findings: %+v", errs)
		}
	})
}

// TestValidationRegistryGateRed: an advertised name that does not resolve
// fails gate 1, and nothing above it runs.
func TestValidationRegistryGateRed(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.Hostnames = []string{"localhost", "registry.no-such-domain.invalid"} })
	var ans validationapi.Answer
	if code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, validationapi.Request{}, &ans); code != http.StatusOK {
		t.Fatalf("POST = %d", code)
	}
	res := ans.Result
	if res.FailedGate() != validate.GateRegistry {
		t.Fatalf("failed gate %q: %+v", res.FailedGate(), res.Gates)
	}
	errs := findings(res.Gate(validate.GateRegistry), validate.SeverityError)
	if len(errs) != 1 || errs[0].What != "registry.no-such-domain.invalid" || !strings.Contains(errs[0].Problem, "does not resolve") {
		t.Errorf("findings: %+v", errs)
	}
	if res.Gate(validate.GateCertificates).Status != validate.StatusSkipped {
		t.Errorf("certificates ran above a red registry gate")
	}
	// The last result survives a restart of the state (read back from disk).
	data, err := os.ReadFile(filepath.Join(ts.cfg.DataDir, validationapi.ResultFile))
	if err != nil || !bytes.Contains(data, []byte("registry.no-such-domain.invalid")) {
		t.Errorf("kept result: %v %s", err, data)
	}
}

type memBlobs map[string][]byte

func (m memBlobs) Open(d string) (io.ReadCloser, error) {
	b, ok := m[d]
	if !ok {
		return nil, fmt.Errorf("no blob %s", d)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func sha256sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestValidationScheduleAndReceipt: the schedule re-runs the last request
// (here a drift against the appliance's own receipt, which then finds the
// tag pushed since as extra), and its result is kept and exported.
func TestValidationScheduleAndReceipt(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	opts := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})}
	img, _ := random.Image(1<<10, 1)
	if err := remote.Write(ts.ref(t, "library/app:1.0"), img, opts...); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, ts.base+"/api/v1/receipt", nil)
	req.SetBasicAuth("admin", ts.admin)
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	receipt, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ans validationapi.Answer
	body := validationapi.Request{Request: validate.Request{Against: &validate.Against{Name: "enclave.receipt", Receipt: receipt}}}
	if code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, body, &ans); code != http.StatusOK {
		t.Fatalf("POST = %d", code)
	}
	if d := ans.Result.Drift; d == nil || len(d.Differences) != 0 || ans.Result.Against.Kind != "receipt" {
		t.Fatalf("drift against its own fresh receipt: %+v %+v", d, ans.Result.Against)
	}
	if err := remote.Write(ts.ref(t, "library/app:2.0"), img, opts...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ts.validation.Schedule(ctx, 20*time.Millisecond)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got validationapi.Answer
		ts.call(t, http.MethodGet, "/api/v1/validation", "admin", ts.admin, nil, &got)
		if d := got.Result.Drift; d != nil && d.Extra == 1 && d.Differences[0].Name == "library/app:2.0" {
			if got.By != "schedule" {
				t.Errorf("a scheduled run is by %q", got.By)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the schedule did not re-run the request within 20s: %+v", got.Result.Drift)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	// Only an admin replaces the result the metrics show and the request
	// the schedule re-runs; any user reads it.
	const pw = "a-long-guest-password-1234"
	if code := ts.call(t, http.MethodPost, "/api/v1/users", "admin", ts.admin, UserRequest{Name: "viewer", Password: pw, Role: "guest"}, nil); code != http.StatusCreated {
		t.Fatalf("add guest = %d", code)
	}
	if code := ts.call(t, http.MethodPost, "/api/v1/validation", "viewer", pw, validationapi.Request{}, nil); code != http.StatusForbidden {
		t.Errorf("a guest's run = %d, want 403", code)
	}
	if code := ts.call(t, http.MethodGet, "/api/v1/validation", "viewer", pw, nil, nil); code != http.StatusOK {
		t.Errorf("a guest's read = %d", code)
	}
	if code := ts.call(t, http.MethodGet, "/api/v1/validation", "", "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("an anonymous read = %d", code)
	}
	// A receipt signed by another key is refused.
	dir := t.TempDir()
	_ = bundle.GenerateKey(filepath.Join(dir, "k"), filepath.Join(dir, "k.pub"))
	other, _ := bundle.LoadSigner(filepath.Join(dir, "k"))
	forged, _ := bundle.SignReceipt(&bundle.Receipt{Appliance: "x"}, other)
	var apiErr APIError
	body = validationapi.Request{Request: validate.Request{Against: &validate.Against{Name: "forged.receipt", Receipt: forged}}}
	if code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, body, &apiErr); code != http.StatusBadRequest || !strings.Contains(apiErr.Error.Message, "forged.receipt") {
		t.Errorf("forged receipt: %d %+v", code, apiErr)
	}
}

// TestValidationStandbyDrift: in standby, the gate reports the follower's
// drift from its primary (reused, not recomputed): a tag only the standby
// holds is extra, against the primary.
func TestValidationStandbyDrift(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	node := testkit.StartNode(t)
	admin := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})}
	if err := remote.Write(ts.ref(t, "library/app:1"), testkit.RandomImage(t, 4096, 1), admin...); err != nil {
		t.Fatal(err)
	}
	var p promote.Promotion
	if got := ts.call(t, "POST", "/api/v1/promotions", "admin", ts.admin, opsapi.PromoteRequest{Target: node.URL, TargetCA: string(node.CAPEM), All: true}, &p); got != 202 {
		t.Fatalf("promotion = %d %+v", got, p)
	}
	deadline := time.Now().Add(time.Minute)
	for len(ts.auditEntries(t, "action=promotion.end")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the promotion did not end within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := remote.Write(ts.ref(t, "library/here:1"), testkit.RandomImage(t, 4096, 1), admin...); err != nil {
		t.Fatal(err)
	}
	var ans opsapi.StandbyAnswer
	if got := ts.call(t, "POST", "/api/v1/standby", "admin", ts.admin, opsapi.StandbyRequest{Primary: node.URL, PrimaryCA: string(node.CAPEM), Projects: []string{"library"}}, &ans); got != 200 || ans.SyncError != "" {
		t.Fatalf("standby = %d %+v", got, ans)
	}
	var va validationapi.Answer
	if code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, validationapi.Request{}, &va); code != http.StatusOK {
		t.Fatalf("POST = %d", code)
	}
	d := va.Result.Drift
	if d == nil || !d.Standby || d.Extra != 1 || d.Differences[0].Name != "library/here:1" || d.Differences[0].Against != "primary" {
		t.Fatalf("standby drift: %+v", d)
	}
}

// TestValidationTakesInputsPastTheAPILimit: manifests are often larger
// than the 1 MiB the other JSON routes take; the route bounds itself at
// validationapi.MaxBody.
func TestValidationTakesInputsPastTheAPILimit(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	big := strings.Repeat("# a comment line of a large rendered chart, padding it past one MiB\n", 40000)
	var ans validationapi.Answer
	req := validationapi.Request{Request: validate.Request{Inputs: []validate.Input{in(validate.InputImages, "images.txt", big)}}}
	if code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, req, &ans); code != http.StatusOK || ans.Result == nil {
		t.Fatalf("POST with %d bytes of input = %d", len(big), code)
	}
	if in := ans.Result.Inputs; len(in) != 1 || in[0].Bytes != len(big) {
		t.Errorf("inputs: %+v", in)
	}
}

// TestValidationPrivateProjects: an admin's run pulls an image of a
// private project with the admin's own rights, over the network (green,
// with a warning that pods need a pull secret); --anonymous, as a cluster
// without pull secrets, is red with what to do; the schedule pulls it as
// the appliance. Gate 1 keeps pulling only the public projects,
// anonymously. What GET /api/v1/validation serves a member of other
// projects names neither the private repository nor its digest, and an
// anonymous caller gets nothing.
func TestValidationPrivateProjects(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.Hostnames = []string{"localhost"} })
	_, port, _ := strings.Cut(ts.HTTPSAddr(), ":")
	host := "localhost:" + port
	opts := []remote.Option{remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})}
	pub, priv := testkit.RandomImage(t, 4096, 1), testkit.RandomImage(t, 4096, 2)
	for ref, img := range map[string]v1.Image{"library/app:1.0": pub, "vendor/secret-app:2.0": priv} {
		if err := remote.Write(ts.ref(t, ref), img, opts...); err != nil {
			t.Fatal(err)
		}
	}
	privDigest, _ := priv.Digest()
	if code := ts.call(t, http.MethodPut, "/api/v1/projects/vendor", "admin", ts.admin, ProjectRequest{Public: ptr(false)}, nil); code != http.StatusOK {
		t.Fatalf("make vendor private = %d", code)
	}
	images := in(validate.InputImages, "images.txt", host+"/library/app:1.0\n"+host+"/vendor/secret-app:2.0\n")
	post := func(req validate.Request) *validate.Result {
		t.Helper()
		var ans validationapi.Answer
		if code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, validationapi.Request{Request: req}, &ans); code != http.StatusOK || ans.Result == nil {
			t.Fatalf("POST = %d", code)
		}
		return ans.Result
	}

	// As a cluster without pull secrets: red, saying what to do.
	res := post(validate.Request{Inputs: []validate.Input{images}, Anonymous: true})
	if res.FailedGate() != validate.GateImages {
		t.Fatalf("anonymous run: failed gate %q: %+v", res.FailedGate(), res.Gates)
	}
	errs := findings(res.Gate(validate.GateImages), validate.SeverityError)
	if len(errs) != 1 || errs[0].What != host+"/vendor/secret-app:2.0" || errs[0].Where != "images.txt:2" ||
		!strings.Contains(errs[0].Problem, "project vendor is not public") || !strings.Contains(errs[0].Action, "without --anonymous") {
		t.Errorf("anonymous run's findings: %+v", errs)
	}

	// With the admin's credentials: green, a warning naming the pull secret.
	res = post(validate.Request{Inputs: []validate.Input{images}})
	g := res.Gate(validate.GateImages)
	if !res.OK || g.Status != validate.StatusWarning {
		t.Fatalf("admin's run: %+v", res.Gates)
	}
	warns := findings(g, validate.SeverityWarning)
	if len(warns) != 1 || warns[0].Repository != "vendor/secret-app" || warns[0].Where != "images.txt:2" ||
		!strings.Contains(warns[0].Problem, "private project vendor: pulled with the credentials of admin") || !strings.Contains(warns[0].Action, "imagePullSecret") {
		t.Errorf("admin's run's warnings: %+v", warns)
	}
	checked := map[string]string{}
	registryPulls := 0
	for _, c := range res.Checked {
		checked[c.Gate+" "+c.What] = c.Digest
		if c.Gate == validate.GateRegistry {
			registryPulls++
		}
	}
	if checked["images "+host+"/vendor/secret-app:2.0"] != privDigest.String() {
		t.Errorf("the private image's digest is not among those checked: %+v", res.Checked)
	}
	// Gate 1 pulled the public project anonymously, and only it.
	if registryPulls != 1 || checked["registry "+host+"/library/app:1.0"] == "" {
		t.Errorf("checked: %+v", res.Checked)
	}

	// The schedule re-runs it as the appliance itself.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ts.validation.Schedule(ctx, 20*time.Millisecond)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got validationapi.Answer
		ts.call(t, http.MethodGet, "/api/v1/validation", "admin", ts.admin, nil, &got)
		if got.By == "schedule" {
			w := findings(got.Result.Gate(validate.GateImages), validate.SeverityWarning)
			if !got.Result.OK || len(w) != 1 || !strings.Contains(w[0].Problem, "the appliance") {
				t.Errorf("scheduled run: %+v", got.Result.Gates)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the schedule did not run within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()

	// Who reads the last result.
	const pw = "a-long-member-password-1234"
	projects := []string{"team"}
	if code := ts.call(t, http.MethodPost, "/api/v1/users", "admin", ts.admin, UserRequest{Name: "member", Password: pw, Role: "developer", Projects: &projects}, nil); code != http.StatusCreated {
		t.Fatalf("add member = %d", code)
	}
	read := func(user, pass string) (int, string) {
		t.Helper()
		var raw json.RawMessage
		code := ts.call(t, http.MethodGet, "/api/v1/validation", user, pass, nil, &raw)
		return code, string(raw)
	}
	code, body := read("admin", ts.admin)
	if code != http.StatusOK || !strings.Contains(body, "vendor/secret-app") || !strings.Contains(body, privDigest.String()) {
		t.Fatalf("admin's read = %d, lacks the private image:\n%s", code, body)
	}
	code, body = read("member", pw)
	if code != http.StatusOK {
		t.Fatalf("member's read = %d", code)
	}
	if strings.Contains(body, "secret-app") || strings.Contains(body, privDigest.String()) {
		t.Errorf("a member of another project reads the private repository or its digest:\n%s", body)
	}
	var seen validationapi.Answer
	_ = json.Unmarshal([]byte(body), &seen)
	if seen.Result == nil || seen.Result.Withheld == 0 || !strings.Contains(body, host+"/library/app:1.0") || seen.Result.Gate(validate.GateImages).Status != validate.StatusWarning {
		t.Errorf("member's view: %s", body)
	}
	code, body = read("", "")
	if code != http.StatusUnauthorized || strings.Contains(body, "secret-app") || strings.Contains(body, privDigest.String()) {
		t.Errorf("anonymous read = %d:\n%s", code, body)
	}
}

func ptr[T any](v T) *T { return &v }

// importBundle signs inv and imports it with the blobs it lists.
func importBundle(t *testing.T, ts *testServer, signer *bundle.Signer, inv *bundle.Inventory, blobs memBlobs) {
	t.Helper()
	var buf bytes.Buffer
	if err := bundle.WriteArchive(&buf, inv, []byte(`{"schemaVersion":2,"manifests":[]}`), signer, blobs); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, ts.base+"/api/v1/imports?source="+inv.Name+".tar", &buf)
	req.SetBasicAuth("admin", ts.admin)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("import %s: %d %s", inv.Name, resp.StatusCode, body)
	}
}

// The profiles of internal/validate/nim/testdata/model_manifest.yaml.
const (
	nimH100FP8  = "8835c31752fbc67ef658b20a9f78e056914fdef0660206d82f252d62fd96064d"
	nimH100FP16 = "e3a5f1c0d0a5ed1a6cf9b1e1a8d4b1c2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8"
)

// TestValidationNIMManifest: gate 3 takes NVIDIA NIM's own
// model_manifest.yaml, as --profiles or as the file an --against bundle
// carried (read from the file store, its sha256 checked against the
// inventory), with the required profiles selected by id or tag, or all
// of them. The appliance holds the H100 fp8 profile only.
func TestValidationNIMManifest(t *testing.T) {
	t.Parallel()
	keyDir := t.TempDir()
	if err := bundle.GenerateKey(filepath.Join(keyDir, "release.key"), filepath.Join(keyDir, "release.pub")); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *config.Config) {
		c.Hostnames = []string{"localhost"}
		c.Trust.Keys = []string{filepath.Join(keyDir, "release.pub")}
	})
	signer, err := bundle.LoadSigner(filepath.Join(keyDir, "release.key"))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile("../validate/nim/testdata/model_manifest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	weights := bytes.Repeat([]byte("h100 fp8 engine "), 4096)
	md, wd := fmt.Sprintf("sha256:%x", sha256sum(manifest)), fmt.Sprintf("sha256:%x", sha256sum(weights))
	inv := &bundle.Inventory{SchemaVersion: 1, Name: "nim-llama3-2026-12", Created: time.Now().UTC().Truncate(time.Second), Tool: "test",
		Blobs: []bundle.Blob{{Digest: md, Size: int64(len(manifest))}, {Digest: wd, Size: int64(len(weights))}},
		Artifacts: []bundle.Artifact{
			{Kind: bundle.KindFile, FileKind: validate.FileKindNIMManifest, Source: "/opt/nim/etc/default/model_manifest.yaml", Destination: "llama3-8b/model_manifest.yaml",
				Digest: md, Size: int64(len(manifest)), Metadata: map[string]string{"image": nimImage}},
			{Kind: bundle.KindFile, FileKind: validate.FileKindNIMProfile, Source: "./h100-fp8.tar", Destination: "llama3-8b/h100-fp8.tar", Digest: wd, Size: int64(len(weights)),
				Metadata: map[string]string{"image": nimImage, "profile": nimH100FP8, "gpu": "H100"}},
		}}
	importBundle(t, ts, signer, inv, memBlobs{md: manifest, wd: weights})
	invData, _ := inv.Marshal()
	invSig, _ := signer.Sign(invData)
	against := &validate.Against{Name: "inventory.json", Inventory: invData, Signature: invSig}

	post := func(req validate.Request) (int, *validate.Result, APIError) {
		t.Helper()
		var raw json.RawMessage
		code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, validationapi.Request{Request: req}, &raw)
		var ans validationapi.Answer
		var apiErr APIError
		if code == http.StatusOK {
			_ = json.Unmarshal(raw, &ans)
		} else {
			_ = json.Unmarshal(raw, &apiErr)
		}
		return code, ans.Result, apiErr
	}
	nimFile := in(validate.InputProfiles, "model_manifest.yaml", string(manifest))
	for _, tc := range []struct {
		name       string
		req        validate.Request
		status     string
		summary    string
		missing    []string // profile ids named by an error finding, with where
		missingAt  string
		image      string // the NIM image the finding names
		checkedNIM bool   // the manifest file is among the digests checked
	}{
		{name: "--profiles manifest, one id", req: validate.Request{Inputs: []validate.Input{nimFile}, ProfileIDs: []string{nimH100FP8[:12]}},
			status: validate.StatusOK, summary: "1 profiles required, 1 present"},
		{name: "--profiles manifest, gpu=H100", req: validate.Request{Inputs: []validate.Input{nimFile}, ProfileTags: []string{"gpu=H100"}},
			status: validate.StatusFailed, summary: "2 profiles required, 1 present", missing: []string{nimH100FP16}, missingAt: "model_manifest.yaml:38",
			image: "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0"}, // its container_url: no digest known
		{name: "--profiles manifest, nothing selected: all", req: validate.Request{Inputs: []validate.Input{nimFile}},
			status: validate.StatusFailed, summary: "4 profiles required, 1 present"},
		{name: "--against the bundle, one id", req: validate.Request{Against: against, ProfileIDs: []string{nimH100FP8}},
			status: validate.StatusOK, summary: "1 profiles required, 1 present", checkedNIM: true},
		{name: "--against the bundle, precision=fp16", req: validate.Request{Against: against, ProfileTags: []string{"precision=fp16"}},
			status: validate.StatusFailed, summary: "3 profiles required, 0 present", missing: []string{nimH100FP16}, missingAt: "llama3-8b/model_manifest.yaml:38",
			image: nimImage, checkedNIM: true}, // the manifest file's metadata.image
		{name: "--against the bundle, a tag no profile has", req: validate.Request{Against: against, ProfileTags: []string{"gpu=H200"}},
			status: validate.StatusFailed, checkedNIM: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, res, apiErr := post(tc.req)
			if code != http.StatusOK {
				t.Fatalf("POST = %d %+v", code, apiErr)
			}
			g := res.Gate(validate.GateProfiles)
			if g.Status != tc.status || !strings.Contains(g.Summary, tc.summary) {
				t.Fatalf("profiles gate: %s %q %+v", g.Status, g.Summary, g.Findings)
			}
			errs := findings(g, validate.SeverityError)
			for _, id := range tc.missing {
				found := false
				for _, f := range errs {
					if strings.Contains(f.What, "profile "+id+" of "+tc.image+":") && f.Where == tc.missingAt && strings.Contains(f.What, "precision=fp16") {
						found = true
					}
				}
				if !found {
					t.Errorf("no finding names profile %s at %s: %+v", id, tc.missingAt, errs)
				}
			}
			if tc.status == validate.StatusFailed && len(errs) == 0 {
				t.Errorf("a red gate without an error finding")
			}
			if strings.Contains(tc.name, "H200") && (len(errs) != 1 || !strings.Contains(errs[0].Problem, "no profile of llama3-8b/model_manifest.yaml has the tags gpu=H200")) {
				t.Errorf("selection matching nothing: %+v", errs)
			}
			nim := false
			for _, c := range res.Checked {
				if c.What == "NIM manifest llama3-8b/model_manifest.yaml" && c.Digest == md {
					nim = true
				}
			}
			if nim != tc.checkedNIM {
				t.Errorf("manifest among the digests checked: %v, want %v: %+v", nim, tc.checkedNIM, res.Checked)
			}
		})
	}

	t.Run("a manifest that is not the inventory's fails gate 3", func(t *testing.T) {
		other := *inv
		other.Artifacts = append([]bundle.Artifact{}, inv.Artifacts...)
		other.Artifacts[0].Digest = "sha256:" + strings.Repeat("e", 64)
		data, _ := other.Marshal()
		sig, _ := signer.Sign(data)
		_, res, apiErr := post(validate.Request{Against: &validate.Against{Name: "inventory.json", Inventory: data, Signature: sig}, ProfileIDs: []string{nimH100FP8}})
		if res == nil {
			t.Fatalf("%+v", apiErr)
		}
		errs := findings(res.Gate(validate.GateProfiles), validate.SeverityError)
		if res.FailedGate() != validate.GateProfiles || len(errs) != 1 || !strings.Contains(errs[0].Problem, "the inventory carried sha256:eeee") {
			t.Errorf("findings: %+v", res.Gate(validate.GateProfiles))
		}
	})

	t.Run("bad input is refused, never a green gate", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			req  validate.Request
			want string
		}{
			{"unparsable manifest", validate.Request{Inputs: []validate.Input{in(validate.InputProfiles, "nim.yaml", "profiles:\n- id: 8835c317\n  model: meta/x\n  release: @1\n")}}, "nim.yaml: line 4"},
			{"manifest without profiles", validate.Request{Inputs: []validate.Input{in(validate.InputProfiles, "nim.yaml", "profiles: []\n")}}, "nim.yaml: lists no profiles"},
			{"unknown profile id", validate.Request{Inputs: []validate.Input{nimFile}, ProfileIDs: []string{strings.Repeat("0", 64)}}, "profile " + strings.Repeat("0", 64) + " is in no manifest given (model_manifest.yaml)"},
			{"a tag without value", validate.Request{Inputs: []validate.Input{nimFile}, ProfileTags: []string{"gpu"}}, `profile tag "gpu": want key=value`},
			{"a selection without a manifest", validate.Request{ProfileIDs: []string{nimH100FP8}}, "select from a NIM model manifest"},
		} {
			code, _, apiErr := post(tc.req)
			if code != http.StatusBadRequest || apiErr.Error.Code != "BAD_INPUT" || !strings.Contains(apiErr.Error.Message, tc.want) {
				t.Errorf("%s: %d %+v, want 400 BAD_INPUT naming %q", tc.name, code, apiErr, tc.want)
			}
		}
	})
}

// TestValidationRegistryGateRedTLSAndPull: gate 1 is red when TLS does
// not verify with the CA it is given alone (a client trusting another
// CA), and when an anonymous pull of a public project fails (its layer
// lost from storage); nothing above it runs.
func TestValidationRegistryGateRedTLSAndPull(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.Hostnames = []string{"localhost"} })
	_, port, _ := strings.Cut(ts.HTTPSAddr(), ":")
	other := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	otherCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Certificate().Raw})
	v, err := validate.New(validate.Options{URL: "https://localhost:" + port, CAPEM: otherCA})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	res, err := v.Run(t.Context(), validate.Request{})
	if err != nil {
		t.Fatal(err)
	}
	errs := findings(res.Gate(validate.GateRegistry), validate.SeverityError)
	if res.FailedGate() != validate.GateRegistry || len(errs) == 0 || errs[0].What != "localhost" || !strings.Contains(errs[0].Problem, "TLS with the appliance's CA alone fails") {
		t.Errorf("another CA: %+v", res.Gates)
	}

	img := testkit.RandomImage(t, 4096, 1)
	if err := remote.Write(ts.ref(t, "library/app:1.0"), img, remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	var lost string
	_ = filepath.WalkDir(ts.cfg.DataDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "data" && filepath.Base(filepath.Dir(p)) == ld.Hex {
			lost = p
		}
		return nil
	})
	if lost == "" || os.Remove(lost) != nil {
		t.Fatalf("the layer %s was not found in storage", ld)
	}
	var ans validationapi.Answer
	if code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, validationapi.Request{}, &ans); code != http.StatusOK {
		t.Fatalf("POST = %d", code)
	}
	errs = findings(ans.Result.Gate(validate.GateRegistry), validate.SeverityError)
	if ans.Result.FailedGate() != validate.GateRegistry || len(errs) != 1 || !strings.HasSuffix(errs[0].What, "/library/app:1.0") || !strings.Contains(errs[0].Problem, "anonymous pull fails") {
		t.Errorf("a lost layer: %+v", ans.Result.Gates)
	}
	if ans.Result.Gate(validate.GateCertificates).Status != validate.StatusSkipped {
		t.Error("certificates ran above a red registry gate")
	}
}

// TestValidationUnknownOption: an option the gate does not know is
// refused with 400 naming it, and no result is kept (never a green gate).
func TestValidationUnknownOption(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	for body, want := range map[string]string{
		`{"gates": ["images"]}`:                 `unknown field "gates"`,
		`{"profile_tags": "gpu=H100"}`:          "profile_tags",
		`{"anonymous": true, "skip_tls": true}`: `unknown field "skip_tls"`,
	} {
		var apiErr APIError
		if code := ts.call(t, http.MethodPost, "/api/v1/validation", "admin", ts.admin, body, &apiErr); code != http.StatusBadRequest || !strings.Contains(apiErr.Error.Message, want) {
			t.Errorf("POST %s = %d %+v, want 400 naming %q", body, code, apiErr, want)
		}
	}
	if code := ts.call(t, http.MethodGet, "/api/v1/validation", "admin", ts.admin, nil, nil); code != http.StatusNotFound {
		t.Errorf("a result was kept after refused runs: GET = %d", code)
	}
}
