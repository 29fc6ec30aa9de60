package firstboot

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/appliance-dev/appliance/internal/ovfenv"
)

// file is one file of the machine's configuration, relative to Root.
type file struct {
	rel  string
	data []byte
	perm os.FileMode
}

// systemFiles renders every file of the machine's configuration from s.
func systemFiles(o Options, s ovfenv.Settings) ([]file, error) {
	files := []file{
		{NetworkFile, networkUnit(s), 0o644},
		{ChronyFile, chronySources(s), 0o644},
		{ConfigFile, ConfigYAML(s, "/"+strings.TrimPrefix(filepath.ToSlash(o.relDataDir()), "/")), 0o644},
	}
	if s.Hostname != "" {
		files = append(files, file{HostnameFile, []byte(s.Hostname + "\n"), 0o644}, file{HostsFile, hosts(s), 0o644})
	}
	if s.TLSCert != nil {
		files = append(files, file{TLSKeyFile, s.TLSKey, 0o600}, file{TLSCertFile, s.TLSCert, 0o644})
	}
	return files, nil
}

func (o *Options) relDataDir() string {
	if o.DataDir == "" {
		return DefaultDataDir
	}
	return o.DataDir
}

// sysDigestInput is what the system record digests.
func sysDigestInput(files []file) []byte {
	data, _ := json.Marshal(files2map(files))
	return data
}

func files2map(files []file) map[string]string {
	m := make(map[string]string, len(files))
	for _, f := range files {
		m[f.rel] = string(f.data)
	}
	return m
}

// writeSystem writes the machine's files, sets the running host name, and
// removes a supplied certificate the properties no longer give.
func (o *Options) writeSystem(files []file, s ovfenv.Settings) error {
	for _, f := range files {
		// The TLS key is read by the appliance's user.
		owned := f.rel == TLSKeyFile
		if err := o.writeFile(o.path(f.rel), f.data, f.perm, owned); err != nil {
			return err
		}
	}
	if s.TLSCert == nil {
		for _, rel := range []string{TLSCertFile, TLSKeyFile} {
			if err := os.Remove(o.path(rel)); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("first boot: %w", err)
			}
		}
	}
	if s.Hostname != "" && o.SetHostname != nil {
		if err := o.SetHostname(s.Hostname); err != nil {
			return fmt.Errorf("first boot: set the host name %s: %w", s.Hostname, err)
		}
	}
	return nil
}

// networkUnit is the systemd-networkd configuration of the first
// Ethernet adapter (vmxnet3 is ens192 on VMware; QEMU names differ).
func networkUnit(s ovfenv.Settings) []byte {
	var b strings.Builder
	b.WriteString("# Written by `appliance firstboot` from the vApp properties; changing the\n# properties replaces it at the next boot.\n")
	b.WriteString("[Match]\nType=ether\nName=en* eth*\n\n[Network]\n")
	if s.DHCP() {
		b.WriteString("DHCP=yes\n")
		return []byte(b.String())
	}
	fmt.Fprintf(&b, "Address=%s\n", s.Address)
	if s.Gateway.IsValid() {
		fmt.Fprintf(&b, "Gateway=%s\n", s.Gateway)
	}
	for _, d := range s.DNS {
		fmt.Fprintf(&b, "DNS=%s\n", d)
	}
	b.WriteString("IPv6AcceptRA=no\nLinkLocalAddressing=ipv6\n")
	return []byte(b.String())
}

func chronySources(s ovfenv.Settings) []byte {
	var b strings.Builder
	b.WriteString("# Written by `appliance firstboot` from the vApp property guestinfo.ntp.\n")
	for _, n := range s.NTP {
		fmt.Fprintf(&b, "server %s iburst\n", n)
	}
	return []byte(b.String())
}

func hosts(s ovfenv.Settings) []byte {
	short, _, _ := strings.Cut(s.Hostname, ".")
	names := s.Hostname
	if short != s.Hostname {
		names += " " + short
	}
	addr := "127.0.1.1"
	if !s.DHCP() && s.Address.Addr().Is4() {
		addr = s.Address.Addr().String()
	}
	return []byte("127.0.0.1\tlocalhost\n" + addr + "\t" + names + "\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

// ConfigYAML renders the appliance's configuration file for s: HTTPS on
// 443, plain HTTP on 80, the data on its own disk, the certificate's names,
// and a supplied certificate when there is one.
func ConfigYAML(s ovfenv.Settings, dataDir string) []byte {
	var b strings.Builder
	b.WriteString("# Written by `appliance firstboot` from the vApp properties: changing the\n")
	b.WriteString("# properties and restarting the VM replaces it. Every key: configs/appliance.yaml.\n")
	fmt.Fprintf(&b, "data_dir: %s\n", strconv.Quote(dataDir))
	b.WriteString("https_addr: \":443\"\nhttp_addr: \":80\"\n")
	b.WriteString("hostnames:")
	if len(s.Hostnames) == 0 {
		b.WriteString(" []")
	}
	b.WriteString("\n")
	for _, h := range s.Hostnames {
		fmt.Fprintf(&b, "  - %s\n", strconv.Quote(h))
	}
	if s.TLSCert != nil {
		fmt.Fprintf(&b, "tls:\n  cert_file: %s\n  key_file: %s\n", strconv.Quote("/"+TLSCertFile), strconv.Quote("/"+TLSKeyFile))
	}
	b.WriteString("log:\n  format: text\n")
	return []byte(b.String())
}
