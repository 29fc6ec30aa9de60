package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/firstboot"
	"github.com/appliance-dev/appliance/internal/ovfenv"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
)

// TestFirstbootStandby is the OVA's first boot with the standby mode, on a
// folder standing in for the VM's root (the QEMU boot test in
// packaging/ova runs the bootstrap mode in a real VM): `appliance
// firstboot` applies the properties, the appliance starts on what it
// wrote, and `appliance firstboot banner` makes it the standby of another
// appliance through its API. A primary that refuses the credentials
// leaves it in bootstrap mode with the problem shown and the switch
// pending; corrected properties then make it a standby.
func TestFirstbootStandby(t *testing.T) {
	primary := startAppliance(t, t.TempDir())
	caPEM, err := os.ReadFile(filepath.Join(primary.dataDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	const adminPW = "standby-admin-password"
	props := map[string]string{
		ovfenv.KeyPassword: adminPW, ovfenv.KeyMode: "standby", ovfenv.KeyPrimary: "https://" + primary.httpsAddr,
		ovfenv.KeyPrimaryUser: "admin", ovfenv.KeyPrimaryPass: "not-the-password", ovfenv.KeyPrimaryCA: string(caPEM),
	}
	firstbootRun := func() {
		t.Helper()
		env := filepath.Join(t.TempDir(), "ovf-env.xml")
		if err := os.WriteFile(env, ovfenv.Marshal(props), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, cleanEnv(), binary, "firstboot", "--root", root, "--env-file", env, "--user", "", "--console=false")
		mustOK(t, "firstboot", out, err)
	}
	firstbootRun()
	standby := startAppliance(t, filepath.Join(root, firstboot.DefaultDataDir), "--config", filepath.Join(root, firstboot.ConfigFile))
	standby.password = adminPW
	banner := func() string {
		t.Helper()
		out, err := run(t, cleanEnv(), binary, "firstboot", "banner", "--root", root, "--user", "", "--console=false",
			"--server", "https://"+standby.httpsAddr, "--wait", "30s")
		mustOK(t, "firstboot banner", out, err)
		return out
	}
	mode := func() bootstrap.Mode {
		t.Helper()
		var st opsapi.Status
		if err := getJSON(standby, "/api/v1/status", &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode
	}

	out := banner()
	if !strings.Contains(out, "could not be set; it is tried again at the next boot") || mode() != bootstrap.ModeBootstrap {
		t.Fatalf("a refused primary: mode %s, banner said:\n%s", mode(), out)
	}
	if p, err := firstboot.ReadPendingStandby(firstboot.Options{Root: root}); err != nil || p == nil {
		t.Fatalf("the refused switch is not pending: %v, %v", p, err)
	}
	issue, err := os.ReadFile(filepath.Join(root, "etc/issue.d/appliance-standby.issue"))
	if err != nil || !strings.Contains(string(issue), "stays in bootstrap mode") {
		t.Fatalf("the login prompt does not show the refused switch: %q, %v", issue, err)
	}

	// Corrected properties at the next boot.
	props[ovfenv.KeyPrimaryPass] = primary.password
	firstbootRun()
	out = banner()
	if mode() != bootstrap.ModeStandby {
		t.Fatalf("mode %s after the corrected properties; banner said:\n%s", mode(), out)
	}
	if p, err := firstboot.ReadPendingStandby(firstboot.Options{Root: root}); err != nil || p != nil {
		t.Fatalf("the switch is still pending: %v, %v", p, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/issue.d/appliance-standby.issue")); !os.IsNotExist(err) {
		t.Fatalf("the refused switch is still shown: %v", err)
	}
	shown, err := os.ReadFile(filepath.Join(root, firstboot.BannerFile))
	if err != nil || !strings.Contains(string(shown), "CA SHA-256") {
		t.Fatalf("banner file: %q, %v", shown, err)
	}
}
