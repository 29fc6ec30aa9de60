package auth_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/auth"
)

// TestUsersExportReplace proves a replica's store, given a writer's
// Export, verifies the writer's passwords with their roles and projects,
// forgets accounts the writer removed, and refuses a bad list whole.
func TestUsersExportReplace(t *testing.T) {
	t.Parallel()
	writer, _ := newUsers(t)
	mustAdd(t, writer, "alice", pwAlice, auth.RoleAdmin)
	if err := writer.Add(context.Background(), "bob", pwBob, auth.RoleGuest, "vendor"); err != nil {
		t.Fatal(err)
	}
	replica, path := newUsers(t)
	mustAdd(t, replica, "root", pwRoot, auth.RoleAdmin)
	if _, err := replica.Verify("root", pwRoot); err != nil { // now cached
		t.Fatal(err)
	}
	if err := replica.Replace(writer.Export()); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	if got := listed(replica); got != "alice:admin,bob:guest" {
		t.Errorf("after Replace: %s, want alice:admin,bob:guest", got)
	}
	if u, err := replica.Verify("bob", pwBob); err != nil || !u.InProject("vendor") || u.InProject("other") {
		t.Errorf("Verify(bob) = %+v, %v; want the guest of vendor", u, err)
	}
	if _, err := replica.Verify("root", pwRoot); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("Verify(root) after Replace = %v, want ErrBadCredentials (cached before, gone now)", err)
	}
	// In memory only: the replica's own file is untouched.
	if again := openUsers(t, path); listed(again) != "root:admin" {
		t.Errorf("the file after Replace holds %s, want root:admin", listed(again))
	}
	bad := writer.Export()
	bad[1].Hash = "not-bcrypt"
	if err := replica.Replace(bad); err == nil || !strings.Contains(err.Error(), `"bob" has an invalid hash`) {
		t.Errorf("Replace(bad hash) = %v, want an error naming bob", err)
	}
	bad = writer.Export()
	bad[0].Projects = []string{"vendor"} // an admin of some projects
	if err := replica.Replace(bad); !errors.Is(err, auth.ErrInvalidRole) {
		t.Errorf("Replace(admin with projects) = %v, want ErrInvalidRole", err)
	}
	if got := listed(replica); got != "alice:admin,bob:guest" {
		t.Errorf("a refused Replace changed the store: %s", got)
	}
}

// TestProjectsReplace proves a replica takes its writer's projects, the
// configured ones as fixed, and refuses a bad list whole.
func TestProjectsReplace(t *testing.T) {
	t.Parallel()
	writer := openProjects(t, filepath.Join(t.TempDir(), auth.ProjectsFile), map[string]bool{"fixed": false})
	if _, err := writer.Set("vendor", false); err != nil {
		t.Fatal(err)
	}
	replica := openProjects(t, filepath.Join(t.TempDir(), auth.ProjectsFile), map[string]bool{"local": false})
	if err := replica.Replace(writer.List()); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	for name, public := range map[string]bool{"fixed": false, "vendor": false, "local": true, "other": true} {
		if got := replica.IsPublic(name); got != public {
			t.Errorf("IsPublic(%s) = %v, want %v", name, got, public)
		}
	}
	if _, err := replica.Set("fixed", true); !errors.Is(err, auth.ErrProjectConfigured) {
		t.Errorf("Set(fixed) = %v, want ErrProjectConfigured", err)
	}
	for _, bad := range [][]auth.Project{
		{{Name: "Bad", Source: "api"}},
		{{Name: "ok", Source: "default"}},
	} {
		if err := replica.Replace(bad); err == nil {
			t.Errorf("Replace(%+v) = nil, want an error", bad)
		}
	}
	if replica.IsPublic("vendor") {
		t.Error("a refused Replace changed the projects")
	}
}
