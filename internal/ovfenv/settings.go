package ovfenv

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Settings is what the properties ask of the machine and of the appliance,
// every value checked.
type Settings struct {
	// Hostname is the fully qualified host name; empty keeps the image's.
	Hostname string
	// Address is the static address with its prefix; invalid (the zero
	// Prefix) means DHCP.
	Address netip.Prefix
	// Gateway is the static default gateway, if any.
	Gateway netip.Addr
	// DNS are the static DNS servers.
	DNS []netip.Addr
	// NTP are the NTP servers; none keeps the hypervisor's time.
	NTP []string
	// AdminPassword is the admin account's password.
	AdminPassword string
	// Hostnames are the names and addresses the server certificate
	// carries, the host name and the static address first.
	Hostnames []string
	// TLSCert and TLSKey are a supplied server certificate chain (PEM, leaf
	// first) and its key (PEM), or both empty.
	TLSCert, TLSKey []byte
	// CACert and CAKey are a supplied CA to sign with (PEM), or both empty.
	CACert, CAKey []byte
	// Mode is the initial lifecycle mode: bootstrap or standby.
	Mode string
	// Primary is what a standby follows (Mode standby only).
	Primary Primary
}

// Primary is the registry a standby follows.
type Primary struct {
	URL                string
	Username, Password string
	CAPEM              []byte
}

// DHCP tells whether the network is configured by DHCP.
func (s Settings) DHCP() bool { return !s.Address.IsValid() }

// Problem is one property that cannot be applied, and why.
type Problem struct {
	Key     string
	Message string
}

// Error lists every property that cannot be applied. Nothing is applied
// when Validate returns one.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Key + ": " + p.Message
	}
	return "invalid vApp properties: " + strings.Join(parts, "; ")
}

var hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

// validHostname is RFC 1123: dot-separated labels of letters, digits and
// inner hyphens, at most 253 characters.
func validHostname(s string) bool { return len(s) <= 253 && hostnameRE.MatchString(s) }

// Validate checks props, the properties of an OVF environment, and returns
// the Settings they ask for. Unknown keys are ignored (vCenter adds its
// own); every problem with a known one is reported in one *Error.
func Validate(props map[string]string) (Settings, error) {
	var (
		s    Settings
		errs []Problem
	)
	bad := func(key, format string, args ...any) {
		errs = append(errs, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
	}
	get := func(key string) string { return strings.TrimSpace(props[key]) }

	if h := get(KeyHostname); h != "" {
		if validHostname(h) {
			s.Hostname = strings.ToLower(h)
		} else {
			bad(KeyHostname, "%q is not a valid host name (letters, digits, '-' and '.', at most 253 characters)", h)
		}
	}

	ip, mask, gw, dns := get(KeyIP), get(KeyNetmask), get(KeyGateway), get(KeyDNS)
	if ip == "" {
		for _, k := range []struct{ key, v string }{{KeyNetmask, mask}, {KeyGateway, gw}, {KeyDNS, dns}} {
			if k.v != "" {
				bad(k.key, "set without %s: a static configuration needs an address; leave all four empty for DHCP", KeyIP)
			}
		}
	} else {
		addr, err := netip.ParseAddr(ip)
		if err != nil || addr.Zone() != "" {
			bad(KeyIP, "%q is not an IPv4 or IPv6 address", ip)
		}
		bits, merr := parseNetmask(mask, addr)
		if merr != nil {
			bad(KeyNetmask, "%v", merr)
		}
		if err == nil && merr == nil {
			s.Address = netip.PrefixFrom(addr.Unmap(), bits)
		}
		if gw != "" {
			g, err := netip.ParseAddr(gw)
			switch {
			case err != nil:
				bad(KeyGateway, "%q is not an IP address", gw)
			case s.Address.IsValid() && !s.Address.Masked().Contains(g.Unmap()):
				bad(KeyGateway, "%s is not in the network %s", g, s.Address.Masked())
			case s.Address.IsValid() && g.Unmap() == s.Address.Addr():
				bad(KeyGateway, "%s is the appliance's own address", g)
			default:
				s.Gateway = g.Unmap()
			}
		}
		for _, d := range splitList(dns) {
			a, err := netip.ParseAddr(d)
			if err != nil {
				bad(KeyDNS, "%q is not an IP address", d)
				continue
			}
			s.DNS = append(s.DNS, a.Unmap())
		}
	}

	for _, n := range splitList(get(KeyNTP)) {
		if _, err := netip.ParseAddr(n); err != nil && !validHostname(n) {
			bad(KeyNTP, "%q is neither an IP address nor a host name", n)
			continue
		}
		s.NTP = append(s.NTP, n)
	}

	// The password is taken as given: spaces may be part of it.
	switch pw := props[KeyPassword]; {
	case pw == "":
		bad(KeyPassword, "empty: the admin account needs a password of 12 to 72 characters")
	case len(pw) < 12:
		bad(KeyPassword, "too short: at least 12 characters are required")
	case len(pw) > 72:
		bad(KeyPassword, "too long: at most 72 bytes are allowed")
	case strings.ContainsAny(pw, "\r\n\x00"):
		bad(KeyPassword, "contains a line break or NUL")
	default:
		s.AdminPassword = pw
	}

	if s.Hostname != "" {
		s.Hostnames = append(s.Hostnames, s.Hostname)
	}
	if s.Address.IsValid() {
		s.Hostnames = append(s.Hostnames, s.Address.Addr().String())
	}
	for _, n := range splitList(get(KeyHostnames)) {
		if a, err := netip.ParseAddr(n); err == nil {
			n = a.Unmap().String()
		} else if validHostname(strings.TrimPrefix(n, "*.")) {
			n = strings.ToLower(n)
		} else {
			bad(KeyHostnames, "%q is neither an IP address nor a DNS name", n)
			continue
		}
		if !slices.Contains(s.Hostnames, n) {
			s.Hostnames = append(s.Hostnames, n)
		}
	}

	primaryCA := decodePEMProp(props, KeyPrimaryCA, bad)
	switch m := get(KeyMode); m {
	case "", "bootstrap":
		s.Mode = "bootstrap"
		for _, k := range []string{KeyPrimary, KeyPrimaryUser, KeyPrimaryPass, KeyPrimaryCA} {
			if get(k) != "" {
				bad(k, "set, but the mode is bootstrap: the primary is for the standby mode")
			}
		}
	case "standby":
		s.Mode = "standby"
		s.Primary = Primary{URL: strings.TrimRight(get(KeyPrimary), "/"), Username: get(KeyPrimaryUser), Password: props[KeyPrimaryPass], CAPEM: primaryCA}
		if u, err := url.Parse(s.Primary.URL); s.Primary.URL == "" {
			bad(KeyPrimary, "empty: the standby mode needs the primary's URL")
		} else if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
			bad(KeyPrimary, "%q is not an https:// URL of a registry (https://harbor.example)", s.Primary.URL)
		}
		if (s.Primary.Username == "") != (s.Primary.Password == "") {
			bad(KeyPrimaryUser, "give the primary's user name and password together, or neither")
		}
		if primaryCA != nil {
			if block, _ := pem.Decode(primaryCA); block.Type != "CERTIFICATE" {
				bad(KeyPrimaryCA, "the PEM block is %q, want CERTIFICATE", block.Type)
			} else if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				bad(KeyPrimaryCA, "parse the certificate: %v", err)
			}
		}
	default:
		bad(KeyMode, "%q is not a mode the appliance starts in (bootstrap or standby)", m)
	}

	tlsCert, tlsKey := decodePEMProp(props, KeyTLSCert, bad), decodePEMProp(props, KeyTLSKey, bad)
	caCert, caKey := decodePEMProp(props, KeyCACert, bad), decodePEMProp(props, KeyCAKey, bad)
	if (tlsCert != nil || tlsKey != nil) && (caCert != nil || caKey != nil) {
		bad(KeyCACert, "give either a TLS certificate or a CA to sign with, not both")
	} else {
		if err := checkPair(tlsCert, tlsKey, false, s.Hostnames); err != nil {
			bad(KeyTLSCert, "%v", err)
		} else {
			s.TLSCert, s.TLSKey = tlsCert, tlsKey
		}
		if err := checkPair(caCert, caKey, true, nil); err != nil {
			bad(KeyCACert, "%v", err)
		} else {
			s.CACert, s.CAKey = caCert, caKey
		}
	}

	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return keyOrder(errs[i].Key) < keyOrder(errs[j].Key) })
		return Settings{}, &Error{Problems: errs}
	}
	return s, nil
}

// keyOrder sorts problems as the deployment form shows the properties.
func keyOrder(key string) int {
	return slices.IndexFunc(Properties(), func(p Property) bool { return p.Key == key })
}

// parseNetmask reads a dotted netmask (IPv4) or a prefix length.
func parseNetmask(mask string, addr netip.Addr) (int, error) {
	maxBits := 32
	if addr.IsValid() && addr.Unmap().Is6() {
		maxBits = 128
	}
	if mask == "" {
		return 0, fmt.Errorf("empty: a static address needs its netmask (255.255.255.0 or 24)")
	}
	if n, err := strconv.Atoi(strings.TrimPrefix(mask, "/")); err == nil {
		if n < 1 || n > maxBits {
			return 0, fmt.Errorf("prefix length %d is outside 1..%d", n, maxBits)
		}
		return n, nil
	}
	ip := net.ParseIP(mask).To4()
	if ip == nil || maxBits != 32 {
		return 0, fmt.Errorf("%q is neither a dotted IPv4 netmask nor a prefix length", mask)
	}
	ones, bits := net.IPMask(ip).Size()
	if bits == 0 || ones == 0 {
		return 0, fmt.Errorf("%q is not a contiguous netmask", mask)
	}
	return ones, nil
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == ';' })
}

// decodePEMProp returns a property's PEM, accepting PEM or base64 of PEM
// (vCenter's form fields are one line). Empty is nil.
func decodePEMProp(props map[string]string, key string, bad func(key, format string, args ...any)) []byte {
	v := strings.TrimSpace(props[key])
	if v == "" {
		return nil
	}
	data := []byte(v + "\n")
	if !strings.HasPrefix(v, "-----BEGIN ") {
		dec, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(v), ""))
		if err != nil || !bytes.Contains(dec, []byte("-----BEGIN ")) {
			bad(key, "neither PEM nor base64 of PEM")
			return nil
		}
		data = dec
	}
	if block, _ := pem.Decode(data); block == nil {
		bad(key, "no PEM block")
		return nil
	}
	return data
}

// checkPair checks a certificate chain and its key: both or neither, the
// key matching the first certificate; a CA must be one, a server
// certificate must carry every name.
func checkPair(certPEM, keyPEM []byte, ca bool, names []string) error {
	switch {
	case certPEM == nil && keyPEM == nil:
		return nil
	case certPEM == nil:
		return errors.New("a private key is given without its certificate")
	case keyPEM == nil:
		return errors.New("a certificate is given without its private key")
	}
	block, _ := pem.Decode(certPEM)
	if block.Type != "CERTIFICATE" {
		return fmt.Errorf("the first PEM block is %q, want CERTIFICATE", block.Type)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse the certificate: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("the private key does not belong to the certificate")
	}
	if ca {
		if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
			return errors.New("the certificate is not a CA (basic constraints CA:TRUE and key usage certSign are required)")
		}
		return nil
	}
	for _, n := range names {
		if err := cert.VerifyHostname(n); err != nil {
			return fmt.Errorf("the certificate does not carry %s", n)
		}
	}
	return nil
}

func parseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("the private key is not PEM")
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("the private key's PEM block is %q, want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse the private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("the private key cannot sign")
	}
	return s, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
