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
	Since     string     `json:"since,omitempty"`
	Artifacts []Artifact `json:"artifacts"`
	// Blobs lists every blob in blobs/sha256/, sorted by digest. A delta
	// also lists, under Present, what it relies on the enclave to hold.
	Blobs   []Blob `json:"blobs"`
	Present []Blob `json:"present,omitempty"`
}

// Artifact is one thing the bundle carries.
type Artifact struct {
	Kind        string            `json:"kind"`
	Source      string            `json:"source"`
	Destination string            `json:"destination"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	MediaType   string            `json:"mediaType,omitempty"`
	Version     string            `json:"version,omitempty"`
	Refresh     string            `json:"refresh,omitempty"`
	Platforms   []string          `json:"platforms,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Related lists what travels with an image: signatures, attestations,
	// SBOMs and referrers, as "kind digest" (sig sha256:…).
	Related []string `json:"related,omitempty"`
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
