package auth_test

import (
	"encoding/base64"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/auth"
)

const (
	pwAdmin = "admin-password-0001"
	pwDev   = "developer-pass-0002"
	pwGuest = "guest-password-0003"
)

// newAuthorizer builds an Authorizer over a fresh data directory with one
// user per role, a configured public project "pub" and private project
// "priv", and a project "apipriv" made private through the API.
func newAuthorizer(t *testing.T) *auth.Authorizer {
	t.Helper()
	dir := t.TempDir()
	users := openUsers(t, filepath.Join(dir, auth.UsersFile))
	mustAdd(t, users, "root", pwAdmin, auth.RoleAdmin)
	mustAdd(t, users, "dev", pwDev, auth.RoleDeveloper)
	mustAdd(t, users, "guest", pwGuest, auth.RoleGuest)
	projects := openProjects(t, filepath.Join(dir, auth.ProjectsFile), map[string]bool{"pub": true, "priv": false})
	if _, err := projects.Set("apipriv", false); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.OpenTokens(filepath.Join(dir, auth.TokenKeyFile), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return &auth.Authorizer{Users: users, Projects: projects, Tokens: tokens}
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func repo(name, action string) auth.Access {
	return auth.Access{Type: "repository", Name: name, Action: action}
}

var catalog = auth.Access{Type: "registry", Name: "catalog", Action: "*"}

// TestAllowedByRole is the policy table: what anonymous callers, each role,
// and a principal whose account no longer exists may do on public, private
// and undeclared projects and on the catalog.
func TestAllowedByRole(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t)
	principals := map[string]auth.Principal{
		"anonymous": auth.Anonymous,
		"guest":     {Name: "guest", Role: auth.RoleGuest},
		"developer": {Name: "dev", Role: auth.RoleDeveloper},
		"admin":     {Name: "root", Role: auth.RoleAdmin},
		// Claims admin but has no account: only what anonymous may do.
		"deleted": {Name: "ghost", Role: auth.RoleAdmin},
	}
	type row struct {
		acc                                   auth.Access
		anonymous, guest, dev, admin, deleted bool
	}
	rows := []row{
		{repo("pub/app", "pull"), true, true, true, true, true},
		{repo("pub/app", "push"), false, false, true, true, false},
		{repo("pub/app", "delete"), false, false, true, true, false},
		{repo("priv/app", "pull"), false, true, true, true, false},
		{repo("priv/app", "push"), false, false, true, true, false},
		{repo("priv/app", "delete"), false, false, true, true, false},
		{repo("priv/app", "*"), false, false, true, true, false},
		{repo("priv", "pull"), false, true, true, true, false},
		{repo("apipriv/app", "pull"), false, true, true, true, false},
		{repo("apipriv/app", "push"), false, false, true, true, false},
		{repo("undeclared/app", "pull"), true, true, true, true, true},
		{repo("undeclared/app", "push"), false, false, true, true, false},
		{repo("priv/app", "frobnicate"), false, false, false, false, false},
		{catalog, false, true, true, true, false},
		{auth.Access{Type: "registry", Name: "other", Action: "*"}, false, false, false, false, false},
		{auth.Access{Type: "blob", Name: "pub/app", Action: "pull"}, false, false, false, false, false},
	}
	for _, r := range rows {
		want := map[string]bool{"anonymous": r.anonymous, "guest": r.guest, "developer": r.dev, "admin": r.admin, "deleted": r.deleted}
		for who, p := range principals {
			t.Run(who+"/"+r.acc.String(), func(t *testing.T) {
				t.Parallel()
				if got := a.Allowed(p, r.acc); got != want[who] {
					t.Errorf("Allowed(%s, %s) = %v, want %v", who, r.acc, got, want[who])
				}
			})
		}
	}
}

// TestAllowedRoleChangeIsImmediate proves rights follow the stored account,
// not the role remembered in the Principal.
func TestAllowedRoleChangeIsImmediate(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t)
	p, err := a.Authenticate(basic("dev", pwDev))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Allowed(p, repo("priv/app", "push")) {
		t.Fatal("developer may not push")
	}
	if err := a.Users.SetRole(t.Context(), "dev", auth.RoleGuest); err != nil {
		t.Fatal(err)
	}
	if a.Allowed(p, repo("priv/app", "push")) {
		t.Error("demoted developer may still push")
	}
	if err := a.Users.Remove(t.Context(), "dev"); err != nil {
		t.Fatal(err)
	}
	if a.Allowed(p, repo("priv/app", "pull")) {
		t.Error("removed user may still pull from a private project")
	}
}

// TestAllowedBearerToken proves a bearer-token principal has exactly the
// token's access: nothing its role would add, and nothing public by default.
func TestAllowedBearerToken(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t)
	tok, _, err := a.Tokens.Issue("root", []auth.ResourceActions{
		{Type: "repository", Name: "priv/app", Actions: []string{"pull"}},
		{Type: "repository", Name: "priv/all", Actions: []string{"*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate("Bearer " + tok)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		acc  auth.Access
		want bool
	}{
		{repo("priv/app", "pull"), true},
		{repo("priv/app", "push"), false},   // admin role, but not in the token
		{repo("priv/app", "delete"), false}, // idem
		{repo("priv/other", "pull"), false},
		{repo("priv/ap", "pull"), false},
		{repo("priv/app/sub", "pull"), false},
		{repo("pub/app", "pull"), false}, // public, but not in the token
		{repo("priv/all", "pull"), true},
		{repo("priv/all", "push"), true},
		{repo("priv/all", "delete"), true},
		{auth.Access{Type: "registry", Name: "priv/app", Action: "pull"}, false},
		{catalog, false},
	}
	for _, tc := range tests {
		t.Run(tc.acc.String(), func(t *testing.T) {
			t.Parallel()
			if got := a.Allowed(p, tc.acc); got != tc.want {
				t.Errorf("Allowed(token, %s) = %v, want %v", tc.acc, got, tc.want)
			}
		})
	}
	if a.IsAdmin(p) {
		t.Error("a bearer token of an admin counts as admin for the API")
	}
}

// TestIsAdmin proves only a password-authenticated, existing admin is admin.
func TestIsAdmin(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t)
	tests := []struct {
		p    auth.Principal
		want bool
	}{
		{auth.Principal{Name: "root", Role: auth.RoleAdmin}, true},
		{auth.Principal{Name: "root"}, true}, // the store decides, not the principal
		{auth.Principal{Name: "dev", Role: auth.RoleAdmin}, false},
		{auth.Principal{Name: "guest", Role: auth.RoleGuest}, false},
		{auth.Principal{Name: "ghost", Role: auth.RoleAdmin}, false},
		{auth.Principal{Name: "root", Role: auth.RoleAdmin, Anonymous: true}, false},
		{auth.Principal{Name: "root", Role: auth.RoleAdmin, Token: &auth.TokenClaims{}}, false},
		{auth.Anonymous, false},
	}
	for _, tc := range tests {
		if got := a.IsAdmin(tc.p); got != tc.want {
			t.Errorf("IsAdmin(%+v) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

// TestAuthenticate proves how each Authorization header is read: none or
// empty Basic credentials are anonymous, good Basic credentials the user,
// bad ones ErrBadCredentials, a valid Bearer token a token principal, a bad
// one ErrInvalidToken, and an unknown scheme an error.
func TestAuthenticate(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t)
	access := []auth.ResourceActions{{Type: "repository", Name: "priv/app", Actions: []string{"pull", "push"}}}
	devTok, _, err := a.Tokens.Issue("dev", access)
	if err != nil {
		t.Fatal(err)
	}
	anonTok, _, err := a.Tokens.Issue("", []auth.ResourceActions{{Type: "repository", Name: "pub/app", Actions: []string{"pull"}}})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := auth.OpenTokens(filepath.Join(t.TempDir(), auth.TokenKeyFile), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	foreignTok, _, err := foreign.Issue("root", access)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		header  string
		wantErr error // nil: success; errAny: any error
		want    auth.Principal
		token   bool // Principal.Token must be set
	}{
		{name: "no header", header: "", want: auth.Anonymous},
		{name: "empty basic (Og==)", header: "Basic Og==", want: auth.Anonymous},
		{name: "empty basic built", header: basic("", ""), want: auth.Anonymous},
		{name: "admin", header: basic("root", pwAdmin), want: auth.Principal{Name: "root", Role: auth.RoleAdmin}},
		{name: "developer", header: basic("dev", pwDev), want: auth.Principal{Name: "dev", Role: auth.RoleDeveloper}},
		{name: "guest", header: basic("guest", pwGuest), want: auth.Principal{Name: "guest", Role: auth.RoleGuest}},
		{name: "scheme case-insensitive", header: "bAsIc " + base64.StdEncoding.EncodeToString([]byte("dev:"+pwDev)), want: auth.Principal{Name: "dev", Role: auth.RoleDeveloper}},
		{name: "extra spaces", header: "  Basic   " + base64.StdEncoding.EncodeToString([]byte("dev:"+pwDev)) + " ", want: auth.Principal{Name: "dev", Role: auth.RoleDeveloper}},
		{name: "password not cut at a second colon", header: basic("dev", pwDev+":x"), wantErr: auth.ErrBadCredentials},
		{name: "wrong password", header: basic("dev", pwAdmin), wantErr: auth.ErrBadCredentials},
		{name: "unknown user", header: basic("ghost", pwAdmin), wantErr: auth.ErrBadCredentials},
		{name: "user without password", header: basic("dev", ""), wantErr: auth.ErrBadCredentials},
		{name: "password without user", header: basic("", pwDev), wantErr: auth.ErrBadCredentials},
		{name: "basic not base64", header: "Basic !!!notbase64", wantErr: auth.ErrBadCredentials},
		{name: "basic without colon", header: "Basic " + base64.StdEncoding.EncodeToString([]byte("devonly")), wantErr: auth.ErrBadCredentials},
		{name: "basic without value", header: "Basic", wantErr: auth.ErrBadCredentials},
		{name: "bearer", header: "Bearer " + devTok, want: auth.Principal{Name: "dev", Role: auth.RoleDeveloper}, token: true},
		{name: "bearer lower case", header: "bearer " + devTok, want: auth.Principal{Name: "dev", Role: auth.RoleDeveloper}, token: true},
		{name: "anonymous bearer", header: "Bearer " + anonTok, want: auth.Principal{Name: "", Anonymous: true}, token: true},
		{name: "bearer garbage", header: "Bearer garbage", wantErr: auth.ErrInvalidToken},
		{name: "bearer empty", header: "Bearer ", wantErr: auth.ErrInvalidToken},
		{name: "bearer foreign key", header: "Bearer " + foreignTok, wantErr: auth.ErrInvalidToken},
		{name: "digest scheme", header: `Digest username="root"`, wantErr: errAny},
		{name: "token without scheme", header: devTok, wantErr: errAny},
		{name: "blank header", header: "   ", wantErr: errAny},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := a.Authenticate(tc.header)
			switch {
			case errors.Is(tc.wantErr, errAny):
				if err == nil {
					t.Fatalf("Authenticate = %+v, want an error", p)
				}
				if p != (auth.Principal{}) {
					t.Errorf("Authenticate returned %+v with an error", p)
				}
				return
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Authenticate = %+v, %v; want %v", p, err, tc.wantErr)
				}
				if p != (auth.Principal{}) {
					t.Errorf("Authenticate returned %+v with an error", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if (p.Token != nil) != tc.token {
				t.Fatalf("Token set = %v, want %v", p.Token != nil, tc.token)
			}
			got := p
			got.Token = nil
			if got != tc.want {
				t.Errorf("Authenticate = %+v, want %+v", got, tc.want)
			}
			if tc.token && len(p.Token.Access) == 0 {
				t.Error("token principal carries no access claim")
			}
		})
	}
}

// errAny stands for "some error" in the Authenticate table.
var errAny = errors.New("any error")

// TestGrant proves Grant keeps only what the principal's role permits and
// merges the kept actions per resource, in request order, without duplicates.
func TestGrant(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t)
	request := []auth.Access{
		repo("priv/app", "pull"),
		repo("pub/app", "pull"),
		repo("priv/app", "push"),
		repo("priv/app", "pull"), // duplicate
		repo("pub/app", "push"),
		repo("priv/app", "delete"),
		catalog,
	}
	tests := []struct {
		name string
		p    auth.Principal
		want []auth.ResourceActions
	}{
		{"anonymous", auth.Anonymous, []auth.ResourceActions{
			{Type: "repository", Name: "pub/app", Actions: []string{"pull"}},
		}},
		{"guest", auth.Principal{Name: "guest", Role: auth.RoleGuest}, []auth.ResourceActions{
			{Type: "repository", Name: "priv/app", Actions: []string{"pull"}},
			{Type: "repository", Name: "pub/app", Actions: []string{"pull"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		}},
		{"developer", auth.Principal{Name: "dev", Role: auth.RoleDeveloper}, []auth.ResourceActions{
			{Type: "repository", Name: "priv/app", Actions: []string{"pull", "push", "delete"}},
			{Type: "repository", Name: "pub/app", Actions: []string{"pull", "push"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		}},
		{"admin", auth.Principal{Name: "root", Role: auth.RoleAdmin}, []auth.ResourceActions{
			{Type: "repository", Name: "priv/app", Actions: []string{"pull", "push", "delete"}},
			{Type: "repository", Name: "pub/app", Actions: []string{"pull", "push"}},
			{Type: "registry", Name: "catalog", Actions: []string{"*"}},
		}},
		{"deleted account", auth.Principal{Name: "ghost", Role: auth.RoleAdmin}, []auth.ResourceActions{
			{Type: "repository", Name: "pub/app", Actions: []string{"pull"}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := a.Grant(tc.p, request)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Grant = %+v\nwant    %+v", got, tc.want)
			}
		})
	}
	if got := a.Grant(auth.Anonymous, []auth.Access{repo("priv/app", "pull"), repo("priv/app", "push")}); len(got) != 0 {
		t.Errorf("Grant(anonymous, private) = %+v, want nothing", got)
	}
	if got := a.Grant(auth.Principal{Name: "root"}, nil); len(got) != 0 {
		t.Errorf("Grant(nothing requested) = %+v", got)
	}
}

// TestGrantTokenRoundTrip proves a token issued for a Grant authorises
// exactly the granted accesses once presented back as a bearer token.
func TestGrantTokenRoundTrip(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t)
	user := auth.Principal{Name: "guest", Role: auth.RoleGuest}
	granted := a.Grant(user, []auth.Access{repo("priv/app", "pull"), repo("priv/app", "push")})
	tok, _, err := a.Tokens.Issue(user.Name, granted)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate("Bearer " + tok)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Allowed(p, repo("priv/app", "pull")) {
		t.Error("granted pull not allowed with the token")
	}
	if a.Allowed(p, repo("priv/app", "push")) {
		t.Error("refused push allowed with the token")
	}
}

// TestParseScope proves the token-protocol scope syntax is parsed into one
// Access per action and malformed scopes are ErrInvalidScope.
func TestParseScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scope string
		want  []auth.Access // nil with ok=false: error
		ok    bool
	}{
		{"repository:a/b:pull,push", []auth.Access{repo("a/b", "pull"), repo("a/b", "push")}, true},
		{"repository:nvidia/gpu-operator:pull", []auth.Access{repo("nvidia/gpu-operator", "pull")}, true},
		{"repository:a/b:*", []auth.Access{repo("a/b", "*")}, true},
		{"repository:a/b:pull, push,", []auth.Access{repo("a/b", "pull"), repo("a/b", "push")}, true},
		{"registry:catalog:*", []auth.Access{catalog}, true},
		{"repository(plugin):a/b:pull", []auth.Access{repo("a/b", "pull")}, true},
		{"repository:host:5000/a:pull", []auth.Access{repo("host:5000/a", "pull")}, true},
		{"bad", nil, false},
		{"", nil, false},
		{"repository:a", nil, false},
		{"repository:a:", nil, false},
		{"repository::pull", nil, false},
		{":a/b:pull", nil, false},
		{"blob:a/b:pull", nil, false},
		{"Repository:a/b:pull", nil, false},
		{"registry:catalog", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.scope, func(t *testing.T) {
			t.Parallel()
			got, err := auth.ParseScope(tc.scope)
			if !tc.ok {
				if !errors.Is(err, auth.ErrInvalidScope) {
					t.Fatalf("ParseScope = %+v, %v; want ErrInvalidScope", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseScope: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseScope = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestAccessString proves an Access renders back as its scope.
func TestAccessString(t *testing.T) {
	t.Parallel()
	if got := repo("a/b", "pull").String(); got != "repository:a/b:pull" {
		t.Errorf("String = %q", got)
	}
	acc, err := auth.ParseScope(catalog.String())
	if err != nil || len(acc) != 1 || acc[0] != catalog {
		t.Errorf("ParseScope(String()) = %+v, %v", acc, err)
	}
}
