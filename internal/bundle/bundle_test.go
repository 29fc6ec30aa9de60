package bundle

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSignAndVerify: a signature made with a generated key verifies with
// its public key; a changed file is told apart from an untrusted signer.
func TestSignAndVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	if err := GenerateKey(priv, pub); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(priv); fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", fi.Mode().Perm())
	}
	if err := GenerateKey(priv, pub); err == nil {
		t.Fatal("GenerateKey overwrote an existing key")
	}
	s, err := LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"schemaVersion":1}`)
	sig, err := s.Sign(data)
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := LoadTrustedKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	signerPEM, _ := s.PublicKey()
	if k, err := VerifySigned(data, sig, signerPEM, trusted); err != nil || k.Name != pub {
		t.Fatalf("verify = %v, %v", k, err)
	}
	// Changed after signing.
	if _, err := VerifySigned([]byte(`{"schemaVersion":2}`), sig, signerPEM, trusted); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "changed after signing") {
		t.Fatalf("changed file = %v", err)
	}
	// Signed by someone else.
	other := filepath.Join(dir, "o.key")
	if err := GenerateKey(other, filepath.Join(dir, "o.pub")); err != nil {
		t.Fatal(err)
	}
	os2, _ := LoadSigner(other)
	sig2, _ := os2.Sign(data)
	pem2, _ := os2.PublicKey()
	if _, err := VerifySigned(data, sig2, pem2, trusted); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "sha256:") {
		t.Fatalf("untrusted signer = %v", err)
	}
	if _, err := VerifySigned(data, nil, pem2, trusted); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("no signature = %v", err)
	}
	if _, err := VerifySigned(data, []byte("!!!"), signerPEM, trusted); err == nil {
		t.Fatal("garbage signature verified")
	}
	if _, err := LoadSigner(pub); !errors.Is(err, ErrBadKey) {
		t.Fatalf("public key as signer = %v", err)
	}
}

// TestSplitAndJoin splits a stream into parts, joins it back, and names a
// part with one flipped byte; CheckParts lists every damaged part.
func TestSplitAndJoin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "bundle.tar")
	data := make([]byte, 5<<20+123)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	w := NewSplitWriter(out, 2<<20)
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	dirKey := filepath.Join(dir, "k.key")
	if err := GenerateKey(dirKey, filepath.Join(dir, "k.pub")); err != nil {
		t.Fatal(err)
	}
	signer, _ := LoadSigner(dirKey)
	list, err := w.Close(signer)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Parts) != 3 || list.Parts[0].Name != "bundle.tar.001" || list.Parts[2].Size != 1<<20+123 || list.Size != int64(len(data)) {
		t.Fatalf("parts list = %+v", list)
	}
	got, raw, sig, err := ReadPartsList(out)
	if err != nil || len(got.Parts) != 3 {
		t.Fatal(err)
	}
	pemPub, _ := signer.PublicKey()
	trusted, _ := LoadTrustedKeys([]string{filepath.Join(dir, "k.pub")})
	if _, err := VerifySigned(raw, sig, pemPub, trusted); err != nil {
		t.Fatalf("parts list signature: %v", err)
	}
	j := NewJoinReader(out, got)
	joined, err := io.ReadAll(j)
	if err != nil || !bytes.Equal(joined, data) {
		t.Fatalf("join = %d bytes, %v", len(joined), err)
	}
	// Flip one byte in part 2.
	p2 := filepath.Join(dir, "bundle.tar.002")
	b, _ := os.ReadFile(p2)
	b[1000] ^= 0xff
	if err := os.WriteFile(p2, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(NewJoinReader(out, got))
	if !errors.Is(err, ErrBadPart) || !strings.Contains(err.Error(), "bundle.tar.002") || strings.Contains(err.Error(), "bundle.tar.001") {
		t.Fatalf("join with a damaged part = %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "bundle.tar.003")); err != nil {
		t.Fatal(err)
	}
	bad, err := CheckParts(out, got)
	if !errors.Is(err, ErrBadPart) || len(bad) != 2 || bad[0] != "bundle.tar.002" || !strings.Contains(bad[1], "bundle.tar.003 (missing)") {
		t.Fatalf("CheckParts = %v, %v", bad, err)
	}
}

// TestParseSize reads the units media people use.
func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"4700M": 4700 << 20, "25GB": 25e9, "700MiB": 700 << 20, "2097152": 2 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-5G", "ten", "100K"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// TestParseSpec: the documented example parses; unknown keys and every
// invalid setting are reported, all at once.
func TestParseSpec(t *testing.T) {
	t.Parallel()
	f, err := os.Open(filepath.Join("..", "..", "configs", "bundle-spec.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ParseSpec(f)
	if err != nil {
		t.Fatalf("configs/bundle-spec.yaml: %v", err)
	}
	if len(s.Images) != 2 || len(s.Bundles) != 1 || len(s.Files) != 2 || len(s.Apt) != 1 || s.Images[0].Platforms[0] != "linux/amd64" || s.Files[0].Refresh == "" {
		t.Fatalf("parsed spec = %+v", s)
	}
	if _, err := ParseSpec(strings.NewReader("images:\n  - ref: a\n    platfroms: [linux/amd64]\n")); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "platfroms") {
		t.Fatalf("unknown key = %v", err)
	}
	bad := `
images:
  - platforms: [linux]
files:
  - kind: driver
  - path: a
    url: https://x/a
    kind: iso
  - url: ftp://x/b
    kind: nim-profile
    sha256: xyz
apt:
  - url: nope
`
	_, err = ParseSpec(strings.NewReader(bad))
	for _, want := range []string{"images[0].ref", `"linux" is not os/arch`, "files[0]: give path or url", "not both", "files[2].url", "files[2].sha256", "metadata.image", "apt[0].url", "apt[0].distributions", "apt[0].packages", "apt[0].keyring", "apt[0].repo"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	if _, err := ParseSpec(strings.NewReader("")); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("empty spec = %v", err)
	}
}

// TestInventoryRoundTrip: Marshal sorts blobs so the signed bytes do not
// depend on the order things were fetched in.
func TestInventoryRoundTrip(t *testing.T) {
	t.Parallel()
	a := &Inventory{SchemaVersion: 1, Blobs: []Blob{{"sha256:bb", 2}, {"sha256:aa", 1}}}
	b := &Inventory{SchemaVersion: 1, Blobs: []Blob{{"sha256:aa", 1}, {"sha256:bb", 2}}}
	da, _ := a.Marshal()
	db, _ := b.Marshal()
	if !bytes.Equal(da, db) {
		t.Fatal("inventory bytes depend on blob order")
	}
	inv, err := ParseInventory(da)
	if err != nil || len(inv.Blobs) != 2 {
		t.Fatal(err)
	}
	if _, err := ParseInventory([]byte(`{"schemaVersion":9}`)); err == nil {
		t.Fatal("unknown schema version accepted")
	}
}
