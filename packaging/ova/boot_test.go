package ova_test

// TestBootOVA builds the real OVA (debootstrap from Debian's mirror), checks
// it as TestSmallOVA does, then boots its disks under QEMU: software
// emulation, UEFI through OVMF, the system disk on SATA (Debian's OVMF has
// no PVSCSI driver to boot from; the data disk is on PVSCSI and the adapter
// is a vmxnet3, so the kernel's VMware drivers are exercised), and the
// OVF environment on a CD-ROM, the iso transport vCenter also offers. What
// stands in for vCenter (and for ESXi) is QEMU with that ISO: vcsim, which
// stands in for vCenter's import in TestSmallOVA, cannot run a VM nor hand
// a guest its environment; the guestinfo transport is tested with a
// stand-in vmtoolsd in internal/firstboot. The guest's network is QEMU's
// user network, restricted to the host, with the registry's ports
// forwarded to 127.0.0.1 (and, for the standby, one address forwarded to
// a primary on the host).
//
// The same VM boots five times, each with a new ISO, as a VM reconfigured
// in vCenter boots again: good properties; bad ones; a supplied TLS
// certificate; an upgrade (a fresh system disk, the old data disk); a
// binary-only upgrade with a CA to sign with and the standby mode.
//
// It is slow (a few minutes of debootstrap, five boots under TCG of one to
// two minutes each), so it runs in CI (CI set) and when asked
// (APPLIANCE_OVA_BOOT=1), and skips otherwise. APPLIANCE_OVA_CACHE keeps
// the debootstrap tree between runs.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/firstboot"
	"github.com/appliance-dev/appliance/internal/ovfenv"
	"github.com/appliance-dev/appliance/internal/testkit"
	"github.com/appliance-dev/appliance/packaging/ova"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	guestIP  = "10.0.2.20"
	bootHost = "registry.enclave.test"
	bootPass = "boot-test-password-1"
	// bootWithin bounds each boot until the registry answers (TCG on two
	// shared cores; a boot takes about a minute here).
	bootWithin = 8 * time.Minute
	// rootOffset is where the root partition starts on the system disk.
	rootOffset = (2048 + 128*2048) * 512
)

func TestBootOVA(t *testing.T) {
	if os.Getenv("CI") == "" && os.Getenv("APPLIANCE_OVA_BOOT") == "" {
		t.Skip("builds the OVA and boots it under QEMU (minutes): runs in CI, or with APPLIANCE_OVA_BOOT=1 (as root)")
	}
	testkit.Need(t, "debootstrap", "chroot", "mkfs.ext4", "mkfs.vfat", "mmd", "mcopy", "sfdisk", "qemu-img",
		"qemu-system-x86_64", "xorriso", "debugfs", "journalctl", "skopeo", "go")
	if os.Geteuid() != 0 {
		t.Fatal("the OVA is built as root (debootstrap, chroot, file owners); run the test as root")
	}
	if _, err := os.Stat(ovmfCode); err != nil {
		t.Fatalf("OVMF is not installed: apt-get install -y ovmf (%v)", err)
	}
	ctx := t.Context()
	dir := t.TempDir()

	bin := filepath.Join(dir, "appliance")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "../../cmd/appliance")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cache := os.Getenv("APPLIANCE_OVA_CACHE")
	if cache == "" {
		cache = filepath.Join(dir, "cache")
	}
	build2 := func(out string) ova.Result {
		start := time.Now()
		res, err := ova.Build(ctx, ova.Options{
			Binary: bin, Version: "v0.0.0-boottest", OutDir: filepath.Join(dir, out), WorkDir: filepath.Join(dir, "work"),
			CacheDir: cache, Log: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("built %s in %s", res.OVA, time.Since(start).Round(time.Second))
		return res
	}
	res := build2("dist")
	// Reproducible: the same cached tree and binary make the same OVA,
	// byte for byte (debootstrap itself is not: a new tree differs).
	if again := build2("dist-again"); fileSHA256(t, again.OVA) != fileSHA256(t, res.OVA) {
		t.Errorf("two builds from the same debootstrap tree and binary differ")
		explainDifference(t, res.OVA, again.OVA)
	}
	CheckOVA(t, res.OVA)
	ImportIntoSimulator(t, res.OVA)
	if t.Failed() {
		t.FailNow()
	}

	// The disks as vSphere would import them, behind copy-on-write overlays.
	vm := filepath.Join(dir, "vm")
	if err := os.Mkdir(vm, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "tar", "-xf", res.OVA, "-C", vm).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v\n%s", err, out)
	}
	for _, d := range []string{"system", "data"} {
		if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "vmdk", "-b",
			filepath.Join(vm, "appliance-"+d+".vmdk"), filepath.Join(vm, d+".qcow2")).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v\n%s", err, out)
		}
	}
	vars, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vm, "vars.fd"), vars, 0o644); err != nil {
		t.Fatal(err)
	}

	// First boot: every property good.
	good := map[string]string{
		ovfenv.KeyHostname: bootHost, ovfenv.KeyIP: guestIP, ovfenv.KeyNetmask: "255.255.255.0",
		ovfenv.KeyGateway: "10.0.2.2", ovfenv.KeyDNS: "10.0.2.3", ovfenv.KeyNTP: "10.0.2.2",
		ovfenv.KeyPassword: bootPass, ovfenv.KeyHostnames: "harbor-bootstrap.enclave.test",
	}
	g := boot(t, vm, "good", good)
	ca := g.waitRegistry(t)
	caFingerprint := g.checkCertificate(t, ca, bootHost, "harbor-bootstrap.enclave.test", guestIP)
	digest := g.pushAndPullAnonymously(t, ca)
	g.waitConsole(t, 3*time.Minute, "https://"+bootHost+"/", caFingerprint)
	g.powerOff(t)

	// Second boot: a malformed address and an empty password.
	bad := clone(good)
	bad[ovfenv.KeyIP] = "10.0.2.300"
	bad[ovfenv.KeyPassword] = ""
	bad[ovfenv.KeyHostname] = "other.enclave.test"
	b := boot(t, vm, "bad", bad)
	b.waitConsole(t, bootWithin, "the vApp properties were NOT applied; the previous configuration is kept",
		`guestinfo.ip: "10.0.2.300" is not an IPv4 or IPv6 address`, "guestinfo.admin_password: empty")
	// Still the first boot's address, names, CA and password.
	ca2 := b.waitRegistry(t)
	if !ca2.Equal(ca) {
		t.Error("the CA changed across the bad boot")
	}
	b.checkCertificate(t, ca, bootHost, "harbor-bootstrap.enclave.test", guestIP)
	b.checkToken(t, ca, "admin", bootPass)
	b.waitConsole(t, 3*time.Minute, bootHost+" ttyS0")
	b.powerOff(t)

	journal, files := readDisk(t, vm, firstboot.ChronyFile, firstboot.NetworkFile, firstboot.HostnameFile)
	// What the good boot wrote, unchanged by the bad one.
	for rel, want := range map[string]string{
		firstboot.ChronyFile:   "server 10.0.2.2 iburst\n",
		firstboot.NetworkFile:  "Address=" + guestIP + "/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n",
		firstboot.HostnameFile: bootHost + "\n",
	} {
		if !strings.Contains(files[rel], want) {
			t.Errorf("/%s on the system disk is %q, want it to hold %q", rel, files[rel], want)
		}
	}
	for _, want := range []string{
		`msg="invalid vApp property; nothing applied, the previous configuration is kept" property=guestinfo.ip problem="\"10.0.2.300\" is not an IPv4 or IPv6 address"`,
		`property=guestinfo.admin_password problem="empty`,
		`msg="applied the vApp properties to the machine" hostname=` + bootHost,
		// The guest's real vmtoolsd, asked for guestinfo.ovfEnv under
		// QEMU, fails, and the CD is read instead.
		`msg="no OVF environment in guestinfo" error="vmtoolsd: exit status 1`,
		`msg="read the OVF environment" source=/dev/sr0:/ovf-env.xml`,
	} {
		if !strings.Contains(journal, want) {
			t.Errorf("the journal lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("journal of the appliance's units:\n%s", journal)
		t.FailNow()
	}

	// Third boot, the same disks: the properties now supply the TLS
	// certificate and key (the key as base64 of PEM). The registry serves
	// exactly that certificate, and what the first boot stored is still
	// there. An admin changes the admin's password and adds a user
	// through the API, for the upgrade to keep.
	names := []string{bootHost, "harbor-bootstrap.enclave.test"}
	supplied := newTestPKI(t, "enclave test PKI", names, guestIP, "127.0.0.1")
	withCert := clone(good)
	withCert[ovfenv.KeyTLSCert], withCert[ovfenv.KeyTLSKey] = string(supplied.leafPEM), b64(supplied.leafKeyPEM)
	c := boot(t, vm, "cert", withCert)
	if ca3 := c.waitRegistry(t); !ca3.Equal(ca) {
		t.Error("cert boot: the appliance's CA at /ca.crt changed")
	}
	if got := c.servedLeaf(t); !got.Equal(supplied.leaf) {
		t.Fatalf("cert boot: the registry serves %q (SHA-256 %s), not the supplied certificate (SHA-256 %s)",
			got.Subject, certSHA256(got), certSHA256(supplied.leaf))
	}
	c.checkCertificate(t, supplied.ca, bootHost, "harbor-bootstrap.enclave.test", guestIP)
	c.pullAnonymously(t, supplied.ca, digest)
	const bootPass2, ciPass = "changed-through-the-api-1", "ci-user-password-1"
	if code := c.callAPI(t, supplied.ca, http.MethodPatch, "/api/v1/users/admin", "admin", bootPass, map[string]string{"password": bootPass2}); code != http.StatusOK {
		t.Fatalf("cert boot: changing the admin's password: %d", code)
	}
	if code := c.callAPI(t, supplied.ca, http.MethodPost, "/api/v1/users", "admin", bootPass2,
		map[string]string{"name": "ci", "password": ciPass, "role": "developer"}); code != http.StatusCreated {
		t.Fatalf("cert boot: adding a user: %d", code)
	}
	c.powerOff(t)

	// Fourth boot: an upgrade. A fresh system disk from the OVA's VMDK
	// (a new release's, in the field) with the old data disk and the
	// unchanged properties, as docs/ova.md's upgrade does it. First boot
	// applies the machine's part to the new system disk; the data disk
	// keeps the image, the CA, the users and the password changed through
	// the API (the properties' password is not applied again).
	newSystemDisk(t, vm)
	u := boot(t, vm, "upgrade", withCert)
	if ca4 := u.waitRegistry(t); !ca4.Equal(ca) {
		t.Errorf("upgrade boot: the CA changed: SHA-256 %s, was %s", fingerprint(ca4), caFingerprint)
	}
	if got := u.servedLeaf(t); !got.Equal(supplied.leaf) {
		t.Errorf("upgrade boot: the new system disk serves %q, not the supplied certificate", got.Subject)
	}
	u.pullAnonymously(t, supplied.ca, digest)
	u.checkToken(t, supplied.ca, "admin", bootPass2)
	u.checkToken(t, supplied.ca, "ci", ciPass)
	if code := u.tokenStatus(t, supplied.ca, "admin", bootPass); code != http.StatusUnauthorized {
		t.Errorf("upgrade boot: the properties' old admin password got %d, want 401: first boot set it again", code)
	}
	u.waitConsole(t, 3*time.Minute, caFingerprint, bootHost+" ttyS0")
	u.powerOff(t)

	// Fifth boot, on the upgraded disks after a binary-only upgrade (a
	// binary of another version in /usr/local/bin/appliance): a CA to sign
	// with instead of the supplied certificate, and the standby mode,
	// following a primary (a second appliance on the host, which the guest
	// reaches at primaryIP). The new binary serves the old data, signs its
	// certificate with the supplied CA, becomes the primary's standby
	// through its API, refuses a push with DENIED and still serves the
	// image.
	const upgradedVersion = "v0.0.1-binary-upgrade"
	newBin := filepath.Join(dir, "appliance-upgraded")
	build = exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags",
		"-X github.com/appliance-dev/appliance/internal/version.Version="+upgradedVersion, "-o", newBin, "../../cmd/appliance")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	replaceBinary(t, vm, newBin)
	primary := startPrimary(t, bin, filepath.Join(dir, "primary"))
	signer := newTestPKI(t, "enclave test intermediate CA", names)
	standby := clone(good)
	standby[ovfenv.KeyCACert], standby[ovfenv.KeyCAKey] = b64(signer.caPEM), string(signer.caKeyPEM)
	standby[ovfenv.KeyMode], standby[ovfenv.KeyPrimary] = "standby", "https://"+primaryIP
	standby[ovfenv.KeyPrimaryUser], standby[ovfenv.KeyPrimaryPass] = "admin", primary.password
	standby[ovfenv.KeyPrimaryCA] = string(primary.caPEM)
	s := bootWith(t, vm, "standby", standby, primary.addr)
	if ca5 := s.waitRegistry(t); !ca5.Equal(signer.ca) {
		t.Errorf("standby boot: /ca.crt is %q, not the supplied CA", ca5.Subject)
	}
	s.checkCertificate(t, signer.ca, bootHost, "harbor-bootstrap.enclave.test", guestIP)
	st := s.waitMode(t, signer.ca, "standby", 4*time.Minute)
	if !st.ReadOnly.ReadOnly {
		t.Errorf("standby boot: the standby is not read-only: %+v", st.ReadOnly)
	}
	if st.Version.Version != upgradedVersion {
		t.Errorf("standby boot: the appliance runs version %q, not the replaced binary's %q", st.Version.Version, upgradedVersion)
	}
	if st.Primary == nil || st.Primary.URL != "https://"+primaryIP {
		t.Errorf("standby boot: the status names the primary %+v, want https://%s", st.Primary, primaryIP)
	}
	// The admin password is the properties' again: the data part of the
	// properties changed (the CA, the mode), so it was applied.
	if _, err := s.push(t, signer.ca, "admin", bootPass); err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("standby boot: a push as admin: %v, want DENIED", err)
	}
	s.pullAnonymously(t, signer.ca, digest)
	shown := s.consoleShows(3*time.Minute, fingerprint(signer.ca))
	s.powerOff(t)
	if !shown {
		journal, _ := readDisk(t, vm)
		t.Errorf("standby boot: the console did not show the banner with the supplied CA's fingerprint %s within 3 minutes; the journal:\n%s",
			fingerprint(signer.ca), journal)
	}
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// testLogger logs the build's progress to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func parsePEMCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func fingerprint(c *x509.Certificate) string { return firstboot.Fingerprint(c) }

// guest is one running boot of the VM.
type guest struct {
	name      string
	cmd       *exec.Cmd
	console   string // the serial console's file
	qmp       string // QEMU's control socket
	httpsPort int
	httpPort  int
	exited    chan error
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// boot starts QEMU on the VM's overlays with props on an ISO.
func boot(t *testing.T, vm, name string, props map[string]string) *guest {
	t.Helper()
	return bootWith(t, vm, name, props, "")
}

// bootWith is boot; a non-empty primary (host:port on the loopback) is
// reachable from the guest as https://primaryIP/, through the test
// binary as a relay (see TestMain).
func bootWith(t *testing.T, vm, name string, props map[string]string, primary string) *guest {
	t.Helper()
	isoDir := filepath.Join(vm, "iso-"+name)
	if err := os.MkdirAll(isoDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(isoDir, "ovf-env.xml"), ovfenv.Marshal(props), 0o644); err != nil {
		t.Fatal(err)
	}
	iso := filepath.Join(vm, "env-"+name+".iso")
	if out, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-V", "OVF-ENV", "-J", "-R", "-o", iso, isoDir).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	g := &guest{name: name, console: filepath.Join(vm, "console-"+name+".log"), qmp: filepath.Join(vm, "qmp-"+name+".sock"),
		httpsPort: freePort(t), httpPort: freePort(t), exited: make(chan error, 1)}
	args := []string{
		"-machine", "q35", "-m", "2048", "-smp", "2", "-display", "none", "-no-reboot", "-nodefaults",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,file=" + filepath.Join(vm, "vars.fd"),
		"-drive", "if=none,id=sys,file=" + filepath.Join(vm, "system.qcow2"), "-device", "ide-hd,drive=sys,bus=ide.0,bootindex=0",
		"-device", "pvscsi,id=scsi0",
		"-drive", "if=none,id=data,file=" + filepath.Join(vm, "data.qcow2"), "-device", "scsi-hd,drive=data,bus=scsi0.0",
		"-drive", "if=none,id=cd,media=cdrom,format=raw,readonly=on,file=" + iso, "-device", "ide-cd,drive=cd,bus=ide.1",
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-%s:443,hostfwd=tcp:127.0.0.1:%d-%s:80", g.httpsPort, guestIP, g.httpPort, guestIP),
		"-device", "vmxnet3,netdev=n0,romfile=",
		"-vga", "std",
		"-serial", "file:" + g.console,
		"-qmp", "unix:" + g.qmp + ",server=on,wait=off",
		"-monitor", "none",
	}
	g.cmd = exec.Command("qemu-system-x86_64", args...)
	if primary != "" {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		// restrict=on keeps explicit forwards; slirp runs the command for
		// each connection, with the connection as its standard input and
		// output, and inherits QEMU's environment.
		for i, a := range args {
			if strings.HasPrefix(a, "user,id=n0,") {
				g.cmd.Args[i+1] = a + fmt.Sprintf(",guestfwd=tcp:%s:443-cmd:%s", primaryIP, self)
			}
		}
		g.cmd.Env = append(os.Environ(), relayEnv+"="+primary)
	}
	var out testkit.SyncBuffer
	g.cmd.Stdout, g.cmd.Stderr = &out, &out
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s boot: QEMU pid %d, HTTPS on 127.0.0.1:%d, console %s", name, g.cmd.Process.Pid, g.httpsPort, g.console)
	go func() { g.exited <- g.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-g.exited:
		default:
			_ = g.cmd.Process.Kill()
			<-g.exited
		}
		if t.Failed() {
			data, _ := os.ReadFile(g.console)
			if len(data) > 12000 {
				data = data[len(data)-12000:]
			}
			t.Logf("%s boot: QEMU said %q; the console's end:\n%s", name, out.String(), data)
		}
	})
	return g
}

func (g *guest) consoleText() string {
	data, _ := os.ReadFile(g.console)
	return strings.ReplaceAll(string(data), "\r", "")
}

// consoleShows tells whether the console shows every one of want within
// the time given.
func (g *guest) consoleShows(within time.Duration, want ...string) bool {
	deadline := time.Now().Add(within)
	for {
		text := g.consoleText()
		all := true
		for _, w := range want {
			all = all && strings.Contains(text, w)
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Second)
	}
}

// waitConsole waits until the console shows every one of want.
func (g *guest) waitConsole(t *testing.T, within time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		text := g.consoleText()
		missing := ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		select {
		case err := <-g.exited:
			g.exited <- err
			t.Fatalf("%s boot: QEMU exited (%v) before the console showed %q", g.name, err, missing)
		case <-time.After(2 * time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s boot: the console did not show %q within %s", g.name, missing, within)
		}
	}
}

// waitRegistry waits until /v2/ answers through the forwarded port (401,
// the token challenge), and returns the CA served at /ca.crt.
func (g *guest) waitRegistry(t *testing.T) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(bootWithin)
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // G402: only to know it is up; the CA is checked next
	for {
		resp, err := insecure.Get(fmt.Sprintf("https://127.0.0.1:%d/v2/", g.httpsPort))
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		select {
		case err := <-g.exited:
			g.exited <- err
			t.Fatalf("%s boot: QEMU exited (%v) before the registry answered", g.name, err)
		case <-time.After(3 * time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s boot: /v2/ did not answer within %s", g.name, bootWithin)
		}
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ca.crt", g.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("/ca.crt is not PEM: %q", data)
	}
	cert, err := parsePEMCert(data)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// checkCertificate dials the registry as name for each name and verifies
// the chain with the CA; it returns the CA's fingerprint as the banner
// shows it.
func (g *guest) checkCertificate(t *testing.T, ca *x509.Certificate, names ...string) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, n := range names {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.httpsPort), &tls.Config{RootCAs: pool, ServerName: n, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Errorf("%s boot: TLS as %s with the appliance's CA: %v", g.name, n, err)
			continue
		}
		_ = conn.Close()
	}
	return fingerprint(ca)
}

// checkToken asks the token service for push with user's password.
func (g *guest) checkToken(t *testing.T, ca *x509.Certificate, user, password string) {
	t.Helper()
	if code := g.tokenStatus(t, ca, user, password); code != http.StatusOK {
		t.Fatalf("%s boot: token for %s: %d", g.name, user, code)
	}
}

// tokenStatus is the token service's status for user's password.
func (g *guest) tokenStatus(t *testing.T, ca *x509.Certificate, user, password string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/service/token?service=appliance&scope=repository:library/boot:push,pull", g.httpsPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, password)
	resp, err := g.client(ca).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// client trusts ca, and sends the boot's host name.
func (g *guest) client(ca *x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: bootHost, MinVersion: tls.VersionTLS12}}}
}

// pushAndPullAnonymously pushes an image as admin with the property's
// password (go-containerregistry) and pulls it anonymously with skopeo;
// it returns the image's digest.
func (g *guest) pushAndPullAnonymously(t *testing.T, ca *x509.Certificate) string {
	t.Helper()
	digest, err := g.push(t, ca, "admin", bootPass)
	if err != nil {
		t.Fatalf("%s boot: push as admin with the property's password: %v", g.name, err)
	}
	g.pullAnonymously(t, ca, digest)
	return digest
}

// bootRef is the test image's reference through the forwarded port.
func (g *guest) bootRef() string { return fmt.Sprintf("127.0.0.1:%d/library/boot:1.0", g.httpsPort) }

// push pushes a new random image as library/boot:1.0 and returns its
// digest.
func (g *guest) push(t *testing.T, ca *x509.Certificate, user, password string) (string, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(g.bootRef())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(tr),
		remote.WithAuth(&authn.Basic{Username: user, Password: password})); err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String(), nil
}

// pullAnonymously inspects and copies library/boot:1.0 with skopeo, with
// no credentials, trusting ca, and checks its digest.
func (g *guest) pullAnonymously(t *testing.T, ca *x509.Certificate, digest string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	certDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), pemCert(ca), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := g.bootRef()
	out, err := exec.CommandContext(ctx, "skopeo", "inspect", "--cert-dir", certDir, "--no-creds", "docker://"+ref).CombinedOutput()
	if err != nil {
		t.Fatalf("%s boot: anonymous skopeo inspect: %v\n%s", g.name, err, out)
	}
	var got struct{ Digest string }
	if err := json.Unmarshal(out, &got); err != nil || got.Digest != digest {
		t.Fatalf("%s boot: skopeo saw %q (%v), want %s", g.name, got.Digest, err, digest)
	}
	layout := filepath.Join(t.TempDir(), "pulled")
	if out, err := exec.CommandContext(ctx, "skopeo", "copy", "--src-cert-dir", certDir, "--src-no-creds", "docker://"+ref, "oci:"+layout+":boot").CombinedOutput(); err != nil {
		t.Fatalf("%s boot: anonymous skopeo copy: %v\n%s", g.name, err, out)
	}
}

// powerOff presses the power button (QMP system_powerdown) and waits for
// QEMU to exit; after two minutes it is killed.
func (g *guest) powerOff(t *testing.T) {
	t.Helper()
	conn, err := net.DialTimeout("unix", g.qmp, 5*time.Second)
	if err != nil {
		t.Fatalf("%s boot: QMP: %v", g.name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // the greeting
		t.Fatalf("%s boot: QMP greeting: %v", g.name, err)
	}
	for _, c := range []string{`{"execute":"qmp_capabilities"}`, `{"execute":"system_powerdown"}`} {
		if _, err := io.WriteString(conn, c+"\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("%s boot: QMP %s: %v", g.name, c, err)
		}
	}
	select {
	case <-g.exited:
		g.exited <- nil
	case <-time.After(2 * time.Minute):
		t.Errorf("%s boot: no power-off within 2 minutes; killing QEMU", g.name)
		_ = g.cmd.Process.Kill()
	}
}

// readDisk reads the appliance's units' journal and the files rels from
// the system disk's overlay: the root partition, copied out of a raw image
// of the disk, then debugfs (no mount) and journalctl --directory.
func readDisk(t *testing.T, vm string, rels ...string) (string, map[string]string) {
	t.Helper()
	raw := filepath.Join(vm, "system.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", filepath.Join(vm, "system.qcow2"), raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	rootImg := filepath.Join(vm, "root.raw")
	if out, err := exec.Command("dd", "if="+raw, "of="+rootImg, "bs=1M", fmt.Sprintf("skip=%d", rootOffset>>20), "conv=sparse", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v\n%s", err, out)
	}
	jdir, err := os.MkdirTemp(vm, "journal-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("debugfs", "-R", "rdump /var/log/journal "+jdir, rootImg).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	files := map[string]string{}
	for _, rel := range rels {
		out, err := exec.Command("debugfs", "-R", "cat /"+rel, rootImg).Output()
		if err != nil {
			t.Fatalf("debugfs cat /%s: %v", rel, err)
		}
		files[rel] = string(out)
	}
	out, err := exec.Command("journalctl", "--directory", filepath.Join(jdir, "journal"), "--no-pager", "-o", "cat",
		"-u", "appliance-firstboot.service", "-u", "appliance.service", "-u", "appliance-banner.service").CombinedOutput()
	if err != nil {
		t.Fatalf("journalctl: %v\n%s", err, out)
	}
	return string(out), files
}
