package filestore

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	maxSegment = 255  // bytes per name segment, as most file systems allow
	maxName    = 4096 // bytes per name, as PATH_MAX
	maxID      = 128  // bytes per staging id
)

// validateName checks that name can be served at /files/<name> and written
// out by a client without leaving the folder it downloads into.
func validateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > maxName:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, maxName)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", ErrInvalidName)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("%w: absolute", ErrInvalidName)
	}
	for seg := range strings.SplitSeq(name, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: empty segment", ErrInvalidName)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: %q segment", ErrInvalidName, seg)
		case len(seg) > maxSegment:
			return fmt.Errorf("%w: segment longer than %d bytes", ErrInvalidName, maxSegment)
		}
		for _, r := range seg {
			// A backslash is a separator to some clients and an escape
			// to sha256sum; control characters break SHA256SUMS lines.
			if !unicode.IsPrint(r) || r == '\\' {
				return fmt.Errorf("%w: character %q", ErrInvalidName, r)
			}
		}
	}
	return nil
}

// parseDigest returns the hex part of "sha256:<hex>".
func parseDigest(digest string) (string, error) {
	hexd, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexd) != 64 {
		return "", fmt.Errorf("%w: %q", ErrInvalidDigest, digest)
	}
	for _, c := range hexd {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("%w: %q", ErrInvalidDigest, digest)
		}
	}
	return hexd, nil
}

// validateID checks a staging id: [a-z0-9-]+, at most maxID bytes.
func validateID(id string) error {
	if id == "" || len(id) > maxID {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("%w: %q", ErrInvalidID, id)
		}
	}
	return nil
}
