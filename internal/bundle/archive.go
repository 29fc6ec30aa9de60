package bundle

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Entry names of a bundle archive, in the order they are written: the
// signed inventory first, so a reader can check the signature before it
// reads a single blob.
const (
	EntryInventory = "inventory.json"
	EntrySignature = "inventory.json.sig"
	EntrySignerKey = "inventory.pub"
	EntryLayout    = "oci-layout"
	EntryIndex     = "index.json"
	blobPrefix     = "blobs/sha256/"
)

// LayoutFile is the oci-layout entry every bundle carries.
const LayoutFile = `{"imageLayoutVersion":"1.0.0"}`

// Errors of reading a bundle.
var (
	ErrNotBundle   = errors.New("not an appliance bundle")
	ErrNotListed   = errors.New("not listed in the signed inventory")
	ErrBlobMissing = errors.New("listed in the inventory but missing from the bundle")
	ErrBlobChanged = errors.New("does not match the inventory")
)

var blobName = regexp.MustCompile(`^blobs/sha256/([a-f0-9]{64})$`)

// BlobSource opens the blobs a bundle is written from.
type BlobSource interface {
	Open(digest string) (io.ReadCloser, error)
}

// WriteArchive writes a bundle: inventory.json, its signature and signer
// key (when signer is set), oci-layout, index.json, then every blob the
// inventory lists, in its order, each checked against its digest as it is
// copied.
func WriteArchive(w io.Writer, inv *Inventory, index []byte, signer *Signer, blobs BlobSource) error {
	aw, err := NewArchiveWriter(w, inv, index, signer)
	if err != nil {
		return err
	}
	for _, b := range inv.Blobs {
		rc, err := blobs.Open(b.Digest)
		if err != nil {
			return fmt.Errorf("write bundle: blob %s: %w", b.Digest, err)
		}
		err = aw.Blob(b, rc, false)
		_ = rc.Close()
		if err != nil {
			return err
		}
	}
	return aw.Close()
}

// ArchiveWriter writes a bundle whose blobs come in any order: the
// inventory (which lists them all) first, then each blob as it becomes
// available, so writing can overlap fetching.
type ArchiveWriter struct {
	tw      *tar.Writer
	mtime   time.Time
	want    map[string]int64
	written map[string]bool
}

// NewArchiveWriter completes the inventory (index digest, signer), writes
// it, its signature and key, oci-layout and index.json.
func NewArchiveWriter(w io.Writer, inv *Inventory, index []byte, signer *Signer) (*ArchiveWriter, error) {
	sum := sha256.Sum256(index)
	inv.Index = Blob{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(index))}
	var pub []byte
	if signer != nil {
		var err error
		if pub, err = signer.PublicKey(); err != nil {
			return nil, err
		}
		k, err := ParsePublicKey("signer", pub)
		if err != nil {
			return nil, err
		}
		inv.Signer = "sha256:" + k.Fingerprint()
	}
	data, err := inv.Marshal()
	if err != nil {
		return nil, err
	}
	a := &ArchiveWriter{tw: tar.NewWriter(w), mtime: inv.Created, want: make(map[string]int64, len(inv.Blobs)), written: map[string]bool{}}
	if a.mtime.IsZero() {
		a.mtime = time.Unix(0, 0)
	}
	for _, b := range inv.Blobs {
		a.want[b.Digest] = b.Size
	}
	if err := a.put(EntryInventory, data); err != nil {
		return nil, err
	}
	if signer != nil {
		sig, err := signer.Sign(data)
		if err != nil {
			return nil, err
		}
		if err := a.put(EntrySignature, sig); err != nil {
			return nil, err
		}
		if err := a.put(EntrySignerKey, pub); err != nil {
			return nil, err
		}
	}
	if err := a.put(EntryLayout, []byte(LayoutFile)); err != nil {
		return nil, err
	}
	if err := a.put(EntryIndex, index); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *ArchiveWriter) put(name string, body []byte) error {
	if err := a.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: a.mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	if _, err := a.tw.Write(body); err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	return nil
}

// Blob writes one blob the inventory lists, once. Unless verified (the
// caller hashed these very bytes already), its sha256 is checked while it
// is copied; a source that changed is an error, and the archive is then
// unusable.
func (a *ArchiveWriter) Blob(b Blob, r io.Reader, verified bool) error {
	hexDigest, ok := strings.CutPrefix(b.Digest, "sha256:")
	if !ok {
		return fmt.Errorf("write bundle: blob %s: only sha256 digests are supported", b.Digest)
	}
	if size, listed := a.want[b.Digest]; !listed || size != b.Size {
		return fmt.Errorf("write bundle: blob %s (%d bytes) is not in the inventory", b.Digest, b.Size)
	}
	if a.written[b.Digest] {
		return fmt.Errorf("write bundle: blob %s written twice", b.Digest)
	}
	name := blobPrefix + hexDigest
	if err := a.tw.WriteHeader(blobHeader(b, a.mtime)); err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	h := sha256.New()
	src := io.LimitReader(r, b.Size)
	if !verified {
		src = io.TeeReader(src, h)
	}
	buf := copyBuffers.Get().(*[]byte)
	n, err := io.CopyBuffer(a.tw, src, *buf)
	copyBuffers.Put(buf)
	if err != nil {
		return fmt.Errorf("write bundle %s: %w", name, err)
	}
	var one [1]byte
	if extra, _ := r.Read(one[:]); extra > 0 {
		n++
	}
	if n != b.Size || (!verified && hex.EncodeToString(h.Sum(nil)) != hexDigest) {
		return fmt.Errorf("write bundle %s: the source changed: it no longer has %d bytes hashing to %s (the cache or the file was altered; delete it from the cache and run again)", name, b.Size, b.Digest)
	}
	a.written[b.Digest] = true
	return nil
}

// blobHeader is the tar header of a blob's entry.
func blobHeader(b Blob, mtime time.Time) *tar.Header {
	return &tar.Header{Name: blobPrefix + strings.TrimPrefix(b.Digest, "sha256:"), Mode: 0o644, Size: b.Size, ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
}

// Close checks that every listed blob was written and ends the archive.
func (a *ArchiveWriter) Close() error {
	if len(a.written) != len(a.want) {
		for d := range a.want {
			if !a.written[d] {
				return fmt.Errorf("write bundle: blob %s was never written", d)
			}
		}
	}
	if err := a.tw.Close(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// copyBuffers are the 1 MiB buffers blobs are copied with.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// Trust is how a reader decides whether to accept a bundle's signature.
type Trust struct {
	// Keys are the trusted public keys.
	Keys []TrustedKey
	// AllowUnsigned accepts a bundle without a signature (recorded).
	AllowUnsigned bool
	// AnySigner accepts any signer whose signature verifies with the key
	// the bundle carries: for `bundle verify` on the connected side, where
	// no trust is configured; the result names the key.
	AnySigner bool
}

// Checker follows a bundle archive entry by entry: it verifies the signed
// inventory when it has read it, then checks that every blob entry is one
// the inventory lists, with the size it lists, and at the end that none is
// missing. Callers hash the blobs' bytes themselves (CheckBlob).
type Checker struct {
	trust  Trust
	inv    *Inventory
	invRaw []byte
	sig    []byte
	pub    []byte
	done   bool // signature decided
	// Signed tells who signed: the trusted key's name and fingerprint, or
	// "" when unsigned.
	SignedBy    string
	Fingerprint string
	Unsigned    bool

	blobs    map[string]int64
	seen     map[string]bool
	index    []byte
	hasIndex bool
	layout   bool
}

// NewChecker starts checking a bundle with the given trust.
func NewChecker(trust Trust) *Checker {
	return &Checker{trust: trust, seen: map[string]bool{}}
}

// IsBundleStart tells whether the first entry of an archive marks a bundle.
func IsBundleStart(name string) bool { return name == EntryInventory }

// Inventory returns the verified inventory (nil before it is verified).
func (c *Checker) Inventory() *Inventory {
	if !c.done {
		return nil
	}
	return c.inv
}

// InventoryBytes returns the signed bytes of inventory.json.
func (c *Checker) InventoryBytes() []byte { return c.invRaw }

// MetaLimit bounds the size of the inventory, its signature and index.json.
const MetaLimit = 64 << 20

// IsMeta tells whether an entry is read whole by Meta rather than streamed.
func IsMeta(name string) bool {
	switch name {
	case EntryInventory, EntrySignature, EntrySignerKey, EntryLayout, EntryIndex:
		return true
	}
	return false
}

// Meta takes one of the small entries (inventory.json, its signature and
// key, oci-layout, index.json) whole. The signature is decided at the first
// entry after the inventory's own.
func (c *Checker) Meta(name string, data []byte) error {
	switch name {
	case EntryInventory:
		if c.invRaw != nil {
			return fmt.Errorf("%s: %w: appears twice", name, ErrNotBundle)
		}
		inv, err := ParseInventory(data)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		c.inv, c.invRaw = inv, data
		c.blobs = make(map[string]int64, len(inv.Blobs))
		for _, b := range inv.Blobs {
			c.blobs[b.Digest] = b.Size
		}
		return nil
	case EntrySignature, EntrySignerKey:
		if c.invRaw == nil || c.done {
			return fmt.Errorf("%s: %w: the signature must follow inventory.json", name, ErrNotBundle)
		}
		if name == EntrySignature {
			c.sig = data
		} else {
			c.pub = data
		}
		return nil
	}
	if err := c.decide(); err != nil {
		return err
	}
	switch name {
	case EntryLayout:
		if strings.TrimSpace(string(data)) != LayoutFile {
			return fmt.Errorf("%s: %w: want %s", name, ErrBlobChanged, LayoutFile)
		}
		c.layout = true
	case EntryIndex:
		sum := sha256.Sum256(data)
		if d := "sha256:" + hex.EncodeToString(sum[:]); d != c.inv.Index.Digest || int64(len(data)) != c.inv.Index.Size {
			return fmt.Errorf("%s: %w: it hashes to %s (%d bytes), the inventory says %s (%d bytes)", name, ErrBlobChanged, d, len(data), c.inv.Index.Digest, c.inv.Index.Size)
		}
		c.index, c.hasIndex = data, true
	}
	return nil
}

// decide verifies the signature once the entries after the inventory begin.
func (c *Checker) decide() error {
	if c.done {
		return nil
	}
	if c.invRaw == nil {
		return fmt.Errorf("%w: inventory.json must be the first entry", ErrNotBundle)
	}
	c.done = true
	if c.sig == nil {
		if !c.trust.AllowUnsigned {
			return fmt.Errorf("%s: %w: refusing it (--allow-unsigned accepts unsigned bundles, and records that it did)", EntryInventory, ErrUnsigned)
		}
		c.Unsigned = true
		return nil
	}
	if c.trust.AnySigner {
		k, err := ParsePublicKey("the bundle's signer key", c.pub)
		if err != nil {
			return fmt.Errorf("%s: %w", EntrySignerKey, err)
		}
		if _, err := Verify(c.invRaw, c.sig, []TrustedKey{k}); err != nil {
			return fmt.Errorf("%s: %w: the inventory was changed after signing", EntrySignature, ErrBadSignature)
		}
		c.SignedBy, c.Fingerprint = "the key the bundle carries", "sha256:"+k.Fingerprint()
		return nil
	}
	k, err := VerifySigned(c.invRaw, c.sig, c.pub, c.trust.Keys)
	if err != nil {
		return fmt.Errorf("%s: %w", EntrySignature, err)
	}
	c.SignedBy, c.Fingerprint = k.Name, "sha256:"+k.Fingerprint()
	return nil
}

// Blob checks a blob entry's name and size against the inventory and
// returns its digest. The caller must hash the bytes and call CheckBlob.
func (c *Checker) Blob(name string, size int64) (string, error) {
	if err := c.decide(); err != nil {
		return "", err
	}
	m := blobName.FindStringSubmatch(name)
	if m == nil {
		return "", fmt.Errorf("%s: %w: not part of a bundle", name, ErrNotListed)
	}
	d := "sha256:" + m[1]
	want, ok := c.blobs[d]
	if !ok {
		return "", fmt.Errorf("%s: %w", name, ErrNotListed)
	}
	if want != size {
		return "", fmt.Errorf("%s: %w: %d bytes, the inventory says %d", name, ErrBlobChanged, size, want)
	}
	if c.seen[d] {
		return "", fmt.Errorf("%s: appears twice", name)
	}
	c.seen[d] = true
	return d, nil
}

// CheckBlob compares the sha256 the caller computed with the blob's name.
func CheckBlob(d string, sum []byte) error {
	if got := "sha256:" + hex.EncodeToString(sum); got != d {
		return fmt.Errorf("%s%s: %w: its bytes hash to %s", blobPrefix, strings.TrimPrefix(d, "sha256:"), ErrBlobChanged, got)
	}
	return nil
}

// Finish checks, at the end of the archive, that the signature was decided,
// the layout and index were present and every listed blob came.
func (c *Checker) Finish() error {
	if err := c.decide(); err != nil {
		return err
	}
	if !c.layout || !c.hasIndex {
		return fmt.Errorf("%w: oci-layout or index.json is missing", ErrNotBundle)
	}
	var missing []string
	for _, b := range c.inv.Blobs {
		if !c.seen[b.Digest] {
			missing = append(missing, b.Digest)
		}
	}
	if len(missing) > 0 {
		if len(missing) > 5 {
			missing = append(missing[:5], fmt.Sprintf("and %d more", len(missing)-5))
		}
		return fmt.Errorf("%w: %s", ErrBlobMissing, strings.Join(missing, ", "))
	}
	return nil
}

// Index returns index.json as read.
func (c *Checker) Index() []byte { return c.index }
