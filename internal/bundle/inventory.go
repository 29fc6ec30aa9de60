package bundle

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Artifact kinds.
const (
	KindImage  = "image"
	KindBundle = "imgpkg-bundle"
	KindFile   = "file"
	KindApt    = "apt"
)

// Inventory is inventory.json: every artifact the bundle carries and every
// blob, with digests and sizes. It is what the signature covers.
type Inventory struct {
	SchemaVersion int       `json:"schemaVersion"`
	Name          string    `json:"name,omitempty"`
	Created       time.Time `json:"created"`
	Tool          string    `json:"tool"`
	// Since is set on a delta: the sha256 of the receipt it was made against.
	Since string `json:"since,omitempty"`
	// Signer is the fingerprint (sha256 of the DER public key) of the key
	// the creator signed with, empty when unsigned.
	Signer    string     `json:"signer,omitempty"`
	Artifacts []Artifact `json:"artifacts"`
	// Index is index.json, the OCI layout's list of images, which the
	// inventory covers like any blob.
	Index Blob `json:"index"`
	// Blobs lists every blob in blobs/sha256/, sorted by digest. A delta
	// also lists, under Present, what it relies on the enclave to hold.
	Blobs   []Blob `json:"blobs"`
	Present []Blob `json:"present,omitempty"`
}

// Artifact is one thing the bundle carries.
type Artifact struct {
	Kind        string   `json:"kind"`
	Source      string   `json:"source"`
	Destination string   `json:"destination"`
	Digest      string   `json:"digest"`
	Size        int64    `json:"size"`
	MediaType   string   `json:"mediaType,omitempty"`
	Version     string   `json:"version,omitempty"`
	Refresh     string   `json:"refresh,omitempty"`
	Platforms   []string `json:"platforms,omitempty"`
	// FileKind says what a file is: nim-profile, driver, iso, file…
	FileKind string            `json:"fileKind,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Related lists what travels with an image (signatures, attestations,
	// SBOMs, referrers) and, for an imgpkg bundle, every image and nested
	// bundle it reaches.
	Related []Related `json:"related,omitempty"`
}

// Kinds of related manifests.
const (
	RelatedSignature   = "signature"   // cosign sha256-<hex>.sig
	RelatedAttestation = "attestation" // cosign sha256-<hex>.att
	RelatedSBOM        = "sbom"        // cosign sha256-<hex>.sbom
	RelatedReferrer    = "referrer"    // an OCI referrer (its manifest names a subject)
	RelatedImage       = "image"       // an image of an imgpkg bundle
	RelatedBundle      = "bundle"      // a nested imgpkg bundle
)

// Related is a manifest that travels with an artifact.
type Related struct {
	Kind      string `json:"kind"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
	// Tag is the tag it carries at the destination (cosign's
	// sha256-<hex>.sig), if any.
	Tag string `json:"tag,omitempty"`
	// Source is where it was fetched from.
	Source string `json:"source,omitempty"`
}

// Blob is one content-addressed blob.
type Blob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Marshal renders the inventory canonically (sorted blobs, indented), the
// bytes that are signed.
func (inv *Inventory) Marshal() ([]byte, error) {
	sort.Slice(inv.Blobs, func(i, j int) bool { return inv.Blobs[i].Digest < inv.Blobs[j].Digest })
	sort.Slice(inv.Present, func(i, j int) bool { return inv.Present[i].Digest < inv.Present[j].Digest })
	data, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal inventory: %w", err)
	}
	return append(data, '\n'), nil
}

// ParseInventory reads inventory.json strictly.
func ParseInventory(data []byte) (*Inventory, error) {
	var inv Inventory
	if err := json.Unmarshal(data, &inv); err != nil {
		return nil, fmt.Errorf("parse inventory.json: %w", err)
	}
	if inv.SchemaVersion != 1 {
		return nil, fmt.Errorf("parse inventory.json: schemaVersion %d (this appliance reads 1)", inv.SchemaVersion)
	}
	return &inv, nil
}
