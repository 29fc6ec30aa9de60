package bootstrap_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/registry"
)

// roSwitch records what the lifecycle asks of the registry's read-only
// mode (the real one is exercised by newNode-based tests and test/e2e).
type roSwitch struct {
	mu   sync.Mutex
	mode registry.Mode
	fail error
}

func (s *roSwitch) SetReadOnly(on bool, reason string) (registry.Mode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return registry.Mode{}, s.fail
	}
	s.mode = registry.Mode{ReadOnly: on, Reason: reason}
	return s.mode, nil
}

func (s *roSwitch) Mode() registry.Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

func TestLifecycleModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ro := &roSwitch{}
	l, err := bootstrap.OpenLifecycle(dir, ro, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.Mode() != bootstrap.ModeBootstrap || ro.Mode().ReadOnly {
		t.Fatalf("a new appliance is %s, read-only %t", l.Mode(), ro.Mode().ReadOnly)
	}
	if _, err := l.Activate("admin", "why not"); !errors.Is(err, bootstrap.ErrBadTransition) {
		t.Fatalf("activate in bootstrap mode = %v, want ErrBadTransition", err)
	}
	if _, err := l.Standby(bootstrap.StandbyRequest{By: "admin"}); !errors.Is(err, bootstrap.ErrInvalid) {
		t.Fatalf("standby without any primary = %v, want ErrInvalid", err)
	}
	changed := l.Changed()
	st, err := l.Standby(bootstrap.StandbyRequest{
		Primary:     &bootstrap.Primary{URL: "https://harbor.enclave.test", Projects: []string{"nvidia"}},
		Credentials: bootstrap.PrimaryCredentials{Username: "robot$standby", Password: "s3cret-robot", CAPEM: "PEM"},
		By:          "admin", Reason: "production is live",
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed() was not closed by the switch")
	}
	if st.Mode != bootstrap.ModeStandby || st.Primary.Interval != 5*time.Minute || !st.Primary.HasCA || st.Primary.Username != "robot$standby" {
		t.Fatalf("standby state: %+v %+v", st, st.Primary)
	}
	if m := ro.Mode(); !m.ReadOnly || !strings.Contains(m.Reason, "standby of https://harbor.enclave.test") {
		t.Fatalf("registry mode in standby: %+v", m)
	}
	if err := l.CheckReadOnlySwitch(); !errors.Is(err, bootstrap.ErrStandby) {
		t.Fatalf("manual read-only switch in standby = %v, want ErrStandby", err)
	}
	// The password is kept apart, 0600, and nowhere in the lifecycle file.
	life, _ := os.ReadFile(filepath.Join(dir, bootstrap.LifecycleFile))
	if strings.Contains(string(life), "s3cret-robot") {
		t.Fatal("lifecycle.json holds the primary's password")
	}
	if fi, err := os.Stat(filepath.Join(dir, bootstrap.PrimarySecret)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("primary credentials file: %v %v", fi, err)
	}

	// A restart keeps the standby, and makes the registry read-only again
	// whatever it was.
	ro2 := &roSwitch{}
	l2, err := bootstrap.OpenLifecycle(dir, ro2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Mode() != bootstrap.ModeStandby || !ro2.Mode().ReadOnly {
		t.Fatalf("after a restart: %s, read-only %t", l2.Mode(), ro2.Mode().ReadOnly)
	}
	if _, err := l2.Activate("admin", ""); !errors.Is(err, bootstrap.ErrInvalid) {
		t.Fatalf("activate without a reason = %v, want ErrInvalid", err)
	}
	// A registry that cannot leave read-only mode leaves the standby a standby.
	ro2.fail = errors.New("disk full")
	if _, err := l2.Activate("admin", "harbor down"); err == nil || l2.Mode() != bootstrap.ModeStandby {
		t.Fatalf("activate with a failing registry = %v, mode %s", err, l2.Mode())
	}
	ro2.fail = nil
	st, err = l2.Activate("oncall", "harbor lost its database")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != bootstrap.ModeActive || ro2.Mode().ReadOnly {
		t.Fatalf("after activate: %s, read-only %t", st.Mode, ro2.Mode().ReadOnly)
	}
	// Back to following the same primary, without naming it again.
	st, err = l2.Standby(bootstrap.StandbyRequest{By: "oncall", Reason: "harbor restored"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Primary.URL != "https://harbor.enclave.test" || !ro2.Mode().ReadOnly {
		t.Fatalf("standby again: %+v", st.Primary)
	}
	want := []struct {
		from, to bootstrap.Mode
		by       string
	}{{bootstrap.ModeBootstrap, bootstrap.ModeStandby, "admin"}, {bootstrap.ModeStandby, bootstrap.ModeActive, "oncall"}, {bootstrap.ModeActive, bootstrap.ModeStandby, "oncall"}}
	if len(st.History) != len(want) {
		t.Fatalf("history: %+v", st.History)
	}
	for i, w := range want {
		h := st.History[i]
		if h.From != w.from || h.To != w.to || h.By != w.by || h.Reason == "" || h.At.IsZero() {
			t.Errorf("history[%d] = %+v, want %s → %s by %s with a reason", i, h, w.from, w.to, w.by)
		}
	}
}

func TestLifecycleRefusesCorruptState(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"not JSON", "{", "corrupt"},
		{"unknown mode", `{"mode":"primary","history":[]}`, `unknown mode "primary"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, bootstrap.LifecycleFile), []byte(tc.content), 0o640); err != nil {
				t.Fatal(err)
			}
			_, err := bootstrap.OpenLifecycle(dir, &roSwitch{}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), bootstrap.LifecycleFile) {
				t.Fatalf("open = %v, want an error naming %s and %q", err, bootstrap.LifecycleFile, tc.want)
			}
		})
	}
}
