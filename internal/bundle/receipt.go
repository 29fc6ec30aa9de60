package bundle

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// Receipt is what an appliance holds, exported (`appliance receipt -o
// FILE`) for the connected side to build a delta against (`bundle create
// --since FILE`): every registry blob, every tag, every file and apt
// package.
type Receipt struct {
	SchemaVersion int              `json:"schemaVersion"`
	Appliance     string           `json:"appliance"`
	Created       time.Time        `json:"created"`
	Blobs         []Blob           `json:"blobs"`
	Tags          []ReceiptTag     `json:"tags"`
	Files         []ReceiptFile    `json:"files"`
	Packages      []ReceiptPackage `json:"packages"`
}

// ReceiptTag is one tag of the registry.
type ReceiptTag struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
}

// ReceiptFile is one file of the file store.
type ReceiptFile struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// ReceiptPackage is one package of an apt repository.
type ReceiptPackage struct {
	Repo         string `json:"repo"`
	Distribution string `json:"distribution"`
	Component    string `json:"component"`
	Name         string `json:"name"`
	Version      string `json:"version"`
	Architecture string `json:"architecture"`
	SHA256       string `json:"sha256"`
	Size         int64  `json:"size"`
}

// SignedReceipt is the receipt file: the receipt's exact bytes (base64),
// the appliance's signature over them and its public key.
type SignedReceipt struct {
	Payload   string `json:"payload"`
	Signature string `json:"signature"`
	PublicKey string `json:"publicKey"`
}

// SignReceipt renders and signs a receipt.
func SignReceipt(r *Receipt, signer *Signer) ([]byte, error) {
	r.SchemaVersion = 1
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	sig, err := signer.Sign(payload)
	if err != nil {
		return nil, err
	}
	pub, err := signer.PublicKey()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(SignedReceipt{Payload: base64.StdEncoding.EncodeToString(payload), Signature: string(sig), PublicKey: string(pub)}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	return append(out, '\n'), nil
}

// ReadReceipt reads and verifies a receipt file. The signature must verify
// with the key the receipt carries and, when pinned is given, that key must
// be one of them. It returns the receipt, the signer's fingerprint and the
// sha256 of the file, which a delta records.
func ReadReceipt(path string, pinned []TrustedKey) (*Receipt, string, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", "", fmt.Errorf("read receipt: %w", err)
	}
	return ParseSignedReceipt(path, data, pinned)
}

// ParseSignedReceipt is ReadReceipt of a receipt file's bytes; path names
// it in errors.
func ParseSignedReceipt(path string, data []byte, pinned []TrustedKey) (*Receipt, string, string, error) {
	var sr SignedReceipt
	if err := json.Unmarshal(data, &sr); err != nil || sr.Payload == "" {
		return nil, "", "", fmt.Errorf("read receipt %s: not a signed appliance receipt", path)
	}
	payload, err := base64.StdEncoding.DecodeString(sr.Payload)
	if err != nil {
		return nil, "", "", fmt.Errorf("read receipt %s: payload: %w", path, err)
	}
	key, err := ParsePublicKey("the receipt's key", []byte(sr.PublicKey))
	if err != nil {
		return nil, "", "", fmt.Errorf("read receipt %s: %w", path, err)
	}
	if _, err := Verify(payload, []byte(sr.Signature), []TrustedKey{key}); err != nil {
		return nil, "", "", fmt.Errorf("read receipt %s: %w: the receipt was changed after the appliance signed it", path, ErrBadSignature)
	}
	if len(pinned) > 0 {
		ok := false
		for _, p := range pinned {
			ok = ok || p.Fingerprint() == key.Fingerprint()
		}
		if !ok {
			return nil, "", "", fmt.Errorf("read receipt %s: %w: signed by sha256:%s, not by the given receipt key", path, ErrUntrusted, key.Fingerprint())
		}
	}
	var r Receipt
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, "", "", fmt.Errorf("read receipt %s: %w", path, err)
	}
	if r.SchemaVersion != 1 {
		return nil, "", "", errors.New("read receipt: unknown schemaVersion")
	}
	sum := sha256.Sum256(data)
	return &r, "sha256:" + key.Fingerprint(), "sha256:" + hex.EncodeToString(sum[:]), nil
}
