package firstboot_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/crypto/bcrypt"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/firstboot"
	"github.com/appliance-dev/appliance/internal/ovfenv"
	"github.com/appliance-dev/appliance/internal/pki"
)

const password = "first-password-1"

func good() map[string]string {
	return map[string]string{
		ovfenv.KeyHostname:  "registry.enclave.example",
		ovfenv.KeyIP:        "10.0.2.20",
		ovfenv.KeyNetmask:   "255.255.255.0",
		ovfenv.KeyGateway:   "10.0.2.2",
		ovfenv.KeyDNS:       "10.0.2.3",
		ovfenv.KeyNTP:       "ntp.enclave.example",
		ovfenv.KeyPassword:  password,
		ovfenv.KeyHostnames: "harbor-bootstrap.enclave.example",
	}
}

func options(t *testing.T) (firstboot.Options, *bytes.Buffer) {
	t.Helper()
	var console bytes.Buffer
	return firstboot.Options{Root: t.TempDir(), UID: -1, GID: -1, Console: &console, BcryptCost: bcrypt.MinCost}, &console
}

func read(t *testing.T, o firstboot.Options, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(o.Root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// snapshot returns every file under root with its content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		out[path] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func verifyAdmin(t *testing.T, o firstboot.Options, pw string) {
	t.Helper()
	users, err := auth.OpenUsers(filepath.Join(o.Root, firstboot.DefaultDataDir, auth.UsersFile))
	if err != nil {
		t.Fatal(err)
	}
	if u, err := users.Verify("admin", pw); err != nil || u.Role != auth.RoleAdmin {
		t.Fatalf("admin with %q: %+v, %v", pw, u, err)
	}
}

func TestApplyWritesTheMachineAndTheAppliance(t *testing.T) {
	t.Parallel()
	o, console := options(t)
	var kernelName string
	o.SetHostname = func(h string) error { kernelName = h; return nil }
	res, err := firstboot.Apply(t.Context(), o, good())
	if err != nil {
		t.Fatal(err)
	}
	if !res.System || !res.Data || kernelName != "registry.enclave.example" {
		t.Fatalf("Apply = %+v, kernel host name %q", res, kernelName)
	}
	for rel, want := range map[string][]string{
		firstboot.NetworkFile:  {"[Match]\nType=ether\nName=en* eth*", "Address=10.0.2.20/24\n", "Gateway=10.0.2.2\n", "DNS=10.0.2.3\n"},
		firstboot.ChronyFile:   {"server ntp.enclave.example iburst\n"},
		firstboot.HostnameFile: {"registry.enclave.example\n"},
		firstboot.HostsFile:    {"10.0.2.20\tregistry.enclave.example registry\n"},
		firstboot.ConfigFile:   {`data_dir: "/var/lib/appliance"`, `https_addr: ":443"`, `- "registry.enclave.example"`, `- "10.0.2.20"`, `- "harbor-bootstrap.enclave.example"`},
	} {
		got := read(t, o, rel)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s lacks %q:\n%s", rel, w, got)
			}
		}
	}
	verifyAdmin(t, o, password)
	if console.Len() != 0 {
		t.Errorf("a good apply wrote to the console: %q", console)
	}

	// The configuration file is one the appliance loads, with the names.
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse([]string{"--config", filepath.Join(o.Root, firstboot.ConfigFile)}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(fs, nil)
	if err != nil {
		t.Fatalf("the appliance cannot load what first boot wrote: %v", err)
	}
	if cfg.HTTPSAddr != ":443" || cfg.HTTPAddr != ":80" || len(cfg.Hostnames) != 3 || cfg.Hostnames[0] != "registry.enclave.example" {
		t.Fatalf("loaded %+v", cfg)
	}

	// Again with the same properties: nothing to do.
	before := snapshot(t, o.Root)
	if res, err := firstboot.Apply(t.Context(), o, good()); err != nil || res.System || res.Data {
		t.Fatalf("second Apply = %+v, %v; want nothing changed", res, err)
	}
	if after := snapshot(t, o.Root); len(after) != len(before) {
		t.Fatalf("an Apply with nothing to do changed files")
	}

	// A new NTP server changes the machine, not the users.
	p := good()
	p[ovfenv.KeyNTP] = "10.0.0.4"
	if res, err := firstboot.Apply(t.Context(), o, p); err != nil || !res.System || res.Data {
		t.Fatalf("Apply with a new NTP server = %+v, %v", res, err)
	}
	if got := read(t, o, firstboot.ChronyFile); !strings.Contains(got, "server 10.0.0.4 iburst") || strings.Contains(got, "ntp.enclave") {
		t.Fatalf("chrony sources = %q", got)
	}
	// A new password changes the users, and a changed one through the API
	// is not reset by a boot whose properties did not change.
	p[ovfenv.KeyPassword] = "second-password-2"
	if res, err := firstboot.Apply(t.Context(), o, p); err != nil || res.System || !res.Data {
		t.Fatalf("Apply with a new password = %+v, %v", res, err)
	}
	verifyAdmin(t, o, "second-password-2")
}

// TestBadPropertiesKeepThePreviousConfiguration: a malformed address and an
// empty password change nothing, and say so on the console and at the
// login prompt; the next good boot clears the message.
func TestBadPropertiesKeepThePreviousConfiguration(t *testing.T) {
	t.Parallel()
	o, console := options(t)
	if _, err := firstboot.Apply(t.Context(), o, good()); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, o.Root)
	bad := good()
	bad[ovfenv.KeyIP] = "10.0.2.300"
	bad[ovfenv.KeyPassword] = ""
	bad[ovfenv.KeyHostname] = "other.enclave.example"
	_, err := firstboot.Apply(t.Context(), o, bad)
	var verr *ovfenv.Error
	if !errors.As(err, &verr) || len(verr.Problems) != 2 {
		t.Fatalf("Apply = %v, want the two problems", err)
	}
	for _, want := range []string{"NOT applied; the previous configuration is kept", `guestinfo.ip: "10.0.2.300" is not an IPv4 or IPv6 address`, "guestinfo.admin_password: empty"} {
		if !strings.Contains(console.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
	after := snapshot(t, o.Root)
	issue := filepath.Join(o.Root, firstboot.IssueFile)
	if !strings.Contains(after[issue], "guestinfo.ip") {
		t.Errorf("the login prompt does not show the problem: %q", after[issue])
	}
	delete(after, issue)
	if len(after) != len(before) {
		t.Fatalf("files changed: %d before, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed", k)
		}
	}
	verifyAdmin(t, o, password)

	if _, err := firstboot.Apply(t.Context(), o, good()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(issue); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the problem stays at the login prompt after a good boot: %v", err)
	}
}

func TestDHCPAndSuppliedCA(t *testing.T) {
	t.Parallel()
	o, _ := options(t)
	caCert, caKey := makeCA(t)
	p := map[string]string{ovfenv.KeyPassword: password, ovfenv.KeyCACert: string(caCert), ovfenv.KeyCAKey: string(caKey), ovfenv.KeyHostnames: "reg.example"}
	if _, err := firstboot.Apply(t.Context(), o, p); err != nil {
		t.Fatal(err)
	}
	if got := read(t, o, firstboot.NetworkFile); !strings.Contains(got, "DHCP=yes") || strings.Contains(got, "Address=") {
		t.Fatalf("network = %q", got)
	}
	if _, err := os.Stat(filepath.Join(o.Root, firstboot.HostnameFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no host name property, but /etc/hostname was written: %v", err)
	}
	// The appliance's PKI signs with the supplied CA.
	a, err := pki.Ensure(filepath.Join(o.Root, firstboot.DefaultDataDir), []string{"reg.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCert)
	if _, err := a.ServerTLS.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "reg.example"}); err != nil {
		t.Fatalf("the server certificate does not chain to the supplied CA: %v", err)
	}
}

func TestSuppliedCertificate(t *testing.T) {
	t.Parallel()
	o, _ := options(t)
	cert, key := makeServer(t, "reg.example")
	p := map[string]string{ovfenv.KeyPassword: password, ovfenv.KeyHostname: "reg.example", ovfenv.KeyTLSCert: string(cert), ovfenv.KeyTLSKey: string(key)}
	if _, err := firstboot.Apply(t.Context(), o, p); err != nil {
		t.Fatal(err)
	}
	if read(t, o, firstboot.TLSCertFile) != string(cert) || read(t, o, firstboot.TLSKeyFile) != string(key) {
		t.Fatal("the supplied certificate and key were not written")
	}
	if fi, err := os.Stat(filepath.Join(o.Root, firstboot.TLSKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	if got := read(t, o, firstboot.ConfigFile); !strings.Contains(got, "cert_file: \"/etc/appliance/tls/server.crt\"") {
		t.Fatalf("config lacks the certificate:\n%s", got)
	}
	// Taken away again: the files go, the configuration forgets them.
	delete(p, ovfenv.KeyTLSCert)
	delete(p, ovfenv.KeyTLSKey)
	if _, err := firstboot.Apply(t.Context(), o, p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(o.Root, firstboot.TLSKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the key stays: %v", err)
	}
	if strings.Contains(read(t, o, firstboot.ConfigFile), "tls:") {
		t.Fatal("the configuration still names the certificate")
	}
}

// TestStandbyIsPendingUntilTheAppliancesAPIMakesIt: the standby mode is
// recorded for the banner step (0600: it holds passwords), done or not,
// and forgotten when the mode returns to bootstrap.
func TestStandbyIsPendingUntilTheAppliancesAPIMakesIt(t *testing.T) {
	t.Parallel()
	o, console := options(t)
	p := good()
	p[ovfenv.KeyMode] = "standby"
	p[ovfenv.KeyPrimary] = "https://harbor.enclave.example"
	p[ovfenv.KeyPrimaryUser] = "robot$standby"
	p[ovfenv.KeyPrimaryPass] = "robot-secret"
	if _, err := firstboot.Apply(t.Context(), o, p); err != nil {
		t.Fatal(err)
	}
	pending, err := firstboot.ReadPendingStandby(o)
	if err != nil || pending == nil {
		t.Fatalf("ReadPendingStandby = %v, %v", pending, err)
	}
	if pending.URL != "https://harbor.enclave.example" || pending.Username != "robot$standby" || pending.Password != "robot-secret" || pending.AdminPassword != password {
		t.Fatalf("pending = %+v", pending)
	}
	if fi, err := os.Stat(filepath.Join(o.Root, firstboot.PendingStandbyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pending file: %v, %v", fi, err)
	}
	firstboot.StandbyFailed(o, errors.New("primary https://harbor.enclave.example: connection refused"))
	if !strings.Contains(console.String(), "stays in bootstrap mode: primary https://harbor.enclave.example: connection refused") {
		t.Fatalf("console: %q", console)
	}
	if pending, _ := firstboot.ReadPendingStandby(o); pending == nil {
		t.Fatal("a failed switch is no longer pending")
	}
	if err := firstboot.StandbyDone(o); err != nil {
		t.Fatal(err)
	}
	if pending, err := firstboot.ReadPendingStandby(o); pending != nil || err != nil {
		t.Fatalf("after StandbyDone: %v, %v", pending, err)
	}
	// Back to bootstrap in the properties: nothing pending.
	p[ovfenv.KeyMode] = "standby"
	p[ovfenv.KeyPrimaryPass] = "new-secret"
	if _, err := firstboot.Apply(t.Context(), o, p); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{ovfenv.KeyPrimary, ovfenv.KeyPrimaryUser, ovfenv.KeyPrimaryPass} {
		delete(p, k)
	}
	p[ovfenv.KeyMode] = "bootstrap"
	if _, err := firstboot.Apply(t.Context(), o, p); err != nil {
		t.Fatal(err)
	}
	if pending, err := firstboot.ReadPendingStandby(o); pending != nil || err != nil {
		t.Fatalf("bootstrap again: %v, %v", pending, err)
	}
}

func TestReadEnvDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := firstboot.ReadEnvDir(dir); !errors.Is(err, firstboot.ErrNoEnvironment) {
		t.Fatalf("empty CD: %v", err)
	}
	// A plain ISO 9660 name, as a CD without Rock Ridge shows it.
	if err := os.WriteFile(filepath.Join(dir, "OVF-ENV.XML;1"), ovfenv.Marshal(good()), 0o644); err != nil {
		t.Fatal(err)
	}
	props, err := firstboot.ReadEnvDir(dir)
	if err != nil || props[ovfenv.KeyHostname] != "registry.enclave.example" {
		t.Fatalf("ReadEnvDir = %v, %v", props, err)
	}
}

func TestBanner(t *testing.T) {
	t.Parallel()
	o, console := options(t)
	caCert, _ := makeCA(t)
	dir := filepath.Join(o.Root, firstboot.DefaultDataDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), caCert, 0o644); err != nil {
		t.Fatal(err)
	}
	ca, err := firstboot.WaitForCA(t.Context(), o, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	text := firstboot.Banner(firstboot.BannerInfo{Version: "v1", Names: []string{"reg.example", "10.0.0.5"}}, ca)
	if err := firstboot.ShowBanner(o, text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"https://reg.example/", "http://reg.example/ca.crt", firstboot.Fingerprint(ca), "Also as      10.0.0.5"} {
		if !strings.Contains(console.String(), want) || !strings.Contains(read(t, o, firstboot.BannerFile), want) {
			t.Errorf("banner lacks %q:\n%s", want, console)
		}
	}
	o2, _ := options(t)
	if _, err := firstboot.WaitForCA(t.Context(), o2, 600*time.Millisecond); err == nil {
		t.Fatal("WaitForCA without a CA returned")
	}
}

func makeCA(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	return makeCert(t, true)
}

func makeServer(t *testing.T, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	return makeCert(t, false, names...)
}

func makeCert(t *testing.T, ca bool, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "enclave test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: names}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestOwnDataAfterANewSystemDisk: a data disk written by an appliance
// user of another uid (an older system disk) is given to this one's,
// lost+found aside; one already owned is left alone.
func TestOwnDataAfterANewSystemDisk(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	o, _ := options(t)
	data := filepath.Join(o.Root, firstboot.DefaultDataDir)
	for _, d := range []string{"registry/docker", "lost+found"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "registry", "docker", "blob"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("docker/blob", filepath.Join(data, "registry", "link")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{data, filepath.Join(data, "registry"), filepath.Join(data, "registry", "docker"), filepath.Join(data, "registry", "docker", "blob")} {
		if err := os.Lchown(p, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	}
	o.UID, o.GID = 4343, 4344
	if changed, err := firstboot.OwnData(o); err != nil || !changed {
		t.Fatalf("OwnData = %v, %v", changed, err)
	}
	owner := func(p string) (uint32, uint32) {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}
	for _, p := range []string{data, filepath.Join(data, "registry", "docker", "blob"), filepath.Join(data, "registry", "link")} {
		if u, g := owner(p); u != 4343 || g != 4344 {
			t.Errorf("%s is owned by %d:%d, want 4343:4344", p, u, g)
		}
	}
	if u, _ := owner(filepath.Join(data, "lost+found")); u != 0 {
		t.Errorf("lost+found was given away: uid %d", u)
	}
	if changed, err := firstboot.OwnData(o); err != nil || changed {
		t.Fatalf("OwnData on owned data = %v, %v; want nothing to do", changed, err)
	}
}
