package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/appliance-dev/appliance/internal/pki"
)

// TokenKeyFile is the token signing key's file name in the data directory.
const TokenKeyFile = "token.key"

// Service is the name of the registry service in tokens and challenges.
const Service = "appliance"

// ErrInvalidToken marks a bearer token that is malformed, expired, or not ours.
var ErrInvalidToken = errors.New("invalid or expired token")

// ResourceActions is one entry of a token's access claim, as in the Docker
// token protocol: {"type":"repository","name":"nvidia/gpu-operator","actions":["pull"]}.
type ResourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// TokenClaims are the claims of a registry bearer token.
type TokenClaims struct {
	jwt.Claims
	Access []ResourceActions `json:"access"`
}

// Tokens issues and verifies registry bearer tokens (ES256 JWTs).
type Tokens struct {
	ttl time.Duration
	now func() time.Time

	// mu guards the keys (a read-only replica's change with the state
	// its writer publishes) and the cache.
	mu     sync.Mutex
	key    *ecdsa.PrivateKey
	signer jose.Signer
	// trusted are further public keys whose tokens verify here (on a
	// replica: its writer's).
	trusted []*ecdsa.PublicKey
	// verified caches tokens whose signature checked out, until they
	// expire: clients send the same token with every request, and an ES256
	// verification costs ~80 µs, most of a manifest GET.
	verified map[string]*TokenClaims
}

// maxVerified bounds the cache of verified tokens.
const maxVerified = 10000

// OpenTokens loads the signing key at path, creating one if it is missing.
func OpenTokens(path string, ttl time.Duration) (*Tokens, error) {
	s, err := pki.LoadSigner(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		k, gerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if gerr != nil {
			return nil, fmt.Errorf("create token key: %w", gerr)
		}
		if werr := pki.WriteKey(path, k); werr != nil {
			return nil, fmt.Errorf("create token key: %w", werr)
		}
		s = k
	case err != nil:
		return nil, fmt.Errorf("open token key: %w", err)
	}
	key, ok := s.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("open token key %s: not an ECDSA P-256 key: %w", path, pki.ErrCorrupt)
	}
	t := &Tokens{ttl: ttl, now: time.Now, verified: map[string]*TokenClaims{}}
	if err := t.Rekey(key); err != nil {
		return nil, fmt.Errorf("open token key %s: %w", path, err)
	}
	return t, nil
}

// Rekey makes key the signing key and trusts tokens signed by it or by
// any of trusted; tokens verified before under other keys stop verifying
// at once. A read-only replica takes its keys so from the state its
// writer publishes.
func (t *Tokens) Rekey(key *ecdsa.PrivateKey, trusted ...*ecdsa.PublicKey) error {
	if key == nil || key.Curve != elliptic.P256() {
		return errors.New("token key: not an ECDSA P-256 key")
	}
	for _, k := range trusted {
		if k == nil || k.Curve != elliptic.P256() {
			return errors.New("trusted token key: not an ECDSA P-256 key")
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.key, t.signer, t.trusted = key, signer, trusted
	t.verified = map[string]*TokenClaims{}
	return nil
}

// Key is the signing key (which a writer publishes to its replicas for
// their own tokens, and whose public half verifies its tokens there).
func (t *Tokens) Key() *ecdsa.PrivateKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.key
}

// TTL is how long issued tokens are valid.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Issue signs a token for subject granting access.
func (t *Tokens) Issue(subject string, access []ResourceActions) (token string, issued time.Time, err error) {
	now := t.now().UTC().Truncate(time.Second)
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("issue token: %w", err)
	}
	if access == nil {
		access = []ResourceActions{}
	}
	c := TokenClaims{
		Claims: jwt.Claims{
			Issuer:    Service,
			Subject:   subject,
			Audience:  jwt.Audience{Service},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			Expiry:    jwt.NewNumericDate(now.Add(t.ttl)),
			ID:        hex.EncodeToString(id[:]),
		},
		Access: access,
	}
	t.mu.Lock()
	signer := t.signer
	t.mu.Unlock()
	s, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue token: %w", err)
	}
	return s, now, nil
}

// Verify checks a token's signature, audience and lifetime. The claims
// returned are shared: callers must not change them.
func (t *Tokens) Verify(token string) (*TokenClaims, error) {
	now := t.now()
	t.mu.Lock()
	c, ok := t.verified[token]
	if ok && (c.Expiry == nil || !now.Before(c.Expiry.Time())) {
		delete(t.verified, token)
		ok = false
	}
	t.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := t.verify(token, now)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if t.verified == nil || len(t.verified) >= maxVerified {
		t.verified = map[string]*TokenClaims{}
	}
	t.verified[token] = c
	t.mu.Unlock()
	return c, nil
}

func (t *Tokens) verify(token string, now time.Time) (*TokenClaims, error) {
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	t.mu.Lock()
	keys := append([]*ecdsa.PublicKey{&t.key.PublicKey}, t.trusted...)
	t.mu.Unlock()
	var c TokenClaims
	for i, k := range keys {
		c = TokenClaims{}
		if err = parsed.Claims(k, &c); err == nil {
			break
		}
		if i == len(keys)-1 {
			return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
		}
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: Service, AnyAudience: jwt.Audience{Service}, Time: now}, 0); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return &c, nil
}
