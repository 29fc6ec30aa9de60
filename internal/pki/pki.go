// Package pki is the appliance's private certificate authority. On first
// start it creates a CA and a server certificate signed by it; later starts
// reuse them, re-issuing only the server certificate when the names it must
// carry change or it nears expiry. Nothing here is overwritten silently: a
// corrupt key or certificate is an error that names the file.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// File names inside the data directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 2 * 365 * 24 * time.Hour
	renewBefore    = 30 * 24 * time.Hour
)

// ErrCorrupt marks a key or certificate file that exists but cannot be used.
var ErrCorrupt = errors.New("corrupt key or certificate")

// Authority is a loaded CA together with the current server certificate.
type Authority struct {
	CACert    *x509.Certificate
	CAPEM     []byte
	caKey     crypto.Signer
	ServerTLS tls.Certificate
	// Names are the DNS names and IPs the server certificate carries.
	Names []string
}

// Ensure loads or creates the CA and the server certificate in dir. names
// are the DNS names and IP addresses the server certificate must carry.
func Ensure(dir string, names []string, now time.Time) (*Authority, error) {
	a := &Authority{}
	caCertPath, caKeyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	caKey, err := loadKey(caKeyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, statErr := os.Stat(caCertPath); statErr == nil {
			return nil, fmt.Errorf("load CA: %s exists but its key %s is missing: %w", caCertPath, caKeyPath, ErrCorrupt)
		}
		if err := a.createCA(caCertPath, caKeyPath, now); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		cert, certPEM, err := loadCert(caCertPath)
		if err != nil {
			return nil, err
		}
		if !publicKeysEqual(cert.PublicKey, caKey.Public()) {
			return nil, fmt.Errorf("load CA: %s does not match key %s: %w", caCertPath, caKeyPath, ErrCorrupt)
		}
		a.CACert, a.CAPEM, a.caKey = cert, certPEM, caKey
	}
	if err := a.ensureServer(dir, names, now); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Authority) createCA(certPath, keyPath string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("create CA key: %w", err)
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "appliance private CA " + host, Organization: []string{"appliance"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := fsutil.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	a.CACert, a.CAPEM, a.caKey = cert, certPEM, key
	return nil
}

func (a *Authority) ensureServer(dir string, names []string, now time.Time) error {
	certPath, keyPath := filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)
	want := normalizeNames(names)
	key, err := loadKey(keyPath)
	if err == nil {
		cert, _, cerr := loadCert(certPath)
		if cerr != nil && !errors.Is(cerr, fs.ErrNotExist) {
			return cerr
		}
		if cerr == nil && a.serverCertOK(cert, key, want, now) {
			a.ServerTLS = tls.Certificate{Certificate: [][]byte{cert.Raw, a.CACert.Raw}, PrivateKey: key, Leaf: cert}
			a.Names = want
			return nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Issue a fresh key and certificate.
	newKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("create server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: want[0], Organization: []string{"appliance"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range want {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.CACert, newKey.Public(), a.caKey)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}
	// Key first, then certificate: a crash in between leaves a mismatch,
	// which the next start detects and repairs by issuing again.
	if err := writeKey(keyPath, newKey); err != nil {
		return err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), a.CAPEM...)
	if err := fsutil.WriteFileAtomic(certPath, chain, 0o644); err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}
	a.ServerTLS = tls.Certificate{Certificate: [][]byte{der, a.CACert.Raw}, PrivateKey: newKey, Leaf: cert}
	a.Names = want
	return nil
}

// serverCertOK tells whether an existing certificate can be kept.
func (a *Authority) serverCertOK(cert *x509.Certificate, key crypto.Signer, want []string, now time.Time) bool {
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return false
	}
	if err := cert.CheckSignatureFrom(a.CACert); err != nil {
		return false
	}
	if now.Add(renewBefore).After(cert.NotAfter) {
		return false
	}
	// Issued while the clock was ahead: clients would refuse it as not yet valid.
	if now.Before(cert.NotBefore) {
		return false
	}
	var have []string
	have = append(have, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		have = append(have, ip.String())
	}
	for _, n := range want {
		if !slices.Contains(have, n) {
			return false
		}
	}
	return true
}

// DefaultNames returns the names every server certificate carries besides
// the configured ones: localhost, the loopback addresses, the machine's
// host name and its non-loopback interface addresses.
func DefaultNames() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, addr := range addrs {
			if ipn, ok := addr.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
				names = append(names, ipn.IP.String())
			}
		}
	}
	return names
}

// normalizeNames puts the configured names first (the first one becomes the
// certificate's common name) and removes duplicates.
func normalizeNames(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range append(slices.Clone(names), DefaultNames()...) {
		if ip := net.ParseIP(n); ip != nil {
			n = ip.String()
		}
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	rest := out[min(len(names), len(out)):]
	sort.Strings(rest)
	return out
}

func loadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("load key %s: no PEM block: %w", path, ErrCorrupt)
	}
	var k any
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("load key %s: unexpected PEM block %q: %w", path, block.Type, ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w: %w", path, ErrCorrupt, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load key %s: not a signing key: %w", path, ErrCorrupt)
	}
	return s, nil
}

// LoadSigner reads a PEM private key (EC, PKCS#8 or RSA) from path. A missing
// file yields an error matching fs.ErrNotExist; a damaged one ErrCorrupt.
func LoadSigner(path string) (crypto.Signer, error) { return loadKey(path) }

// WriteKey writes key as PKCS#8 PEM, mode 0600, atomically.
func WriteKey(path string, key crypto.Signer) error { return writeKey(path, key) }

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := fsutil.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

func loadCert(path string) (*x509.Certificate, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("read certificate %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("load certificate %s: no CERTIFICATE PEM block: %w", path, ErrCorrupt)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("load certificate %s: %w: %w", path, ErrCorrupt, err)
	}
	return cert, pem.EncodeToMemory(block), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		// crypto/rand never fails on supported platforms; fall back to time.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// Pool returns a certificate pool holding only the CA.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.CACert)
	return p
}
