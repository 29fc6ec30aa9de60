package importer

import (
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/opencontainers/go-digest"
)

// The manifest.json of an `imgpkg copy --to-tar` archive: a JSON array of
// entries whose keys are imgpkg's Go field names. See docs/import-formats.md.

type imgpkgEntry struct {
	Image      *imgpkgImage `json:"Image"`
	ImageIndex *imgpkgIndex `json:"ImageIndex"`
}

type imgpkgImage struct {
	Refs     []string          `json:"Refs"`
	Layers   []imgpkgLayer     `json:"Layers"`
	Config   imgpkgConfig      `json:"Config"`
	Manifest imgpkgManifest    `json:"Manifest"`
	Tag      string            `json:"Tag"`
	OrigRef  string            `json:"OrigRef"`
	Labels   map[string]string `json:"Labels"`
}

type imgpkgLayer struct {
	MediaType string `json:"MediaType"`
	Digest    string `json:"Digest"`
	DiffID    string `json:"DiffID"`
	Size      int64  `json:"Size"`
}

type imgpkgConfig struct {
	Digest string `json:"Digest"`
	Raw    string `json:"Raw"`
}

type imgpkgManifest struct {
	MediaType string `json:"MediaType"`
	Digest    string `json:"Digest"`
	Raw       string `json:"Raw"`
}

type imgpkgIndex struct {
	Refs      []string          `json:"Refs"`
	Images    []imgpkgImage     `json:"Images"`
	Indexes   []imgpkgIndex     `json:"Indexes"`
	MediaType string            `json:"MediaType"`
	Digest    string            `json:"Digest"`
	Raw       string            `json:"Raw"`
	Tag       string            `json:"Tag"`
	OrigRef   string            `json:"OrigRef"`
	Labels    map[string]string `json:"Labels"`
}

// rootBundleLabel marks the root bundle in an imgpkg tar.
const rootBundleLabel = "dev.carvel.imgpkg.copy.root-bundle"

var imgpkgBlobName = regexp.MustCompile(`^sha256-([a-f0-9]{64})\.tar\.gz$`)

// isImgpkgManifest tells an imgpkg manifest.json (objects with Image and
// ImageIndex keys) from a docker-save one (Config, RepoTags, Layers).
func isImgpkgManifest(data []byte) bool {
	var raw []map[string]json.RawMessage
	if json.Unmarshal(data, &raw) != nil || len(raw) == 0 {
		return false
	}
	_, img := raw[0]["Image"]
	_, idx := raw[0]["ImageIndex"]
	return img || idx
}

func parseImgpkgManifest(data []byte) ([]imgpkgEntry, error) {
	var entries []imgpkgEntry
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidJSON, err)
	}
	for i, e := range entries {
		if (e.Image == nil) == (e.ImageIndex == nil) {
			return nil, fmt.Errorf("%w: entry %d must hold exactly one of Image and ImageIndex", ErrInvalidJSON, i)
		}
	}
	return entries, nil
}

// checkRaw verifies that raw hashes to the digest it is named by.
func checkRaw(what, raw, named string) (digest.Digest, error) {
	d, err := digest.Parse(named)
	if err != nil {
		return "", fmt.Errorf("%w: %s digest %q: %w", ErrInvalidJSON, what, named, err)
	}
	if raw == "" {
		return "", fmt.Errorf("%w: %s %s has no content", ErrInvalidJSON, what, d)
	}
	if got := digest.FromString(raw); got != d {
		return "", fmt.Errorf("%w: %s named %s hashes to %s", ErrDigestMismatch, what, d, got)
	}
	if !json.Valid([]byte(raw)) {
		return "", fmt.Errorf("%w: %s %s", ErrInvalidJSON, what, d)
	}
	return d, nil
}
