package aptrepo

import (
	"errors"
	"fmt"
)

// Errors callers test with errors.Is. A refused change wraps one of them in
// an *Error that names the repository, the distribution and, for a package,
// the file.
var (
	// ErrInvalid is a request that cannot be carried out as asked: a bad
	// repository, distribution or component name, no packages, an unknown
	// option.
	ErrInvalid = errors.New("invalid request")
	// ErrNotDeb is a file that is not a Debian binary package.
	ErrNotDeb = errors.New("not a Debian binary package (.deb)")
	// ErrBadControl is a .deb whose control file is missing, unreadable or
	// lacks a valid Package, Version or Architecture.
	ErrBadControl = errors.New("broken control file")
	// ErrTooLarge is a .deb larger than Options.MaxDebSize.
	ErrTooLarge = errors.New("package file too large")
	// ErrConflict is a package whose name, version and architecture are
	// already in the repository with different content.
	ErrConflict = errors.New("the same package name, version and architecture is already in the repository with different content")
	// ErrNotFound is an unknown repository, distribution, package or publish.
	ErrNotFound = errors.New("not found")
	// ErrNotAvailable is a publish that is in the history but whose snapshot
	// was dropped by the retention policy, so it cannot be rolled back to.
	ErrNotAvailable = errors.New("publish no longer kept")
	// ErrCorruptKey is a signing keyring that cannot be read.
	ErrCorruptKey = errors.New("corrupt signing key")
	// ErrMissingKey is a public keyring without its secret keyring: the key
	// clients trust is gone and a new one will not be made silently.
	ErrMissingKey = errors.New("signing key missing")
	// ErrClosed is a call on closed Repos.
	ErrClosed = errors.New("apt repositories closed")
	// ErrSignature is an upstream Release (InRelease, or Release with
	// Release.gpg) whose signature does not verify with the keyring given
	// to Mirror: a wrong keyring, or a tampered Release.
	ErrSignature = errors.New("upstream signature does not verify with the given keyring")
	// ErrChecksum is an upstream file whose size or checksum differs from
	// the one its signed index gives: a Packages file that does not match
	// the Release, or a .deb that does not match the Packages file.
	ErrChecksum = errors.New("size or checksum differs from the signed index")
	// ErrUnreachable is an upstream archive that cannot be reached or
	// answers with an error.
	ErrUnreachable = errors.New("upstream archive unreachable")
)

// Error tells an operator which repository (or upstream archive),
// distribution and file a refused change or a failed mirror was about, and
// why.
type Error struct {
	Op   string // "add", "remove", "rollback", "open", "mirror", …
	Repo string // repository name; may be empty
	URL  string // the upstream archive (Mirror); may be empty
	Dist string // distribution; may be empty
	File string // the package file (Deb.Name), state file, keyring or upstream file; may be empty
	Err  error
}

func (e *Error) Error() string {
	s := "apt repository " + e.Op
	if e.URL != "" {
		s += " " + e.URL
		if e.Dist != "" {
			s += " " + e.Dist
		}
	} else if e.Repo != "" {
		s += " " + e.Repo
		if e.Dist != "" {
			s += "/" + e.Dist
		}
	}
	if e.File != "" {
		s += ": " + e.File
	}
	return fmt.Sprintf("%s: %v", s, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }
