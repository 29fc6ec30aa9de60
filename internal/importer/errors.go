package importer

import (
	"errors"
	"fmt"

	"github.com/appliance-dev/appliance/internal/importer/tarstream"
)

// Errors callers test with errors.Is. Every refusal wraps one of them in an
// *Error that names the source and the entry.
var (
	ErrEmpty          = tarstream.ErrEmpty
	ErrNotArchive     = tarstream.ErrNotArchive
	ErrTruncated      = tarstream.ErrTruncated
	ErrUnsafePath     = tarstream.ErrUnsafePath
	ErrUnsafeLink     = errors.New("link not allowed here")
	ErrUnsupported    = tarstream.ErrUnsupported
	ErrAbsurdSize     = tarstream.ErrAbsurdSize
	ErrDuplicate      = errors.New("the same entry appears twice with different content")
	ErrDigestMismatch = errors.New("content does not match its digest")
	ErrMissingBlob    = errors.New("a manifest references a blob that is neither in the archive nor in the registry")
	ErrInvalidJSON    = errors.New("invalid JSON")
	ErrUnknownFormat  = errors.New("not an imgpkg tar, an OCI image layout, a docker-save archive or an appliance bundle")
	ErrUnexpected     = errors.New("unexpected entry")
	ErrInvalidRequest = errors.New("invalid import request")
	ErrTagConflict    = errors.New("one tag would name two different manifests")
	ErrUnsigned       = errors.New("unsigned bundle refused")
	ErrSignature      = errors.New("bundle signature refused")
)

// Error tells an operator which source and entry failed, and why.
type Error struct {
	Op     string // "read", "verify", "parse", "store", "tag"
	Source string // file name of what was imported
	Entry  string // archive entry, manifest digest or tag; may be empty
	Err    error
}

func (e *Error) Error() string {
	if e.Entry == "" {
		return fmt.Sprintf("import %s: %s: %v", e.Source, e.Op, e.Err)
	}
	return fmt.Sprintf("import %s: %s %s: %v", e.Source, e.Op, e.Entry, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }
