package auth_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/auth"
)

// TestProjectMembers: a developer or guest limited to some projects holds
// its role there only; elsewhere it may do what anonymous callers may
// (pull public projects) and no more. SeesAll tells members apart from
// appliance-wide accounts; membership persists and changes take effect at
// once; bad memberships are refused without a change.
func TestProjectMembers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, auth.UsersFile)
	users := openUsers(t, path)
	mustAdd(t, users, "root", pwAdmin, auth.RoleAdmin)
	mustAdd(t, users, "wide", pwGuest, auth.RoleGuest)
	if err := users.Add(ctx, "teamdev", pwDev, auth.RoleDeveloper, "team", "shared", "team"); err != nil {
		t.Fatal(err)
	}
	if err := users.Add(ctx, "teamguest", pwGuest, auth.RoleGuest, "team"); err != nil {
		t.Fatal(err)
	}
	projects := openProjects(t, filepath.Join(dir, auth.ProjectsFile), map[string]bool{"pub": true, "secret": false, "team": false, "shared": false})
	tokens, err := auth.OpenTokens(filepath.Join(dir, auth.TokenKeyFile), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a := &auth.Authorizer{Users: users, Projects: projects, Tokens: tokens}
	if u, _ := users.Get("teamdev"); !slices.Equal(u.Projects, []string{"shared", "team"}) {
		t.Fatalf("teamdev's projects = %v, want [shared team] (sorted, once each)", u.Projects)
	}

	p := func(name string) auth.Principal { return auth.Principal{Name: name} }
	for _, tc := range []struct {
		who  string
		acc  auth.Access
		want bool
	}{
		{"teamdev", repo("team/app", "push"), true},
		{"teamdev", repo("shared/app", "pull"), true},
		{"teamdev", repo("secret/app", "pull"), false},
		{"teamdev", repo("secret/app", "push"), false},
		{"teamdev", repo("pub/app", "pull"), true},  // public: as anonymous
		{"teamdev", repo("pub/app", "push"), false}, // not a member of pub
		{"teamguest", repo("team/app", "pull"), true},
		{"teamguest", repo("team/app", "push"), false},
		{"teamguest", repo("secret/app", "pull"), false},
		{"teamguest", repo("secret", "pull"), false},
		{"wide", repo("secret/app", "pull"), true},
		{"root", repo("secret/app", "push"), true},
	} {
		if got := a.Allowed(p(tc.who), tc.acc); got != tc.want {
			t.Errorf("Allowed(%s, %s) = %v, want %v", tc.who, tc.acc, got, tc.want)
		}
		if tc.acc.Action == auth.ActionPull && a.MayPull(p(tc.who), tc.acc.Name) != tc.want {
			t.Errorf("MayPull(%s, %s) != %v", tc.who, tc.acc.Name, tc.want)
		}
	}
	// A token asked for by a member carries only what membership allows.
	granted := a.Grant(p("teamguest"), []auth.Access{repo("secret/app", "pull"), repo("team/app", "pull")})
	if len(granted) != 1 || granted[0].Name != "team/app" {
		t.Fatalf("Grant to teamguest = %+v, want team/app only", granted)
	}
	for who, want := range map[string]bool{"root": true, "wide": true, "teamdev": false, "teamguest": false} {
		if got := a.SeesAll(p(who)); got != want {
			t.Errorf("SeesAll(%s) = %v, want %v", who, got, want)
		}
	}
	if a.SeesAll(auth.Anonymous) {
		t.Error("SeesAll(anonymous) = true")
	}

	// Bad memberships are refused and change nothing.
	for _, tc := range []struct {
		name     string
		err      error
		do       func() error
		projects []string // teamguest's afterwards
	}{
		{"an admin with projects", auth.ErrInvalidRole, func() error { return users.Add(ctx, "badadmin", pwAdmin, auth.RoleAdmin, "team") }, []string{"team"}},
		{"a project name Harbor refuses", auth.ErrInvalidProject, func() error { return users.Add(ctx, "bad", pwGuest, auth.RoleGuest, "Team") }, []string{"team"}},
		{"the staging project", auth.ErrInvalidProject, func() error { return users.SetAccess(ctx, "teamguest", auth.RoleGuest, []string{"_staging"}) }, []string{"team"}},
		{"promoting a member to admin", auth.ErrInvalidRole, func() error { return users.SetRole(ctx, "teamguest", auth.RoleAdmin) }, []string{"team"}},
	} {
		if err := tc.do(); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
		if u, _ := users.Get("teamguest"); !slices.Equal(u.Projects, tc.projects) || u.Role != auth.RoleGuest {
			t.Errorf("after %s teamguest is %s in %v", tc.name, u.Role, u.Projects)
		}
	}
	if _, ok := users.Get("badadmin"); ok {
		t.Error("a refused user was added")
	}

	// Changes take effect at once and persist.
	if err := users.SetAccess(ctx, "teamguest", auth.RoleGuest, []string{"secret"}); err != nil {
		t.Fatal(err)
	}
	if !a.Allowed(p("teamguest"), repo("secret/app", "pull")) || a.Allowed(p("teamguest"), repo("team/app", "pull")) {
		t.Fatal("teamguest moved to secret still has team's rights, or not secret's")
	}
	if err := users.SetAccess(ctx, "teamguest", auth.RoleAdmin, nil); err != nil {
		t.Fatalf("promote to admin with projects cleared: %v", err)
	}
	reopened := openUsers(t, path)
	if u, _ := reopened.Get("teamdev"); !slices.Equal(u.Projects, []string{"shared", "team"}) {
		t.Fatalf("after reopening teamdev's projects = %v", u.Projects)
	}
	if u, _ := reopened.Get("teamguest"); u.Role != auth.RoleAdmin || !u.Wide() {
		t.Fatalf("after reopening teamguest is %s in %v, want an appliance-wide admin", u.Role, u.Projects)
	}
}
