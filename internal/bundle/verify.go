package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// Summary is what `bundle verify` reports: who signed, and what the bundle
// holds.
type Summary struct {
	Name        string         `json:"name,omitempty"`
	Created     string         `json:"created"`
	Tool        string         `json:"tool,omitempty"`
	Since       string         `json:"since,omitempty"`
	Signed      bool           `json:"signed"`
	SignedBy    string         `json:"signed_by,omitempty"`
	Fingerprint string         `json:"fingerprint,omitempty"`
	Parts       int            `json:"parts,omitempty"`
	Artifacts   map[string]int `json:"artifacts"`
	Blobs       int            `json:"blobs"`
	Bytes       int64          `json:"bytes"`
	Present     int            `json:"present,omitempty"`
	Inventory   *Inventory     `json:"inventory"`
}

// Open returns a reader over a bundle written as one file or as parts (the
// parts list OUT.parts.json beside OUT). With parts, every part is checked
// first, so a damaged part is named before anything else is read; a signed
// parts list is checked against trust.
func Open(out string, trust Trust) (io.ReadCloser, int, error) {
	if _, err := os.Stat(out + ".parts.json"); err == nil {
		list, data, sig, err := ReadPartsList(out)
		if err != nil {
			return nil, 0, err
		}
		if len(sig) > 0 && !trust.AnySigner {
			if _, err := Verify(data, sig, trust.Keys); err != nil {
				return nil, 0, fmt.Errorf("parts list %s.parts.json: %w", out, err)
			}
		}
		if _, err := CheckParts(out, list); err != nil {
			return nil, 0, err
		}
		return NewJoinReader(out, list), len(list.Parts), nil
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, 0, fmt.Errorf("open bundle: %w", err)
	}
	return f, 0, nil
}

// VerifyArchive reads a whole bundle archive without importing it: the
// signature, then every blob's size and sha256 against the inventory.
func VerifyArchive(ctx context.Context, r io.Reader, trust Trust) (*Summary, error) {
	c := NewChecker(trust)
	tr := tar.NewReader(r)
	buf := make([]byte, 1<<20)
	first := true
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if first {
				return nil, fmt.Errorf("%w: not a tar archive (%w)", ErrNotBundle, err)
			}
			return nil, fmt.Errorf("read bundle: %w", truncatedErr(err))
		}
		if first && !IsBundleStart(h.Name) {
			return nil, fmt.Errorf("%w: the first entry is %q, not inventory.json", ErrNotBundle, h.Name)
		}
		first = false
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%s: %w: not a regular file", h.Name, ErrNotBundle)
		}
		if IsMeta(h.Name) {
			if h.Size > MetaLimit {
				return nil, fmt.Errorf("%s: %w: %d bytes", h.Name, ErrNotBundle, h.Size)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, fmt.Errorf("read bundle %s: %w", h.Name, truncatedErr(err))
			}
			if err := c.Meta(h.Name, data); err != nil {
				return nil, err
			}
			continue
		}
		d, err := c.Blob(h.Name, h.Size)
		if err != nil {
			return nil, err
		}
		sum := sha256.New()
		// Bounded: the tar header's size, which Blob checked against the
		// signed inventory.
		if _, err := io.CopyBuffer(sum, io.LimitReader(tr, h.Size), buf); err != nil {
			return nil, fmt.Errorf("read bundle %s: %w", h.Name, truncatedErr(err))
		}
		if err := CheckBlob(d, sum.Sum(nil)); err != nil {
			return nil, err
		}
	}
	if first {
		return nil, fmt.Errorf("%w: the file is empty", ErrNotBundle)
	}
	if err := c.Finish(); err != nil {
		return nil, err
	}
	return Summarize(c), nil
}

// Summarize describes a checked bundle.
func Summarize(c *Checker) *Summary {
	inv := c.Inventory()
	s := &Summary{Name: inv.Name, Created: inv.Created.Format("2006-01-02T15:04:05Z07:00"), Tool: inv.Tool, Since: inv.Since,
		Signed: !c.Unsigned, SignedBy: c.SignedBy, Fingerprint: c.Fingerprint, Artifacts: map[string]int{}, Inventory: inv,
		Blobs: len(inv.Blobs), Present: len(inv.Present)}
	for _, a := range inv.Artifacts {
		s.Artifacts[a.Kind]++
	}
	for _, b := range inv.Blobs {
		s.Bytes += b.Size
	}
	return s
}

// Kinds returns the artifact kinds of a summary, sorted.
func (s *Summary) Kinds() []string {
	out := make([]string, 0, len(s.Artifacts))
	for k := range s.Artifacts {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func truncatedErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("the bundle is truncated: %w", err)
	}
	return err
}
