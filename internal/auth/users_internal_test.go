package auth

// In-package test: it drives the user store's unexported clock and looks at
// its verification cache, which no exported API exposes.

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestVerifyCacheTTL proves a successful Verify is cached for verifiedTTL
// only: within it the entry is reused (not refreshed), after it the password
// is checked with bcrypt again and the entry renewed; failures are never cached.
func TestVerifyCacheTTL(t *testing.T) {
	t.Parallel()
	u, err := OpenUsers(filepath.Join(t.TempDir(), UsersFile), WithBcryptCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := t0
	u.now = func() time.Time { return clock }
	if err := u.Add(context.Background(), "alice", "alice-password-1", RoleDeveloper); err != nil {
		t.Fatal(err)
	}
	cachedAt := func() time.Time {
		t.Helper()
		u.mu.RLock()
		defer u.mu.RUnlock()
		if len(u.verified) != 1 {
			t.Fatalf("cache holds %d entries, want 1", len(u.verified))
		}
		for _, at := range u.verified {
			return at
		}
		return time.Time{}
	}

	if _, err := u.Verify("alice", "wrong-password-xx"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if n := len(u.verified); n != 0 {
		t.Fatalf("a failed Verify was cached (%d entries)", n)
	}

	steps := []struct {
		at   time.Duration
		want time.Duration // expected cache timestamp, relative to t0
	}{
		{0, 0},
		{time.Minute, 0},                               // hit: not refreshed
		{verifiedTTL - time.Second, 0},                 // still a hit
		{verifiedTTL, verifiedTTL},                     // expired: checked again
		{verifiedTTL + time.Minute, verifiedTTL},       // hit on the renewed entry
		{3 * verifiedTTL, 3 * verifiedTTL},             // expired again
		{3*verifiedTTL + time.Second, 3 * verifiedTTL}, // hit
	}
	for _, s := range steps {
		clock = t0.Add(s.at)
		if _, err := u.Verify("alice", "alice-password-1"); err != nil {
			t.Fatalf("Verify at +%s: %v", s.at, err)
		}
		if got := cachedAt(); !got.Equal(t0.Add(s.want)) {
			t.Errorf("at +%s the cache entry is from +%s, want +%s", s.at, got.Sub(t0), s.want)
		}
	}
}
