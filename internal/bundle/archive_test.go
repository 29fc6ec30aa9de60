package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type memBlobs map[string][]byte

func (m memBlobs) Open(d string) (io.ReadCloser, error) {
	b, ok := m[d]
	if !ok {
		return nil, fmt.Errorf("no %s", d)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func digestOf(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

func testSigner(t *testing.T, name string) (*Signer, TrustedKey) {
	t.Helper()
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := GenerateKey(priv, pub); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := LoadTrustedKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	return s, keys[0]
}

// archive writes a small bundle of three blobs.
func archive(t *testing.T, signer *Signer) ([]byte, *Inventory, memBlobs) {
	t.Helper()
	blobs := memBlobs{}
	inv := &Inventory{SchemaVersion: 1, Name: "t", Created: time.Unix(1_700_000_000, 0).UTC(), Tool: "test"}
	for _, s := range []string{"layer one", "layer two", "a driver file"} {
		d := digestOf([]byte(s))
		blobs[d] = []byte(s)
		inv.Blobs = append(inv.Blobs, Blob{Digest: d, Size: int64(len(s))})
	}
	inv.Artifacts = []Artifact{{Kind: KindFile, Destination: "driver.run", Digest: digestOf([]byte("a driver file")), Size: 13}}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, inv, []byte(`{"schemaVersion":2,"manifests":[]}`), signer, blobs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), inv, blobs
}

// rewrite copies a tar, letting edit change, drop (nil) or keep entries.
func rewrite(t *testing.T, in []byte, edit func(name string, body []byte) []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(in))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		body = edit(h.Name, body)
		if body == nil {
			continue
		}
		h.Size = int64(len(body))
		_ = tw.WriteHeader(h)
		_, _ = tw.Write(body)
	}
	_ = tw.Close()
	return out.Bytes()
}

// TestArchiveVerify: a written bundle verifies; every way of tampering
// with it, or of presenting it to a reader that should not accept it, is
// refused with an error that names what is wrong.
func TestArchiveVerify(t *testing.T) {
	t.Parallel()
	signer, key := testSigner(t, "release")
	_, rogue := testSigner(t, "rogue")
	good, _, _ := archive(t, signer)
	unsigned, _, _ := archive(t, nil)
	trusted := Trust{Keys: []TrustedKey{key}}
	ctx := context.Background()

	sum, err := VerifyArchive(ctx, bytes.NewReader(good), trusted)
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Signed || sum.Blobs != 3 || sum.Artifacts[KindFile] != 1 || sum.Fingerprint != "sha256:"+key.Fingerprint() {
		t.Fatalf("summary = %+v", sum)
	}
	// The signature is the cosign verify-blob format over inventory.json.
	var invBytes, sigBytes []byte
	rewrite(t, good, func(n string, b []byte) []byte {
		switch n {
		case EntryInventory:
			invBytes = b
		case EntrySignature:
			sigBytes = b
		}
		return b
	})
	if _, err := Verify(invBytes, sigBytes, []TrustedKey{key}); err != nil {
		t.Fatalf("inventory.json.sig does not verify over inventory.json: %v", err)
	}

	flip := func(name string) func(string, []byte) []byte {
		return func(n string, b []byte) []byte {
			if n == name {
				b = bytes.Clone(b)
				b[len(b)/2] ^= 1
			}
			return b
		}
	}
	drop := func(name string) func(string, []byte) []byte {
		return func(n string, b []byte) []byte {
			if n == name {
				return nil
			}
			return b
		}
	}
	layerOne := "blobs/sha256/" + strings.TrimPrefix(digestOf([]byte("layer one")), "sha256:")
	cases := []struct {
		name  string
		data  []byte
		trust Trust
		is    error
		want  string
	}{
		{"inventory changed", rewrite(t, good, flip(EntryInventory)), trusted, ErrBadSignature, ""},
		{"inventory edited", rewrite(t, good, func(n string, b []byte) []byte {
			if n == EntryInventory {
				return bytes.Replace(b, []byte(`"driver.run"`), []byte(`"driver.exe"`), 1)
			}
			return b
		}), trusted, ErrBadSignature, "changed after signing"},
		{"untrusted signer", good, Trust{Keys: []TrustedKey{rogue}}, ErrUntrusted, "sha256:" + key.Fingerprint()},
		{"no trusted keys", good, Trust{}, ErrUntrusted, "not among the 0 trusted keys"},
		{"unsigned", unsigned, trusted, ErrUnsigned, "--allow-unsigned"},
		{"signature removed", rewrite(t, good, drop(EntrySignature)), trusted, ErrUnsigned, ""},
		{"blob changed", rewrite(t, good, flip(layerOne)), trusted, ErrBlobChanged, layerOne},
		{"blob missing", rewrite(t, good, drop(layerOne)), trusted, ErrBlobMissing, digestOf([]byte("layer one"))},
		{"index changed", rewrite(t, good, flip(EntryIndex)), trusted, ErrBlobChanged, EntryIndex},
		{"extra blob", rewrite(t, good, func(n string, b []byte) []byte {
			if n == layerOne {
				return []byte("layer one")
			}
			return b
		}), trusted, nil, ""},
		{"not a bundle", rewrite(t, good, drop(EntryInventory)), trusted, ErrNotBundle, "inventory.json"},
		{"empty", nil, trusted, ErrNotBundle, "empty"},
		{"truncated", good[:len(good)/2], trusted, nil, "truncated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := VerifyArchive(ctx, bytes.NewReader(c.data), c.trust)
			if c.name == "extra blob" {
				if err != nil {
					t.Fatalf("an unchanged rewrite was refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Fatalf("error %v is not %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
	if _, err := VerifyArchive(ctx, bytes.NewReader(unsigned), Trust{AllowUnsigned: true}); err != nil {
		t.Fatalf("unsigned with AllowUnsigned: %v", err)
	}
	if s, err := VerifyArchive(ctx, bytes.NewReader(good), Trust{AnySigner: true}); err != nil || s.Fingerprint != "sha256:"+key.Fingerprint() {
		t.Fatalf("AnySigner: %v %+v", err, s)
	}
	// A blob the inventory does not list.
	var extra bytes.Buffer
	tw := tar.NewWriter(&extra)
	tr := tar.NewReader(bytes.NewReader(good))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		body, _ := io.ReadAll(tr)
		_ = tw.WriteHeader(h)
		_, _ = tw.Write(body)
	}
	stranger := []byte("not listed")
	_ = tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + strings.TrimPrefix(digestOf(stranger), "sha256:"), Size: int64(len(stranger)), Mode: 0o644, Typeflag: tar.TypeReg})
	_, _ = tw.Write(stranger)
	_ = tw.Close()
	if _, err := VerifyArchive(ctx, bytes.NewReader(extra.Bytes()), trusted); !errors.Is(err, ErrNotListed) {
		t.Fatalf("unlisted blob = %v", err)
	}
}

// TestWriteArchiveSourceChanged: a cached blob that no longer matches its
// digest is not written into a bundle.
func TestWriteArchiveSourceChanged(t *testing.T) {
	t.Parallel()
	_, inv, blobs := archive(t, nil)
	blobs[inv.Blobs[0].Digest] = []byte("tampered in the cache")
	if err := WriteArchive(io.Discard, inv, []byte("{}"), nil, blobs); err == nil || !strings.Contains(err.Error(), "the source changed") {
		t.Fatalf("WriteArchive = %v", err)
	}
}

// TestReceipt: a receipt verifies with its own key and a pinned one, and
// refuses edits and other keys.
func TestReceipt(t *testing.T) {
	t.Parallel()
	signer, key := testSigner(t, "appliance")
	_, other := testSigner(t, "other")
	data, err := SignReceipt(&Receipt{Appliance: "a", Blobs: []Blob{{Digest: "sha256:aa", Size: 1}}}, signer)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "r.json")
	write := func(b []byte) {
		if err := writeFile(p, b); err != nil {
			t.Fatal(err)
		}
	}
	write(data)
	r, fp, sum, err := ReadReceipt(p, []TrustedKey{key})
	if err != nil || len(r.Blobs) != 1 || fp != "sha256:"+key.Fingerprint() || !strings.HasPrefix(sum, "sha256:") {
		t.Fatalf("ReadReceipt = %+v %s %s %v", r, fp, sum, err)
	}
	if _, _, _, err := ReadReceipt(p, []TrustedKey{other}); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("pinned to another key = %v", err)
	}
	var sr SignedReceipt
	if err := json.Unmarshal(data, &sr); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(sr.Payload)
	sr.Payload = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte(`"appliance":"a"`), []byte(`"appliance":"b"`), 1))
	edited, _ := json.Marshal(sr)
	write(edited)
	if _, _, _, err := ReadReceipt(p, nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("edited receipt = %v", err)
	}
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }

// TestEd25519TrustedKey: an Ed25519 public key (cosign's other key type)
// can be trusted; its signatures verify, others' do not.
func TestEd25519TrustedKey(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	k, err := ParsePublicKey("ed", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"schemaVersion":1}`)
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, data))
	if _, err := Verify(data, []byte(sig), []TrustedKey{k}); err != nil {
		t.Fatalf("Ed25519 signature: %v", err)
	}
	if _, err := Verify([]byte(`{"schemaVersion":2}`), []byte(sig), []TrustedKey{k}); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("changed data = %v", err)
	}
}
