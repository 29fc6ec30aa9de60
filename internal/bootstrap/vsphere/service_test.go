package vsphere_test

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere"
	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere/vspheretest"
)

const (
	bootImage   = "appliance.dc.example/supervisor/harbor@sha256:b007"
	harborImage = "harbor.dc.example/supervisor/harbor@sha256:4a4b"
	serviceID   = "harbor.tanzu.vmware.com"
	version     = "2.9.1+vmware.1"
)

// harborPackage is the Package of harborLayer, or another version of it.
func harborPackage(t *testing.T, v string) vsphere.Package {
	t.Helper()
	body := packageYAML
	if v != version {
		body = packageVersion(v)
	}
	pkgs, err := vsphere.FindPackages(bytes.NewReader(makeLayer(t, true,
		tarFile{name: "config/package.yml", body: metadataYAML + "---\n" + body})))
	if err != nil {
		t.Fatal(err)
	}
	return pkgs[0]
}

func harborRegistry(t *testing.T) vsphere.Registry {
	t.Helper()
	ca := newTestCA(t)
	return vsphere.Registry{Hostname: "harbor.dc.example", Username: "robot$supervisor", Password: "harbor-pull-secret", CertificateChain: string(ca)}
}

// wantVersion checks what vCenter holds for a version: the YAML the client
// sent, as the fake decoded it from base64, with its images.
func wantVersion(t *testing.T, env *testEnv, pkg vsphere.Package, image string) {
	t.Helper()
	v, svcState, ok := env.version(pkg.RefName, pkg.Version)
	if !ok {
		t.Fatalf("vCenter has no version %s of %s", pkg.Version, pkg.RefName)
	}
	if want := []string{image, image}; !slices.Equal(v.Images, want) {
		t.Fatalf("vCenter's version %s points at %v, want %v", pkg.Version, v.Images, want)
	}
	if svcState != "ACTIVATED" || v.State != "ACTIVATED" {
		t.Fatalf("service %s, version %s: want both ACTIVATED", svcState, v.State)
	}
	if env.reformat {
		return
	}
	content, err := pkg.WithImage(image)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.YAML, content) {
		t.Fatalf("vCenter holds\n%s\nwant the re-pointed package\n%s", v.YAML, content)
	}
	// The other fields came through: the values schema is still there.
	var packages int
	for _, doc := range decodeAll(t, v.YAML) {
		if doc["kind"] != "Package" {
			continue
		}
		packages++
		if spec, _ := doc["spec"].(map[string]any); spec["valuesSchema"] == nil {
			t.Fatalf("the values schema did not reach vCenter: %v", doc)
		}
	}
	if packages != 1 {
		t.Fatalf("vCenter holds %d Packages in version %s, want 1", packages, pkg.Version)
	}
}

func TestRegisterService(t *testing.T) {
	t.Parallel()
	for _, reformat := range []bool{false, true} {
		name := "vCenter keeps the content"
		if reformat {
			name = "vCenter re-formats the content"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var opts []vspheretest.Option
			if reformat {
				opts = append(opts, vspheretest.ReformatContent())
			}
			env := startVCenter(t, opts...)
			env.reformat = reformat
			c := env.dial(t)
			pkg := harborPackage(t, version)

			info, err := c.RegisterService(t.Context(), pkg, bootImage)
			if err != nil {
				t.Fatalf("RegisterService: %v", err)
			}
			want := vsphere.ServiceInfo{ID: serviceID, Version: version, DisplayName: "Harbor",
				State: "ACTIVATED", VersionState: "ACTIVATED", Change: vsphere.ServiceCreated}
			if info != want {
				t.Fatalf("RegisterService = %+v, want %+v", info, want)
			}
			wantVersion(t, env, pkg, bootImage)

			writes := env.writes()
			info, err = c.RegisterService(t.Context(), pkg, bootImage)
			if err != nil || info.Change != vsphere.Unchanged {
				t.Fatalf("RegisterService again = %+v, %v; want unchanged", info, err)
			}
			if n := env.writes(); n != writes {
				t.Fatalf("RegisterService again wrote to vCenter: %v", env.sim.Calls()[writes:])
			}

			next := harborPackage(t, "3.0.0")
			info, err = c.RegisterService(t.Context(), next, bootImage)
			if err != nil || info.Change != vsphere.VersionAdded || info.VersionState != "ACTIVATED" {
				t.Fatalf("RegisterService of 3.0.0 = %+v, %v; want the version added, active", info, err)
			}
			wantVersion(t, env, next, bootImage)
			wantVersion(t, env, pkg, bootImage)
		})
	}
}

func TestRegisterServiceReplacesVersion(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	pkg := harborPackage(t, version)
	if _, err := c.RegisterService(t.Context(), pkg, bootImage); err != nil {
		t.Fatal(err)
	}
	before := len(env.sim.Calls())

	info, err := c.RegisterService(t.Context(), pkg, harborImage)
	if err != nil {
		t.Fatalf("RegisterService with another image: %v", err)
	}
	if info.Change != vsphere.VersionReplaced {
		t.Fatalf("RegisterService with another image = %+v, want the version replaced", info)
	}
	wantVersion(t, env, pkg, harborImage)

	// The documented order: deactivate, delete, create, activate.
	var writes []string
	for _, call := range env.sim.Calls()[before:] {
		if !strings.HasPrefix(call, "GET ") {
			writes = append(writes, call)
		}
	}
	versionPath := "/api/vcenter/namespace-management/supervisor-services/" + serviceID + "/versions"
	want := []string{
		"PATCH " + versionPath + "/" + version + "?action=deactivate",
		"DELETE " + versionPath + "/" + version,
		"POST " + versionPath,
		"PATCH " + versionPath + "/" + version + "?action=activate",
	}
	if !reflect.DeepEqual(writes, want) {
		t.Fatalf("replacing sent\n%s\nwant\n%s", strings.Join(writes, "\n"), strings.Join(want, "\n"))
	}
}

func TestInstallService(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	pkg := harborPackage(t, version)
	if _, err := c.RegisterService(t.Context(), pkg, bootImage); err != nil {
		t.Fatal(err)
	}
	config := []byte("hostname: harbor.dc.example\nadminPassword: not-logged\n")
	if err := c.InstallService(t.Context(), serviceID, version, config); err != nil {
		t.Fatalf("InstallService: %v", err)
	}
	in, ok := env.installed(serviceID)
	if !ok || in.Version != version || !bytes.Equal(in.Config, config) {
		t.Fatalf("the Supervisor runs %+v (installed %v), want %s with the config", in, ok, version)
	}

	writes := env.writes()
	if err := c.InstallService(t.Context(), serviceID, version, nil); err != nil {
		t.Fatalf("InstallService again: %v", err)
	}
	if n := env.writes(); n != writes {
		t.Fatalf("InstallService again wrote: %v", env.sim.Calls()[writes:])
	}

	// Another version is an upgrade of the installed service, with the
	// configuration given again.
	next := harborPackage(t, "3.0.0")
	if _, err := c.RegisterService(t.Context(), next, bootImage); err != nil {
		t.Fatal(err)
	}
	config3 := []byte("hostname: harbor.dc.example\ntls: true\n")
	if err := c.InstallService(t.Context(), serviceID, "3.0.0", config3); err != nil {
		t.Fatalf("InstallService 3.0.0: %v", err)
	}
	if in, _ := env.installed(serviceID); in.Version != "3.0.0" || !bytes.Equal(in.Config, config3) {
		t.Fatalf("after the upgrade the Supervisor runs %+v", in)
	}
	calls := env.sim.Calls()
	if last := calls[len(calls)-1]; last != "PUT /api/vcenter/namespace-management/supervisors/"+env.sim.Supervisor+"/supervisor-services/"+serviceID {
		t.Fatalf("the upgrade was %q, want the SetSpec PUT", last)
	}
	if strings.Contains(env.logs.String(), "not-logged") {
		t.Fatal("the service configuration shows in the log")
	}

	if err := c.InstallService(t.Context(), "no-such-service", version, nil); !errors.Is(err, vsphere.ErrNotFound) {
		t.Fatalf("InstallService of an unknown service = %v, want ErrNotFound", err)
	}
	if err := c.InstallService(t.Context(), serviceID, version, []byte("a: [")); err == nil || !strings.Contains(err.Error(), "not YAML") {
		t.Fatalf("InstallService with broken YAML = %v", err)
	}
	if err := c.UninstallService(t.Context(), serviceID); err != nil {
		t.Fatalf("UninstallService: %v", err)
	}
	if _, ok := env.installed(serviceID); ok {
		t.Fatal("still installed after UninstallService")
	}
	if err := c.UninstallService(t.Context(), serviceID); !errors.Is(err, vsphere.ErrNotFound) {
		t.Fatalf("UninstallService again = %v, want ErrNotFound", err)
	}
}

// bootstrapState is what the appliance has set up before promotion: its own
// registry as the Supervisor's default and the package pointing at it.
func bootstrapState(t *testing.T, _ *testEnv, c *vsphere.Client) vsphere.Package {
	t.Helper()
	boot := bootstrapRegistry(t)
	boot.Default = true
	if _, _, err := c.EnsureRegistry(t.Context(), boot); err != nil {
		t.Fatal(err)
	}
	pkg := harborPackage(t, version)
	if _, err := c.RegisterService(t.Context(), pkg, bootImage); err != nil {
		t.Fatal(err)
	}
	return pkg
}

func TestRepoint(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	pkg := bootstrapState(t, env, c)
	harbor := harborRegistry(t)

	info, err := c.Repoint(t.Context(), pkg, harborImage, harbor)
	if err != nil {
		t.Fatalf("Repoint: %v", err)
	}
	if info.Change != vsphere.VersionReplaced || info.VersionState != "ACTIVATED" {
		t.Fatalf("Repoint = %+v, want the version replaced and active", info)
	}
	wantVersion(t, env, pkg, harborImage)
	h, ok := env.registry(harbor.Hostname)
	if !ok || !h.Default || h.CertificateChain != harbor.CertificateChain || h.Password != harbor.Password {
		t.Fatalf("Harbor in vCenter = %+v (present %v), want it the default, with its CA and credentials", h, ok)
	}
	if b, _ := env.registry("appliance.dc.example"); b.Default {
		t.Fatal("the bootstrap registry is still a default")
	}

	writes := env.writes()
	info, err = c.Repoint(t.Context(), pkg, harborImage, harbor)
	if err != nil || info.Change != vsphere.Unchanged {
		t.Fatalf("Repoint again = %+v, %v; want unchanged", info, err)
	}
	if n := env.writes(); n != writes {
		t.Fatalf("Repoint again wrote: %v", env.sim.Calls()[writes:])
	}
}

func TestRepointInstalledVersion(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	pkg := bootstrapState(t, env, c)
	if err := c.InstallService(t.Context(), serviceID, version, nil); err != nil {
		t.Fatal(err)
	}
	harbor := harborRegistry(t)

	writes := env.writes()
	if _, err := c.RegisterService(t.Context(), pkg, harborImage); !errors.Is(err, vsphere.ErrVersionInUse) {
		t.Fatalf("RegisterService of an installed version with another image = %v, want ErrVersionInUse", err)
	}
	_, err := c.Repoint(t.Context(), pkg, harborImage, harbor)
	if !errors.Is(err, vsphere.ErrVersionInUse) {
		t.Fatalf("Repoint of an installed version = %v, want ErrVersionInUse", err)
	}
	if !strings.Contains(err.Error(), "UninstallService") {
		t.Errorf("error %q does not say what to do", err)
	}
	if n := env.writes(); n != writes {
		t.Fatalf("a refused Repoint changed vCenter: %v", env.sim.Calls()[writes:])
	}
	wantVersion(t, env, pkg, bootImage)

	// The way through: uninstall, re-point, install again.
	if err := c.UninstallService(t.Context(), serviceID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Repoint(t.Context(), pkg, harborImage, harbor); err != nil {
		t.Fatalf("Repoint after UninstallService: %v", err)
	}
	if err := c.InstallService(t.Context(), serviceID, version, nil); err != nil {
		t.Fatalf("InstallService after Repoint: %v", err)
	}
	wantVersion(t, env, pkg, harborImage)
	if in, ok := env.installed(serviceID); !ok || in.Version != version {
		t.Fatalf("the Supervisor runs %+v (installed %v)", in, ok)
	}
}

func TestRepointRefuses(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	pkg := bootstrapState(t, env, c)
	writes := env.writes()
	for _, tc := range []struct {
		name     string
		image    string
		registry func(*vsphere.Registry)
		mentions string
	}{
		{"image on another registry", "elsewhere.example/harbor:v1", func(*vsphere.Registry) {}, "not on registry"},
		{"image on another port", "harbor.dc.example:8443/harbor:v1", func(*vsphere.Registry) {}, "not on registry"},
		{"registry without CA", harborImage, func(r *vsphere.Registry) { r.CertificateChain = "" }, "certificate chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := harborRegistry(t)
			tc.registry(&r)
			if _, err := c.Repoint(t.Context(), pkg, tc.image, r); err == nil || !strings.Contains(err.Error(), tc.mentions) {
				t.Fatalf("Repoint = %v, want an error mentioning %q", err, tc.mentions)
			}
		})
	}
	if n := env.writes(); n != writes {
		t.Fatalf("a refused Repoint changed vCenter: %v", env.sim.Calls()[writes:])
	}
	// A port in the image is fine when it is the registry's.
	r := harborRegistry(t)
	r.Port = 8443
	if _, err := c.Repoint(t.Context(), pkg, "harbor.dc.example:8443/supervisor/harbor@sha256:4a4b", r); err != nil {
		t.Fatalf("Repoint to harbor:8443: %v", err)
	}
}
