// Package vsphere hands the appliance over to a vSphere Supervisor: it logs
// in to vCenter's REST API, registers the appliance (and later production
// Harbor) as a container image registry of the Supervisor, reads Carvel
// packages out of imgpkg bundle layers, and registers and installs them as
// Supervisor Services, pointing their imgpkg bundle at whichever registry
// the Supervisor should pull from.
//
// It is the only package of the appliance that imports govmomi.
//
// # vCenter calls
//
// Sessions use govmomi's vapi/rest client (POST /rest/com/vmware/cis/session
// with HTTP basic authentication, DELETE of the same to log out) on top of a
// vim25/soap transport, which verifies vCenter's certificate against the
// given CA or, failing that, the given thumbprint. Nothing else is trusted:
// the system roots are not used and verification is never skipped.
//
// Container image registries of a Supervisor (vSphere API 8.0.3+) have no
// typed govmomi call; they use the generic REST client:
//
//	GET    /api/vcenter/namespace-management/supervisors/{supervisor}/container-image-registries
//	POST   /api/vcenter/namespace-management/supervisors/{supervisor}/container-image-registries
//	GET    …/container-image-registries/{container_image_registry}
//	PATCH  …/container-image-registries/{container_image_registry}
//	DELETE …/container-image-registries/{container_image_registry}
//
// Documented in the vSphere Automation API reference (8.0.3 and later):
// the CreateSpec {name, image_registry{hostname, port, username, password,
// certificate_chain}, default_registry}, the flat UpdateSpec {name,
// hostname, port, username, password, certificate_chain, default_registry}
// whose unset fields are left alone, the Info {id, name, image_registry,
// default_registry}, that port defaults to 443, that the password is never
// returned by GET or list, and that a new registry created as the default
// takes the default over from the previous one. Assumed: that list answers
// a JSON array of Info and that create answers the new Info (the reference
// pages we could read do not show either answer); create also copes with
// an answer that is only the id, or empty. SetDefaultRegistry does not rely
// on PATCH moving the default either: it clears the flag on every other
// registry itself.
//
// Supervisor Services use govmomi's typed vapi/namespace calls, which send:
//
//	POST   /api/vcenter/namespace-management/supervisor-services                       {carvel_spec: {version_spec: {content}}}
//	GET    /api/vcenter/namespace-management/supervisor-services/{id}
//	PATCH  /api/vcenter/namespace-management/supervisor-services/{id}?action=activate
//	POST   /api/vcenter/namespace-management/supervisor-services/{id}/versions          {carvel_spec: {content}}
//	GET    /api/vcenter/namespace-management/supervisor-services/{id}/versions/{version}
//	PATCH  …/versions/{version}?action=activate|deactivate
//	DELETE …/versions/{version}
//
// content is the base64 of the PackageMetadata and Package YAML. These are
// documented; so is that a version can be deleted only when it is
// DEACTIVATED and no Supervisor runs it, and that activating something
// already active succeeds. Assumed: that vCenter names a Carvel service
// after the PackageMetadata's metadata.name (which must equal the
// Package's spec.refName) and its version after the Package's spec.version
// (the typed create answers nothing we could read an id from), and that
// the version's GET answers its content as that same base64.
//
// Installing on a Supervisor (vSphere API 9.0) has no typed call:
//
//	POST   /api/vcenter/namespace-management/supervisors/{supervisor}/supervisor-services  {supervisor_service, version, yaml_service_config}
//	GET    …/supervisors/{supervisor}/supervisor-services/{supervisor_service}
//	PUT    …/supervisors/{supervisor}/supervisor-services/{supervisor_service}             {version, yaml_service_config}
//	DELETE …/supervisors/{supervisor}/supervisor-services/{supervisor_service}
//
// The POST and its CreateSpec are documented for 9.0, and so is the
// Supervisors.SupervisorServices.SetSpec {version, yaml_service_config}
// ("set a new configuration … applied in entirety"), which is how a
// service is upgraded to another version. The reference pages we could
// read show the HTTP method for the older per-cluster form only
// (PUT /api/vcenter/namespace-management/clusters/{cluster}/supervisor-services/{supervisor_service},
// with GET and DELETE beside it); the per-Supervisor PUT, GET and DELETE
// here are assumed to follow it, with GET answering {desired_version,
// current_version, config_status} as the documented 9.0 Summary does.
//
// # Carvel packages
//
// FindPackages reads one layer of an imgpkg bundle and pairs every Carvel
// Package with its PackageMetadata; Package.WithImage gives the YAML that
// vCenter wants, with every spec.template.spec.fetch[].imgpkgBundle.image
// replaced and everything else kept.
package vsphere
