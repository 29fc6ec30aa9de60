package ovfenv

import (
	"slices"
)

// Keys of the vApp properties. They are guestinfo.* keys, so that with the
// com.vmware.guestInfo transport each is also readable on its own.
const (
	KeyHostname     = "guestinfo.hostname"
	KeyIP           = "guestinfo.ip"
	KeyNetmask      = "guestinfo.netmask"
	KeyGateway      = "guestinfo.gateway"
	KeyDNS          = "guestinfo.dns"
	KeyNTP          = "guestinfo.ntp"
	KeyPassword     = "guestinfo.admin_password" //nolint:gosec // G101: a property name, not a credential
	KeyHostnames    = "guestinfo.registry_hostnames"
	KeyTLSCert      = "guestinfo.tls_cert"
	KeyTLSKey       = "guestinfo.tls_key"
	KeyCACert       = "guestinfo.ca_cert"
	KeyCAKey        = "guestinfo.ca_key"
	KeyMode         = "guestinfo.mode"
	KeyPrimary      = "guestinfo.primary_url"
	KeyPrimaryCA    = "guestinfo.primary_ca"
	KeyPrimaryUser  = "guestinfo.primary_username"
	KeyPrimaryPass  = "guestinfo.primary_password" //nolint:gosec // G101: a property name, not a credential
	categoryNet     = "1. Network"
	categoryAdmin   = "2. Administration"
	categoryTLS     = "3. Certificates"
	categoryStandby = "4. Standby"
)

// Property is one vApp property as the OVF descriptor declares it.
type Property struct {
	Key         string
	Type        string // OVF type: "string"
	Qualifiers  string // OVF qualifiers, e.g. ValueMap{"a","b"}
	Default     string
	Label       string
	Description string
	Category    string
	Password    bool
}

// Properties returns every property the appliance reads, in the order the
// deployment form shows them.
func Properties() []Property {
	return slices.Clone([]Property{
		{Key: KeyHostname, Type: "string", Qualifiers: "MaxLen(253)", Category: categoryNet,
			Label:       "Host name",
			Description: "The machine's fully qualified host name, e.g. registry.enclave.example. Also the first name on the registry's certificate."},
		{Key: KeyIP, Type: "string", Category: categoryNet,
			Label:       "IP address",
			Description: "Static IPv4 or IPv6 address of the first network adapter. Leave empty to use DHCP (then leave netmask, gateway and DNS empty too)."},
		{Key: KeyNetmask, Type: "string", Category: categoryNet,
			Label:       "Netmask",
			Description: "Netmask of the static address, as 255.255.255.0 or as a prefix length (24). Required with a static address."},
		{Key: KeyGateway, Type: "string", Category: categoryNet,
			Label:       "Default gateway",
			Description: "Default gateway of the static address; it must lie in the address's network. Optional."},
		{Key: KeyDNS, Type: "string", Category: categoryNet,
			Label:       "DNS servers",
			Description: "Comma-separated IP addresses of DNS servers, for a static address. Optional."},
		{Key: KeyNTP, Type: "string", Category: categoryNet,
			Label:       "NTP servers",
			Description: "Comma-separated NTP servers (names or addresses). Empty keeps the time the hypervisor gives (VMware Tools)."},
		{Key: KeyPassword, Type: "string", Qualifiers: "MinLen(12),MaxLen(72)", Category: categoryAdmin, Password: true,
			Label:       "Admin password",
			Description: "Password of the appliance's admin account, 12 to 72 characters. Required."},
		{Key: KeyHostnames, Type: "string", Category: categoryAdmin,
			Label:       "Registry host names",
			Description: "Comma-separated extra DNS names and IP addresses the registry's certificate carries, besides the host name and the address."},
		{Key: KeyMode, Type: "string", Qualifiers: `ValueMap{"bootstrap","standby"}`, Default: "bootstrap", Category: categoryAdmin,
			Label:       "Initial mode",
			Description: "bootstrap: the enclave's first, writable registry. standby: a read-only standby that follows the primary below (production Harbor) from its first boot."},
		{Key: KeyTLSCert, Type: "string", Category: categoryTLS,
			Label:       "TLS certificate (PEM or base64 of PEM)",
			Description: "Optional server certificate chain for the registry, leaf first. Give its key too. Empty: the appliance issues its own from its private CA."},
		{Key: KeyTLSKey, Type: "string", Category: categoryTLS, Password: true,
			Label:       "TLS private key (PEM or base64 of PEM)",
			Description: "The private key of the TLS certificate above."},
		{Key: KeyCACert, Type: "string", Category: categoryTLS,
			Label:       "CA certificate to sign with (PEM or base64 of PEM)",
			Description: "Optional: a CA (for instance an intermediate of the enclave's PKI) the appliance signs its server certificate with, instead of creating its own. Give its key too; not with a TLS certificate."},
		{Key: KeyCAKey, Type: "string", Category: categoryTLS, Password: true,
			Label:       "CA private key (PEM or base64 of PEM)",
			Description: "The private key of the CA above."},
		{Key: KeyPrimary, Type: "string", Category: categoryStandby,
			Label:       "Primary registry URL",
			Description: "With the standby mode: the https:// URL of the registry to follow (production Harbor)."},
		{Key: KeyPrimaryUser, Type: "string", Category: categoryStandby,
			Label:       "Primary user name",
			Description: "With the standby mode: the account the standby pulls with (a Harbor robot account). Empty: anonymous."},
		{Key: KeyPrimaryPass, Type: "string", Category: categoryStandby, Password: true,
			Label:       "Primary password",
			Description: "The password or secret of that account."},
		{Key: KeyPrimaryCA, Type: "string", Category: categoryStandby,
			Label:       "Primary CA certificate (PEM or base64 of PEM)",
			Description: "With the standby mode: the CA the primary's certificate chains to, if not a public one."},
	})
}
