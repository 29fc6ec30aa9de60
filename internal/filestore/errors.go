package filestore

import (
	"errors"
	"strconv"
)

// Errors callers test with errors.Is. A refusal wraps one of them in an
// *Error that names the import, the file and the digest concerned.
var (
	// ErrInvalidName is an entry name that cannot be served under /files/:
	// empty, absolute, with an empty, "." or ".." segment, a segment over
	// 255 bytes, or a character that is not printable.
	ErrInvalidName = errors.New("invalid file name")
	// ErrInvalidDigest is a digest not of the form "sha256:<64 lower-case hex>".
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrInvalidID is a staging id not made of [a-z0-9-].
	ErrInvalidID = errors.New("invalid import id")
	// ErrDigestMismatch is content whose SHA-256 is not the digest it came with.
	ErrDigestMismatch = errors.New("content does not match its digest")
	// ErrSizeMismatch is content shorter or longer than announced, or an
	// entry whose size disagrees with its content.
	ErrSizeMismatch = errors.New("content does not match its size")
	// ErrMissingBlob is an entry whose digest is neither staged nor stored.
	ErrMissingBlob = errors.New("content neither staged nor in the store")
	// ErrDuplicateName is a name given twice in one commit.
	ErrDuplicateName = errors.New("the same name appears twice")
	// ErrStageExists is a staging id already in use.
	ErrStageExists = errors.New("an import with this id is already staged")
	// ErrStageClosed is a stage already committed or discarded, or one that
	// belongs to another store.
	ErrStageClosed = errors.New("stage already committed or discarded")
	// ErrCorrupt is an index file that cannot be read.
	ErrCorrupt = errors.New("corrupt file index")
)

// Error tells an operator which import, file and digest a refusal or a
// failure was about, and why.
type Error struct {
	Op     string // "open", "stage", "write", "commit", "discard"
	Import string // the staging id; may be empty
	Name   string // the entry name; may be empty
	Digest string // "sha256:<hex>"; may be empty
	Err    error
}

func (e *Error) Error() string {
	s := "filestore " + e.Op
	if e.Import != "" {
		s += " " + e.Import
	}
	if e.Name != "" {
		s += " " + strconv.Quote(e.Name)
	}
	if e.Digest != "" {
		s += " " + e.Digest
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }
