package vsphere

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/vapi/namespace"
	"github.com/vmware/govmomi/vapi/rest"
	"go.yaml.in/yaml/v3"
)

// servicesPath is vCenter's catalogue of Supervisor Services.
const servicesPath = "/api/vcenter/namespace-management/supervisor-services"

// activated is the state of an active service or version.
const activated = "ACTIVATED"

// Change says what RegisterService did.
type Change string

// What RegisterService can have done.
const (
	// ServiceCreated means the service was new: it was created with this
	// version.
	ServiceCreated Change = "service created"
	// VersionAdded means the service existed and this version was added.
	VersionAdded Change = "version added"
	// VersionReplaced means the version existed with another image: it was
	// deactivated, deleted, created anew and activated (the re-point path).
	VersionReplaced Change = "version replaced"
	// Unchanged means the version existed with the same content.
	Unchanged Change = "unchanged"
)

// ServiceInfo describes a Supervisor Service version registered in vCenter.
type ServiceInfo struct {
	ID           string // the service id: the Package's spec.refName
	Version      string // the Package's spec.version
	DisplayName  string // as vCenter reports the service
	State        string // of the service: ACTIVATED or DEACTIVATED
	VersionState string // of the version: ACTIVATED or DEACTIVATED
	Change       Change // what RegisterService or Repoint did
}

// versionStatus is how a version registered in vCenter compares with the
// content the appliance would register.
type versionStatus int

const (
	versionMissing versionStatus = iota
	versionSame
	versionDiffers
)

// RegisterService registers pkg, its imgpkg bundle re-pointed at image, as a
// version of a Carvel Supervisor Service in vCenter, and activates the
// service and the version. The service id is pkg.RefName and the version
// pkg.Version. A new service is created; a new version of a known service
// is added; a version that exists with the same images is left alone; one
// that exists with other images is replaced: deactivated, deleted, created
// with the new content and activated. That replacement is how a package is
// re-pointed from one registry to another (see Repoint). vCenter deletes
// only versions that no Supervisor runs: if this client's Supervisor runs
// the version, RegisterService returns ErrVersionInUse and changes nothing.
func (c *Client) RegisterService(ctx context.Context, pkg Package, image string) (ServiceInfo, error) {
	content, err := pkg.WithImage(image)
	if err != nil {
		return ServiceInfo{}, &Error{Op: "register supervisor service", Err: err}
	}
	id, version := pkg.RefName, pkg.Version
	if err := checkServiceVersion(id, version); err != nil {
		return ServiceInfo{}, &Error{Op: "register supervisor service", Err: err}
	}
	b64 := base64.StdEncoding.EncodeToString(content)
	servicePath := servicesPath + "/" + id
	versionsPath := servicePath + "/versions"

	var (
		change             Change
		svcState, verState string // as found; empty when unknown
	)
	svc, err := c.ns.GetSupervisorService(ctx, id)
	switch {
	case rest.IsStatusError(err, http.StatusNotFound):
		spec := &namespace.SupervisorService{CarvelService: &namespace.SupervisorServicesCarvelSpec{
			VersionSpec: namespace.CarvelVersionCreateSpec{Content: b64},
		}}
		if err := c.ns.CreateSupervisorService(ctx, spec); err != nil {
			return ServiceInfo{}, c.fail("create supervisor service "+id, http.MethodPost, servicesPath, err, "")
		}
		change = ServiceCreated
	case err != nil:
		return ServiceInfo{}, c.fail("get supervisor service", http.MethodGet, servicePath, err, "")
	default:
		svcState = svc.State
		status, state, err := c.versionStatus(ctx, id, version, content)
		if err != nil {
			return ServiceInfo{}, err
		}
		switch status {
		case versionSame:
			change, verState = Unchanged, state
		case versionMissing:
			if err := c.createVersion(ctx, id, version, b64); err != nil {
				return ServiceInfo{}, err
			}
			change = VersionAdded
		case versionDiffers:
			if err := c.replaceVersion(ctx, id, version, b64); err != nil {
				return ServiceInfo{}, err
			}
			change = VersionReplaced
		}
	}

	// What is new may start deactivated; what someone deactivated is
	// activated again. (Activating what is active is documented to
	// succeed, but a second run should send nothing.)
	if svcState != activated {
		if err := c.ns.ActivateSupervisorServices(ctx, id); err != nil {
			return ServiceInfo{}, c.fail("activate supervisor service", http.MethodPatch, servicePath+"?action=activate", err, "")
		}
	}
	if verState != activated {
		if err := c.ns.ActivateSupervisorServiceVersion(ctx, id, version); err != nil {
			return ServiceInfo{}, c.fail("activate supervisor service version", http.MethodPatch,
				versionsPath+"/"+version+"?action=activate", err, "")
		}
	}
	info, err := c.serviceInfo(ctx, id, version)
	if err != nil {
		return ServiceInfo{}, err
	}
	info.Change = change
	level := slog.LevelInfo
	if change == Unchanged {
		level = slog.LevelDebug
	}
	c.log.Log(ctx, level, "supervisor service registered", "service", id, "version", version,
		"change", string(change), "image", image)
	return info, nil
}

// checkServiceVersion refuses ids that cannot be URL path segments.
func checkServiceVersion(id, version string) error {
	if err := checkSegment("supervisor service id (the Package's spec.refName)", id); err != nil {
		return err
	}
	return checkSegment("supervisor service version (the Package's spec.version)", version)
}

// versionStatus compares the registered version, if any, with content,
// and gives its state. Versions count as the same when their content is
// byte for byte the same or names the same imgpkg bundle images (vCenter
// may re-format YAML).
func (c *Client) versionStatus(ctx context.Context, id, version string, content []byte) (versionStatus, string, error) {
	v, err := c.ns.GetSupervisorServiceVersion(ctx, id, version)
	if rest.IsStatusError(err, http.StatusNotFound) {
		return versionMissing, "", nil
	}
	if err != nil {
		return 0, "", c.fail("get supervisor service version", http.MethodGet, servicesPath+"/"+id+"/versions/"+version, err, "")
	}
	if v.Content == "" {
		// The content of a version is documented but not guaranteed; with
		// nothing to compare, replacing would be a guess.
		c.log.Warn("vcenter gave no content for the supervisor service version; leaving it as it is",
			"service", id, "version", version)
		return versionSame, v.State, nil
	}
	registered, err := base64.StdEncoding.DecodeString(v.Content)
	if err != nil {
		return versionDiffers, v.State, nil
	}
	if bytes.Equal(registered, content) || sameImages(registered, content) {
		return versionSame, v.State, nil
	}
	return versionDiffers, v.State, nil
}

// sameImages tells whether two Carvel YAMLs hold the same Packages with the
// same imgpkg bundle images.
func sameImages(a, b []byte) bool {
	pa, _, errA := parseCarvel("", a)
	pb, _, errB := parseCarvel("", b)
	if errA != nil || errB != nil || len(pa) == 0 || len(pa) != len(pb) {
		return false
	}
	for i := range pa {
		if pa[i].Name != pb[i].Name || pa[i].Version != pb[i].Version || !slices.Equal(pa[i].Images, pb[i].Images) {
			return false
		}
	}
	return true
}

func (c *Client) createVersion(ctx context.Context, id, version, b64 string) error {
	spec := &namespace.SupervisorServiceVersion{CarvelService: &namespace.CarvelVersionCreateSpec{Content: b64}}
	if err := c.ns.CreateSupervisorServiceVersion(ctx, id, spec); err != nil {
		return c.fail("create supervisor service version "+version, http.MethodPost, servicesPath+"/"+id+"/versions", err, "")
	}
	return nil
}

// replaceVersion is the re-point path: deactivate, delete, create, activate
// (RegisterService activates). It refuses, before changing anything, a
// version this Supervisor runs.
func (c *Client) replaceVersion(ctx context.Context, id, version, b64 string) error {
	if err := c.checkNotInstalled(ctx, id, version); err != nil {
		return err
	}
	versionPath := servicesPath + "/" + id + "/versions/" + version
	if err := c.ns.DeactivateSupervisorServiceVersion(ctx, id, version); err != nil {
		return c.fail("deactivate supervisor service version", http.MethodPatch, versionPath+"?action=deactivate", err, "")
	}
	if err := c.ns.RemoveSupervisorServiceVersion(ctx, id, version); err != nil {
		failed := c.fail("delete supervisor service version", http.MethodDelete, versionPath, err, "")
		// Leave the old version as it was found: active.
		if aerr := c.ns.ActivateSupervisorServiceVersion(ctx, id, version); aerr != nil {
			return errors.Join(failed, c.fail("re-activate supervisor service version", http.MethodPatch,
				versionPath+"?action=activate", aerr, ""))
		}
		return failed
	}
	if err := c.createVersion(ctx, id, version, b64); err != nil {
		return fmt.Errorf("the old version %s of %s was deleted and the new one not created, register again: %w",
			version, id, err)
	}
	c.log.Info("supervisor service version replaced", "service", id, "version", version)
	return nil
}

// checkNotInstalled returns ErrVersionInUse if this Supervisor runs (or is
// moving to) the version.
func (c *Client) checkNotInstalled(ctx context.Context, id, version string) error {
	inst, ok, err := c.installed(ctx, id)
	if err != nil {
		return err
	}
	if ok && (inst.DesiredVersion == version || inst.CurrentVersion == version) {
		return &Error{Op: "replace supervisor service version", Err: fmt.Errorf(
			"%w: Supervisor %s runs %s %s; uninstall it first (UninstallService), or publish the re-pointed package under a new version and install that",
			ErrVersionInUse, c.supervisor, id, version)}
	}
	return nil
}

// serviceInfo reads the states of a service and one of its versions.
func (c *Client) serviceInfo(ctx context.Context, id, version string) (ServiceInfo, error) {
	s, err := c.ns.GetSupervisorService(ctx, id)
	if err != nil {
		return ServiceInfo{}, c.fail("get supervisor service", http.MethodGet, servicesPath+"/"+id, err, "")
	}
	v, err := c.ns.GetSupervisorServiceVersion(ctx, id, version)
	if err != nil {
		return ServiceInfo{}, c.fail("get supervisor service version", http.MethodGet, servicesPath+"/"+id+"/versions/"+version, err, "")
	}
	return ServiceInfo{ID: id, Version: version, DisplayName: s.Name, State: s.State, VersionState: v.State}, nil
}

// installedService is the Supervisor's view of an installed service, as the
// documented 9.0 Summary gives it.
type installedService struct {
	DesiredVersion string `json:"desired_version"`
	CurrentVersion string `json:"current_version"`
	ConfigStatus   string `json:"config_status"`
}

// installCreateSpec is the documented Supervisors.SupervisorServices.CreateSpec.
type installCreateSpec struct {
	SupervisorService string `json:"supervisor_service"`
	Version           string `json:"version"`
	YAMLServiceConfig string `json:"yaml_service_config,omitempty"`
}

// installSetSpec is the documented Supervisors.SupervisorServices.SetSpec.
type installSetSpec struct {
	Version           string `json:"version"`
	YAMLServiceConfig string `json:"yaml_service_config,omitempty"`
}

func (c *Client) installsPath() string {
	return "/api/vcenter/namespace-management/supervisors/" + c.supervisor + "/supervisor-services"
}

// installed reads whether, and at which version, the Supervisor runs id.
func (c *Client) installed(ctx context.Context, id string) (installedService, bool, error) {
	var out installedService
	err := c.do(ctx, request{op: "get installed supervisor service", method: http.MethodGet,
		path: c.installsPath() + "/" + id, out: &out})
	if errors.Is(err, ErrNotFound) {
		return installedService{}, false, nil
	}
	return out, err == nil, err
}

// InstallService installs version of the Supervisor Service serviceID on
// the Supervisor, or moves an installed one to that version. config, if
// not nil, is the service's YAML configuration (such as its data values);
// it is sent base64-encoded as yaml_service_config and never logged.
//
// vCenter applies an upgrade's SetSpec in its entirety: moving to another
// version with a nil config drops the configuration given before, so pass
// it again. At the installed version, a nil config changes nothing and a
// non-nil one is applied again. The service and version must be ACTIVATED
// (RegisterService does that).
func (c *Client) InstallService(ctx context.Context, serviceID, version string, config []byte) error {
	if err := checkServiceVersion(serviceID, version); err != nil {
		return &Error{Op: "install supervisor service", Err: err}
	}
	var b64 string
	if config != nil {
		var probe yaml.Node
		if err := yaml.Unmarshal(config, &probe); err != nil {
			return &Error{Op: "install supervisor service", Err: fmt.Errorf("service configuration is not YAML: %w", err)}
		}
		b64 = base64.StdEncoding.EncodeToString(config)
	}
	inst, ok, err := c.installed(ctx, serviceID)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		err = c.do(ctx, request{op: "install supervisor service " + serviceID, method: http.MethodPost, path: c.installsPath(),
			body: installCreateSpec{SupervisorService: serviceID, Version: version, YAMLServiceConfig: b64}, secret: b64})
	case inst.DesiredVersion == version && config == nil:
		c.log.Debug("supervisor service already installed", "supervisor", c.supervisor, "service", serviceID, "version", version)
		return nil
	default:
		err = c.do(ctx, request{op: "set supervisor service " + serviceID, method: http.MethodPut, path: c.installsPath() + "/" + serviceID,
			body: installSetSpec{Version: version, YAMLServiceConfig: b64}, secret: b64})
	}
	if err != nil {
		return err
	}
	c.log.Info("supervisor service installed", "supervisor", c.supervisor, "service", serviceID,
		"version", version, "from_version", inst.DesiredVersion, "config", config != nil)
	return nil
}

// UninstallService removes the Supervisor Service serviceID from the
// Supervisor; ErrNotFound if it is not installed there. What the service's
// operator created stays or goes as the service decides.
func (c *Client) UninstallService(ctx context.Context, serviceID string) error {
	if err := checkSegment("supervisor service id", serviceID); err != nil {
		return &Error{Op: "uninstall supervisor service", Err: err}
	}
	if err := c.do(ctx, request{op: "uninstall supervisor service", method: http.MethodDelete,
		path: c.installsPath() + "/" + serviceID}); err != nil {
		return err
	}
	c.log.Info("supervisor service uninstalled", "supervisor", c.supervisor, "service", serviceID)
	return nil
}

// Repoint moves pkg from the bootstrap registry to newRegistry (production
// Harbor): it makes newRegistry a registry of the Supervisor and its
// default (so the Supervisor trusts it before anything pulls from it), then
// registers pkg with its imgpkg bundle at newImage, which must live on
// newRegistry. A version already registered with another image is
// replaced (see RegisterService). If this Supervisor runs that version,
// Repoint returns ErrVersionInUse before it changes anything.
func (c *Client) Repoint(ctx context.Context, pkg Package, newImage string, newRegistry Registry) (ServiceInfo, error) {
	const op = "repoint supervisor service"
	reg, err := newRegistry.normalize()
	if err != nil {
		return ServiceInfo{}, &Error{Op: op, Err: err}
	}
	if !imageOnRegistry(newImage, reg) {
		return ServiceInfo{}, &Error{Op: op, Err: fmt.Errorf("image %q is not on registry %s:%d", newImage, reg.Hostname, reg.Port)}
	}
	content, err := pkg.WithImage(newImage)
	if err != nil {
		return ServiceInfo{}, &Error{Op: op, Err: err}
	}
	if err := checkServiceVersion(pkg.RefName, pkg.Version); err != nil {
		return ServiceInfo{}, &Error{Op: op, Err: err}
	}

	// Preflight: refuse before switching registries what RegisterService
	// would refuse after.
	_, err = c.ns.GetSupervisorService(ctx, pkg.RefName)
	switch {
	case rest.IsStatusError(err, http.StatusNotFound):
	case err != nil:
		return ServiceInfo{}, c.fail("get supervisor service", http.MethodGet, servicesPath+"/"+pkg.RefName, err, "")
	default:
		status, _, err := c.versionStatus(ctx, pkg.RefName, pkg.Version, content)
		if err != nil {
			return ServiceInfo{}, err
		}
		if status == versionDiffers {
			if err := c.checkNotInstalled(ctx, pkg.RefName, pkg.Version); err != nil {
				return ServiceInfo{}, err
			}
		}
	}

	newRegistry.Default = true
	info, _, err := c.EnsureRegistry(ctx, newRegistry)
	if err != nil {
		return ServiceInfo{}, err
	}
	if err := c.SetDefaultRegistry(ctx, info.ID); err != nil {
		return ServiceInfo{}, err
	}
	svc, err := c.RegisterService(ctx, pkg, newImage)
	if err != nil {
		return ServiceInfo{}, err
	}
	c.log.Info("supervisor service repointed", "service", svc.ID, "version", svc.Version,
		"image", newImage, "registry", info.ID, "change", string(svc.Change))
	return svc, nil
}

// imageOnRegistry tells whether ref names an image on r (port 443 may be
// left out of the reference).
func imageOnRegistry(ref string, r Registry) bool {
	host := imageHost(ref)
	want := r.Hostname + ":" + strconv.Itoa(r.Port)
	if strings.EqualFold(host, want) {
		return true
	}
	return r.Port == defaultRegistryPort && strings.EqualFold(host, r.Hostname)
}
