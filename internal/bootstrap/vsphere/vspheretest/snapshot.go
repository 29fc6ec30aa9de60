package vspheretest

import (
	"slices"
	"strings"
)

// Registry is a container image registry as the fake stores it.
type Registry struct {
	ID, Name string
	Hostname string
	Port     int
	Username string
	// Password is what the client sent. vCenter never answers it; the
	// fake keeps it so that a test can check it arrived.
	Password         string
	CertificateChain string // PEM
	Default          bool   // default_registry
}

// Service is a Supervisor Service as the fake stores it.
type Service struct {
	ID          string // the PackageMetadata's metadata.name
	DisplayName string // the PackageMetadata's spec.displayName
	State       string // ACTIVATED or DEACTIVATED
	Versions    []Version
}

// Version is one version of a Supervisor Service.
type Version struct {
	Version string // the Package's spec.version
	State   string // ACTIVATED or DEACTIVATED
	// YAML is the content the client sent, decoded from base64 (re-encoded
	// when the fake was started with ReformatContent).
	YAML []byte
	// Images are the Package's spec.template.spec.fetch[].imgpkgBundle.image,
	// in order.
	Images []string
}

// Installed is a Supervisor Service running on the fake's Supervisor.
type Installed struct {
	Service string
	Version string
	Config  []byte // yaml_service_config, decoded from base64; nil if none
}

// Registries gives a copy of the registries of the Supervisor, in the order
// they were created.
func (s *Sim) Registries() []Registry {
	f := s.fake
	f.mu.Lock()
	defer f.mu.Unlock()
	list := []Registry{}
	for _, r := range f.sortedRegistries() {
		list = append(list, Registry{
			ID: r.ID, Name: r.Name, Hostname: r.Hostname, Port: r.Port,
			Username: r.Username, Password: r.Password,
			CertificateChain: r.CertificateChain, Default: r.Default,
		})
	}
	return list
}

// Services gives a copy of the registered Supervisor Services, by id, each
// with its versions in order of their version strings.
func (s *Sim) Services() []Service {
	f := s.fake
	f.mu.Lock()
	defer f.mu.Unlock()
	list := []Service{}
	for _, svc := range f.services {
		out := Service{ID: svc.ID, DisplayName: svc.DisplayName, State: svc.State, Versions: []Version{}}
		for _, v := range svc.Versions {
			out.Versions = append(out.Versions, Version{
				Version: v.Version, State: v.State,
				YAML: slices.Clone(v.YAML), Images: slices.Clone(v.Images),
			})
		}
		slices.SortFunc(out.Versions, func(a, b Version) int { return strings.Compare(a.Version, b.Version) })
		list = append(list, out)
	}
	slices.SortFunc(list, func(a, b Service) int { return strings.Compare(a.ID, b.ID) })
	return list
}

// Installed gives a copy of the Supervisor Services installed on the
// Supervisor, by service id.
func (s *Sim) Installed() []Installed {
	f := s.fake
	f.mu.Lock()
	defer f.mu.Unlock()
	list := []Installed{}
	for id, in := range f.installs {
		list = append(list, Installed{Service: id, Version: in.Version, Config: slices.Clone(in.Config)})
	}
	slices.SortFunc(list, func(a, b Installed) int { return strings.Compare(a.Service, b.Service) })
	return list
}

// Calls gives every call the fake answered so far, in order, as
// "METHOD /path" or "METHOD /path?query". Calls that only vcsim answers
// (the login, for one) are not in it.
func (s *Sim) Calls() []string {
	f := s.fake
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}
