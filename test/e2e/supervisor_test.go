package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere/vspheretest"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// A Harbor Supervisor Service's Carvel package, as its imgpkg bundle
// carries it beside .imgpkg/images.yml.
const (
	carvelMetadata = `apiVersion: data.packaging.carvel.dev/v1alpha1
kind: PackageMetadata
metadata:
  name: harbor.tanzu.vmware.com
spec:
  displayName: Harbor
  shortDescription: Harbor as a Supervisor Service
`
	carvelPackage = `apiVersion: data.packaging.carvel.dev/v1alpha1
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
          image: projects.packages.broadcom.com/vsphere/harbor-service@sha256:0000000000000000000000000000000000000000000000000000000000000000
      template:
      - ytt: {paths: [config/]}
      deploy:
      - kapp: {}
`
)

// TestSupervisorHandover registers the appliance with a vSphere
// Supervisor, registers and installs the Harbor Supervisor Service from
// the Carvel package of a real imgpkg bundle (made by imgpkg push) pointing
// at the appliance, refuses to re-point it before the promotion, and after
// the promotion into a real Harbor re-points it there and makes Harbor the
// default registry.
//
// vCenter cannot run here: govmomi's simulator (vcsim) stands in for it,
// with contract fakes of the documented endpoints it lacks (container
// image registries, stored Supervisor Services, installs on a Supervisor;
// see internal/bootstrap/vsphere/vspheretest). The appliance reaches it
// over HTTPS on loopback as it would reach a vCenter.
func TestSupervisorHandover(t *testing.T) {
	testkit.Need(t, "skopeo")
	h := sharedHarbor(t)
	sim := vspheretest.Start(t)
	a := startAppliance(t, t.TempDir(), "--hostname", "registry.enclave.test")
	work := t.TempDir()
	vcCA := filepath.Join(work, "vcenter-ca.pem")
	if err := os.WriteFile(vcCA, sim.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	vcPass := writeSecret(t, sim.Password)
	vc := func(args ...string) []string {
		return append([]string{"supervisor", "--vcenter", sim.URL, "--vcenter-user", sim.Username, "--vcenter-password-file", vcPass,
			"--vcenter-ca", vcCA, "--supervisor", sim.Supervisor, "--username", "admin", "--password-stdin"}, args...)
	}

	// A real imgpkg bundle holding the Carvel package, pushed by imgpkg.
	bundleDir := filepath.Join(work, "bundle")
	for name, body := range map[string]string{
		".imgpkg/images.yml":       "apiVersion: imgpkg.carvel.dev/v1alpha1\nkind: ImagesLock\nimages: []\n",
		"config/package.yml":       carvelPackage,
		"config/metadata.yml":      carvelMetadata,
		"config/values/harbor.yml": "#@data/values\n---\nhostname: harbor.enclave.test\n",
	} {
		p := filepath.Join(bundleDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := run(t, []string{"SSL_CERT_FILE=" + filepath.Join(a.dataDir, "ca.crt"), "IMGPKG_REGISTRY_HOSTNAME=" + a.host(),
		"IMGPKG_REGISTRY_USERNAME=admin", "IMGPKG_REGISTRY_PASSWORD=" + a.password},
		imgpkgTool(t), "push", "-b", a.host()+"/sv-vmware/harbor-service:v2.9.1", "-f", bundleDir)
	mustOK(t, "imgpkg push of the service bundle", out, err)
	bundleDigest := applianceView(t, a).digest(t, "sv-vmware/harbor-service:v2.9.1")

	// Bad input first: each named, nothing recorded.
	out, err = a.cli(a.password+"\n", append(vc("registry"), "--vcenter-password-file", writeSecret(t, "wrong"))...)
	mustFail(t, "a vCenter that refuses the login", out, err, "refused the login")
	out, err = a.cli(a.password+"\n", append(vc("registry"), "--vcenter-ca", filepath.Join(a.dataDir, "ca.crt"))...)
	mustFail(t, "a vCenter certificate from another CA", out, err, "not trusted")
	out, err = a.cli(a.password+"\n", append(vc("registry"), "--hostname", "elsewhere.test")...)
	mustFail(t, "a host name the certificate lacks", out, err, `does not carry "elsewhere.test"`)
	out, err = a.cli(a.password+"\n", "import", "--to-repo", "sv-vmware/plain", fixturePath(t, "bundle.tar"), "--username", "admin", "--password-stdin")
	mustOK(t, "import a bundle without a Carvel package", out, err)
	out, err = a.cli(a.password+"\n", vc("service", "--bundle", "sv-vmware/plain@"+fixtureBundle)...)
	mustFail(t, "a bundle without a Carvel package", out, err, "no Carvel Package")
	if regs := sim.Registries(); len(regs) != 0 {
		t.Fatalf("refused calls registered %+v", regs)
	}

	out, err = a.cli(a.password+"\n", vc("registry", "--default")...)
	mustOK(t, "register the appliance", out, err)
	caPEM, _ := os.ReadFile(filepath.Join(a.dataDir, "ca.crt"))
	regs := sim.Registries()
	if len(regs) != 1 || regs[0].Hostname != "registry.enclave.test" || !regs[0].Default || !strings.Contains(regs[0].CertificateChain, strings.TrimSpace(string(caPEM))) {
		t.Fatalf("Supervisor registries after registering the appliance: %+v", regs)
	}
	out, err = a.cli(a.password+"\n", vc("service", "--bundle", "sv-vmware/harbor-service:v2.9.1", "--install")...)
	mustOK(t, "register and install the service", out, err)
	_, port, _ := strings.Cut(a.host(), ":")
	wantImage := "registry.enclave.test:" + port + "/sv-vmware/harbor-service@" + bundleDigest
	svcs := sim.Services()
	if len(svcs) != 1 || len(svcs[0].Versions) != 1 || len(svcs[0].Versions[0].Images) != 1 || svcs[0].Versions[0].Images[0] != wantImage {
		t.Fatalf("Supervisor Services: %+v, want one pulling %s", svcs, wantImage)
	}
	if in := sim.Installed(); len(in) != 1 || in[0].Service != "harbor.tanzu.vmware.com" || in[0].Version != "2.9.1" {
		t.Fatalf("installed: %+v", in)
	}

	// Re-pointing needs the promotion's parity first.
	harborCA := h.CAFile
	out, err = a.cli(a.password+"\n", vc("repoint", "--bundle", "sv-vmware/harbor-service:v2.9.1", "--harbor", h.URL, "--harbor-ca", harborCA)...)
	mustFail(t, "re-point before the promotion", out, err, "promote")
	out, err = a.cliLong(a.password+"\n", promoteArgs(h.URL, h.CAFile, h.Admin, writeSecret(t, h.Password), "--projects", "sv-vmware")...)
	mustOK(t, "promote the service bundle", out, err)
	// The version is installed: vCenter replaces only versions no Supervisor runs.
	out, err = a.cli(a.password+"\n", vc("repoint", "--bundle", "sv-vmware/harbor-service:v2.9.1", "--harbor", h.URL, "--harbor-ca", harborCA)...)
	mustFail(t, "re-point an installed version", out, err, "--reinstall")
	out, err = a.cli(a.password+"\n", vc("repoint", "--bundle", "sv-vmware/harbor-service:v2.9.1", "--harbor", h.URL, "--harbor-ca", harborCA, "--reinstall")...)
	mustOK(t, "re-point at Harbor", out, err)
	harborHost := strings.TrimPrefix(h.URL, "https://")
	svcs = sim.Services()
	if got := svcs[0].Versions[0].Images; len(got) != 1 || got[0] != harborHost+"/sv-vmware/harbor-service@"+bundleDigest {
		t.Fatalf("after the re-point the service pulls %v", got)
	}
	var harborDefault, applianceDefault bool
	for _, r := range sim.Registries() {
		if r.Hostname == "127.0.0.1" && r.Default {
			harborDefault = true
		}
		if r.Hostname == "registry.enclave.test" && r.Default {
			applianceDefault = true
		}
	}
	if !harborDefault || applianceDefault {
		t.Fatalf("after the re-point, Harbor default %t, appliance default %t: %+v", harborDefault, applianceDefault, sim.Registries())
	}
	if in := sim.Installed(); len(in) != 1 {
		t.Fatalf("after the reinstall: %+v", in)
	}
	out, err = a.cli(a.password+"\n", "supervisor", "status", "--username", "admin", "--password-stdin")
	mustOK(t, "supervisor status", out, err)
	for _, want := range []string{"Supervisor " + sim.Supervisor, "production", "harbor.tanzu.vmware.com", "re-pointed"} {
		if !strings.Contains(out, want) {
			t.Errorf("supervisor status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, sim.Password) {
		t.Error("supervisor status shows vCenter's password")
	}
}
