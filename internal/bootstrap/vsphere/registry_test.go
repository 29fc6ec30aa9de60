package vsphere_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere"
	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere/vspheretest"
)

// registryPassword has characters that JSON escapes.
const registryPassword = `robot$pull<&"token`

func bootstrapRegistry(t *testing.T) vsphere.Registry {
	t.Helper()
	ca := newTestCA(t)
	return vsphere.Registry{
		Hostname:         "appliance.dc.example",
		Username:         "supervisor-pull",
		Password:         registryPassword,
		CertificateChain: string(ca),
	}
}

func TestEnsureRegistryCreatesOnceThenIdempotent(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	want := bootstrapRegistry(t)

	info, created, err := c.EnsureRegistry(t.Context(), want)
	if err != nil {
		t.Fatalf("EnsureRegistry: %v", err)
	}
	if !created || info.ID == "" {
		t.Fatalf("first EnsureRegistry = %+v, created %v; want a new registry", info, created)
	}
	got, ok := env.registry(want.Hostname)
	switch {
	case !ok:
		t.Fatal("vCenter has no registry after EnsureRegistry")
	case got.ID != info.ID, got.Name != want.Hostname, got.Port != 443,
		got.Username != want.Username, got.Password != want.Password,
		got.CertificateChain != want.CertificateChain, got.Default:
		t.Fatalf("vCenter holds %+v, want %+v as registry %s", got, want, info.ID)
	}

	writes := env.writes()
	again, created, err := c.EnsureRegistry(t.Context(), want)
	if err != nil {
		t.Fatalf("second EnsureRegistry: %v", err)
	}
	if created || again.ID != info.ID {
		t.Fatalf("second EnsureRegistry = %+v, created %v; want %s unchanged", again, created, info.ID)
	}
	if n := env.writes(); n != writes {
		t.Fatalf("second EnsureRegistry changed vCenter: %d writes, calls %v", n-writes, env.sim.Calls())
	}
	list, err := c.Registries(t.Context())
	if err != nil || len(list) != 1 {
		t.Fatalf("Registries = %+v, %v; want one", list, err)
	}

	// A new CA is an update of the same registry, not a second one.
	newCA := newTestCA(t)
	want.CertificateChain = string(newCA)
	updated, created, err := c.EnsureRegistry(t.Context(), want)
	if err != nil {
		t.Fatalf("EnsureRegistry with a new CA: %v", err)
	}
	if created || updated.ID != info.ID || updated.CertificateChain != string(newCA) {
		t.Fatalf("EnsureRegistry with a new CA = %+v, created %v", updated, created)
	}
	if got, _ := env.registry(want.Hostname); got.CertificateChain != string(newCA) {
		t.Fatal("vCenter kept the old CA")
	}
	if strings.Contains(env.logs.String(), registryPassword) {
		t.Fatalf("the registry password shows in the log: %s", env.logs)
	}
}

func TestSetDefaultRegistrySwitches(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	boot := bootstrapRegistry(t)
	boot.Default = true
	bootInfo, _, err := c.EnsureRegistry(t.Context(), boot)
	if err != nil {
		t.Fatal(err)
	}
	harbor := bootstrapRegistry(t)
	harbor.Hostname, harbor.Port = "harbor.dc.example", 8443
	harborInfo, _, err := c.EnsureRegistry(t.Context(), harbor)
	if err != nil {
		t.Fatal(err)
	}
	if harborInfo.Name != "harbor.dc.example-8443" || harborInfo.Port != 8443 {
		t.Fatalf("harbor registry = %+v", harborInfo)
	}

	for _, step := range []struct {
		id            string
		wantDefault   string
		wantNotDefult string
	}{
		{harborInfo.ID, harbor.Hostname, boot.Hostname},
		{bootInfo.ID, boot.Hostname, harbor.Hostname},
	} {
		if err := c.SetDefaultRegistry(t.Context(), step.id); err != nil {
			t.Fatalf("SetDefaultRegistry(%s): %v", step.id, err)
		}
		on, _ := env.registry(step.wantDefault)
		off, _ := env.registry(step.wantNotDefult)
		if !on.Default || off.Default {
			t.Fatalf("after SetDefaultRegistry(%s): %s default %v, %s default %v", step.id, on.Hostname, on.Default, off.Hostname, off.Default)
		}
	}

	if err := c.SetDefaultRegistry(t.Context(), "registry-404"); !errors.Is(err, vsphere.ErrNotFound) {
		t.Fatalf("SetDefaultRegistry(unknown) = %v, want ErrNotFound", err)
	}
}

func TestRemoveRegistry(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	info, _, err := c.EnsureRegistry(t.Context(), bootstrapRegistry(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveRegistry(t.Context(), info.ID); err != nil {
		t.Fatalf("RemoveRegistry: %v", err)
	}
	if _, ok := env.registry(info.Hostname); ok {
		t.Fatal("the registry is still there")
	}
	err = c.RemoveRegistry(t.Context(), info.ID)
	if !errors.Is(err, vsphere.ErrNotFound) {
		t.Fatalf("RemoveRegistry again = %v, want ErrNotFound", err)
	}
	var verr *vsphere.Error
	if !errors.As(err, &verr) || verr.Method != "DELETE" || !strings.HasSuffix(verr.Path, "/supervisors/"+env.sim.Supervisor+"/container-image-registries/"+info.ID) {
		t.Fatalf("error %v does not name the call", err)
	}
}

func TestEnsureRegistryRefuses(t *testing.T) {
	t.Parallel()
	env := startVCenter(t)
	c := env.dial(t)
	for _, tc := range []struct {
		name     string
		change   func(*vsphere.Registry)
		mentions string
	}{
		{"no hostname", func(r *vsphere.Registry) { r.Hostname = "" }, "no hostname"},
		{"URL for hostname", func(r *vsphere.Registry) { r.Hostname = "https://harbor.example" }, "bare host name"},
		{"port in hostname", func(r *vsphere.Registry) { r.Hostname = "harbor.example:8443" }, "Port"},
		{"no CA", func(r *vsphere.Registry) { r.CertificateChain = "" }, "no certificate chain"},
		{"CA not PEM", func(r *vsphere.Registry) { r.CertificateChain = "not a certificate" }, "certificate chain"},
		{"password without user", func(r *vsphere.Registry) { r.Username = "" }, "without a username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := bootstrapRegistry(t)
			tc.change(&r)
			_, _, err := c.EnsureRegistry(t.Context(), r)
			if err == nil || !strings.Contains(err.Error(), tc.mentions) {
				t.Fatalf("EnsureRegistry = %v, want an error mentioning %q", err, tc.mentions)
			}
		})
	}
	if n := env.writes(); n != 0 {
		t.Fatalf("refused registries reached vCenter: %v", env.sim.Calls())
	}
}

// TestRegistryErrorHidesPassword injects a vCenter that repeats a refused
// request in its error, and checks that the password does not reach the
// caller.
func TestRegistryErrorHidesPassword(t *testing.T) {
	t.Parallel()
	env := startVCenter(t, vspheretest.EchoRefusedBodies())
	c := env.dial(t)
	first := bootstrapRegistry(t)
	if _, _, err := c.EnsureRegistry(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	clash := bootstrapRegistry(t)
	clash.Hostname = "other.dc.example"
	clash.Name = first.Hostname // names are unique: vCenter refuses
	_, _, err := c.EnsureRegistry(t.Context(), clash)
	if err == nil {
		t.Fatal("EnsureRegistry with a taken name succeeded")
	}
	t.Logf("EnsureRegistry: %v", err)
	if !strings.Contains(err.Error(), "ALREADY_EXISTS") || !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("error %q does not carry vCenter's answer, redacted", err)
	}
	for e := error(err); e != nil; e = errors.Unwrap(e) {
		if strings.Contains(e.Error(), registryPassword) {
			t.Fatalf("the password shows in %q", e)
		}
	}
}
