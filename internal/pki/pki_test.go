package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/pki"
)

var allFiles = []string{pki.CACertFile, pki.CAKeyFile, pki.ServerCertFile, pki.ServerKeyFile}

// snapshot returns the content of every PKI file in dir (nil when absent).
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range allFiles {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		out[f] = data
	}
	return out
}

// ensure calls pki.Ensure and fails the test on error.
func ensure(t *testing.T, dir string, names []string, now time.Time) *pki.Authority {
	t.Helper()
	a, err := pki.Ensure(dir, names, now)
	if err != nil {
		t.Fatalf("Ensure(%v): %v", names, err)
	}
	return a
}

// readCert parses the first certificate of a PEM file.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cert
}

// caPoolFromFile builds a pool holding only the certificate in ca.crt.
func caPoolFromFile(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatal("ca.crt holds no certificate")
	}
	return pool
}

// TestEnsureCreatesFiles proves a first Ensure writes the four files with
// private keys at mode 0600, and that the files match the returned Authority.
func TestEnsureCreatesFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := ensure(t, dir, []string{"registry.example.test"}, time.Now())

	wantMode := map[string]os.FileMode{
		pki.CACertFile:     0o644,
		pki.CAKeyFile:      0o600,
		pki.ServerCertFile: 0o644,
		pki.ServerKeyFile:  0o600,
	}
	for name, mode := range wantMode {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := st.Mode().Perm(); got != mode {
			t.Errorf("%s mode = %o, want %o", name, got, mode)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(allFiles) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("dir holds %q, want exactly %q (no temp files left behind)", names, allFiles)
	}

	caFile, _ := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if !bytes.Equal(caFile, a.CAPEM) {
		t.Error("ca.crt differs from Authority.CAPEM")
	}
	if !a.CACert.IsCA || a.CACert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA=%v KeyUsage=%v", a.CACert.IsCA, a.CACert.KeyUsage)
	}
	leaf := readCert(t, filepath.Join(dir, pki.ServerCertFile))
	if !bytes.Equal(leaf.Raw, a.ServerTLS.Certificate[0]) || !bytes.Equal(leaf.Raw, a.ServerTLS.Leaf.Raw) {
		t.Error("server.crt differs from Authority.ServerTLS")
	}
	if leaf.IsCA {
		t.Error("server certificate is a CA")
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("server certificate ExtKeyUsage = %v, want ServerAuth", leaf.ExtKeyUsage)
	}
	if leaf.Subject.CommonName != "registry.example.test" {
		t.Errorf("CommonName = %q, want the first configured name", leaf.Subject.CommonName)
	}
	if len(a.ServerTLS.Certificate) != 2 || !bytes.Equal(a.ServerTLS.Certificate[1], a.CACert.Raw) {
		t.Error("ServerTLS chain is not leaf + CA")
	}
	// server.crt is the chain: the leaf, then the CA.
	serverFile, _ := os.ReadFile(filepath.Join(dir, pki.ServerCertFile))
	if !bytes.Contains(serverFile, a.CAPEM) {
		t.Error("server.crt does not carry the CA certificate after the leaf")
	}
	key, err := pki.LoadSigner(filepath.Join(dir, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("server.key does not match server.crt")
	}
}

// TestServerCertVerifiesAgainstCA proves the server certificate chains to
// ca.crt alone for localhost, the loopback IPs and the configured names, and
// does not verify for a name it does not carry.
func TestServerCertVerifiesAgainstCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	ensure(t, dir, []string{"registry.example.test", "10.0.0.10", "2001:db8::1"}, now)
	pool := caPoolFromFile(t, dir)
	leaf := readCert(t, filepath.Join(dir, pki.ServerCertFile))

	tests := []struct {
		name string
		ok   bool
	}{
		{"localhost", true},
		{"127.0.0.1", true},
		{"::1", true},
		{"registry.example.test", true},
		{"10.0.0.10", true},
		{"2001:db8::1", true},
		{"other.example.test", false},
		{"10.0.0.11", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.name, CurrentTime: now})
			if tc.ok && err != nil {
				t.Errorf("Verify(%s): %v", tc.name, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("Verify(%s) succeeded for a name the certificate does not carry", tc.name)
			}
		})
	}
	// A pool holding another CA must not verify it.
	other := t.TempDir()
	ensure(t, other, nil, now)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPoolFromFile(t, other), DNSName: "localhost", CurrentTime: now}); err == nil {
		t.Error("server certificate verified against an unrelated CA")
	}
}

// TestServerTLSHandshake proves Authority.ServerTLS serves a TLS handshake
// that a client trusting only Authority.Pool() accepts (over an in-memory pipe).
func TestServerTLSHandshake(t *testing.T) {
	t.Parallel()
	a := ensure(t, t.TempDir(), nil, time.Now())
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv := tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{a.ServerTLS}, MinVersion: tls.VersionTLS12})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	cli := tls.Client(c2, &tls.Config{RootCAs: a.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

// TestEnsureReuses proves a second Ensure with the same names keeps every
// file byte for byte and returns the same certificates, including when a
// configured IP is spelled differently.
func TestEnsureReuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		first, second []string
	}{
		{"no names", nil, nil},
		{"same names", []string{"registry.example.test", "10.0.0.10"}, []string{"registry.example.test", "10.0.0.10"}},
		{"ipv6 spelling", []string{"2001:db8::1"}, []string{"2001:0db8:0000::0001"}},
		{"subset of names", []string{"a.example.test", "b.example.test"}, []string{"b.example.test"}},
		{"default names given explicitly", nil, []string{"localhost", "127.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			now := time.Now()
			a1 := ensure(t, dir, tc.first, now)
			before := snapshot(t, dir)
			a2 := ensure(t, dir, tc.second, now.Add(24*time.Hour))
			after := snapshot(t, dir)
			for _, f := range allFiles {
				if !bytes.Equal(before[f], after[f]) {
					t.Errorf("%s changed on the second Ensure", f)
				}
			}
			if !bytes.Equal(a1.CACert.Raw, a2.CACert.Raw) {
				t.Error("CA certificate differs")
			}
			if !bytes.Equal(a1.ServerTLS.Certificate[0], a2.ServerTLS.Certificate[0]) {
				t.Error("server certificate differs")
			}
		})
	}
}

// TestEnsureReissuesForNewName proves adding a configured name re-issues the
// server certificate from the same CA, and the new one carries that name.
func TestEnsureReissuesForNewName(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	a1 := ensure(t, dir, []string{"registry.example.test"}, now)
	before := snapshot(t, dir)

	a2 := ensure(t, dir, []string{"registry.example.test", "mirror.example.test", "192.0.2.5"}, now)
	after := snapshot(t, dir)
	for _, f := range []string{pki.CACertFile, pki.CAKeyFile} {
		if !bytes.Equal(before[f], after[f]) {
			t.Errorf("%s changed; the CA must be kept", f)
		}
	}
	for _, f := range []string{pki.ServerCertFile, pki.ServerKeyFile} {
		if bytes.Equal(before[f], after[f]) {
			t.Errorf("%s unchanged; a new name must re-issue it", f)
		}
	}
	if !bytes.Equal(a1.CACert.Raw, a2.CACert.Raw) {
		t.Error("the CA changed")
	}
	leaf := readCert(t, filepath.Join(dir, pki.ServerCertFile))
	if !bytes.Equal(leaf.Raw, a2.ServerTLS.Leaf.Raw) {
		t.Error("server.crt differs from the returned certificate")
	}
	if !slices.Contains(leaf.DNSNames, "mirror.example.test") || !slices.Contains(leaf.DNSNames, "registry.example.test") {
		t.Errorf("DNSNames = %q, want both configured names", leaf.DNSNames)
	}
	if !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("192.0.2.5")) }) {
		t.Errorf("IPAddresses = %v, want 192.0.2.5", leaf.IPAddresses)
	}
	if !slices.Contains(a2.Names, "mirror.example.test") {
		t.Errorf("Authority.Names = %q, want the new name", a2.Names)
	}
	// Clients that trusted the old ca.crt trust the new certificate.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a1.Pool(), DNSName: "mirror.example.test", CurrentTime: now}); err != nil {
		t.Errorf("new certificate does not verify against the original CA: %v", err)
	}
}

// TestEnsureRenewal proves the server certificate is kept while far from
// expiry and re-issued (from the same CA) within 30 days of it or after it.
func TestEnsureRenewal(t *testing.T) {
	t.Parallel()
	const day = 24 * time.Hour
	tests := []struct {
		name    string
		later   time.Duration
		reissue bool
	}{
		{"one year later", 365 * day, false},
		{"31 days before expiry", 2*365*day - 31*day, false},
		{"29 days before expiry", 2*365*day - 29*day, true},
		{"two years later", 2 * 365 * day, true},
		{"three years later", 3 * 365 * day, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			start := time.Now()
			a1 := ensure(t, dir, nil, start)
			before := snapshot(t, dir)
			later := start.Add(tc.later)
			a2 := ensure(t, dir, nil, later)
			after := snapshot(t, dir)

			if !bytes.Equal(before[pki.CACertFile], after[pki.CACertFile]) || !bytes.Equal(before[pki.CAKeyFile], after[pki.CAKeyFile]) {
				t.Error("the CA changed")
			}
			changed := !bytes.Equal(before[pki.ServerCertFile], after[pki.ServerCertFile])
			if changed != tc.reissue {
				t.Fatalf("server.crt re-issued = %v, want %v", changed, tc.reissue)
			}
			if !tc.reissue {
				return
			}
			leaf := a2.ServerTLS.Leaf
			if !leaf.NotAfter.After(a1.ServerTLS.Leaf.NotAfter) {
				t.Errorf("new NotAfter %v not after old %v", leaf.NotAfter, a1.ServerTLS.Leaf.NotAfter)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: a1.Pool(), DNSName: "localhost", CurrentTime: later}); err != nil {
				t.Errorf("renewed certificate does not verify at %v: %v", later, err)
			}
		})
	}
}

// TestEnsureReissuesNotYetValidCert proves a server certificate issued while
// the clock was ahead (so its NotBefore is still in the future once the
// clock is corrected) is re-issued rather than kept: clients would refuse
// it as "not yet valid".
func TestEnsureReissuesNotYetValidCert(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	a1 := ensure(t, dir, nil, now)
	// The clock jumps a year ahead and a new name forces a re-issue then.
	ahead := now.Add(365 * 24 * time.Hour)
	future := ensure(t, dir, []string{"registry.example.test"}, ahead)
	if !future.ServerTLS.Leaf.NotBefore.After(now) {
		t.Fatalf("setup: certificate issued at %v has NotBefore %v", ahead, future.ServerTLS.Leaf.NotBefore)
	}
	// The clock is corrected.
	a3 := ensure(t, dir, []string{"registry.example.test"}, now)
	if !bytes.Equal(a1.CACert.Raw, a3.CACert.Raw) {
		t.Error("the CA changed")
	}
	leaf := readCert(t, filepath.Join(dir, pki.ServerCertFile))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a1.Pool(), DNSName: "registry.example.test", CurrentTime: now}); err != nil {
		t.Errorf("server certificate kept although not valid at %v: %v", now, err)
	}
}

// TestEnsureRepairsServerCert proves a missing server key or certificate, or
// a server certificate from another CA, is replaced by a fresh one signed by
// this CA (these files are derived; the CA is not).
func TestEnsureRepairsServerCert(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		breakIt func(t *testing.T, dir string)
	}{
		{"server.key missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, pki.ServerKeyFile)); err != nil {
				t.Fatal(err)
			}
		}},
		{"server.crt missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, pki.ServerCertFile)); err != nil {
				t.Fatal(err)
			}
		}},
		{"server pair from another CA", func(t *testing.T, dir string) {
			other := t.TempDir()
			ensure(t, other, nil, time.Now())
			for _, f := range []string{pki.ServerCertFile, pki.ServerKeyFile} {
				data, err := os.ReadFile(filepath.Join(other, f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"server.key does not match server.crt", func(t *testing.T, dir string) {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if err := pki.WriteKey(filepath.Join(dir, pki.ServerKeyFile), k); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			now := time.Now()
			a1 := ensure(t, dir, nil, now)
			tc.breakIt(t, dir)
			a2 := ensure(t, dir, nil, now)
			if !bytes.Equal(a1.CACert.Raw, a2.CACert.Raw) {
				t.Error("the CA changed")
			}
			leaf := readCert(t, filepath.Join(dir, pki.ServerCertFile))
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPoolFromFile(t, dir), DNSName: "localhost", CurrentTime: now}); err != nil {
				t.Errorf("repaired certificate does not verify: %v", err)
			}
			key, err := pki.LoadSigner(filepath.Join(dir, pki.ServerKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			if !key.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
				t.Error("server.key does not match the repaired server.crt")
			}
		})
	}
}

// TestEnsureRefusesDamagedCA proves a damaged, mismatched or half-missing CA
// (and a damaged server key or certificate) is an error that names the
// file, and that nothing on disk is touched: no silent new CA.
func TestEnsureRefusesDamagedCA(t *testing.T) {
	t.Parallel()
	otherCA := t.TempDir()
	ensure(t, otherCA, nil, time.Now())
	copyFrom := func(src, name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(src, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	write := func(name, content string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	remove := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	garbage := "\x00\x01garbage that is not PEM at all\xff\xfe"
	tests := []struct {
		name    string
		corrupt bool // errors.Is(err, ErrCorrupt) is required
		file    string
		breakIt func(t *testing.T, dir string)
	}{
		{"ca.key garbage", true, pki.CAKeyFile, write(pki.CAKeyFile, garbage)},
		{"ca.key empty", true, pki.CAKeyFile, write(pki.CAKeyFile, "")},
		{"ca.key wrong PEM type", true, pki.CAKeyFile, write(pki.CAKeyFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
		{"ca.key bad DER", true, pki.CAKeyFile, write(pki.CAKeyFile, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")},
		{"ca.key missing", true, pki.CAKeyFile, remove(pki.CAKeyFile)},
		{"ca.key from another CA", true, pki.CACertFile, copyFrom(otherCA, pki.CAKeyFile)},
		{"ca.crt garbage", true, pki.CACertFile, write(pki.CACertFile, garbage)},
		{"ca.crt bad DER", true, pki.CACertFile, write(pki.CACertFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
		{"ca.crt missing", false, pki.CACertFile, remove(pki.CACertFile)},
		{"server.key garbage", true, pki.ServerKeyFile, write(pki.ServerKeyFile, garbage)},
		{"server.crt garbage", true, pki.ServerCertFile, write(pki.ServerCertFile, garbage)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ensure(t, dir, nil, time.Now())
			tc.breakIt(t, dir)
			before := snapshot(t, dir)

			a, err := pki.Ensure(dir, nil, time.Now())
			if err == nil {
				t.Fatalf("Ensure succeeded (CA %x), want an error", a.CACert.SubjectKeyId)
			}
			if tc.corrupt && !errors.Is(err, pki.ErrCorrupt) {
				t.Errorf("errors.Is(err, ErrCorrupt) = false for %v", err)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.file)) {
				t.Errorf("error %q does not name %s", err, tc.file)
			}
			after := snapshot(t, dir)
			for _, f := range allFiles {
				if !bytes.Equal(before[f], after[f]) {
					t.Errorf("%s was modified by a failing Ensure", f)
				}
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if !slices.Contains(allFiles, e.Name()) {
					t.Errorf("stray file %s left behind", e.Name())
				}
			}
		})
	}
}

// TestEnsureCAWithoutKeyOnFreshDir proves that ca.crt alone (as a client
// would have it) is never completed with a newly generated key.
func TestEnsureCAWithoutKeyOnFreshDir(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	ensure(t, src, nil, time.Now())
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(src, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = pki.Ensure(dir, nil, time.Now())
	if !errors.Is(err, pki.ErrCorrupt) {
		t.Fatalf("Ensure = %v, want ErrCorrupt", err)
	}
	for _, f := range []string{pki.CAKeyFile, pki.ServerCertFile, pki.ServerKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s was created (stat: %v)", f, err)
		}
	}
}

// TestLoadSignerWriteKey proves WriteKey writes a 0600 PKCS#8 file that
// LoadSigner reads back, that LoadSigner accepts SEC1 EC and PKCS#1 RSA PEM
// too, reports a missing file as fs.ErrNotExist and bad content as ErrCorrupt.
func TestLoadSignerWriteKey(t *testing.T) {
	t.Parallel()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("WriteKey round trip", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "k.key")
		if err := pki.WriteKey(path, ec); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode = %o, want 600", st.Mode().Perm())
		}
		data, _ := os.ReadFile(path)
		if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
			t.Errorf("WriteKey did not write a PKCS#8 PEM block: %q", data)
		}
		got, err := pki.LoadSigner(path)
		if err != nil {
			t.Fatal(err)
		}
		if !ec.Equal(got) {
			t.Error("LoadSigner returned a different key")
		}
	})

	pemOf := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	tests := []struct {
		name    string
		content *string // nil: file absent
		wantErr error   // nil: loads
		check   func(any) bool
	}{
		{"SEC1 EC", ptr(pemOf("EC PRIVATE KEY", ecDER)), nil, func(k any) bool { return ec.Equal(k) }},
		{"PKCS1 RSA", ptr(pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))), nil, func(k any) bool { return rsaKey.Equal(k) }},
		{"PKCS8 Ed25519", ptr(pemOf("PRIVATE KEY", mustPKCS8(t, edKey))), nil, func(k any) bool { return edKey.Equal(k) }},
		{"missing", nil, fs.ErrNotExist, nil},
		{"garbage", ptr("nope"), pki.ErrCorrupt, nil},
		{"wrong block", ptr(pemOf("PUBLIC KEY", []byte{1, 2, 3})), pki.ErrCorrupt, nil},
		{"EC block with RSA DER", ptr(pemOf("EC PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))), pki.ErrCorrupt, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "k.key")
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			k, err := pki.LoadSigner(path)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("LoadSigner = %v, want %v", err, tc.wantErr)
				}
				if tc.content != nil && !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(k) {
				t.Errorf("LoadSigner returned a different key: %T", k)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func mustPKCS8(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestDefaultNames proves the names every server certificate carries
// include localhost and both loopback addresses, and no duplicates arise
// when they are also configured.
func TestDefaultNames(t *testing.T) {
	t.Parallel()
	names := pki.DefaultNames()
	for _, want := range []string{"localhost", "127.0.0.1", "::1"} {
		if !slices.Contains(names, want) {
			t.Errorf("DefaultNames() = %q, missing %q", names, want)
		}
	}
	a := ensure(t, t.TempDir(), []string{"localhost", "127.0.0.1", "first.example.test", "localhost"}, time.Now())
	seen := map[string]bool{}
	for _, n := range a.Names {
		if seen[n] {
			t.Errorf("Authority.Names has %q twice: %q", n, a.Names)
		}
		seen[n] = true
	}
	if a.Names[0] != "localhost" || a.ServerTLS.Leaf.Subject.CommonName != "localhost" {
		t.Errorf("first configured name not first: Names=%q CN=%q", a.Names, a.ServerTLS.Leaf.Subject.CommonName)
	}
	if !slices.Contains(a.ServerTLS.Leaf.DNSNames, "first.example.test") {
		t.Errorf("DNSNames = %q, want first.example.test", a.ServerTLS.Leaf.DNSNames)
	}
}
