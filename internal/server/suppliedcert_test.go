package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/config"
)

// TestSuppliedCertificate: with tls.cert_file and tls.key_file (the OVA's
// guestinfo.tls_cert) the HTTPS listener serves that certificate, not one
// of the private CA; a key that does not load stops the start with the
// files named.
func TestSuppliedCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "registry.enclave.example"},
		DNSNames: []string{"registry.enclave.example"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *config.Config) { c.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile} })
	conn, err := tls.Dial("tcp", ts.HTTPSAddr(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // G402: the certificate itself is what the test reads
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().PeerCertificates[0]; got.SerialNumber.Int64() != 42 || got.Subject.CommonName != "registry.enclave.example" {
		t.Fatalf("served %s (serial %s), want the supplied certificate", got.Subject, got.SerialNumber)
	}

	cfg := config.Defaults()
	cfg.DataDir, cfg.HTTPSAddr, cfg.HTTPAddr = t.TempDir(), "127.0.0.1:0", ""
	cfg.TLS = config.TLS{CertFile: certFile, KeyFile: certFile}
	if _, err := Open(t.Context(), cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "tls.cert_file "+certFile) {
		t.Fatalf("Open with a bad key = %v, want an error naming the files", err)
	}
}
