package validate

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestCertificatesGate dials a real TLS server (httptest's, whose
// certificate is its own CA) at three moments: valid, under 30 days
// (a warning), expired (red).
func TestCertificatesGate(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	cert := srv.Certificate()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	for _, tc := range []struct {
		name string
		now  time.Time
		want string
	}{
		{"valid", cert.NotBefore.Add(time.Hour), StatusOK},
		{"under 30 days", cert.NotAfter.Add(-10 * 24 * time.Hour), StatusWarning},
		{"expired", cert.NotAfter.Add(24 * time.Hour), StatusFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := tc.now
			v, err := New(Options{URL: srv.URL, Names: []string{"127.0.0.1", "example.com"}, CAPEM: caPEM, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			r := &run{v: v, res: &Result{}}
			g := &GateResult{Gate: GateCertificates}
			r.certificatesGate(t.Context(), g)
			if got := statusOf(g.Findings); got != tc.want {
				t.Errorf("status %s, want %s: %+v", got, tc.want, g.Findings)
			}
		})
	}
	v, err := New(Options{URL: srv.URL, Names: []string{"127.0.0.1", "registry.enclave"}, CAPEM: caPEM})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	r := &run{v: v, res: &Result{}}
	g := &GateResult{Gate: GateCertificates}
	r.certificatesGate(t.Context(), g)
	if statusOf(g.Findings) != StatusFailed {
		t.Errorf("a name the certificate lacks passes: %+v", g.Findings)
	}
}
