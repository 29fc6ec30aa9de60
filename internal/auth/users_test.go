package auth_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/appliance-dev/appliance/internal/auth"
)

const (
	pwAlice = "alice-password-1"
	pwBob   = "bob-password-22"
	pwRoot  = "root-password-333"
)

// openUsers opens (or creates) the user store at path with a fast bcrypt cost.
func openUsers(t *testing.T, path string) *auth.Users {
	t.Helper()
	u, err := auth.OpenUsers(path, auth.WithBcryptCost(bcrypt.MinCost))
	if err != nil {
		t.Fatalf("OpenUsers(%s): %v", path, err)
	}
	return u
}

// newUsers returns a store in a fresh directory and its file path.
func newUsers(t *testing.T) (*auth.Users, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), auth.UsersFile)
	return openUsers(t, path), path
}

func mustAdd(t *testing.T, u *auth.Users, name, password string, role auth.Role) {
	t.Helper()
	if err := u.Add(context.Background(), name, password, role); err != nil {
		t.Fatalf("Add(%s, %s): %v", name, role, err)
	}
}

// listed renders List() as "name:role" strings for easy comparison.
func listed(u *auth.Users) string {
	var parts []string
	for _, x := range u.List(context.Background()) {
		parts = append(parts, x.Name+":"+string(x.Role))
	}
	return strings.Join(parts, ",")
}

// TestUsersLifecycle proves Add, Verify, SetPassword, SetRole, Remove, Get,
// Len and List work together, and that List is sorted by name.
func TestUsersLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, _ := newUsers(t)
	if u.Len() != 0 || len(u.List(ctx)) != 0 {
		t.Fatalf("new store not empty: %s", listed(u))
	}
	mustAdd(t, u, "root", pwRoot, auth.RoleAdmin)
	mustAdd(t, u, "bob", pwBob, auth.RoleGuest)
	mustAdd(t, u, "alice", pwAlice, auth.RoleDeveloper)
	if got, want := listed(u), "alice:developer,bob:guest,root:admin"; got != want {
		t.Errorf("List = %s, want %s", got, want)
	}
	if u.Len() != 3 {
		t.Errorf("Len = %d, want 3", u.Len())
	}
	for _, x := range u.List(ctx) {
		if x.Created.IsZero() || !x.Updated.Equal(x.Created) {
			t.Errorf("%s: Created=%v Updated=%v", x.Name, x.Created, x.Updated)
		}
	}

	got, err := u.Verify("alice", pwAlice)
	if err != nil {
		t.Fatalf("Verify(alice): %v", err)
	}
	if got.Name != "alice" || got.Role != auth.RoleDeveloper {
		t.Errorf("Verify returned %+v", got)
	}
	if _, err := u.Verify("alice", pwBob); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("Verify with bob's password = %v, want ErrBadCredentials", err)
	}

	if err := u.SetPassword(ctx, "alice", "a-brand-new-password"); err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	if _, err := u.Verify("alice", "a-brand-new-password"); err != nil {
		t.Errorf("Verify with the new password: %v", err)
	}
	if err := u.SetRole(ctx, "bob", auth.RoleDeveloper); err != nil {
		t.Fatalf("SetRole: %v", err)
	}
	if x, ok := u.Get("bob"); !ok || x.Role != auth.RoleDeveloper {
		t.Errorf("Get(bob) = %+v, %v; want developer", x, ok)
	}
	if x, err := u.Verify("bob", pwBob); err != nil || x.Role != auth.RoleDeveloper {
		t.Errorf("Verify(bob) = %+v, %v; want developer", x, err)
	}
	if err := u.Remove(ctx, "bob"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, ok := u.Get("bob"); ok {
		t.Error("Get(bob) found a removed user")
	}
	if _, err := u.Verify("bob", pwBob); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("Verify(removed bob) = %v, want ErrBadCredentials", err)
	}
	if got, want := listed(u), "alice:developer,root:admin"; got != want {
		t.Errorf("List = %s, want %s", got, want)
	}
	// Re-adding a removed name works.
	mustAdd(t, u, "bob", pwBob, auth.RoleGuest)
}

// TestUsersUnknownUser proves operations on a missing user report
// ErrUserNotFound (and Verify the indistinguishable ErrBadCredentials).
func TestUsersUnknownUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, _ := newUsers(t)
	mustAdd(t, u, "root", pwRoot, auth.RoleAdmin)
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"SetPassword", func() error { return u.SetPassword(ctx, "ghost", "long-enough-password") }, auth.ErrUserNotFound},
		{"SetRole", func() error { return u.SetRole(ctx, "ghost", auth.RoleGuest) }, auth.ErrUserNotFound},
		{"Remove", func() error { return u.Remove(ctx, "ghost") }, auth.ErrUserNotFound},
		{"Verify", func() error { _, err := u.Verify("ghost", pwRoot); return err }, auth.ErrBadCredentials},
		{"Verify empty", func() error { _, err := u.Verify("", ""); return err }, auth.ErrBadCredentials},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, ok := u.Get("ghost"); ok {
		t.Error("Get(ghost) found a user")
	}
}

// TestUsersPersistence proves every change is on disk: a store reopened from
// the file sees the same users, roles and passwords, and the file is 0600
// and holds bcrypt hashes, never a plaintext password.
func TestUsersPersistence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, path := newUsers(t)
	mustAdd(t, u, "root", pwRoot, auth.RoleAdmin)
	mustAdd(t, u, "alice", pwAlice, auth.RoleGuest)
	mustAdd(t, u, "bob", pwBob, auth.RoleGuest)
	if err := u.SetRole(ctx, "alice", auth.RoleDeveloper); err != nil {
		t.Fatal(err)
	}
	const newPw = "changed-password-4444"
	if err := u.SetPassword(ctx, "alice", newPw); err != nil {
		t.Fatal(err)
	}
	if err := u.Remove(ctx, "bob"); err != nil {
		t.Fatal(err)
	}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %o, want 600", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{pwRoot, pwAlice, pwBob, newPw} {
		if strings.Contains(string(data), pw) {
			t.Errorf("users.json contains the plaintext password %q", pw)
		}
	}
	if !strings.Contains(string(data), "$2") {
		t.Error("users.json holds no bcrypt hash")
	}

	before := u.List(ctx)
	r := openUsers(t, path)
	after := r.List(ctx)
	if len(before) != len(after) {
		t.Fatalf("reopened List = %v, want %v", after, before)
	}
	for i := range before {
		b, a := before[i], after[i]
		if b.Name != a.Name || b.Role != a.Role || !b.Created.Equal(a.Created) || !b.Updated.Equal(a.Updated) {
			t.Errorf("reopened user %d = %+v, want %+v", i, a, b)
		}
	}
	if got, want := listed(r), "alice:developer,root:admin"; got != want {
		t.Errorf("reopened List = %s, want %s", got, want)
	}
	if _, err := r.Verify("alice", newPw); err != nil {
		t.Errorf("reopened Verify(alice, new): %v", err)
	}
	if _, err := r.Verify("alice", pwAlice); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("reopened Verify(alice, old) = %v, want ErrBadCredentials", err)
	}
	if _, err := r.Verify("root", pwRoot); err != nil {
		t.Errorf("reopened Verify(root): %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only users.json (no temp files)", len(entries))
	}
}

// TestUsersAddValidation proves bad usernames, roles, weak passwords and
// duplicates are refused with their sentinel errors and leave the store
// (memory and file) unchanged, while the boundary values are accepted.
func TestUsersAddValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		user, pw string
		role     auth.Role
		want     error // nil: accepted
	}{
		{"ok", "carol", pwAlice, auth.RoleGuest, nil},
		{"name with separators", "c.a_r-ol9", pwAlice, auth.RoleGuest, nil},
		{"64-char name", strings.Repeat("a", 64), pwAlice, auth.RoleGuest, nil},
		{"12-char password", "dave", strings.Repeat("x", 12), auth.RoleDeveloper, nil},
		{"72-byte password", "erin", strings.Repeat("x", 72), auth.RoleAdmin, nil},
		{"empty name", "", pwAlice, auth.RoleGuest, auth.ErrInvalidUsername},
		{"upper case", "Carol", pwAlice, auth.RoleGuest, auth.ErrInvalidUsername},
		{"leading dash", "-carol", pwAlice, auth.RoleGuest, auth.ErrInvalidUsername},
		{"leading dot", ".carol", pwAlice, auth.RoleGuest, auth.ErrInvalidUsername},
		{"space", "car ol", pwAlice, auth.RoleGuest, auth.ErrInvalidUsername},
		{"slash", "car/ol", pwAlice, auth.RoleGuest, auth.ErrInvalidUsername},
		{"colon", "car:ol", pwAlice, auth.RoleGuest, auth.ErrInvalidUsername},
		{"65-char name", strings.Repeat("a", 65), pwAlice, auth.RoleGuest, auth.ErrInvalidUsername},
		{"unknown role", "carol", pwAlice, auth.Role("root"), auth.ErrInvalidRole},
		{"empty role", "carol", pwAlice, auth.Role(""), auth.ErrInvalidRole},
		{"role case", "carol", pwAlice, auth.Role("Admin"), auth.ErrInvalidRole},
		{"empty password", "carol", "", auth.RoleGuest, auth.ErrWeakPassword},
		{"11-char password", "carol", strings.Repeat("x", 11), auth.RoleGuest, auth.ErrWeakPassword},
		{"73-byte password", "carol", strings.Repeat("x", 73), auth.RoleGuest, auth.ErrWeakPassword},
		{"duplicate", "alice", pwBob, auth.RoleAdmin, auth.ErrUserExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, path := newUsers(t)
			mustAdd(t, u, "alice", pwAlice, auth.RoleDeveloper)
			before, _ := os.ReadFile(path)

			err := u.Add(context.Background(), tc.user, tc.pw, tc.role)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Add: %v", err)
				}
				if _, err := u.Verify(tc.user, tc.pw); err != nil {
					t.Errorf("Verify after Add: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Add = %v, want %v", err, tc.want)
			}
			if got := listed(u); got != "alice:developer" {
				t.Errorf("store changed by a refused Add: %s", got)
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Error("users.json changed by a refused Add")
			}
			// A refused duplicate does not replace the original password.
			if _, err := u.Verify("alice", pwAlice); err != nil {
				t.Errorf("Verify(alice) after refused Add: %v", err)
			}
		})
	}
}

// TestUsersSetValidation proves SetPassword refuses weak passwords and
// SetRole unknown roles, without changing anything.
func TestUsersSetValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, _ := newUsers(t)
	mustAdd(t, u, "alice", pwAlice, auth.RoleDeveloper)
	for _, pw := range []string{"", "short", strings.Repeat("y", 73)} {
		if err := u.SetPassword(ctx, "alice", pw); !errors.Is(err, auth.ErrWeakPassword) {
			t.Errorf("SetPassword(%q) = %v, want ErrWeakPassword", pw, err)
		}
	}
	if err := u.SetRole(ctx, "alice", "superuser"); !errors.Is(err, auth.ErrInvalidRole) {
		t.Errorf("SetRole(superuser) = %v, want ErrInvalidRole", err)
	}
	if x, err := u.Verify("alice", pwAlice); err != nil || x.Role != auth.RoleDeveloper {
		t.Errorf("alice changed by refused updates: %+v, %v", x, err)
	}
}

// TestParseRole proves the three roles parse and anything else is ErrInvalidRole.
func TestParseRole(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"admin", "developer", "guest"} {
		if r, err := auth.ParseRole(s); err != nil || string(r) != s {
			t.Errorf("ParseRole(%q) = %q, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "Admin", "root", "dev", " guest"} {
		if _, err := auth.ParseRole(s); !errors.Is(err, auth.ErrInvalidRole) {
			t.Errorf("ParseRole(%q) = %v, want ErrInvalidRole", s, err)
		}
	}
}

// TestUsersLastAdmin proves the last admin can be neither removed nor
// demoted, while an admin with a peer can, and non-admins are unaffected.
func TestUsersLastAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name   string
		admins []string
		op     func(u *auth.Users) error
		want   error
	}{
		{"remove only admin", []string{"root"}, func(u *auth.Users) error { return u.Remove(ctx, "root") }, auth.ErrLastAdmin},
		{"demote only admin to developer", []string{"root"}, func(u *auth.Users) error { return u.SetRole(ctx, "root", auth.RoleDeveloper) }, auth.ErrLastAdmin},
		{"demote only admin to guest", []string{"root"}, func(u *auth.Users) error { return u.SetRole(ctx, "root", auth.RoleGuest) }, auth.ErrLastAdmin},
		{"re-set only admin to admin", []string{"root"}, func(u *auth.Users) error { return u.SetRole(ctx, "root", auth.RoleAdmin) }, nil},
		{"remove one of two admins", []string{"root", "root2"}, func(u *auth.Users) error { return u.Remove(ctx, "root") }, nil},
		{"demote one of two admins", []string{"root", "root2"}, func(u *auth.Users) error { return u.SetRole(ctx, "root", auth.RoleGuest) }, nil},
		{"then the second is last", []string{"root", "root2"}, func(u *auth.Users) error {
			if err := u.Remove(ctx, "root"); err != nil {
				return err
			}
			return u.SetRole(ctx, "root2", auth.RoleDeveloper)
		}, auth.ErrLastAdmin},
		{"remove developer", []string{"root"}, func(u *auth.Users) error { return u.Remove(ctx, "alice") }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, path := newUsers(t)
			for _, a := range tc.admins {
				mustAdd(t, u, a, pwRoot, auth.RoleAdmin)
			}
			mustAdd(t, u, "alice", pwAlice, auth.RoleDeveloper)
			err := tc.op(u)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			admins := 0
			for _, x := range openUsers(t, path).List(ctx) {
				if x.Role == auth.RoleAdmin {
					admins++
				}
			}
			if admins != 1 {
				t.Errorf("%d admins on disk after the refusal, want 1", admins)
			}
		})
	}
}

// TestVerifyCacheInvalidation proves a cached successful Verify does not
// outlive a password change or a removal, and that a role change is
// reflected immediately even when the answer comes from the cache.
func TestVerifyCacheInvalidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, _ := newUsers(t)
	mustAdd(t, u, "root", pwRoot, auth.RoleAdmin)
	mustAdd(t, u, "alice", pwAlice, auth.RoleDeveloper)
	for range 2 { // the second call is served from the cache
		if _, err := u.Verify("alice", pwAlice); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}
	const newPw = "another-password-55"
	if err := u.SetPassword(ctx, "alice", newPw); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Verify("alice", pwAlice); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("old password right after change = %v, want ErrBadCredentials", err)
	}
	if _, err := u.Verify("alice", newPw); err != nil {
		t.Errorf("new password: %v", err)
	}
	// The role in a cached answer is the current one.
	if err := u.SetRole(ctx, "alice", auth.RoleGuest); err != nil {
		t.Fatal(err)
	}
	if x, err := u.Verify("alice", newPw); err != nil || x.Role != auth.RoleGuest {
		t.Errorf("Verify after SetRole = %+v, %v; want guest", x, err)
	}
	// Removing and re-adding with another password drops the cached entry too.
	if err := u.Remove(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, u, "alice", pwBob, auth.RoleGuest)
	if _, err := u.Verify("alice", newPw); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("password of the removed account = %v, want ErrBadCredentials", err)
	}
}

// TestUsersConcurrent exercises Verify, SetPassword, SetRole and List in
// parallel so that the race detector can catch unsynchronised access.
func TestUsersConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, _ := newUsers(t)
	mustAdd(t, u, "root", pwRoot, auth.RoleAdmin)
	mustAdd(t, u, "alice", pwAlice, auth.RoleDeveloper)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				_, _ = u.Verify("alice", pwAlice)
				_, _ = u.Verify("root", pwRoot)
				_ = u.List(ctx)
				_, _ = u.Get("alice")
				if i == 0 {
					_ = u.SetPassword(ctx, "alice", pwAlice)
					_ = u.SetRole(ctx, "alice", auth.RoleGuest)
				}
			}
		}()
	}
	wg.Wait()
	if _, err := u.Verify("root", pwRoot); err != nil {
		t.Errorf("Verify(root) after concurrent use: %v", err)
	}
}

// TestEnsureInitialAdmin proves the first admin is created only on an empty
// store, its password file is 0600 and holds a password that verifies, and
// a second call does nothing and returns "".
func TestEnsureInitialAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, auth.UsersFile)
	pwPath := filepath.Join(dir, auth.InitialPasswordFile)
	u := openUsers(t, path)

	pw, err := u.EnsureInitialAdmin(ctx, pwPath)
	if err != nil {
		t.Fatalf("EnsureInitialAdmin: %v", err)
	}
	if len(pw) != 24 {
		t.Errorf("password length %d, want 24", len(pw))
	}
	if got := listed(u); got != "admin:admin" {
		t.Errorf("List = %s, want admin:admin", got)
	}
	st, err := os.Stat(pwPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("password file mode = %o, want 600", st.Mode().Perm())
	}
	data, err := os.ReadFile(pwPath)
	if err != nil {
		t.Fatal(err)
	}
	filePw := strings.TrimSpace(string(data))
	if filePw != pw {
		t.Errorf("password file holds %q, returned %q", filePw, pw)
	}
	if _, err := openUsers(t, path).Verify("admin", filePw); err != nil {
		t.Errorf("password from the file does not verify on the reopened store: %v", err)
	}

	again, err := u.EnsureInitialAdmin(ctx, pwPath)
	if err != nil || again != "" {
		t.Errorf("second EnsureInitialAdmin = %q, %v; want \"\", nil", again, err)
	}
	// Reopened from disk, the store is not empty either.
	again, err = openUsers(t, path).EnsureInitialAdmin(ctx, pwPath)
	if err != nil || again != "" {
		t.Errorf("EnsureInitialAdmin on the reopened store = %q, %v; want \"\", nil", again, err)
	}
	if data2, _ := os.ReadFile(pwPath); string(data2) != string(data) {
		t.Error("password file rewritten by a later call")
	}
}

// TestEnsureInitialAdminNonEmpty proves a store that already has users (even
// without an admin) gets no "admin" account and no password file.
func TestEnsureInitialAdminNonEmpty(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	u := openUsers(t, filepath.Join(dir, auth.UsersFile))
	mustAdd(t, u, "alice", pwAlice, auth.RoleDeveloper)
	pwPath := filepath.Join(dir, auth.InitialPasswordFile)
	pw, err := u.EnsureInitialAdmin(context.Background(), pwPath)
	if err != nil || pw != "" {
		t.Fatalf("EnsureInitialAdmin = %q, %v; want \"\", nil", pw, err)
	}
	if _, ok := u.Get("admin"); ok {
		t.Error("admin created on a non-empty store")
	}
	if _, err := os.Stat(pwPath); !os.IsNotExist(err) {
		t.Errorf("password file written on a non-empty store (stat: %v)", err)
	}
}

// TestRandomPassword proves passwords are 24 characters of the unambiguous
// alphabet, pass the password policy, and differ between calls.
func TestRandomPassword(t *testing.T) {
	t.Parallel()
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	seen := map[string]bool{}
	chars := map[rune]bool{}
	for range 200 {
		pw, err := auth.RandomPassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 24 {
			t.Fatalf("len(%q) = %d, want 24", pw, len(pw))
		}
		for _, c := range pw {
			if !strings.ContainsRune(alphabet, c) {
				t.Fatalf("%q contains %q, outside the unambiguous alphabet", pw, c)
			}
			chars[c] = true
		}
		if seen[pw] {
			t.Fatalf("RandomPassword repeated %q", pw)
		}
		seen[pw] = true
	}
	// 4800 draws from 57 symbols: every symbol shows up unless sampling is broken.
	if len(chars) != len(alphabet) {
		t.Errorf("only %d of %d alphabet characters ever drawn", len(chars), len(alphabet))
	}
}

// TestOpenUsersCorrupt proves a damaged users.json is an error naming the
// file (never silently treated as empty), and a missing one is an empty store.
func TestOpenUsersCorrupt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, content string
	}{
		{"garbage", "\x00not json"},
		{"truncated", `{"users":[{"name":"a","role":"admin","hash":"$2a$04$`},
		{"wrong shape", `{"users":{"a":1}}`},
		{"invalid hash", `{"users":[{"name":"root","role":"admin","hash":"plaintext-password"}]}`},
		{"empty hash", `{"users":[{"name":"root","role":"admin","hash":""}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), auth.UsersFile)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			u, err := auth.OpenUsers(path, auth.WithBcryptCost(bcrypt.MinCost))
			if err == nil {
				t.Fatalf("OpenUsers accepted a corrupt file (%d users)", u.Len())
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
			if data, _ := os.ReadFile(path); string(data) != tc.content {
				t.Error("corrupt file was modified")
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), auth.UsersFile)
		u := openUsers(t, path)
		if u.Len() != 0 {
			t.Errorf("Len = %d, want 0", u.Len())
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("OpenUsers created the file before any change (stat: %v)", err)
		}
	})
}

// TestWithBcryptCost proves the configured cost is the one stored.
func TestWithBcryptCost(t *testing.T) {
	t.Parallel()
	u, path := newUsers(t)
	mustAdd(t, u, "root", pwRoot, auth.RoleAdmin)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "$2a$04$") {
		t.Errorf("users.json does not hold a cost-4 hash:\n%s", data)
	}
}
