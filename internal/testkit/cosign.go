package testkit

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	// cosignSignatureAnnotation carries the base64 signature of the
	// payload layer it annotates.
	cosignSignatureAnnotation = "dev.cosignproject.cosign/signature"
	// cosignPayloadType is critical.type of a cosign simple-signing payload.
	cosignPayloadType = "cosign container image signature"
)

// VerifyCosign checks sig, a cosign signature image (the .sig tag), the
// way `cosign verify --key KEY --insecure-ignore-tlog` does: its first
// layer is a simple-signing payload whose
// critical.image.docker-manifest-digest is subject, and the layer's
// dev.cosignproject.cosign/signature annotation, a base64 ASN.1 ECDSA
// signature of the payload's SHA-256, verifies with pubPEM, a PEM public
// key. It returns an error naming what is wrong.
func VerifyCosign(sig v1.Image, pubPEM []byte, subject string) error {
	if err := verifyCosign(sig, pubPEM, subject); err != nil {
		return fmt.Errorf("verify the cosign signature of %s: %w", subject, err)
	}
	return nil
}

func verifyCosign(sig v1.Image, pubPEM []byte, subject string) error {
	pub, err := ecdsaPublicKey(pubPEM)
	if err != nil {
		return err
	}
	m, err := sig.Manifest()
	if err != nil {
		return fmt.Errorf("read the signature manifest: %w", err)
	}
	layers, err := sig.Layers()
	if err != nil {
		return fmt.Errorf("read the signature layers: %w", err)
	}
	if len(layers) == 0 || len(m.Layers) == 0 {
		return errors.New("the signature image has no payload layer")
	}
	payload, err := readLayer(layers[0])
	if err != nil {
		return fmt.Errorf("read the payload layer: %w", err)
	}
	b64, ok := m.Layers[0].Annotations[cosignSignatureAnnotation]
	if !ok {
		return fmt.Errorf("the payload layer has no %s annotation", cosignSignatureAnnotation)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("decode the %s annotation: %w", cosignSignatureAnnotation, err)
	}
	sum := sha256.Sum256(payload)
	if !ecdsa.VerifyASN1(pub, sum[:], raw) {
		return errors.New("the signature does not verify with the public key")
	}
	var simple struct {
		Critical struct {
			Image struct {
				Digest string `json:"docker-manifest-digest"`
			} `json:"image"`
			Type string `json:"type"`
		} `json:"critical"`
	}
	if err := json.Unmarshal(payload, &simple); err != nil {
		return fmt.Errorf("parse the simple-signing payload: %w", err)
	}
	if simple.Critical.Type != cosignPayloadType {
		return fmt.Errorf("the payload's critical.type is %q, want %q", simple.Critical.Type, cosignPayloadType)
	}
	if simple.Critical.Image.Digest != subject {
		return fmt.Errorf("the payload signs %q, not %s", simple.Critical.Image.Digest, subject)
	}
	return nil
}

// ecdsaPublicKey parses a PEM (PKIX) public key, as cosign.pub holds it.
func ecdsaPublicKey(pubPEM []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(pubPEM)
	if block == nil {
		return nil, errors.New("the public key is not PEM")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse the public key: %w", err)
	}
	pub, ok := key.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the public key is a %T, want an ECDSA key", key)
	}
	return pub, nil
}

// readLayer returns a layer's blob as stored: the bytes cosign signs.
func readLayer(l v1.Layer) ([]byte, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
