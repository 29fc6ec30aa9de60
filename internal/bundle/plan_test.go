package bundle

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// assemble writes a planned archive the way the bundler does: head,
// headers, bytes and padding each at its offset, the blobs in reverse
// order to show the order of writing does not matter.
func assemble(t *testing.T, p *ArchivePlan, blobs memBlobs) []byte {
	t.Helper()
	out := make([]byte, p.Size)
	copy(out, p.Head)
	for i := len(p.Blobs) - 1; i >= 0; i-- {
		pl := p.Blobs[i]
		copy(out[pl.Offset:], pl.Header)
		if pl.Data != pl.Offset+int64(len(pl.Header)) {
			t.Fatalf("blob %d: data at %d, header ends at %d", i, pl.Data, pl.Offset+int64(len(pl.Header)))
		}
		copy(out[pl.Data:], blobs[pl.Digest])
		if (pl.Data+pl.Size+int64(pl.Pad))%tarBlock != 0 || pl.Pad >= tarBlock {
			t.Fatalf("blob %d: padding %d does not end on a tar block", i, pl.Pad)
		}
	}
	return out
}

// A planned archive is byte for byte the archive WriteArchive writes, for
// blobs of sizes on and off the tar block.
func TestPlanArchiveMatchesWriteArchive(t *testing.T) {
	blobs := memBlobs{}
	inv := &Inventory{SchemaVersion: 1, Name: "t", Created: time.Unix(1_700_000_000, 0).UTC(), Tool: "test"}
	for _, n := range []int{0, 1, 511, 512, 513, 4096, 70000} {
		b := bytes.Repeat([]byte{byte(n)}, n)
		b = append(b, []byte(strings.Repeat("x", n%3))...)
		d := digestOf(b)
		if _, dup := blobs[d]; dup {
			continue
		}
		blobs[d] = b
		inv.Blobs = append(inv.Blobs, Blob{Digest: d, Size: int64(len(b))})
	}
	inv.Artifacts = []Artifact{{Kind: KindFile, Destination: "f", Digest: inv.Blobs[0].Digest, Size: inv.Blobs[0].Size}}
	index := []byte(`{"schemaVersion":2,"manifests":[]}`)
	var want bytes.Buffer
	invCopy := *inv
	if err := WriteArchive(&want, &invCopy, index, nil, blobs); err != nil {
		t.Fatal(err)
	}
	plan, err := PlanArchive(inv, index, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := assemble(t, plan, blobs)
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("planned archive (%d bytes) differs from WriteArchive's (%d bytes)", len(got), want.Len())
	}
}

// A signed planned archive verifies with the signer's key.
func TestPlanArchiveSignedVerifies(t *testing.T) {
	signer, key := testSigner(t, "release")
	_, inv, blobs := archive(t, nil)
	inv.Index, inv.Signer = Blob{}, ""
	plan, err := PlanArchive(inv, []byte(`{"schemaVersion":2,"manifests":[]}`), signer)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := VerifyArchive(context.Background(), bytes.NewReader(assemble(t, plan, blobs)), Trust{Keys: []TrustedKey{key}})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Signed || sum.Blobs != len(inv.Blobs) {
		t.Fatalf("summary = %+v", sum)
	}
}
