package testkit_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-dev/appliance/internal/testkit"
)

const (
	subject = "sha256:307717c59eb859dfcf7424483b2d62a2499c9ef73620f1006b2543084b3eaca7"
	other   = "sha256:67a706359a8cc3b7299b6ecb308bb39c1cd619b8648d161ad3ee1fedaa683fe6"
)

func newKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key, pemOf(t, &key.PublicKey)
}

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// signature is a signature image as cosign makes it: one simple-signing
// payload layer naming digest, its signature by key in the layer's
// annotation, after damage has changed the raw signature.
func signature(t *testing.T, key *ecdsa.PrivateKey, digest string, damage func([]byte) string) v1.Image {
	t.Helper()
	payload := fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"enclave/app1"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, digest)
	sum := sha256.Sum256([]byte(payload))
	raw, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer:       static.NewLayer([]byte(payload), "application/vnd.dev.cosign.simplesigning.v1+json"),
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": damage(raw)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

func intact(raw []byte) string { return base64.StdEncoding.EncodeToString(raw) }

// TestVerifyCosign: a good signature verifies; a signature of another
// digest, by another key, or with a damaged annotation is refused, and
// the error says which.
func TestVerifyCosign(t *testing.T) {
	t.Parallel()
	key, pub := newKey(t)
	_, otherPub := newKey(t)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	flipped := func(raw []byte) string {
		raw[len(raw)-1] ^= 0x01
		return intact(raw)
	}
	cases := []struct {
		name    string
		sig     v1.Image
		pub     []byte
		subject string
		want    string // in the error; "" means it verifies
	}{
		{"good", signature(t, key, subject, intact), pub, subject, ""},
		{"wrong subject", signature(t, key, other, intact), pub, subject, "the payload signs"},
		{"another key", signature(t, key, subject, intact), otherPub, subject, "does not verify"},
		{"damaged signature", signature(t, key, subject, flipped), pub, subject, "does not verify"},
		{"signature not base64", signature(t, key, subject, func([]byte) string { return "MEUCIQ-test" }), pub, subject, "decode the dev.cosignproject.cosign/signature annotation"},
		{"no payload layer", empty.Image, pub, subject, "no payload layer"},
		{"not an ECDSA key", signature(t, key, subject, intact), pemOf(t, edPub), subject, "want an ECDSA key"},
		{"not PEM", signature(t, key, subject, intact), []byte("cosign.pub"), subject, "not PEM"},
	}
	for _, c := range cases {
		err := testkit.VerifyCosign(c.sig, c.pub, c.subject)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
}
