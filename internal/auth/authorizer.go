package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Registry actions.
const (
	ActionPull   = "pull"
	ActionPush   = "push"
	ActionDelete = "delete"
	ActionAll    = "*"
)

// Access is one requested permission: an action on a resource, such as
// pull on repository "nvidia/gpu-operator" or "*" on registry "catalog".
type Access struct {
	Type   string // "repository" or "registry"
	Name   string
	Action string
}

// String renders the access as a token scope: "repository:a/b:pull".
func (a Access) String() string { return a.Type + ":" + a.Name + ":" + a.Action }

// Principal is who is calling: anonymous, a user by password, or the bearer
// of a token (whose rights are exactly the token's).
type Principal struct {
	Name      string
	Role      Role
	Anonymous bool
	// Token is set when the caller presented a bearer token.
	Token *TokenClaims
}

// Anonymous is the principal of a request without credentials.
var Anonymous = Principal{Name: "anonymous", Anonymous: true}

// Authorizer authenticates callers and decides what they may do.
type Authorizer struct {
	Users    *Users
	Projects *Projects
	Tokens   *Tokens
}

// Authenticate reads an Authorization header value. No header, or the empty
// Basic credentials that skopeo and podman send ("Basic Og=="), is anonymous.
func (a *Authorizer) Authenticate(header string) (Principal, error) {
	scheme, value, _ := strings.Cut(strings.TrimSpace(header), " ")
	value = strings.TrimSpace(value)
	switch {
	case header == "":
		return Anonymous, nil
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			return Principal{}, fmt.Errorf("%w: malformed Basic credentials", ErrBadCredentials)
		}
		name, password, ok := strings.Cut(string(raw), ":")
		if !ok {
			return Principal{}, fmt.Errorf("%w: malformed Basic credentials", ErrBadCredentials)
		}
		if name == "" && password == "" {
			return Anonymous, nil
		}
		u, err := a.Users.Verify(name, password)
		if err != nil {
			return Principal{}, err
		}
		return Principal{Name: u.Name, Role: u.Role}, nil
	case strings.EqualFold(scheme, "Bearer"):
		c, err := a.Tokens.Verify(value)
		if err != nil {
			return Principal{}, err
		}
		p := Principal{Name: c.Subject, Token: c, Anonymous: c.Subject == ""}
		if u, ok := a.Users.Get(c.Subject); ok {
			p.Role = u.Role
		}
		return p, nil
	}
	return Principal{}, fmt.Errorf("%w: unsupported authorization scheme %q", ErrBadCredentials, scheme)
}

// Allowed tells whether p may perform access.
func (a *Authorizer) Allowed(p Principal, acc Access) bool {
	if p.Token != nil {
		for _, ra := range p.Token.Access {
			if ra.Type == acc.Type && ra.Name == acc.Name &&
				(slices.Contains(ra.Actions, acc.Action) || slices.Contains(ra.Actions, ActionAll)) {
				return true
			}
		}
		return false
	}
	return a.roleAllows(p, acc)
}

// roleAllows is the policy: what a role (or anonymity) permits.
func (a *Authorizer) roleAllows(p Principal, acc Access) bool {
	switch acc.Type {
	case "repository":
		if acc.Action == ActionPull && a.Projects.IsPublic(ProjectOf(acc.Name)) {
			return true
		}
		if p.Anonymous {
			return false
		}
		// A user's rights only hold while the account exists.
		u, ok := a.Users.Get(p.Name)
		if !ok {
			return false
		}
		if u.Role != RoleAdmin && !u.InProject(ProjectOf(acc.Name)) {
			// A member of other projects only: no more than anonymous.
			return false
		}
		switch u.Role {
		case RoleAdmin, RoleDeveloper:
			return acc.Action == ActionPull || acc.Action == ActionPush || acc.Action == ActionDelete || acc.Action == ActionAll
		case RoleGuest:
			return acc.Action == ActionPull
		}
	case "registry":
		// The catalog names every repository, private ones too.
		if p.Anonymous {
			return false
		}
		_, ok := a.Users.Get(p.Name)
		return ok && acc.Name == "catalog"
	}
	return false
}

// Grant returns the subset of requested that p may have, merged per
// resource as a token's access claim wants it.
func (a *Authorizer) Grant(p Principal, requested []Access) []ResourceActions {
	var out []ResourceActions
	for _, acc := range requested {
		if !a.roleAllows(p, acc) {
			continue
		}
		i := slices.IndexFunc(out, func(ra ResourceActions) bool { return ra.Type == acc.Type && ra.Name == acc.Name })
		if i < 0 {
			out = append(out, ResourceActions{Type: acc.Type, Name: acc.Name})
			i = len(out) - 1
		}
		if !slices.Contains(out[i].Actions, acc.Action) {
			out[i].Actions = append(out[i].Actions, acc.Action)
		}
	}
	return out
}

// ErrInvalidScope marks a scope string that cannot be parsed.
var ErrInvalidScope = errors.New("invalid scope")

// ParseScope parses one scope of the token protocol,
// "repository:nvidia/gpu-operator:pull,push", into accesses. A resource
// name may contain ':' only in a port ("repository:host:5000/a:pull" is not
// valid for this registry, which has no host part).
func ParseScope(scope string) ([]Access, error) {
	i := strings.Index(scope, ":")
	j := strings.LastIndex(scope, ":")
	if i <= 0 || j <= i+1 || j == len(scope)-1 {
		return nil, fmt.Errorf("%w %q: want type:name:actions", ErrInvalidScope, scope)
	}
	typ, name, actions := scope[:i], scope[i+1:j], scope[j+1:]
	if typ == "repository(plugin)" {
		typ = "repository"
	}
	if typ != "repository" && typ != "registry" {
		return nil, fmt.Errorf("%w %q: unknown resource type %q", ErrInvalidScope, scope, typ)
	}
	var out []Access
	for _, act := range strings.Split(actions, ",") {
		if act = strings.TrimSpace(act); act != "" {
			out = append(out, Access{Type: typ, Name: name, Action: act})
		}
	}
	return out, nil
}

// SeesAll tells whether p may read every project: an admin, or a user whose
// role holds appliance-wide (a member of no particular project). Listings
// that span projects (the catalog, the import history, promotion reports)
// are whole for these callers only.
func (a *Authorizer) SeesAll(p Principal) bool {
	if p.Anonymous {
		return false
	}
	u, ok := a.Users.Get(p.Name)
	return ok && (u.Role == RoleAdmin || u.Wide())
}

// MayPull tells whether p may pull from repository repo: what the
// JSON API shows of a repository follows this.
func (a *Authorizer) MayPull(p Principal, repo string) bool {
	return a.roleAllows(p, Access{Type: "repository", Name: repo, Action: ActionPull})
}

// IsAdmin tells whether p may manage the appliance through its API.
func (a *Authorizer) IsAdmin(p Principal) bool {
	if p.Anonymous || p.Token != nil {
		return false
	}
	u, ok := a.Users.Get(p.Name)
	return ok && u.Role == RoleAdmin
}

// HasPassword tells whether an Authorization header value offers a name
// and password (Basic credentials other than the empty ones): what a
// login limiter counts.
func HasPassword(header string) bool {
	scheme, value, _ := strings.Cut(strings.TrimSpace(header), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
	return err != nil || string(raw) != ":"
}
