package opsapi

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/audit"
	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere"
)

// The vSphere Supervisor hand-over: register the appliance as a container
// image registry, register Supervisor Services from imported imgpkg
// bundles, and re-point them at production Harbor after the promotion.

// VCenterRequest says how to reach vCenter. The password is used for the
// calls and never kept or logged.
type VCenterRequest struct {
	URL        string `json:"url"`
	Username   string `json:"username"`
	Password   string `json:"password"`
	CA         string `json:"ca,omitempty"`         // PEM
	Thumbprint string `json:"thumbprint,omitempty"` // SHA-256 or SHA-1, colon-separated hex
	Supervisor string `json:"supervisor"`
}

func (v VCenterRequest) config() (bootstrap.VCenter, error) {
	cfg := bootstrap.VCenter{URL: v.URL, Username: v.Username, Password: v.Password, CAPEM: []byte(v.CA), Thumbprint: v.Thumbprint, Supervisor: v.Supervisor}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return cfg, nil
}

// SupervisorRegistryRequest is the body of POST /api/v1/supervisor/registry.
type SupervisorRegistryRequest struct {
	VCenter VCenterRequest `json:"vcenter"`
	// Hostname is how the Supervisor reaches the appliance: a name its
	// certificate carries (default: the first configured host name).
	Hostname string `json:"hostname,omitempty"`
	// Port defaults to the HTTPS listener's.
	Port    int    `json:"port,omitempty"`
	Name    string `json:"name,omitempty"`
	Default bool   `json:"default,omitempty"`
	// Username and Password, if given, are what the Supervisor pulls with
	// (public projects need none).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// SupervisorServiceRequest is the body of POST /api/v1/supervisor/services.
type SupervisorServiceRequest struct {
	VCenter VCenterRequest `json:"vcenter"`
	// Bundle is the imported imgpkg bundle holding the Carvel Package and
	// PackageMetadata: REPOSITORY:TAG or REPOSITORY@DIGEST.
	Bundle   string `json:"bundle"`
	Hostname string `json:"hostname,omitempty"`
	Port     int    `json:"port,omitempty"`
	Install  bool   `json:"install,omitempty"`
	// Config is the service's YAML configuration, for the install.
	Config string `json:"config,omitempty"`
}

// SupervisorRepointRequest is the body of POST /api/v1/supervisor/repoint.
type SupervisorRepointRequest struct {
	VCenter VCenterRequest `json:"vcenter"`
	Bundle  string         `json:"bundle"`
	// Harbor is production Harbor's URL, as the promotion pushed to it.
	Harbor string `json:"harbor"`
	// HarborCA is the PEM the Supervisor trusts Harbor with.
	HarborCA  string `json:"harbor_ca"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	Reinstall bool   `json:"reinstall,omitempty"`
	Config    string `json:"config,omitempty"`
}

func (a *api) getSupervisor(c echo.Context) error {
	return c.JSON(http.StatusOK, a.Handover.State())
}

// applianceEndpoint is the appliance as a Supervisor reaches it: a name
// its certificate carries, and a port.
func (a *api) applianceEndpoint(hostname string, port int) (string, int, error) {
	if hostname == "" {
		if len(a.Appliance.Hostnames) == 0 {
			return "", 0, fmt.Errorf("%w: give the host name the Supervisor reaches the appliance by (the appliance's certificate carries %s)", ErrBadRequest, strings.Join(a.Appliance.CertNames, ", "))
		}
		hostname = a.Appliance.Hostnames[0]
	}
	if !slices.Contains(a.Appliance.CertNames, hostname) {
		return "", 0, fmt.Errorf("%w: the appliance's certificate does not carry %q (it carries %s); start it with --hostname %s", ErrBadRequest, hostname, strings.Join(a.Appliance.CertNames, ", "), hostname)
	}
	if port == 0 {
		port = a.Appliance.HTTPSPort
	}
	if port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w: port %d", ErrBadRequest, port)
	}
	return hostname, port, nil
}

func hostPort(host string, port int) string {
	if port == 443 {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func (a *api) postSupervisorRegistry(c echo.Context) error {
	var req SupervisorRegistryRequest
	if err := a.Bind(c, &req); err != nil {
		return err
	}
	a.Note(c, audit.RedactURL(req.VCenter.URL), "supervisor", req.VCenter.Supervisor, "hostname", req.Hostname)
	vc, err := req.VCenter.config()
	if err != nil {
		return err
	}
	host, port, err := a.applianceEndpoint(req.Hostname, req.Port)
	if err != nil {
		return err
	}
	st, err := a.Handover.RegisterRegistry(c.Request().Context(), bootstrap.RegistryRequest{VCenter: vc, By: a.Principal(c).Name,
		Registry: vsphere.Registry{Name: req.Name, Hostname: host, Port: port, Username: req.Username, Password: req.Password,
			CertificateChain: string(a.Appliance.CAPEM), Default: req.Default}})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (a *api) postSupervisorServices(c echo.Context) error {
	var req SupervisorServiceRequest
	if err := a.Bind(c, &req); err != nil {
		return err
	}
	a.Note(c, audit.RedactURL(req.VCenter.URL), "supervisor", req.VCenter.Supervisor, "bundle", req.Bundle)
	vc, err := req.VCenter.config()
	if err != nil {
		return err
	}
	host, port, err := a.applianceEndpoint(req.Hostname, req.Port)
	if err != nil {
		return err
	}
	st, err := a.Handover.RegisterServices(c.Request().Context(), bootstrap.ServiceRequest{VCenter: vc, Bundle: req.Bundle,
		Host: hostPort(host, port), Install: req.Install, Config: []byte(req.Config), By: a.Principal(c).Name})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (a *api) postSupervisorRepoint(c echo.Context) error {
	var req SupervisorRepointRequest
	if err := a.Bind(c, &req); err != nil {
		return err
	}
	a.Note(c, audit.RedactURL(req.VCenter.URL), "supervisor", req.VCenter.Supervisor, "bundle", req.Bundle, "harbor", audit.RedactURL(req.Harbor))
	vc, err := req.VCenter.config()
	if err != nil {
		return err
	}
	u, err := url.Parse(req.Harbor)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return fmt.Errorf("%w: harbor %q: want https://HOST[:PORT], as promoted to", ErrBadRequest, req.Harbor)
	}
	if strings.TrimSpace(req.HarborCA) == "" {
		return fmt.Errorf("%w: harbor_ca: the Supervisor must be given the CA that signs Harbor's certificate", ErrBadRequest)
	}
	port := 443
	if p := u.Port(); p != "" {
		port, _ = strconv.Atoi(p)
	}
	st, err := a.Handover.Repoint(c.Request().Context(), bootstrap.RepointRequest{VCenter: vc, Bundle: req.Bundle, HarborURL: req.Harbor,
		Harbor:    vsphere.Registry{Hostname: u.Hostname(), Port: port, Username: req.Username, Password: req.Password, CertificateChain: req.HarborCA, Default: true},
		Reinstall: req.Reinstall, Config: []byte(req.Config), By: a.Principal(c).Name})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}
