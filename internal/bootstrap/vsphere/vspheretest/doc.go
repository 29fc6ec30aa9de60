// Package vspheretest is a test helper, in the spirit of go-containerregistry's
// pkg/registry: only tests import it. It stands in for a vCenter, which
// cannot run here.
//
// Start runs govmomi's vCenter simulator (vcsim) on 127.0.0.1 with a TLS
// certificate of a fresh CA and a user store of one user. vcsim itself does
// the login (POST /rest/com/vmware/cis/session with basic authentication,
// refusing a wrong password), the TLS handshake and the session check of
// every vAPI call. The listener is an ordinary TCP socket, so another
// process (the appliance binary an end-to-end test runs) can reach it at
// Sim.URL just as the test process does.
//
// vcsim has no container image registry endpoints, no endpoints to install
// a Supervisor Service on a Supervisor, and keeps nothing of the Supervisor
// Services it is asked to create. Start adds them to vcsim's vAPI mux,
// behind its session check. Those handlers are CONTRACT FAKES of the
// documented vSphere Automation API: an in-memory store that answers as the
// API reference documents these calls (see the doc comment of package
// vsphere for the calls and which parts are documented), and checks requests
// the way that reference says vCenter does:
//
//   - required fields present and no unknown fields in any JSON body (400,
//     INVALID_ARGUMENT, with a vAPI error body);
//   - 404 NOT_FOUND for an unknown Supervisor, registry, service or version;
//   - registries: a name and image_registry.hostname are required, a port
//     within 0–65535 that defaults to 443, a certificate_chain that is a PEM
//     chain of parseable certificates, unique names (ALREADY_EXISTS); the
//     password is stored but never answered; a new registry created as the
//     default takes the default over; an UpdateSpec leaves unset fields alone;
//   - services: carvel_spec only, base64 content holding a
//     data.packaging.carvel.dev/v1alpha1 PackageMetadata and Package whose
//     spec.refName names the PackageMetadata, with a spec.version and at
//     least one imgpkgBundle fetch; the service is named after the
//     PackageMetadata and the version after spec.version; a version of
//     another service, or a second copy of a service or version, is refused;
//     activating or deactivating a service does the same to its versions;
//     only a DEACTIVATED service or version may be deleted, and not a
//     version a Supervisor runs (RESOURCE_IN_USE);
//   - installs: supervisor_service and version are required and must be
//     ACTIVATED, yaml_service_config must be base64 of YAML, a service is
//     installed once (ALREADY_EXISTS), and the SetSpec PUT replaces version
//     and configuration in their entirety.
//
// Where the reference is silent the fake is STRICT BY ASSUMPTION, taking
// the strictest plausible reading so that a client is shown to cope:
//
//   - new services and versions start DEACTIVATED (the client must activate
//     them);
//   - a PATCH that sets default_registry does not clear the flag of other
//     registries (only a create is documented to take the default over);
//   - a Carvel Package must be named <spec.refName>.<spec.version>, as
//     kapp-controller requires;
//   - the per-Supervisor GET, PUT and DELETE of an installed service follow
//     the documented per-cluster form, GET answering {desired_version,
//     current_version, config_status}.
//
// vcsim's own canned Supervisor Services (vapi/namespace/simulator) are not
// loaded: they would hold the same routes and store nothing.
//
// The snapshot methods (Registries, Services, Installed, Calls) show what
// the fake holds, so that a test can check what reached "vCenter" rather
// than what the client says it sent.
package vspheretest
