package ovfenv_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/ovfenv"
)

// vcenterEnv is an environment as vCenter 8 writes it into guestinfo.ovfEnv.
const vcenterEnv = `<?xml version="1.0" encoding="UTF-8"?>
<Environment
     xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv"
     oe:id=""
     ve:vCenterId="vm-1042">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>8.0.3</Version>
      <Vendor>VMware, Inc.</Vendor>
      <Locale>en</Locale>
   </PlatformSection>
   <PropertySection>
         <Property oe:key="guestinfo.admin_password" oe:value="correct horse battery"/>
         <Property oe:key="guestinfo.hostname" oe:value="Registry.Enclave.example"/>
         <Property oe:key="guestinfo.ip" oe:value="10.0.0.10"/>
         <Property oe:key="guestinfo.netmask" oe:value="255.255.255.0"/>
         <Property oe:key="guestinfo.gateway" oe:value="10.0.0.1"/>
         <Property oe:key="guestinfo.dns" oe:value="10.0.0.2, 10.0.0.3"/>
         <Property oe:key="guestinfo.ntp" oe:value="ntp.enclave.example,10.0.0.4"/>
         <Property oe:key="guestinfo.registry_hostnames" oe:value="registry, 10.0.0.10, harbor-bootstrap.enclave.example"/>
   </PropertySection>
   <ve:EthernetAdapterSection>
      <ve:Adapter ve:mac="00:50:56:a1:b2:c3" ve:network="VM Network" ve:unitNumber="7"/>
   </ve:EthernetAdapterSection>
</Environment>`

func TestParseAndValidateVCenterEnvironment(t *testing.T) {
	t.Parallel()
	props, err := ovfenv.Parse(strings.NewReader(vcenterEnv))
	if err != nil {
		t.Fatal(err)
	}
	if len(props) != 8 {
		t.Fatalf("Parse found %d properties, want 8: %v", len(props), props)
	}
	s, err := ovfenv.Validate(props)
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "registry.enclave.example" || s.DHCP() || s.Address != netip.MustParsePrefix("10.0.0.10/24") ||
		s.Gateway != netip.MustParseAddr("10.0.0.1") || len(s.DNS) != 2 || s.AdminPassword != "correct horse battery" || s.Mode != "bootstrap" {
		t.Fatalf("settings = %+v", s)
	}
	if want := []string{"ntp.enclave.example", "10.0.0.4"}; !slices.Equal(s.NTP, want) {
		t.Fatalf("NTP = %v, want %v", s.NTP, want)
	}
	if want := []string{"registry.enclave.example", "10.0.0.10", "registry", "harbor-bootstrap.enclave.example"}; !slices.Equal(s.Hostnames, want) {
		t.Fatalf("Hostnames = %v, want %v", s.Hostnames, want)
	}
}

func TestMarshalRoundTrips(t *testing.T) {
	t.Parallel()
	in := map[string]string{"guestinfo.a": `x"<&>` + "\nline two", "guestinfo.b": ""}
	out, err := ovfenv.Parse(strings.NewReader(string(ovfenv.Marshal(in))))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out["guestinfo.a"] != in["guestinfo.a"] || out["guestinfo.b"] != "" {
		t.Fatalf("round trip = %q, want %q", out, in)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, doc string }{
		{"not xml", "guestinfo.ip=1.2.3.4"},
		{"other root", `<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>`},
		{"duplicate key", `<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"><PropertySection>
			<Property oe:key="k" oe:value="1"/><Property oe:key="k" oe:value="2"/></PropertySection></Environment>`},
		{"key missing", `<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"><PropertySection>
			<Property oe:value="2"/></PropertySection></Environment>`},
		{"too large", `<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1">` + strings.Repeat(" ", 1<<20) + `</Environment>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := ovfenv.Parse(strings.NewReader(tc.doc)); !errors.Is(err, ovfenv.ErrMalformed) {
				t.Fatalf("Parse = %v, want ErrMalformed", err)
			}
		})
	}
}

const goodPassword = "s3cret-enough-pw"

func TestValidateDHCP(t *testing.T) {
	t.Parallel()
	s, err := ovfenv.Validate(map[string]string{ovfenv.KeyPassword: goodPassword, "vendor.other": "ignored"})
	if err != nil {
		t.Fatal(err)
	}
	if !s.DHCP() || s.Hostname != "" || len(s.Hostnames) != 0 || s.Mode != "bootstrap" {
		t.Fatalf("settings = %+v", s)
	}
	s, err = ovfenv.Validate(map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyIP: "fd00::10", ovfenv.KeyNetmask: "64", ovfenv.KeyGateway: "fd00::1"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Address.String() != "fd00::10/64" || s.Gateway.String() != "fd00::1" {
		t.Fatalf("IPv6 settings = %+v", s)
	}
}

// TestValidateReportsEveryProblem: each bad property is named with what is
// wrong, all at once, and no Settings come back.
func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		props map[string]string
		want  map[string]string // key -> part of the message
	}{
		{"malformed address and empty password", map[string]string{ovfenv.KeyIP: "10.0.2.300", ovfenv.KeyNetmask: "24"},
			map[string]string{ovfenv.KeyIP: `"10.0.2.300" is not an IPv4 or IPv6 address`, ovfenv.KeyPassword: "empty"}},
		{"netmask", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyIP: "10.0.0.5", ovfenv.KeyNetmask: "255.0.255.0"},
			map[string]string{ovfenv.KeyNetmask: "not a contiguous netmask"}},
		{"no netmask", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyIP: "10.0.0.5"},
			map[string]string{ovfenv.KeyNetmask: "needs its netmask"}},
		{"gateway outside", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyIP: "10.0.0.5", ovfenv.KeyNetmask: "/24", ovfenv.KeyGateway: "10.0.1.1"},
			map[string]string{ovfenv.KeyGateway: "not in the network 10.0.0.0/24"}},
		{"static parts without address", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyGateway: "10.0.0.1", ovfenv.KeyDNS: "10.0.0.2"},
			map[string]string{ovfenv.KeyGateway: "needs an address", ovfenv.KeyDNS: "needs an address"}},
		{"dns, ntp, hostnames", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyIP: "10.0.0.5", ovfenv.KeyNetmask: "24",
			ovfenv.KeyDNS: "dns.example", ovfenv.KeyNTP: "bad_name!", ovfenv.KeyHostnames: "-x-"},
			map[string]string{ovfenv.KeyDNS: `"dns.example" is not an IP address`, ovfenv.KeyNTP: "bad_name!", ovfenv.KeyHostnames: `"-x-"`}},
		{"host name", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyHostname: "under_score.example"},
			map[string]string{ovfenv.KeyHostname: "not a valid host name"}},
		{"short password", map[string]string{ovfenv.KeyPassword: "short"}, map[string]string{ovfenv.KeyPassword: "too short"}},
		{"mode", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyMode: "primary"}, map[string]string{ovfenv.KeyMode: `"primary"`}},
		{"standby without primary", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyMode: "standby"},
			map[string]string{ovfenv.KeyPrimary: "needs the primary's URL"}},
		{"standby over http, user alone", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyMode: "standby",
			ovfenv.KeyPrimary: "http://harbor.example", ovfenv.KeyPrimaryUser: "robot$standby"},
			map[string]string{ovfenv.KeyPrimary: "not an https:// URL", ovfenv.KeyPrimaryUser: "together"}},
		{"primary without standby", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyPrimary: "https://harbor.example"},
			map[string]string{ovfenv.KeyPrimary: "the mode is bootstrap"}},
		{"tls cert without key", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyTLSCert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
			map[string]string{ovfenv.KeyTLSCert: "without its private key"}},
		{"not pem", map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyCACert: "hello", ovfenv.KeyCAKey: "aGVsbG8="},
			map[string]string{ovfenv.KeyCACert: "neither PEM nor base64", ovfenv.KeyCAKey: "neither PEM nor base64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := ovfenv.Validate(tc.props)
			var verr *ovfenv.Error
			if !errors.As(err, &verr) {
				t.Fatalf("Validate = %+v, %v; want an *ovfenv.Error", s, err)
			}
			got := map[string]string{}
			for _, p := range verr.Problems {
				got[p.Key] += p.Message
			}
			for key, part := range tc.want {
				if !strings.Contains(got[key], part) {
					t.Errorf("problem of %s = %q, want it to say %q (all: %v)", key, got[key], part, err)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("problems = %v, want exactly the keys of %v", got, tc.want)
			}
		})
	}
}

// pair makes a certificate and key; ca makes a CA, else a server
// certificate for names signed by parent (or self-signed).
func pair(t *testing.T, ca bool, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
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

func TestValidateCertificates(t *testing.T) {
	t.Parallel()
	caCert, caKey := pair(t, true)
	srvCert, srvKey := pair(t, false, "reg.example", "10.0.0.5")
	_, otherKey := pair(t, false)
	base := func(kv ...string) map[string]string {
		m := map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyHostname: "reg.example", ovfenv.KeyIP: "10.0.0.5", ovfenv.KeyNetmask: "24"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

	s, err := ovfenv.Validate(base(ovfenv.KeyCACert, b64(caCert), ovfenv.KeyCAKey, string(caKey)))
	if err != nil || string(s.CACert) != string(caCert) || string(s.CAKey) != string(caKey) {
		t.Fatalf("a CA in base64 and PEM: %v", err)
	}
	s, err = ovfenv.Validate(base(ovfenv.KeyTLSCert, string(srvCert), ovfenv.KeyTLSKey, b64(srvKey)))
	if err != nil || string(s.TLSCert) != string(srvCert) {
		t.Fatalf("a server certificate: %v", err)
	}
	for _, tc := range []struct {
		name  string
		props map[string]string
		key   string
		want  string
	}{
		{"server cert as CA", base(ovfenv.KeyCACert, string(srvCert), ovfenv.KeyCAKey, string(srvKey)), ovfenv.KeyCACert, "not a CA"},
		{"wrong key", base(ovfenv.KeyTLSCert, string(srvCert), ovfenv.KeyTLSKey, string(otherKey)), ovfenv.KeyTLSCert, "does not belong"},
		{"missing name", base(ovfenv.KeyTLSCert, string(srvCert), ovfenv.KeyTLSKey, string(srvKey), ovfenv.KeyHostnames, "other.example"), ovfenv.KeyTLSCert, "does not carry other.example"},
		{"both", base(ovfenv.KeyTLSCert, string(srvCert), ovfenv.KeyTLSKey, string(srvKey), ovfenv.KeyCACert, string(caCert), ovfenv.KeyCAKey, string(caKey)), ovfenv.KeyCACert, "not both"},
	} {
		_, err := ovfenv.Validate(tc.props)
		if err == nil || !strings.Contains(err.Error(), tc.key+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want %s: …%s…", tc.name, err, tc.key, tc.want)
		}
	}
}

func TestValidateStandby(t *testing.T) {
	t.Parallel()
	caCert, _ := pair(t, true)
	s, err := ovfenv.Validate(map[string]string{ovfenv.KeyPassword: goodPassword, ovfenv.KeyMode: "standby",
		ovfenv.KeyPrimary: "https://harbor.enclave.example/", ovfenv.KeyPrimaryUser: "robot$standby", ovfenv.KeyPrimaryPass: "secret",
		ovfenv.KeyPrimaryCA: base64.StdEncoding.EncodeToString(caCert)})
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != "standby" || s.Primary.URL != "https://harbor.enclave.example" || s.Primary.Username != "robot$standby" ||
		s.Primary.Password != "secret" || string(s.Primary.CAPEM) != string(caCert) {
		t.Fatalf("settings = %+v", s)
	}
}

func TestPropertiesAreDeclaredOnce(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, p := range ovfenv.Properties() {
		if seen[p.Key] || !strings.HasPrefix(p.Key, "guestinfo.") || p.Label == "" || p.Description == "" || p.Category == "" || p.Type != "string" {
			t.Errorf("property %+v: duplicate, or missing a label, description, category or type", p)
		}
		seen[p.Key] = true
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(vcenterEnv))
	f.Add(ovfenv.Marshal(map[string]string{"k": "v"}))
	f.Fuzz(func(_ *testing.T, data []byte) {
		props, err := ovfenv.Parse(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		_, _ = ovfenv.Validate(props)
	})
}
