package replica_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/replica"
)

// objects is an in-memory bucket folder with a switch that makes it go
// away; the real one (registry.Objects on Ceph) is exercised by
// test/e2e TestReplicas.
type objects struct {
	mu   sync.Mutex
	m    map[string][]byte
	away bool
}

var errAway = errors.New("object store unreachable")

func newObjects() *objects { return &objects{m: map[string][]byte{}} }

func (o *objects) Get(_ context.Context, name string) ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.away {
		return nil, errAway
	}
	d, ok := o.m[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	return append([]byte(nil), d...), nil
}

func (o *objects) Put(_ context.Context, name string, data []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.away {
		return errAway
	}
	o.m[name] = append([]byte(nil), data...)
	return nil
}

func (o *objects) Delete(_ context.Context, name string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.away {
		return errAway
	}
	delete(o.m, name)
	return nil
}

func (o *objects) names() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for n := range o.m {
		out = append(out, n)
	}
	return fmt.Sprint(len(out))
}

// side is one appliance's auth state.
type side struct {
	users    *auth.Users
	projects *auth.Projects
	tokens   *auth.Tokens
}

func newSide(t *testing.T) side {
	t.Helper()
	dir := t.TempDir()
	u, err := auth.OpenUsers(filepath.Join(dir, auth.UsersFile), auth.WithBcryptCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.OpenProjects(filepath.Join(dir, auth.ProjectsFile), map[string]bool{"fixed": false})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := auth.OpenTokens(filepath.Join(dir, auth.TokenKeyFile), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return side{u, p, tk}
}

func key(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestPublishFollow proves the round trip: what the writer publishes
// decides pulls and passwords on the replica; a publish happens only on
// a change (a restarted writer too); old versions are removed; a
// replica keeps the last good state when the store is away or a state
// is corrupt, and says why in its Status.
func TestPublishFollow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := newObjects()
	w, r := newSide(t), newSide(t)
	if err := w.users.Add(ctx, "alice", "alice-password-1", auth.RoleGuest, "vendor"); err != nil {
		t.Fatal(err)
	}
	shared := key(t)
	source := func() (replica.State, error) {
		keys, err := replica.Keys(w.tokens.Key(), shared)
		return replica.State{Projects: w.projects.List(), Users: w.users.Export(), TokenKeys: keys, Mode: replica.Mode{Lifecycle: "bootstrap"}}, err
	}
	pub, err := replica.NewPublisher(store, source, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := replica.NewFollower(store, replica.Target{Users: r.users, Projects: r.projects, Tokens: r.tokens}.Apply, nil, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(ctx); !errors.Is(err, replica.ErrNoState) {
		t.Fatalf("Sync before any publish = %v, want ErrNoState", err)
	}
	publish := func(want bool) {
		t.Helper()
		if wrote, err := pub.Publish(ctx); err != nil || wrote != want {
			t.Fatalf("Publish = %v, %v; want %v", wrote, err, want)
		}
	}
	publish(true)
	publish(false) // nothing changed
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := f.Status(); st.Version != 1 || st.Error != "" || st.Mode.Lifecycle != "bootstrap" {
		t.Fatalf("Status = %+v", st)
	}
	if u, err := r.users.Verify("alice", "alice-password-1"); err != nil || !u.InProject("vendor") {
		t.Fatalf("the writer's alice on the replica: %+v, %v", u, err)
	}
	if r.projects.IsPublic("fixed") {
		t.Fatal("the writer's private configured project is public on the replica")
	}
	tok, _, err := w.tokens.Issue("alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.tokens.Verify(tok); err != nil {
		t.Fatalf("the writer's token on the replica: %v", err)
	}

	// A change is published as the next version; a restarted writer
	// goes on from the pointer and publishes only what changed.
	if _, err := w.projects.Set("vendor", false); err != nil {
		t.Fatal(err)
	}
	publish(true)
	pub2, _ := replica.NewPublisher(store, source, time.Second, nil)
	if wrote, err := pub2.Publish(ctx); err != nil || wrote {
		t.Fatalf("a restarted writer with nothing new: %v, %v", wrote, err)
	}
	for i := range 4 {
		if _, err := w.projects.Set(fmt.Sprintf("p%d", i), false); err != nil {
			t.Fatal(err)
		}
		if wrote, err := pub2.Publish(ctx); err != nil || !wrote {
			t.Fatalf("publish %d: %v, %v", i, wrote, err)
		}
	}
	// Versions 1..6 published: the pointer and versions 4, 5, 6 remain.
	if got := store.names(); got != "4" {
		t.Errorf("%s objects in the store, want current and three versions", got)
	}
	if err := f.Sync(ctx); err != nil || f.Status().Version != 6 || r.projects.IsPublic("vendor") || r.projects.IsPublic("p3") {
		t.Fatalf("after the changes: %v, %+v", err, f.Status())
	}

	// The store goes away: the last state stays, and Status says why.
	store.mu.Lock()
	store.away = true
	store.mu.Unlock()
	if err := f.Sync(ctx); !errors.Is(err, errAway) || !strings.Contains(f.Status().Error, "unreachable") || r.projects.IsPublic("vendor") {
		t.Fatalf("store away: %v, %+v, vendor public %v", err, f.Status(), r.projects.IsPublic("vendor"))
	}
	store.mu.Lock()
	store.away = false
	// A state object that does not match its pointer's sum is refused.
	if _, err := w.projects.Set("vendor", true); err != nil {
		t.Fatal(err)
	}
	store.mu.Unlock()
	publish(true)
	store.mu.Lock()
	for n := range store.m {
		if strings.HasSuffix(n, "7.json") {
			store.m[n] = []byte(`{"format":1,"version":7,"projects":[]}`)
		}
	}
	store.mu.Unlock()
	if err := f.Sync(ctx); !errors.Is(err, replica.ErrBadState) || f.Status().Version != 6 || r.projects.IsPublic("vendor") {
		t.Fatalf("a tampered state: %v, %+v", err, f.Status())
	}
}

// TestFollowerRun proves Run polls within the interval: a change
// published while it runs holds on the replica within a bounded wait,
// and tick runs on every poll.
func TestFollowerRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	store := newObjects()
	w, r := newSide(t), newSide(t)
	shared := key(t)
	source := func() (replica.State, error) {
		keys, err := replica.Keys(w.tokens.Key(), shared)
		return replica.State{Projects: w.projects.List(), Users: w.users.Export(), TokenKeys: keys}, err
	}
	pub, _ := replica.NewPublisher(store, source, 50*time.Millisecond, nil)
	var mu sync.Mutex
	ticks := 0
	tick := func(context.Context) error { mu.Lock(); ticks++; mu.Unlock(); return nil }
	f, _ := replica.NewFollower(store, replica.Target{Users: r.users, Projects: r.projects, Tokens: r.tokens}.Apply, tick, 50*time.Millisecond, nil)
	done := make(chan struct{}, 2)
	go func() { _ = pub.Run(ctx); done <- struct{}{} }()
	go func() { _ = f.Run(ctx); done <- struct{}{} }()
	if _, err := w.projects.Set("vendor", false); err != nil {
		t.Fatal(err)
	}
	pub.Kick()
	deadline := time.Now().Add(5 * time.Second)
	for r.projects.IsPublic("vendor") {
		if time.Now().After(deadline) {
			t.Fatalf("vendor still public on the replica after 5s: %+v", f.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	for range 2 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of the context's end")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if ticks == 0 {
		t.Error("tick never ran")
	}
}
