// Package bundle is the transfer bundle: what the connected side builds and
// the enclave imports. A bundle is an OCI image layout (content-addressed
// blobs, images named in index.json) plus inventory.json, which lists every
// artifact with its source, digest, size, version, destination and refresh
// trigger, and inventory.json.sig, an ECDSA P-256 signature over it that
// `cosign verify-blob --key` can check. For media, a bundle is written as
// numbered parts with a signed list of their sha256 sums, so one damaged
// part can be named and copied again alone. See docs/bundle-format.md.
package bundle

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/pki"
)

// Errors about keys and signatures.
var (
	ErrBadKey       = errors.New("not a usable key")
	ErrBadSignature = errors.New("signature does not verify")
	ErrUntrusted    = errors.New("signed by a key the appliance does not trust")
	ErrUnsigned     = errors.New("the bundle is not signed")
)

// GenerateKey writes a new ECDSA P-256 key pair: the private key as PKCS#8
// PEM (mode 0600), the public key as PKIX PEM, the format cosign reads.
func GenerateKey(privatePath, publicPath string) error {
	for _, p := range []string{privatePath, publicPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("generate key: %s exists; refusing to overwrite it", p)
		}
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	if err := pki.WriteKey(privatePath, k); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(publicPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	return nil
}

// Signer signs inventories and parts lists.
type Signer struct{ key *ecdsa.PrivateKey }

// LoadSigner reads a private key written by GenerateKey (PKCS#8 or SEC 1
// EC PEM; an encrypted cosign key must be exported first).
func LoadSigner(path string) (*Signer, error) {
	k, err := pki.LoadSigner(path)
	if err != nil {
		if errors.Is(err, pki.ErrCorrupt) {
			return nil, fmt.Errorf("load signing key: %w: %w", ErrBadKey, err)
		}
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("load signing key %s: %w: want ECDSA P-256", path, ErrBadKey)
	}
	return &Signer{key: ek}, nil
}

// Sign returns the base64 ASN.1 ECDSA signature of sha256(data): the
// format of `cosign sign-blob --key` and `cosign verify-blob --signature`.
func (s *Signer) Sign(data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, sum[:])
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return []byte(base64.StdEncoding.EncodeToString(sig) + "\n"), nil
}

// PublicKey returns the signer's public key as PEM.
func (s *Signer) PublicKey() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// TrustedKey is a public key the appliance accepts bundles from.
type TrustedKey struct {
	Name string // the file it came from, for messages
	key  crypto.PublicKey
}

// Fingerprint is the sha256 of the key's DER form, hex.
func (k TrustedKey) Fingerprint() string {
	der, _ := x509.MarshalPKIXPublicKey(k.key)
	return fmt.Sprintf("%x", sha256.Sum256(der))
}

// ParsePublicKey reads a PEM public key (ECDSA P-256 or Ed25519).
func ParsePublicKey(name string, data []byte) (TrustedKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return TrustedKey{}, fmt.Errorf("public key %s: %w: no PUBLIC KEY PEM block", name, ErrBadKey)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("public key %s: %w: %w", name, ErrBadKey, err)
	}
	switch pk := k.(type) {
	case *ecdsa.PublicKey:
		if pk.Curve != elliptic.P256() {
			return TrustedKey{}, fmt.Errorf("public key %s: %w: want P-256", name, ErrBadKey)
		}
	case ed25519.PublicKey:
	default:
		return TrustedKey{}, fmt.Errorf("public key %s: %w: unsupported type %T", name, ErrBadKey, k)
	}
	return TrustedKey{Name: name, key: k}, nil
}

// LoadTrustedKeys reads public key files.
func LoadTrustedKeys(paths []string) ([]TrustedKey, error) {
	var out []TrustedKey
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("trusted key: %w", err)
		}
		k, err := ParsePublicKey(p, data)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// Verify checks a base64 signature over data against the trusted keys and
// returns the key that signed it. A signature that matches none is
// ErrUntrusted when it is well formed, ErrBadSignature otherwise.
func Verify(data, sig []byte, trusted []TrustedKey) (TrustedKey, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	if err != nil || len(raw) == 0 {
		return TrustedKey{}, fmt.Errorf("%w: not a base64 signature", ErrBadSignature)
	}
	sum := sha256.Sum256(data)
	for _, k := range trusted {
		switch pk := k.key.(type) {
		case *ecdsa.PublicKey:
			if ecdsa.VerifyASN1(pk, sum[:], raw) {
				return k, nil
			}
		case ed25519.PublicKey:
			// Ed25519 signs the message itself (cosign's PureEd25519).
			if ed25519.Verify(pk, data, raw) {
				return k, nil
			}
		}
	}
	if len(trusted) == 0 {
		return TrustedKey{}, fmt.Errorf("%w: no trusted keys are configured (trust.keys, --trusted-key)", ErrUntrusted)
	}
	return TrustedKey{}, fmt.Errorf("%w: it matches none of the %d trusted keys (or the signed file was changed)", ErrUntrusted, len(trusted))
}

// VerifySigned tells a changed file from an untrusted signer. signerPEM is
// the public key the bundle says it was signed with (informational until
// trusted): if the signature does not verify with it, the file was changed
// (ErrBadSignature); if it does but that key is not trusted, ErrUntrusted
// names its fingerprint.
func VerifySigned(data, sig, signerPEM []byte, trusted []TrustedKey) (TrustedKey, error) {
	if len(sig) == 0 {
		return TrustedKey{}, ErrUnsigned
	}
	if k, err := Verify(data, sig, trusted); err == nil {
		return k, nil
	}
	signer, err := ParsePublicKey("the bundle's signer key", signerPEM)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("%w: it matches no trusted key, and the bundle names no usable signer key", ErrBadSignature)
	}
	if _, err := Verify(data, sig, []TrustedKey{signer}); err != nil {
		return TrustedKey{}, fmt.Errorf("%w: the signed file was changed after signing", ErrBadSignature)
	}
	return TrustedKey{}, fmt.Errorf("%w: signer key sha256:%s is not among the %d trusted keys", ErrUntrusted, signer.Fingerprint(), len(trusted))
}
