package auth

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestLoginLimiter: max failures within the window lock an address out
// until the oldest of them leaves the window; addresses are counted
// apart; the number of addresses remembered is bounded.
func TestLoginLimiter(t *testing.T) {
	t.Parallel()
	if _, err := NewLoginLimiter(0, time.Minute); err == nil {
		t.Fatal("a limiter of 0 failures was made")
	}
	l, err := NewLoginLimiter(3, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := t0
	l.now = func() time.Time { return clock }
	for i := range 3 {
		if err := l.Check("10.0.0.1"); err != nil {
			t.Fatalf("check before failure %d: %v", i+1, err)
		}
		l.Failed("10.0.0.1")
		clock = clock.Add(10 * time.Second)
	}
	err = l.Check("10.0.0.1")
	var lo *LoginLockout
	if !errors.As(err, &lo) || !errors.Is(err, ErrTooManyLogins) {
		t.Fatalf("check after 3 failures = %v, want a lockout", err)
	}
	// The first failure was at t0; it leaves the window at t0+60s; now is t0+30s.
	if lo.RetryAfter != 30*time.Second || lo.RetrySeconds() != 30 || lo.Failures != 3 {
		t.Fatalf("lockout %+v, want 3 failures and 30 s to wait", lo)
	}
	if want := "too many failed logins from 10.0.0.1: 3 in the last 1m0s; try again in 30 s"; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if err := l.Check("10.0.0.2"); err != nil {
		t.Fatalf("another address is locked out too: %v", err)
	}
	clock = t0.Add(time.Minute)
	if err := l.Check("10.0.0.1"); err != nil {
		t.Fatalf("check once the oldest failure left the window: %v", err)
	}
	l.Failed("10.0.0.1")
	if err := l.Check("10.0.0.1"); err == nil {
		t.Fatal("a failure right after the lockout ended does not lock out again (two are still in the window)")
	}
	clock = clock.Add(2 * time.Minute)
	if err := l.Check("10.0.0.1"); err != nil {
		t.Fatalf("check after the window: %v", err)
	}
	if len(l.failures) != 0 {
		t.Fatalf("%d addresses remembered after every failure aged out", len(l.failures))
	}

	for i := range maxTracked + 10 {
		l.Failed(fmt.Sprintf("addr-%d", i))
		clock = clock.Add(time.Microsecond)
	}
	if len(l.failures) > maxTracked {
		t.Fatalf("%d addresses remembered, want at most %d", len(l.failures), maxTracked)
	}
	if _, ok := l.failures["addr-0"]; ok {
		t.Fatal("the oldest address was kept over the newest")
	}
}
