package vsphere

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Sentinel errors, for errors.Is. Every error this package returns wraps at
// most one of them, together with the operation and the vCenter path.
var (
	// ErrInvalidConfig means Config.Validate found problems; the message
	// lists all of them.
	ErrInvalidConfig = errors.New("invalid vCenter configuration")

	// ErrLoginRefused means vCenter answered the login with 401 or 403:
	// the user name or password is wrong, or the account is locked.
	ErrLoginRefused = errors.New("vCenter refused the login")

	// ErrUnreachable means no TCP (or TLS) connection to vCenter could be
	// made: wrong host or port, DNS, routing or a firewall.
	ErrUnreachable = errors.New("vCenter is unreachable")

	// ErrUntrusted means vCenter's TLS certificate could not be verified
	// against Config.CAPEM or Config.Thumbprint.
	ErrUntrusted = errors.New("vCenter's TLS certificate is not trusted: " +
		"give vCenter's CA certificate (CAPEM) or its certificate thumbprint " +
		"(SHA-256 or SHA-1, colon-separated hex as `govc about.cert -k -thumbprint` shows it)")

	// ErrNotFound means vCenter answered 404: no such Supervisor,
	// registry, Supervisor Service or version.
	ErrNotFound = errors.New("not found in vCenter")

	// ErrForbidden means vCenter answered 403 to a call after login: the
	// user lacks a privilege (such as SupervisorServices.Manage).
	ErrForbidden = errors.New("vCenter user lacks the privilege")

	// ErrVersionInUse means a Supervisor Service version would have to be
	// replaced while this Supervisor runs it; vCenter deletes only
	// versions that no Supervisor runs.
	ErrVersionInUse = errors.New("supervisor service version is installed on the Supervisor")

	// ErrNoPackage means a bundle layer holds no Carvel Package.
	ErrNoPackage = errors.New("no Carvel Package (apiVersion data.packaging.carvel.dev/v1alpha1, kind Package) in the bundle layer")

	// ErrNoPackageMetadata means a Carvel Package has no PackageMetadata
	// whose metadata.name equals the Package's spec.refName.
	ErrNoPackageMetadata = errors.New("no PackageMetadata for the Carvel Package")

	// ErrTooLarge means a bundle layer, or a YAML file in it, is over
	// the limits FindPackages reads.
	ErrTooLarge = errors.New("bundle layer too large")

	// ErrUnsafePath means a tar entry name is absolute or climbs out of
	// the bundle with "..".
	ErrUnsafePath = errors.New("unsafe path in bundle layer")
)

// Error tells an operator which vCenter call failed and why. Method and
// Path are empty for errors that happen before a request is sent.
type Error struct {
	Op     string // "create registry", "install supervisor service", …
	Method string // "POST"
	Path   string // "/api/vcenter/namespace-management/supervisors/sv-1/container-image-registries"
	Err    error  // ErrNotFound, ErrForbidden, an answer of vCenter, a transport error…
}

// Error implements error.
func (e *Error) Error() string {
	if e.Method == "" {
		return fmt.Sprintf("vsphere: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("vsphere: %s: %s %s: %v", e.Op, e.Method, e.Path, e.Err)
}

// Unwrap gives the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// redact returns err unchanged unless its message shows secret (some
// servers answer a bad request by repeating it, often JSON-escaped once or
// twice); then it returns an error with the same message, the secret
// replaced, and no chain to unwrap, so that no caller can print the secret
// by digging.
func redact(err error, secret string) error {
	if err == nil || secret == "" {
		return err
	}
	forms := []string{secret}
	for range 2 {
		b, _ := json.Marshal(forms[len(forms)-1])
		forms = append(forms, string(b[1:len(b)-1]))
	}
	msg := err.Error()
	for _, f := range slices.Backward(forms) {
		msg = strings.ReplaceAll(msg, f, "[redacted]")
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}
