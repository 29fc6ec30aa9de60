package vsphere_test

import (
	"crypto/rand"
	"crypto/sha1" // vCenter thumbprints are SHA-1 or SHA-256
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere"
)

// thumbprint formats a digest as govc shows it.
func thumbprint(sum []byte) string {
	pairs := make([]string, len(sum))
	for i, b := range sum {
		pairs[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(pairs, ":")
}

func TestDialLogsIn(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	sha256Sum := sha256.Sum256(env.sim.Certificate.Raw)
	sha1Sum := sha1.Sum(env.sim.Certificate.Raw)
	for _, tc := range []struct {
		name   string
		change func(*vsphere.Config)
	}{
		{"CA", func(*vsphere.Config) {}},
		{"SHA-256 thumbprint", func(c *vsphere.Config) { c.CAPEM, c.Thumbprint = nil, thumbprint(sha256Sum[:]) }},
		{"SHA-1 thumbprint", func(c *vsphere.Config) { c.CAPEM, c.Thumbprint = nil, thumbprint(sha1Sum[:]) }},
		{"lower-case thumbprint", func(c *vsphere.Config) {
			c.CAPEM, c.Thumbprint = nil, strings.ToLower(thumbprint(sha256Sum[:]))
		}},
		{"URL without /sdk", func(c *vsphere.Config) { c.URL = strings.TrimSuffix(c.URL, "/sdk") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := env.cfg
			tc.change(&cfg)
			c, err := vsphere.Dial(t.Context(), cfg, nil)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			// The session works: an authenticated call answers.
			if _, err := c.Registries(t.Context()); err != nil {
				t.Fatalf("Registries after login: %v", err)
			}
			if err := c.Close(t.Context()); err != nil {
				t.Fatalf("Close: %v", err)
			}
			// Logged out: the session is gone.
			if _, err := c.Registries(t.Context()); err == nil {
				t.Fatal("Registries after Close succeeded")
			}
		})
	}
}

func TestDialRefused(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	otherCAPEM := newTestCA(t)
	wrongPrint := make([]byte, 32)
	if _, err := rand.Read(wrongPrint); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		change   func(*vsphere.Config)
		want     error
		mentions []string
	}{
		{"wrong password", func(c *vsphere.Config) { c.Password = "not-the-password" }, vsphere.ErrLoginRefused, []string{env.sim.Username}},
		{"wrong user", func(c *vsphere.Config) { c.Username = "nobody@vsphere.local" }, vsphere.ErrLoginRefused, []string{"nobody@vsphere.local"}},
		{"other CA", func(c *vsphere.Config) { c.CAPEM = otherCAPEM }, vsphere.ErrUntrusted, []string{"CAPEM", "thumbprint"}},
		{"wrong thumbprint", func(c *vsphere.Config) { c.CAPEM, c.Thumbprint = nil, thumbprint(wrongPrint) }, vsphere.ErrUntrusted, []string{"CAPEM", "thumbprint"}},
		{"other CA and wrong thumbprint", func(c *vsphere.Config) { c.CAPEM, c.Thumbprint = otherCAPEM, thumbprint(wrongPrint) }, vsphere.ErrUntrusted, nil},
		{"nothing listens", func(c *vsphere.Config) { c.URL = "https://" + closedAddr }, vsphere.ErrUnreachable, []string{closedAddr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := env.cfg
			tc.change(&cfg)
			logs := &syncBuffer{}
			c, err := vsphere.Dial(t.Context(), cfg, slogTo(logs))
			if err == nil {
				_ = c.Close(t.Context())
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Dial = %v, want %v", err, tc.want)
			}
			t.Logf("Dial: %v", err)
			for _, s := range tc.mentions {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			for _, secret := range []string{cfg.Password, env.sim.Password} {
				if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
					t.Errorf("the password shows in the error or the log: %v / %s", err, logs)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := vsphere.Config{
		URL: "https://vcenter.example/sdk", Username: "u", Password: "p",
		Thumbprint: thumbprint(make([]byte, 32)), Supervisor: "sv",
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		name     string
		cfg      vsphere.Config
		mentions []string
	}{
		{"empty: every problem at once", vsphere.Config{},
			[]string{"no vCenter URL", "no username", "no password", "neither a CA", "no Supervisor id"}},
		{"http", with(good, func(c *vsphere.Config) { c.URL = "http://vcenter.example" }), []string{"https"}},
		{"credentials in URL", with(good, func(c *vsphere.Config) { c.URL = "https://u:hunter2@vcenter.example" }), []string{"Username and Password"}},
		{"odd path", with(good, func(c *vsphere.Config) { c.URL = "https://vcenter.example/ui" }), []string{"/sdk"}},
		{"short thumbprint", with(good, func(c *vsphere.Config) { c.Thumbprint = "AB:CD" }), []string{"thumbprint"}},
		{"CAPEM without certificate", with(good, func(c *vsphere.Config) { c.CAPEM = []byte("junk") }), []string{"CAPEM"}},
		{"supervisor with slash", with(good, func(c *vsphere.Config) { c.Supervisor = "a/b" }), []string{"Supervisor id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if !errors.Is(err, vsphere.ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
			for _, s := range tc.mentions {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %v", err)
			}
			if _, derr := vsphere.Dial(t.Context(), tc.cfg, nil); !errors.Is(derr, vsphere.ErrInvalidConfig) {
				t.Errorf("Dial = %v, want ErrInvalidConfig", derr)
			}
		})
	}
}

func with(c vsphere.Config, f func(*vsphere.Config)) vsphere.Config {
	f(&c)
	return c
}
