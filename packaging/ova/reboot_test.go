package ova_test

// Helpers of TestBootOVA's later boots: a supplied certificate, a system
// disk replaced as an upgrade replaces it, and the standby mode with a CA
// to sign with. The standby's primary (production Harbor in an enclave)
// is a second appliance on the host's loopback, which the guest reaches
// through QEMU's guestfwd and the test binary as a relay.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/testkit"
)

const (
	// primaryIP is where the guest finds the standby's primary.
	primaryIP = "10.0.2.100"
	// relayEnv makes the test binary a relay to the address it holds.
	relayEnv = "APPLIANCE_OVA_TEST_RELAY"
)

// TestMain lets the test binary relay one of the guest's connections:
// QEMU's user network runs it for each connection to primaryIP:443
// (guestfwd cmd:), with the connection as standard input and output.
func TestMain(m *testing.M) {
	if addr := os.Getenv(relayEnv); addr != "" {
		os.Exit(relay(addr))
	}
	os.Exit(m.Run())
}

func relay(addr string) int {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 1
	}
	defer conn.Close()
	go func() {
		_, _ = io.Copy(conn, os.Stdin)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, _ = io.Copy(os.Stdout, conn)
	return 0
}

// testPKI is an enclave's PKI as the properties supply it: a CA, and a
// server certificate it signed for every name the boot's properties put on
// the certificate (and 127.0.0.1, which the test dials).
type testPKI struct {
	ca, leaf            *x509.Certificate
	caPEM, caKeyPEM     []byte
	leafPEM, leafKeyPEM []byte
}

func newTestPKI(t *testing.T, cn string, dnsNames []string, ips ...string) testPKI {
	t.Helper()
	var p testPKI
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, Organization: []string{"enclave"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.caPEM, p.caKeyPEM = pemCert(p.ca), pemKey(t, caKey)

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, ip := range ips {
		leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, net.ParseIP(ip))
	}
	if der, err = x509.CreateCertificate(rand.Reader, leafTmpl, p.ca, leafKey.Public(), caKey); err != nil {
		t.Fatal(err)
	}
	if p.leaf, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	// The chain, leaf first, as the property takes it.
	p.leafPEM, p.leafKeyPEM = append(pemCert(p.leaf), p.caPEM...), pemKey(t, leafKey)
	return p
}

func pemKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// b64 is a property's value as base64 of PEM, the other form the
// properties take (vCenter's form has one line per property).
func b64(data []byte) string { return base64.StdEncoding.EncodeToString(data) }

func certSHA256(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// servedLeaf is the leaf certificate the registry serves on 443.
func (g *guest) servedLeaf(t *testing.T) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.httpsPort), &tls.Config{InsecureSkipVerify: true, ServerName: bootHost}) //nolint:gosec // G402: reads the certificate to compare it, trusting nothing
	if err != nil {
		t.Fatalf("%s boot: TLS: %v", g.name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// callAPI sends body as JSON to the JSON API as user, trusting ca, and
// returns the status.
func (g *guest) callAPI(t *testing.T, ca *x509.Certificate, method, path, user, password string, body any) int {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("https://127.0.0.1:%d%s", g.httpsPort, path), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, password)
	resp, err := g.client(ca).Do(req)
	if err != nil {
		t.Fatalf("%s boot: %s %s: %v", g.name, method, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Logf("%s boot: %s %s: %s %s", g.name, method, path, resp.Status, msg)
	}
	return resp.StatusCode
}

// status is the part of GET /api/v1/status the test reads.
type status struct {
	Mode     string `json:"mode"`
	ReadOnly struct {
		ReadOnly bool   `json:"read_only"`
		Reason   string `json:"reason"`
	} `json:"read_only"`
	Primary *struct {
		URL string `json:"url"`
	} `json:"primary"`
	Version struct {
		Version string `json:"version"`
	} `json:"version"`
}

// waitMode waits until the lifecycle's mode is want.
func (g *guest) waitMode(t *testing.T, ca *x509.Certificate, want string, within time.Duration) status {
	t.Helper()
	deadline := time.Now().Add(within)
	var st status
	for {
		resp, err := g.client(ca).Get(fmt.Sprintf("https://127.0.0.1:%d/api/v1/status", g.httpsPort))
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			_ = resp.Body.Close()
			if err == nil && st.Mode == want {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s boot: the mode is %q (%v), not %q, after %s; the console:\n%s", g.name, st.Mode, err, want, within, g.consoleText())
		}
		time.Sleep(3 * time.Second)
	}
}

// primaryAppliance is the standby's primary: the appliance binary on the
// host's loopback, its certificate carrying primaryIP.
type primaryAppliance struct {
	addr     string // host:port of its HTTPS listener
	password string // its admin's
	caPEM    []byte
}

var adminPasswordRE = regexp.MustCompile(`admin / (\S+)`)

func startPrimary(t *testing.T, bin, dir string) primaryAppliance {
	t.Helper()
	p := primaryAppliance{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--https-addr", p.addr, "--http-addr", httpAddr, "--hostname", primaryIP)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "APPLIANCE_") { // the test's own settings are not the primary's
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out testkit.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
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
		}
		if t.Failed() {
			t.Logf("the primary's log:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if resp, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
			_ = resp.Body.Close()
			if m := adminPasswordRE.FindStringSubmatch(out.String()); resp.StatusCode == http.StatusOK && m != nil {
				p.password = m[1]
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("the primary exited: %v\n%s", err, out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the primary did not start within a minute:\n%s", out.String())
		}
	}
	var err error
	if p.caPEM, err = os.ReadFile(filepath.Join(dir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	return p
}

// newSystemDisk replaces the VM's system disk with a fresh one made from
// the OVA's system VMDK, as an upgrade attaches a new OVA's; the old one
// is kept beside it (a rollback would attach it again). The data disk and
// the firmware's variables stay.
func newSystemDisk(t *testing.T, vm string) {
	t.Helper()
	old := filepath.Join(vm, "system.qcow2")
	if err := os.Rename(old, filepath.Join(vm, "system-before-upgrade.qcow2")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "vmdk", "-b",
		filepath.Join(vm, "appliance-system.vmdk"), old).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
}

// replaceBinary puts bin at /usr/local/bin/appliance on the VM's system
// disk, as the binary-only upgrade's copy does, with the VM powered off
// (the test's VM has no shell): the disk is made raw, the file replaced
// with debugfs at the root partition's offset (no mount), and the disk
// made a qcow2 again.
func replaceBinary(t *testing.T, vm, bin string) {
	t.Helper()
	disk, raw := filepath.Join(vm, "system.qcow2"), filepath.Join(vm, "system-binary.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", disk, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	const target = "/usr/local/bin/appliance"
	cmds := strings.Join([]string{
		"rm " + target,
		"write " + bin + " " + target,
		"sif " + target + " mode 0100755",
		"sif " + target + " uid 0",
		"sif " + target + " gid 0",
	}, "\n") + "\n"
	script := filepath.Join(vm, "debugfs-binary.cmds")
	if err := os.WriteFile(script, []byte(cmds), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("debugfs", "-w", "-f", script, fmt.Sprintf("%s?offset=%d", raw, rootOffset)).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	// debugfs reports a failed command but exits 0: check what is there.
	out, err := exec.Command("debugfs", "-R", "stat "+target, fmt.Sprintf("%s?offset=%d", raw, rootOffset)).CombinedOutput()
	if err != nil || !regexp.MustCompile(`Mode: +0755`).Match(out) || !regexp.MustCompile(fmt.Sprintf(`Size: %d\b`, fi.Size())).Match(out) ||
		!regexp.MustCompile(`User: +0 +Group: +0\b`).Match(out) {
		t.Fatalf("the replaced binary is not a root-owned 0755 file of %d bytes: %v\n%s", fi.Size(), err, out)
	}
	if out, err := exec.Command("qemu-img", "convert", "-O", "qcow2", raw, disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if err := os.Remove(raw); err != nil {
		t.Fatal(err)
	}
}
