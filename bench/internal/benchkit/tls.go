package benchkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TestCert is a self-signed certificate for 127.0.0.1 and localhost, its
// own CA, written to a folder.
type TestCert struct {
	// CertFile (tls.crt) is the certificate, and the CA that clients
	// trust; KeyFile (tls.key) its key.
	CertFile, KeyFile string
	// Pool trusts the certificate.
	Pool *x509.CertPool
}

// WriteTestCert makes a TestCert in dir (created if missing).
func WriteTestCert(dir string) (TestCert, error) {
	certPEM, keyPEM, err := SelfSigned()
	if err != nil {
		return TestCert{}, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return TestCert{}, err
	}
	c := TestCert{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), Pool: x509.NewCertPool()}
	if err := os.WriteFile(c.CertFile, certPEM, 0o644); err != nil { //nolint:gosec // a certificate
		return TestCert{}, err
	}
	if err := os.WriteFile(c.KeyFile, keyPEM, 0o600); err != nil {
		return TestCert{}, err
	}
	c.Pool.AppendCertsFromPEM(certPEM)
	return c, nil
}

// SelfSigned makes an ECDSA P-256 certificate for 127.0.0.1 and localhost
// (the key type the appliance's own CA issues), valid for a day, that is
// its own CA; it returns the certificate and key in PEM.
func SelfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "docker-registry benchmark"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}
