package bundle

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strings"
)

// tarBlock is tar's block: every entry's header and body start on one.
const tarBlock = 512

// ArchivePlan lays out a bundle archive before any blob is at hand, so
// that its blobs can be written where they belong, in any order and all
// at once: each download straight into its place, with no second pass
// over the bytes. The archive is byte for byte the one ArchiveWriter
// writes when it is given the blobs in the inventory's order.
type ArchivePlan struct {
	// Head is everything before the first blob (inventory.json, its
	// signature and key, oci-layout, index.json), at offset 0.
	Head []byte
	// Blobs are the inventory's blobs, in its order, each with its place.
	Blobs []Placement
	// Size is the archive's length, tar's two end blocks included.
	Size int64
}

// Placement is where one blob's entry lies in a planned archive: its tar
// header at Offset, its bytes at Data, then Pad zero bytes to the next
// tar block.
type Placement struct {
	Blob
	Header []byte
	Offset int64
	Data   int64
	Pad    int
}

// PlanArchive completes the inventory (index digest, signer) as
// NewArchiveWriter does and lays out the archive.
func PlanArchive(inv *Inventory, index []byte, signer *Signer) (*ArchivePlan, error) {
	var head bytes.Buffer
	aw, err := NewArchiveWriter(&head, inv, index, signer)
	if err != nil {
		return nil, err
	}
	if err := aw.tw.Flush(); err != nil { // index.json's padding
		return nil, fmt.Errorf("plan bundle: %w", err)
	}
	p := &ArchivePlan{Head: head.Bytes()}
	off := int64(head.Len())
	for _, b := range inv.Blobs {
		if !strings.HasPrefix(b.Digest, "sha256:") {
			return nil, fmt.Errorf("plan bundle: blob %s: only sha256 digests are supported", b.Digest)
		}
		var hb bytes.Buffer
		if err := tar.NewWriter(&hb).WriteHeader(blobHeader(b, aw.mtime)); err != nil {
			return nil, fmt.Errorf("plan bundle: blob %s: %w", b.Digest, err)
		}
		pad := int((tarBlock - b.Size%tarBlock) % tarBlock)
		p.Blobs = append(p.Blobs, Placement{Blob: b, Header: hb.Bytes(), Offset: off, Data: off + int64(hb.Len()), Pad: pad})
		off += int64(hb.Len()) + b.Size + int64(pad)
	}
	p.Size = off + 2*tarBlock
	return p, nil
}
