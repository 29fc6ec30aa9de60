package auth

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// ErrTooManyLogins marks a login refused because its address failed too
// often; errors.As finds the *LoginLockout that says until when.
var ErrTooManyLogins = errors.New("too many failed logins")

// LoginLockout is the refusal of a login from an address that failed too
// often: credentials are not even checked until RetryAfter has passed.
type LoginLockout struct {
	Addr       string
	Failures   int
	Window     time.Duration
	RetryAfter time.Duration
}

func (e *LoginLockout) Error() string {
	return fmt.Sprintf("%s from %s: %d in the last %s; try again in %d s",
		ErrTooManyLogins, e.Addr, e.Failures, e.Window, e.RetrySeconds())
}

// Unwrap makes errors.Is(err, ErrTooManyLogins) hold.
func (e *LoginLockout) Unwrap() error { return ErrTooManyLogins }

// RetrySeconds is RetryAfter rounded up to whole seconds, as Retry-After
// wants it.
func (e *LoginLockout) RetrySeconds() int {
	return int(math.Ceil(e.RetryAfter.Seconds()))
}

// LoginLimiter bounds failed logins per client address: once an address
// has failed Max times within Window, its logins are refused until the
// oldest of those failures is older than Window. Only logins count, never
// anonymous requests, so a locked-out address still pulls public content.
// A successful login does not erase failures: an attacker who knows one
// account cannot reset the count with it.
type LoginLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu       sync.Mutex
	failures map[string][]time.Time // per address, oldest first, at most max
}

// maxTracked bounds the addresses remembered; beyond it the oldest
// activity is forgotten first, so memory stays bounded under a flood of
// addresses.
const maxTracked = 65536

// NewLoginLimiter allows failures failed logins per address within window.
func NewLoginLimiter(failures int, window time.Duration) (*LoginLimiter, error) {
	if failures < 1 || window <= 0 {
		return nil, fmt.Errorf("login limiter: want at least 1 failure within a positive window, got %d within %s", failures, window)
	}
	return &LoginLimiter{max: failures, window: window, now: time.Now, failures: map[string][]time.Time{}}, nil
}

// Check returns a *LoginLockout when addr may not log in now, else nil.
func (l *LoginLimiter) Check(addr string) error {
	if l == nil {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	fs := l.pruneLocked(addr, now)
	if len(fs) < l.max {
		return nil
	}
	return &LoginLockout{Addr: addr, Failures: len(fs), Window: l.window, RetryAfter: fs[0].Add(l.window).Sub(now)}
}

// Failed records a failed login from addr.
func (l *LoginLimiter) Failed(addr string) {
	if l == nil {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	fs := l.pruneLocked(addr, now)
	if len(fs) == 0 && len(l.failures) >= maxTracked {
		l.forgetOldestLocked()
	}
	fs = append(fs, now)
	if len(fs) > l.max {
		fs = fs[len(fs)-l.max:]
	}
	l.failures[addr] = fs
}

// pruneLocked drops addr's failures older than the window.
func (l *LoginLimiter) pruneLocked(addr string, now time.Time) []time.Time {
	fs := l.failures[addr]
	i := 0
	for i < len(fs) && now.Sub(fs[i]) >= l.window {
		i++
	}
	if i == len(fs) {
		delete(l.failures, addr)
		return nil
	}
	fs = fs[i:]
	l.failures[addr] = fs
	return fs
}

// forgetOldestLocked drops the address whose last failure is oldest.
func (l *LoginLimiter) forgetOldestLocked() {
	var (
		oldest string
		at     time.Time
	)
	for a, fs := range l.failures {
		if last := fs[len(fs)-1]; oldest == "" || last.Before(at) {
			oldest, at = a, last
		}
	}
	delete(l.failures, oldest)
}
