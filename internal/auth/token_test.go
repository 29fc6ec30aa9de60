package auth

// These tests live in package auth (not auth_test) so that they can move
// the Tokens clock through its unexported now field.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/appliance-dev/appliance/internal/pki"
)

func openTokens(t *testing.T, path string, ttl time.Duration) *Tokens {
	t.Helper()
	tk, err := OpenTokens(path, ttl)
	if err != nil {
		t.Fatalf("OpenTokens(%s): %v", path, err)
	}
	return tk
}

// fixedClock makes tk's clock return at.
func fixedClock(tk *Tokens, at time.Time) { tk.now = func() time.Time { return at } }

var sampleAccess = []ResourceActions{
	{Type: "repository", Name: "nvidia/gpu-operator", Actions: []string{"pull", "push"}},
	{Type: "registry", Name: "catalog", Actions: []string{"*"}},
}

// TestTokensRoundTrip proves an issued token verifies and carries the
// subject, the access claim, issuer, audience, lifetime and a unique ID.
func TestTokensRoundTrip(t *testing.T) {
	t.Parallel()
	tk := openTokens(t, filepath.Join(t.TempDir(), TokenKeyFile), 10*time.Minute)
	if tk.TTL() != 10*time.Minute {
		t.Errorf("TTL = %s, want 10m", tk.TTL())
	}
	tok, issued, err := tk.Issue("alice", sampleAccess)
	if err != nil {
		t.Fatal(err)
	}
	if issued.IsZero() || issued.Nanosecond() != 0 || time.Since(issued) > time.Minute {
		t.Errorf("issued = %v, want now truncated to the second", issued)
	}
	c, err := tk.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.Subject != "alice" || c.Issuer != Service {
		t.Errorf("sub=%q iss=%q", c.Subject, c.Issuer)
	}
	if !reflect.DeepEqual([]string(c.Audience), []string{Service}) {
		t.Errorf("aud = %q, want [%s]", c.Audience, Service)
	}
	if !reflect.DeepEqual(c.Access, sampleAccess) {
		t.Errorf("access = %+v, want %+v", c.Access, sampleAccess)
	}
	if got := c.Expiry.Time(); !got.Equal(issued.Add(10 * time.Minute)) {
		t.Errorf("exp = %v, want issued+10m = %v", got, issued.Add(10*time.Minute))
	}
	if got := c.IssuedAt.Time(); !got.Equal(issued) {
		t.Errorf("iat = %v, want %v", got, issued)
	}
	if len(c.ID) != 32 {
		t.Errorf("jti = %q, want 32 hex digits", c.ID)
	}
	tok2, _, err := tk.Issue("alice", sampleAccess)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := tk.Verify(tok2)
	if err != nil {
		t.Fatal(err)
	}
	if c2.ID == c.ID || tok2 == tok {
		t.Error("two tokens share an ID")
	}
}

// TestTokensEmptyAccess proves a token without access serialises the claim
// as an empty list (registries reject a null access claim) and grants nothing.
func TestTokensEmptyAccess(t *testing.T) {
	t.Parallel()
	tk := openTokens(t, filepath.Join(t.TempDir(), TokenKeyFile), time.Minute)
	tok, _, err := tk.Issue("", nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["access"]) != "[]" {
		t.Errorf("access claim = %s, want []", raw["access"])
	}
	c, err := tk.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Access) != 0 || c.Subject != "" {
		t.Errorf("claims = %+v", c)
	}
}

// flip replaces the character at i with a different base64url character,
// changing all six bits it encodes.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'z'
	}
	return s[:i] + string(c) + s[i+1:]
}

// TestTokensTampered proves any modification of a token, or a token that is
// not a compact ES256 JWS, fails with ErrInvalidToken.
func TestTokensTampered(t *testing.T) {
	t.Parallel()
	tk := openTokens(t, filepath.Join(t.TempDir(), TokenKeyFile), 10*time.Minute)
	tok, _, err := tk.Issue("alice", sampleAccess)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	header, payload, sig := parts[0], parts[1], parts[2]

	// A payload granting more, re-encoded but with the original signature.
	var claims map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	claims["access"] = []any{map[string]any{"type": "repository", "name": "nvidia/gpu-operator", "actions": []string{"*"}}}
	forged, _ := json.Marshal(claims)

	// A token signed with HMAC, which Verify must not accept.
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: bytes.Repeat([]byte{7}, 32)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hsTok, err := jwt.Signed(hs).Claims(jwt.Claims{Issuer: Service, Subject: "alice", Audience: jwt.Audience{Service},
		Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}

	tests := map[string]string{
		"payload char flipped":   header + "." + flip(payload, len(payload)/2) + "." + sig,
		"payload first char":     header + "." + flip(payload, 0) + "." + sig,
		"signature char flipped": header + "." + payload + "." + flip(sig, len(sig)/2),
		"signature first char":   header + "." + payload + "." + flip(sig, 0),
		"header char flipped":    flip(header, len(header)/2) + "." + payload + "." + sig,
		"forged access":          header + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + sig,
		"signature dropped":      header + "." + payload + ".",
		"signature truncated":    header + "." + payload + "." + sig[:len(sig)-4],
		"two parts":              header + "." + payload,
		"extra part":             tok + ".AAAA",
		"empty":                  "",
		"garbage":                "not-a-token",
		"HS256":                  hsTok,
	}
	for name, bad := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if bad == tok {
				t.Fatal("test token equals the original")
			}
			c, err := tk.Verify(bad)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify = %+v, %v; want ErrInvalidToken", c, err)
			}
		})
	}
	if _, err := tk.Verify(tok); err != nil {
		t.Errorf("the untouched token no longer verifies: %v", err)
	}
}

// TestTokensOtherKey proves a token signed by another appliance's key (a
// second OpenTokens in another directory) is refused.
func TestTokensOtherKey(t *testing.T) {
	t.Parallel()
	a := openTokens(t, filepath.Join(t.TempDir(), TokenKeyFile), 10*time.Minute)
	b := openTokens(t, filepath.Join(t.TempDir(), TokenKeyFile), 10*time.Minute)
	tok, _, err := b.Issue("alice", sampleAccess)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify of a foreign token = %v, want ErrInvalidToken", err)
	}
	if _, err := b.Verify(tok); err != nil {
		t.Errorf("issuer cannot verify its own token: %v", err)
	}
}

// TestTokensLifetime proves a token is valid from its issue until its
// expiry, and refused after it expires or before it was issued.
func TestTokensLifetime(t *testing.T) {
	t.Parallel()
	const ttl = 5 * time.Minute
	tk := openTokens(t, filepath.Join(t.TempDir(), TokenKeyFile), ttl)
	issueAt := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	fixedClock(tk, issueAt)
	tok, issued, err := tk.Issue("alice", sampleAccess)
	if err != nil {
		t.Fatal(err)
	}
	if !issued.Equal(issueAt) {
		t.Fatalf("issued = %v, want the clock's %v", issued, issueAt)
	}
	tests := []struct {
		name  string
		at    time.Time
		valid bool
	}{
		{"at issue", issueAt, true},
		{"just before expiry", issueAt.Add(ttl - time.Second), true},
		{"one second after expiry", issueAt.Add(ttl + time.Second), false},
		{"a day later", issueAt.Add(24 * time.Hour), false},
		{"before issue", issueAt.Add(-2 * time.Minute), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := &Tokens{key: tk.key, signer: tk.signer, ttl: tk.ttl}
			fixedClock(v, tc.at)
			_, err := v.Verify(tok)
			if tc.valid && err != nil {
				t.Errorf("Verify at %v: %v", tc.at, err)
			}
			if !tc.valid && !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify at %v = %v, want ErrInvalidToken", tc.at, err)
			}
		})
	}
}

// TestTokensWrongClaims proves a token signed with our own key is still
// refused when its issuer or audience is not the appliance's.
func TestTokensWrongClaims(t *testing.T) {
	t.Parallel()
	tk := openTokens(t, filepath.Join(t.TempDir(), TokenKeyFile), 10*time.Minute)
	now := time.Now()
	good := jwt.Claims{
		Issuer:   Service,
		Subject:  "alice",
		Audience: jwt.Audience{Service},
		Expiry:   jwt.NewNumericDate(now.Add(time.Hour)),
	}
	tests := []struct {
		name   string
		mutate func(*jwt.Claims)
		valid  bool
	}{
		{"control", func(*jwt.Claims) {}, true},
		{"other issuer", func(c *jwt.Claims) { c.Issuer = "someone-else" }, false},
		{"no issuer", func(c *jwt.Claims) { c.Issuer = "" }, false},
		{"other audience", func(c *jwt.Claims) { c.Audience = jwt.Audience{"docker-hub"} }, false},
		{"no audience", func(c *jwt.Claims) { c.Audience = nil }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := good
			tc.mutate(&c)
			tok, err := jwt.Signed(tk.signer).Claims(TokenClaims{Claims: c, Access: sampleAccess}).Serialize()
			if err != nil {
				t.Fatal(err)
			}
			_, err = tk.Verify(tok)
			if tc.valid && err != nil {
				t.Errorf("Verify: %v", err)
			}
			if !tc.valid && !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify = %v, want ErrInvalidToken", err)
			}
		})
	}
}

// TestTokensKeyPersistence proves the signing key is written once (0600),
// reused by a later OpenTokens, and that tokens survive the reopen.
func TestTokensKeyPersistence(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), TokenKeyFile)
	a := openTokens(t, path, 10*time.Minute)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %o, want 600", path, st.Mode().Perm())
	}
	keyBytes, _ := os.ReadFile(path)
	tok, _, err := a.Issue("alice", sampleAccess)
	if err != nil {
		t.Fatal(err)
	}

	b := openTokens(t, path, 10*time.Minute)
	if after, _ := os.ReadFile(path); !bytes.Equal(after, keyBytes) {
		t.Error("reopening rewrote the key file")
	}
	c, err := b.Verify(tok)
	if err != nil {
		t.Fatalf("reopened Verify: %v", err)
	}
	if !reflect.DeepEqual(c.Access, sampleAccess) {
		t.Errorf("reopened access = %+v", c.Access)
	}
	tok2, _, err := b.Issue("bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(tok2); err != nil {
		t.Errorf("token of the reopened instance does not verify on the first: %v", err)
	}
}

// TestOpenTokensBadKey proves a damaged key file, or a key that is not ECDSA
// P-256, is an error (ErrCorrupt) that leaves the file untouched.
func TestOpenTokensBadKey(t *testing.T) {
	t.Parallel()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384Dir := t.TempDir()
	if err := pki.WriteKey(filepath.Join(p384Dir, "k"), p384); err != nil {
		t.Fatal(err)
	}
	p384PEM, err := os.ReadFile(filepath.Join(p384Dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"garbage":     []byte("\x00\x01 definitely not a key"),
		"empty":       nil,
		"bad DER":     []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		"wrong block": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		"P-384 key":   p384PEM,
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), TokenKeyFile)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			tk, err := OpenTokens(path, time.Minute)
			if err == nil {
				t.Fatalf("OpenTokens accepted a bad key (%v)", tk.key.Curve.Params().Name)
			}
			if !errors.Is(err, pki.ErrCorrupt) {
				t.Errorf("errors.Is(err, pki.ErrCorrupt) = false for %v", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, content) {
				t.Error("the bad key file was overwritten")
			}
		})
	}
}

// TestVerifiedTokenCacheStillExpires: a token served from the cache of
// verified tokens is refused once it expires, and a tampered token is
// never taken from the cache.
func TestVerifiedTokenCacheStillExpires(t *testing.T) {
	t.Parallel()
	tk, err := OpenTokens(filepath.Join(t.TempDir(), TokenKeyFile), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now()
	tk.now = func() time.Time { return base }
	tok, _, err := tk.Issue("alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second time from the cache
		if _, err := tk.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	// One character of the signature changed, well inside it (the last one
	// carries padding bits, and "AA" could be what was there).
	i := len(tok) - 10
	swap := byte('A')
	if tok[i] == 'A' {
		swap = 'B'
	}
	if _, err := tk.Verify(tok[:i] + string(swap) + tok[i+1:]); err == nil {
		t.Fatal("a tampered token verified")
	}
	tk.now = func() time.Time { return base.Add(2 * time.Minute) }
	if _, err := tk.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired cached token = %v, want ErrInvalidToken", err)
	}
}

// TestTokensRekey proves a replica's Tokens, rekeyed with a shared key
// and trusting a writer's public key, verifies tokens of both and signs
// with the shared key only, and that a rekey drops tokens verified before.
func TestTokensRekey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writer := openTokens(t, filepath.Join(dir, "writer.key"), time.Hour)
	shared := openTokens(t, filepath.Join(dir, "shared.key"), time.Hour)
	replica := openTokens(t, filepath.Join(dir, "replica.key"), time.Hour)
	own, _, err := replica.Issue("alice", sampleAccess)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replica.Verify(own); err != nil {
		t.Fatal(err)
	}
	if err := replica.Rekey(shared.Key(), &writer.Key().PublicKey); err != nil {
		t.Fatal(err)
	}
	if _, err := replica.Verify(own); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("a token of the old key after Rekey: %v, want ErrInvalidToken", err)
	}
	fromWriter, _, _ := writer.Issue("alice", sampleAccess)
	if _, err := replica.Verify(fromWriter); err != nil {
		t.Errorf("the writer's token on the replica: %v", err)
	}
	fromReplica, _, _ := replica.Issue("bob", nil)
	if _, err := shared.Verify(fromReplica); err != nil {
		t.Errorf("the replica's token under the shared key: %v", err)
	}
	if _, err := writer.Verify(fromReplica); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("the replica's token on the writer: %v, want ErrInvalidToken (the writer trusts only its own)", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err := replica.Rekey(other); err == nil {
		t.Error("Rekey(P-384) = nil, want an error")
	}
}
