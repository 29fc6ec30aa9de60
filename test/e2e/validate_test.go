package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/testkit"
)

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestValidateCLI drives `appliance validate`, `rewrite` and `evidence
// verify` as an operator does: green with a signed report that verifies
// (and with plain openssl), red with exit 1 naming the missing image and
// its file and line, bad YAML with exit 2 naming the file and line, and an
// edited report refused.
func TestValidateCLI(t *testing.T) {
	testkit.Need(t, "skopeo", "openssl")
	a := startAppliance(t, t.TempDir(), "--hostname", "localhost")
	_, port, _ := strings.Cut(a.httpsAddr, ":")
	local := "localhost:" + port
	layout, _ := ociLayout(t, 4<<10, 1)
	out, err := pushOCI(t, a, layout, "library/app:1.0", "admin:"+a.password)
	mustOK(t, "push", out, err)
	admin := []string{"--username", "admin", "--password-stdin"}
	in := a.password + "\n"
	work := t.TempDir()
	k8s := filepath.Join(work, "k8s")
	if err := os.MkdirAll(k8s, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, data string) string {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write(filepath.Join(k8s, "app.yaml"), "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n    - name: app\n      image: "+local+"/library/app:1.0\n")

	report := filepath.Join(work, "evidence.json")
	out, err = a.cli(in, append([]string{"validate", "--manifests", k8s, "--report", report}, admin...)...)
	mustOK(t, "validate (green)", out, err)
	for _, want := range []string{"registry", "images", "certificates", "all gates passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	pub := filepath.Join(a.dataDir, "receipt.pub")
	out, err = runBin(t, "evidence", "verify", report, "--key", pub)
	mustOK(t, "evidence verify", out, err)
	if !strings.Contains(out, "evidence.json, "+report+".html") && !strings.Contains(out, ".html") {
		t.Errorf("verify did not check the page:\n%s", out)
	}
	// Plain openssl, as docs/validation.md shows it.
	for _, f := range []string{report, report + ".html"} {
		sig, _ := os.ReadFile(f + ".sig")
		der, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
		write(filepath.Join(work, "sig.der"), string(der))
		out, err = run(t, nil, "openssl", "dgst", "-sha256", "-verify", pub, "-signature", filepath.Join(work, "sig.der"), f)
		mustOK(t, "openssl dgst -verify "+filepath.Base(f), out, err)
	}
	// One byte edited: refused, by evidence verify and by openssl.
	data, _ := os.ReadFile(report)
	data[len(data)/2] ^= 1
	write(report, string(data))
	out, err = runBin(t, "evidence", "verify", report)
	mustFail(t, "evidence verify of an edited report", out, err, "does not verify")
	sig, _ := os.ReadFile(report + ".sig")
	der, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	write(filepath.Join(work, "sig.der"), string(der))
	out, err = run(t, nil, "openssl", "dgst", "-sha256", "-verify", pub, "-signature", filepath.Join(work, "sig.der"), report)
	if err == nil || !strings.Contains(out, "Verification failure") {
		t.Errorf("openssl on the edited report: %v\n%s", err, out)
	}

	// A private project's image: pulled with the operator's credentials
	// (exit 0, a warning naming the pull secret); --anonymous, as a cluster
	// without pull secrets: exit 1, saying what to do.
	out, err = pushOCI(t, a, layout, "vendor/app:1.0", "admin:"+a.password)
	mustOK(t, "push vendor", out, err)
	out, err = a.cli(in, append([]string{"project", "set", "vendor", "--private"}, admin...)...)
	mustOK(t, "project set vendor --private", out, err)
	privImages := write(filepath.Join(work, "private.txt"), local+"/library/app:1.0\n"+local+"/vendor/app:1.0\n")
	out, err = a.cli(in, append([]string{"validate", "--images", privImages}, admin...)...)
	if exitCode(err) != 0 || !strings.Contains(out, "private project vendor") || !strings.Contains(out, "imagePullSecret") || !strings.Contains(out, "all gates passed") {
		t.Errorf("validate with a private project's image: exit %d\n%s", exitCode(err), out)
	}
	out, err = a.cli(in, append([]string{"validate", "--anonymous", "--images", privImages}, admin...)...)
	if exitCode(err) != 1 || !strings.Contains(out, "project vendor is not public") || !strings.Contains(out, "without --anonymous") || !strings.Contains(out, privImages+":2") {
		t.Errorf("validate --anonymous with a private project's image: exit %d\n%s", exitCode(err), out)
	}

	// Red: one image missing, exit 1, named with its file and line.
	images := write(filepath.Join(work, "images.txt"), local+"/library/app:1.0\n"+local+"/library/missing:2.0\n")
	out, err = a.cli(in, append([]string{"validate", "--images", images}, admin...)...)
	if exitCode(err) != 1 || !strings.Contains(out, local+"/library/missing:2.0") || !strings.Contains(out, images+":2") || !strings.Contains(out, "gate images failed") {
		t.Errorf("validate with a missing image: exit %d\n%s", exitCode(err), out)
	}
	out, err = a.cli(in, append([]string{"validate", "--json", "--images", images}, admin...)...)
	if exitCode(err) != 1 || !strings.Contains(out, `"status": "failed"`) {
		t.Errorf("validate --json: exit %d\n%s", exitCode(err), out)
	}

	// Bad input: exit 2, naming the file and line.
	bad := write(filepath.Join(work, "bad.yaml"), "kind: Pod\nspec:\n\tcontainers: []\n")
	out, err = a.cli(in, append([]string{"validate", "--manifests", bad}, admin...)...)
	if exitCode(err) != 2 || !strings.Contains(out, bad+": line 3") {
		t.Errorf("validate with bad YAML: exit %d\n%s", exitCode(err), out)
	}
	out, err = a.cli(in, append([]string{"validate", "--against", filepath.Join(work, "nope.json")}, admin...)...)
	if exitCode(err) != 2 || !strings.Contains(out, "nope.json") {
		t.Errorf("validate --against an unreadable file: exit %d\n%s", exitCode(err), out)
	}

	out, err = a.cli(in, append([]string{"validate", "--gate-images", images}, admin...)...)
	if exitCode(err) != 2 || !strings.Contains(out, "unknown flag: --gate-images") {
		t.Errorf("validate with an unknown option: exit %d\n%s", exitCode(err), out)
	}
	out, err = a.cli(in, append([]string{"validate", "--platform", "amd64", "--images", images}, admin...)...)
	if exitCode(err) != 2 || !strings.Contains(out, `platform "amd64" is not os/arch`) {
		t.Errorf("validate with a bad platform: exit %d\n%s", exitCode(err), out)
	}

	// rewrite prints the manifests with outside references replaced.
	outside := write(filepath.Join(work, "gpu.yaml"), "kind: Pod\nspec:\n  containers:\n    - image: nvcr.io/nvidia/gpu-operator:v24.9.0 # the operator\n")
	out, err = runBin(t, "rewrite", "--registry", local, outside)
	mustOK(t, "rewrite", out, err)
	if !strings.Contains(out, "image: "+local+"/nvidia/gpu-operator:v24.9.0 # the operator") {
		t.Errorf("rewrite:\n%s", out)
	}
}

// TestValidateAgainstBundle: the operator's flow across the gap. A bundle
// carrying a NIM profile is created, imported, and the gate measured
// against that very bundle: the profile required by its inventory is
// present, nothing drifts, the refresh trigger is listed. A bundle signed
// by a key the appliance does not trust is refused (exit 2), never green.
func TestValidateAgainstBundle(t *testing.T) {
	work := t.TempDir()
	for _, k := range []string{"release", "rogue"} {
		out, err := runBin(t, "key", "generate", "--private", filepath.Join(work, k+".key"), "--public", filepath.Join(work, k+".pub"))
		mustOK(t, "key generate", out, err)
	}
	profile := filepath.Join(work, "llama3-8b-h100.tar")
	if err := os.WriteFile(profile, []byte(strings.Repeat("model weights ", 10000)), 0o644); err != nil {
		t.Fatal(err)
	}
	// NIM's own model manifest, carried as a file beside the profile.
	nimManifest, err := os.ReadFile("../../internal/validate/nim/testdata/model_manifest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(work, "model_manifest.yaml")
	if err := os.WriteFile(manifest, nimManifest, 0o644); err != nil {
		t.Fatal(err)
	}
	const h100fp8 = "8835c31752fbc67ef658b20a9f78e056914fdef0660206d82f252d62fd96064d"
	spec := filepath.Join(work, "spec.yaml")
	if err := os.WriteFile(spec, []byte(`name: nim-2026-11
files:
  - path: `+profile+`
    kind: nim-profile
    version: "1.0.0"
    refresh: new model or GPU type
    metadata: {image: "nvcr.io/nim/meta/llama3-8b-instruct@sha256:1111111111111111111111111111111111111111111111111111111111111111", profile: "`+h100fp8+`", gpu: H100}
  - path: `+manifest+`
    name: llama3-8b/model_manifest.yaml
    kind: nim-manifest
    metadata: {image: "nvcr.io/nim/meta/llama3-8b-instruct@sha256:1111111111111111111111111111111111111111111111111111111111111111"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(work, "nim.tar")
	out, err := runBin(t, "bundle", "create", "-f", spec, "-o", b, "--key", filepath.Join(work, "release.key"))
	mustOK(t, "bundle create", out, err)
	rogue := filepath.Join(work, "rogue.tar")
	out, err = runBin(t, "bundle", "create", "-f", spec, "-o", rogue, "--key", filepath.Join(work, "rogue.key"))
	mustOK(t, "bundle create (rogue)", out, err)

	a := startAppliance(t, t.TempDir(), "--hostname", "localhost", "--trusted-key", filepath.Join(work, "release.pub"))
	admin := []string{"--username", "admin", "--password-stdin"}
	in := a.password + "\n"
	out, err = a.cli(in, append([]string{"import", b}, admin...)...)
	mustOK(t, "import", out, err)
	out, err = a.cli(in, append([]string{"validate", "--json", "--against", b, "--profile-ids", h100fp8[:8]}, admin...)...)
	mustOK(t, "validate --against the bundle", out, err)
	var res struct {
		Gates []struct{ Gate, Status, Summary string }
		Drift *struct {
			Missing, Extra, Different int
		}
		Staleness []struct{ Artifact, Version, Refresh string }
		Against   struct{ Kind, Bundle, Signer string }
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, g := range res.Gates {
		if g.Gate == "profiles" && (g.Status != "ok" || !strings.Contains(g.Summary, "1 profiles required, 1 present")) {
			t.Errorf("profiles gate: %+v", g)
		}
	}
	if res.Drift == nil || res.Drift.Missing+res.Drift.Extra+res.Drift.Different != 0 || res.Against.Kind != "inventory" || res.Against.Bundle != "nim-2026-11" {
		t.Errorf("drift against the bundle just imported: %+v against %+v", res.Drift, res.Against)
	}
	if len(res.Staleness) != 1 || res.Staleness[0].Artifact != "llama3-8b-h100.tar" || res.Staleness[0].Refresh != "new model or GPU type" {
		t.Errorf("staleness: %+v", res.Staleness)
	}
	// Without a selection every profile of the manifest the bundle carried
	// is required: red, naming one it lacks and its line in the manifest.
	out, err = a.cli(in, append([]string{"validate", "--against", b}, admin...)...)
	if exitCode(err) != 1 || !strings.Contains(out, "gate profiles failed") || !strings.Contains(out, "4 profiles required, 1 present") ||
		!strings.Contains(out, "llama3-8b/model_manifest.yaml:38") {
		t.Errorf("validate --against the bundle, no selection: exit %d\n%s", exitCode(err), out)
	}
	// The same manifest as --profiles, selected by tag.
	out, err = a.cli(in, append([]string{"validate", "--profiles", manifest, "--profile-tag", "gpu=H100", "--profile-tag", "precision=fp8"}, admin...)...)
	if exitCode(err) != 0 || !strings.Contains(out, "1 profiles required, 1 present") {
		t.Errorf("validate --profiles model_manifest.yaml --profile-tag: exit %d\n%s", exitCode(err), out)
	}
	out, err = a.cli(in, append([]string{"validate", "--profiles", manifest, "--profile-ids", strings.Repeat("0", 64)}, admin...)...)
	if exitCode(err) != 2 || !strings.Contains(out, "is in no manifest given") {
		t.Errorf("validate --profile-ids of an unknown profile: exit %d\n%s", exitCode(err), out)
	}
	out, err = a.cli(in, append([]string{"validate", "--against", rogue}, admin...)...)
	if exitCode(err) != 2 || !strings.Contains(out, "not among the") {
		t.Errorf("validate --against an untrusted bundle: exit %d\n%s", exitCode(err), out)
	}
}
