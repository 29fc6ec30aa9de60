package vspheretest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // vcsim's vAPI: sessions, and the mux the fake joins
)

// The one user of the simulator's user store, and the Supervisor the fake
// knows. They are fixed so that a failing test's log reads the same every
// run; nothing here is a real secret.
const (
	simUser       = "administrator@vsphere.local"
	simPassword   = "Vc-s3cret-only-for-tests" // #nosec G101 -- a test simulator's
	simSupervisor = "supervisor-7f3a"
)

// Sim is a running vcsim with the contract fakes. Its exported fields are
// what a vsphere.Config needs to log in to it.
type Sim struct {
	// URL is https://127.0.0.1:PORT/sdk, the simulator's own address.
	URL string
	// CAPEM is the PEM of the CA that signed the simulator's certificate.
	CAPEM []byte
	// Thumbprint is the SHA-256 thumbprint of the simulator's certificate,
	// colon-separated upper-case hex as govc shows it.
	Thumbprint string
	// Certificate is the simulator's own (leaf) certificate.
	Certificate *x509.Certificate
	// Username and Password log in; any other pair is refused.
	Username, Password string
	// Supervisor is the id of the one Supervisor the fake knows; every
	// other id is answered 404.
	Supervisor string

	fake *vcenterFake
}

// Option changes how Start sets the fake up.
type Option func(*options)

type options struct {
	echoBodies bool
	reformat   bool
}

// EchoRefusedBodies makes a refused registry create repeat its request
// body, password included, in the error message, as some servers do: a
// fault injected to show that a client keeps passwords out of its errors.
func EchoRefusedBodies() Option { return func(o *options) { o.echoBodies = true } }

// ReformatContent makes the fake store a Supervisor Service version's YAML
// re-encoded (keys sorted, comments gone), as a server that parses content
// might: it shows that a client compares meaning, not bytes.
func ReformatContent() Option { return func(o *options) { o.reformat = true } }

// vcsimMu serialises building vcsim models: Model.Create writes
// package-level state of the simulator (its LicenseManager, for one), which
// races when tests start simulators in parallel.
var vcsimMu sync.Mutex

// Start starts vcsim and the contract fakes on 127.0.0.1, on a port the
// kernel chooses, and stops them when the test ends. It fails the test if
// the simulator does not start.
func Start(t testing.TB, opts ...Option) *Sim {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	ca, leaf, err := newPKI()
	if err != nil {
		t.Fatalf("vspheretest: certificates: %v", err)
	}
	fake := newVCenterFake(simSupervisor, o)
	s, err := startSim(leaf, fake)
	if err != nil {
		t.Fatalf("vspheretest: %v", err)
	}
	t.Cleanup(s.stop)

	u := *s.server.URL
	u.User = nil // credentials go in the Config
	sum := sha256.Sum256(leaf.Leaf.Raw)
	return &Sim{
		URL:         u.String(),
		CAPEM:       ca,
		Thumbprint:  thumbprint(sum[:]),
		Certificate: leaf.Leaf,
		Username:    simUser,
		Password:    simPassword,
		Supervisor:  simSupervisor,
		fake:        fake,
	}
}

type running struct {
	model  *simulator.Model
	server *simulator.Server
}

func (r running) stop() {
	r.server.Close()
	r.model.Remove()
}

func startSim(leaf tls.Certificate, fake *vcenterFake) (running, error) {
	vcsimMu.Lock()
	defer vcsimMu.Unlock()
	m := simulator.VPX()
	m.Datacenter, m.Cluster, m.Host, m.Machine = 1, 1, 0, 0
	if err := m.Create(); err != nil {
		return running{}, fmt.Errorf("vcsim model: %w", err)
	}
	// A user store that is not DefaultLogin makes vcsim check passwords.
	// An explicit loopback address: never a wildcard listener.
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(simUser, simPassword)}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12}
	m.Service.RegisterEndpoints = true
	fake.register(m.Service)
	return running{model: m, server: m.Service.NewServer()}, nil
}

// thumbprint formats a digest as govc shows it.
func thumbprint(sum []byte) string {
	pairs := make([]string, len(sum))
	for i, b := range sum {
		pairs[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(pairs, ":")
}

// newPKI makes a CA and a server certificate it signed for 127.0.0.1. It
// returns the CA's PEM and the server's key pair, with Leaf set.
func newPKI() ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vspheretest vCenter CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "vcenter.test"},
		DNSNames:     []string{"vcenter.test", "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
