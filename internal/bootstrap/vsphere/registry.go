package vsphere

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// defaultRegistryPort is the port vCenter assumes when none is given.
const defaultRegistryPort = 443

// Registry is a container image registry as the appliance wants a
// Supervisor to know it.
type Registry struct {
	// Name is unique among the Supervisor's registries. Empty means the
	// host name (with "-port" when the port is not 443).
	Name string
	// Hostname is the registry's host name or IP address, without scheme,
	// port or path.
	Hostname string
	// Port is the registry's port; 0 means 443.
	Port int
	// Username and Password, if set, are what the Supervisor pulls with.
	// vCenter never gives the password back.
	Username string
	Password string
	// CertificateChain is the PEM of the CA chain the Supervisor verifies
	// the registry with. Empty means vCenter skips verification, so the
	// appliance always gives one.
	CertificateChain string
	// Default makes this the registry the Supervisor pulls from when an
	// image names none.
	Default bool
}

// RegistryInfo is a registry of the Supervisor as vCenter reports it.
type RegistryInfo struct {
	ID               string
	Name             string
	Hostname         string
	Port             int // 443 when vCenter reports none
	Username         string
	CertificateChain string
	Default          bool
}

// imageRegistry is the documented ImageRegistry structure.
type imageRegistry struct {
	Hostname         string `json:"hostname"`
	Port             int    `json:"port,omitempty"`
	Username         string `json:"username,omitempty"`
	Password         string `json:"password,omitempty"`
	CertificateChain string `json:"certificate_chain,omitempty"`
}

// registryCreateSpec is the documented ContainerImageRegistries.CreateSpec.
type registryCreateSpec struct {
	Name            string        `json:"name"`
	ImageRegistry   imageRegistry `json:"image_registry"`
	DefaultRegistry bool          `json:"default_registry"`
}

// registryUpdateSpec is the documented, flat, ContainerImageRegistries.UpdateSpec:
// a field left nil is not changed.
type registryUpdateSpec struct {
	Name             *string `json:"name,omitempty"`
	Hostname         *string `json:"hostname,omitempty"`
	Port             *int    `json:"port,omitempty"`
	Username         *string `json:"username,omitempty"`
	Password         *string `json:"password,omitempty"`
	CertificateChain *string `json:"certificate_chain,omitempty"`
	DefaultRegistry  *bool   `json:"default_registry,omitempty"`
}

// registryInfo is the documented ContainerImageRegistries.Info.
type registryInfo struct {
	ID              string        `json:"id"`
	Name            string        `json:"name"`
	ImageRegistry   imageRegistry `json:"image_registry"`
	DefaultRegistry bool          `json:"default_registry"`
}

func (i registryInfo) export() RegistryInfo {
	port := i.ImageRegistry.Port
	if port == 0 {
		port = defaultRegistryPort
	}
	return RegistryInfo{
		ID:               i.ID,
		Name:             i.Name,
		Hostname:         i.ImageRegistry.Hostname,
		Port:             port,
		Username:         i.ImageRegistry.Username,
		CertificateChain: i.ImageRegistry.CertificateChain,
		Default:          i.DefaultRegistry,
	}
}

// normalize checks r and fills in the defaults.
func (r Registry) normalize() (Registry, error) {
	var problems []string
	switch {
	case r.Hostname == "":
		problems = append(problems, "no hostname")
	case strings.Contains(r.Hostname, "://"), strings.ContainsAny(r.Hostname, "/ \t\n"):
		problems = append(problems, fmt.Sprintf("hostname %q must be a bare host name, without scheme or path", r.Hostname))
	case strings.Contains(r.Hostname, ":") && !strings.Contains(r.Hostname, "]") && strings.Count(r.Hostname, ":") == 1:
		problems = append(problems, fmt.Sprintf("hostname %q holds a port: give it in Port", r.Hostname))
	}
	if r.Port == 0 {
		r.Port = defaultRegistryPort
	}
	if r.Port < 1 || r.Port > 65535 {
		problems = append(problems, fmt.Sprintf("port %d out of range", r.Port))
	}
	if r.Password != "" && r.Username == "" {
		problems = append(problems, "a password without a username")
	}
	if r.CertificateChain == "" {
		problems = append(problems, "no certificate chain: the Supervisor would not verify the registry")
	} else if _, err := certPool([]byte(r.CertificateChain)); err != nil {
		problems = append(problems, "certificate chain: "+err.Error())
	}
	if r.Name == "" {
		r.Name = r.Hostname
		if r.Port != defaultRegistryPort {
			r.Name += "-" + strconv.Itoa(r.Port)
		}
	}
	if len(problems) > 0 {
		return r, fmt.Errorf("registry %q: %s", r.Hostname, strings.Join(problems, "; "))
	}
	return r, nil
}

func (c *Client) registriesPath() string {
	return "/api/vcenter/namespace-management/supervisors/" + c.supervisor + "/container-image-registries"
}

func (c *Client) registryPath(id string) (string, error) {
	if err := checkSegment("registry id", id); err != nil {
		return "", err
	}
	return c.registriesPath() + "/" + id, nil
}

// Registries lists the container image registries of the Supervisor.
func (c *Client) Registries(ctx context.Context) ([]RegistryInfo, error) {
	var out []registryInfo
	if err := c.do(ctx, request{op: "list registries", method: http.MethodGet, path: c.registriesPath(), out: &out}); err != nil {
		return nil, err
	}
	infos := make([]RegistryInfo, len(out))
	for i, o := range out {
		infos[i] = o.export()
	}
	return infos, nil
}

// Registry returns one registry of the Supervisor; ErrNotFound if there is
// no such id.
func (c *Client) Registry(ctx context.Context, id string) (RegistryInfo, error) {
	p, err := c.registryPath(id)
	if err != nil {
		return RegistryInfo{}, &Error{Op: "get registry", Err: err}
	}
	var out registryInfo
	if err := c.do(ctx, request{op: "get registry", method: http.MethodGet, path: p, out: &out}); err != nil {
		return RegistryInfo{}, err
	}
	return out.export(), nil
}

// EnsureRegistry makes r a registry of the Supervisor and reports whether it
// had to create it. A registry with the same host name and port is the same
// registry: if its CA chain, user name or default flag differ from r, they
// are updated (with r's password, when r has one); otherwise nothing is
// sent. Its name is left as vCenter has it. vCenter never reports
// passwords, so a changed password alone goes unnoticed: remove the
// registry and ensure it again to change only that.
func (c *Client) EnsureRegistry(ctx context.Context, r Registry) (RegistryInfo, bool, error) {
	r, err := r.normalize()
	if err != nil {
		return RegistryInfo{}, false, &Error{Op: "ensure registry", Err: err}
	}
	existing, err := c.Registries(ctx)
	if err != nil {
		return RegistryInfo{}, false, err
	}
	for _, e := range existing {
		if !strings.EqualFold(e.Hostname, r.Hostname) || e.Port != r.Port {
			continue
		}
		var u registryUpdateSpec
		if !sameCertificates(e.CertificateChain, r.CertificateChain) {
			u.CertificateChain = &r.CertificateChain
		}
		if e.Username != r.Username {
			u.Username = &r.Username
		}
		if e.Default != r.Default {
			u.DefaultRegistry = &r.Default
		}
		if u == (registryUpdateSpec{}) {
			c.log.Debug("registry unchanged", "supervisor", c.supervisor, "id", e.ID, "hostname", e.Hostname)
			return e, false, nil
		}
		if r.Password != "" {
			u.Password = &r.Password
		}
		if err := c.updateRegistry(ctx, "update registry", e.ID, u, r.Password); err != nil {
			return RegistryInfo{}, false, err
		}
		c.log.Info("registry updated", "supervisor", c.supervisor, "id", e.ID, "hostname", e.Hostname,
			"certificate_chain", u.CertificateChain != nil, "username", u.Username != nil, "default", r.Default)
		info, err := c.Registry(ctx, e.ID)
		return info, false, err
	}
	info, err := c.createRegistry(ctx, r)
	if err != nil {
		return RegistryInfo{}, false, err
	}
	c.log.Info("registry created", "supervisor", c.supervisor, "id", info.ID, "name", info.Name,
		"hostname", info.Hostname, "port", info.Port, "default", info.Default)
	return info, true, nil
}

// createRegistry posts the CreateSpec and reads back the new registry.
func (c *Client) createRegistry(ctx context.Context, r Registry) (RegistryInfo, error) {
	spec := registryCreateSpec{
		Name: r.Name,
		ImageRegistry: imageRegistry{
			Hostname:         r.Hostname,
			Port:             r.Port,
			Username:         r.Username,
			Password:         r.Password,
			CertificateChain: r.CertificateChain,
		},
		DefaultRegistry: r.Default,
	}
	var answer json.RawMessage
	err := c.do(ctx, request{op: "create registry", method: http.MethodPost, path: c.registriesPath(),
		body: spec, out: &answer, secret: r.Password})
	if err != nil {
		return RegistryInfo{}, err
	}
	// The answer is assumed to be the new Info; an id alone, or nothing,
	// is read back.
	answer = bytes.TrimSpace(answer)
	var id string
	switch {
	case len(answer) > 0 && answer[0] == '{':
		var info registryInfo
		if err := json.Unmarshal(answer, &info); err != nil {
			return RegistryInfo{}, &Error{Op: "create registry", Method: http.MethodPost, Path: c.registriesPath(),
				Err: fmt.Errorf("decode answer: %w", err)}
		}
		if info.ID != "" {
			return info.export(), nil
		}
	case len(answer) > 0 && answer[0] == '"':
		if err := json.Unmarshal(answer, &id); err == nil && id != "" {
			return c.Registry(ctx, id)
		}
	}
	all, err := c.Registries(ctx)
	if err != nil {
		return RegistryInfo{}, err
	}
	for _, e := range all {
		if strings.EqualFold(e.Hostname, r.Hostname) && e.Port == r.Port {
			return e, nil
		}
	}
	return RegistryInfo{}, &Error{Op: "create registry", Method: http.MethodPost, Path: c.registriesPath(),
		Err: errors.New("vCenter accepted the registry but does not list it")}
}

func (c *Client) updateRegistry(ctx context.Context, op, id string, u registryUpdateSpec, secret string) error {
	p, err := c.registryPath(id)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	return c.do(ctx, request{op: op, method: http.MethodPatch, path: p, body: u, secret: secret})
}

// SetDefaultRegistry makes the registry with this id the Supervisor's
// default and clears the default flag of every other registry, so that the
// outcome does not depend on whether vCenter moves the flag itself. It
// sends nothing when that is already so; ErrNotFound if there is no such
// registry.
func (c *Client) SetDefaultRegistry(ctx context.Context, id string) error {
	p, err := c.registryPath(id)
	if err != nil {
		return &Error{Op: "set default registry", Err: err}
	}
	all, err := c.Registries(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(all, func(e RegistryInfo) bool { return e.ID == id })
	if i < 0 {
		return &Error{Op: "set default registry", Method: http.MethodGet, Path: p, Err: ErrNotFound}
	}
	yes, no := true, false
	changed := false
	if !all[i].Default {
		if err := c.updateRegistry(ctx, "set default registry", id, registryUpdateSpec{DefaultRegistry: &yes}, ""); err != nil {
			return err
		}
		changed = true
	}
	for _, e := range all {
		if e.ID != id && e.Default {
			if err := c.updateRegistry(ctx, "clear default registry", e.ID, registryUpdateSpec{DefaultRegistry: &no}, ""); err != nil {
				return err
			}
			changed = true
		}
	}
	if changed {
		c.log.Info("default registry set", "supervisor", c.supervisor, "id", id, "hostname", all[i].Hostname)
	}
	return nil
}

// RemoveRegistry deletes the registry with this id from the Supervisor;
// ErrNotFound if there is none.
func (c *Client) RemoveRegistry(ctx context.Context, id string) error {
	p, err := c.registryPath(id)
	if err != nil {
		return &Error{Op: "remove registry", Err: err}
	}
	if err := c.do(ctx, request{op: "remove registry", method: http.MethodDelete, path: p}); err != nil {
		return err
	}
	c.log.Info("registry removed", "supervisor", c.supervisor, "id", id)
	return nil
}

// sameCertificates compares two PEM chains by their certificates, so that
// line endings and comments do not count as a change.
func sameCertificates(a, b string) bool {
	da, db := pemCertificates(a), pemCertificates(b)
	if da == nil || db == nil {
		return strings.TrimSpace(a) == strings.TrimSpace(b)
	}
	if len(da) != len(db) {
		return false
	}
	for i := range da {
		if !bytes.Equal(da[i], db[i]) {
			return false
		}
	}
	return true
}

// pemCertificates gives the DER of every CERTIFICATE block, or nil if none.
func pemCertificates(s string) [][]byte {
	var ders [][]byte
	rest := []byte(strings.ReplaceAll(s, "\r\n", "\n"))
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return ders
		}
		if block.Type == "CERTIFICATE" {
			ders = append(ders, block.Bytes)
		}
	}
}
