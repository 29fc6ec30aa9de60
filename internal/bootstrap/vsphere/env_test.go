package vsphere_test

// The tests run against vspheretest: govmomi's vCenter simulator (vcsim)
// with contract fakes of the Supervisor endpoints it lacks. vcsim's real
// vAPI session endpoint does the login (and refuses a wrong password), its
// real TLS listener on 127.0.0.1 does the certificate checks, and its vAPI
// handler checks the session of every call; the fakes store registries,
// Supervisor Services and installs, and check requests as the package
// comment of vspheretest describes.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere"
	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere/vspheretest"
)

// testEnv is one running simulator, and a Config that logs in to it.
type testEnv struct {
	sim  *vspheretest.Sim
	cfg  vsphere.Config
	logs *syncBuffer // what the clients dialled by dial logged
	// reformat says the simulator was started with ReformatContent.
	reformat bool
}

// startVCenter starts the simulator and gives the Config that logs in to
// it with its CA.
func startVCenter(t *testing.T, opts ...vspheretest.Option) *testEnv {
	t.Helper()
	sim := vspheretest.Start(t, opts...)
	return &testEnv{
		sim: sim,
		cfg: vsphere.Config{
			URL:        sim.URL,
			Username:   sim.Username,
			Password:   sim.Password,
			CAPEM:      sim.CAPEM,
			Supervisor: sim.Supervisor,
		},
		logs: &syncBuffer{},
	}
}

// dial logs in with env's Config and logs out at the end of the test.
func (env *testEnv) dial(t *testing.T) *vsphere.Client {
	t.Helper()
	c, err := vsphere.Dial(t.Context(), env.cfg, slogTo(env.logs))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		// t.Context is cancelled before cleanups run.
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// registry gives the registry vCenter holds with this host name, if any.
func (env *testEnv) registry(hostname string) (vspheretest.Registry, bool) {
	for _, r := range env.sim.Registries() {
		if r.Hostname == hostname {
			return r, true
		}
	}
	return vspheretest.Registry{}, false
}

// version gives a registered version and the state of its service.
func (env *testEnv) version(id, version string) (vspheretest.Version, string, bool) {
	for _, s := range env.sim.Services() {
		if s.ID != id {
			continue
		}
		for _, v := range s.Versions {
			if v.Version == version {
				return v, s.State, true
			}
		}
		return vspheretest.Version{}, s.State, false
	}
	return vspheretest.Version{}, "", false
}

// installed gives what the Supervisor runs of service id.
func (env *testEnv) installed(id string) (vspheretest.Installed, bool) {
	for _, in := range env.sim.Installed() {
		if in.Service == id {
			return in, true
		}
	}
	return vspheretest.Installed{}, false
}

// writes counts the calls to the fake that were not GETs.
func (env *testEnv) writes() int {
	n := 0
	for _, c := range env.sim.Calls() {
		if !strings.HasPrefix(c, "GET ") {
			n++
		}
	}
	return n
}

// newTestCA makes the PEM of a self-signed CA certificate.
func newTestCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func slogTo(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// syncBuffer is a bytes.Buffer for a logger used from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
