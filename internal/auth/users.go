// Package auth decides who may do what. It keeps the user store (bcrypt
// hashes in one JSON file, written atomically), project visibility (public
// projects allow anonymous pull), and issues and verifies the bearer tokens of
// the Docker token protocol that registry clients use. It knows nothing of
// HTTP routing or of the registry implementation.
package auth

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/fsutil"
)

// Role is what a user may do.
type Role string

// Roles, from most to least powerful.
const (
	// RoleAdmin may push, pull and delete everywhere and manage users,
	// projects and the appliance.
	RoleAdmin Role = "admin"
	// RoleDeveloper may push, pull and delete in every project, or in
	// the user's projects when the user is a member of some (User.Projects).
	RoleDeveloper Role = "developer"
	// RoleGuest may pull from every project, private ones included, or
	// from the user's projects when the user is a member of some.
	RoleGuest Role = "guest"
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleDeveloper, RoleGuest:
		return r, nil
	}
	return "", fmt.Errorf("%w: %q (want admin, developer or guest)", ErrInvalidRole, s)
}

// Errors callers test with errors.Is.
var (
	ErrUserExists      = errors.New("user already exists")
	ErrUserNotFound    = errors.New("no such user")
	ErrBadCredentials  = errors.New("invalid username or password")
	ErrInvalidUsername = errors.New("invalid username")
	ErrWeakPassword    = errors.New("password too weak")
	ErrInvalidRole     = errors.New("invalid role")
	ErrLastAdmin       = errors.New("cannot remove or demote the last admin")
)

// UsersFile is the user store's file name inside the data directory.
const UsersFile = "users.json"

// InitialPasswordFile holds the first admin password, written once.
const InitialPasswordFile = "initial-admin-password"

// MinPasswordLength is the shortest password accepted.
const MinPasswordLength = 12

var usernameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// User is one account, as listed (never with its hash).
type User struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Projects, when set, are the only projects the role holds in: the
	// user is a member of these (as in Harbor) and elsewhere may do no
	// more than an anonymous caller. Empty: the role holds appliance-wide.
	// An admin is always appliance-wide.
	Projects []string  `json:"projects,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
}

// Wide tells whether the user's role holds in every project.
func (u User) Wide() bool { return len(u.Projects) == 0 }

// InProject tells whether the user's role holds in project.
func (u User) InProject(project string) bool {
	return u.Wide() || slices.Contains(u.Projects, project)
}

// checkAccess validates a role with its projects and returns the
// projects sorted, without duplicates.
func checkAccess(role Role, projects []string) ([]string, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return nil, err
	}
	if len(projects) == 0 {
		return nil, nil
	}
	if role == RoleAdmin {
		return nil, fmt.Errorf("%w: an admin holds every project; projects are for developers and guests", ErrInvalidRole)
	}
	out := slices.Clone(projects)
	for _, p := range out {
		if !config.ValidProjectName(p) {
			return nil, fmt.Errorf("%w: %q is not a project name (lower-case letters, digits, '.', '_' or '-')", ErrInvalidProject, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// StoredUser is one account with its bcrypt hash, as the store keeps it
// and a writer publishes it to its read-only replicas.
type StoredUser struct {
	User
	Hash string `json:"hash"`
}

type usersFile struct {
	Users []StoredUser `json:"users"`
}

// Users is the bcrypt user store.
type Users struct {
	path string
	cost int
	now  func() time.Time

	mu    sync.RWMutex
	users map[string]StoredUser
	// verified caches successful bcrypt checks: key is sha256(name, password,
	// hash), so a password change or removal invalidates it. bcrypt is slow
	// on purpose; Basic auth on every blob request must not pay it each time.
	verified map[[32]byte]time.Time
}

// UsersOption configures a user store.
type UsersOption func(*Users)

// WithBcryptCost sets the bcrypt cost (tests use bcrypt.MinCost).
func WithBcryptCost(cost int) UsersOption { return func(u *Users) { u.cost = cost } }

// OpenUsers loads the store at path, creating an empty one if it is missing.
func OpenUsers(path string, opts ...UsersOption) (*Users, error) {
	u := &Users{path: path, cost: bcrypt.DefaultCost, now: time.Now, users: map[string]StoredUser{}, verified: map[[32]byte]time.Time{}}
	for _, o := range opts {
		o(u)
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return u, nil
	case err != nil:
		return nil, fmt.Errorf("open user store: %w", err)
	}
	var f usersFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("open user store %s: corrupt: %w", path, err)
	}
	for _, su := range f.Users {
		if _, err := bcrypt.Cost([]byte(su.Hash)); err != nil {
			return nil, fmt.Errorf("open user store %s: user %q has an invalid hash: %w", path, su.Name, err)
		}
		u.users[su.Name] = su
	}
	return u, nil
}

func (u *Users) saveLocked() error {
	f := usersFile{}
	for _, su := range u.users {
		f.Users = append(f.Users, su)
	}
	slices.SortFunc(f.Users, func(a, b StoredUser) int { return cmp.Compare(a.Name, b.Name) })
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("save user store: %w", err)
	}
	return fsutil.WriteFileAtomic(u.path, data, 0o600)
}

func checkPassword(p string) error {
	if len(p) < MinPasswordLength {
		return fmt.Errorf("%w: at least %d characters are required", ErrWeakPassword, MinPasswordLength)
	}
	if len(p) > 72 {
		return fmt.Errorf("%w: at most 72 bytes are allowed (bcrypt)", ErrWeakPassword)
	}
	return nil
}

// Add creates a user with a role, appliance-wide or, given projects,
// in those projects only.
func (u *Users) Add(_ context.Context, name, password string, role Role, projects ...string) error {
	if !usernameRE.MatchString(name) {
		return fmt.Errorf("add user %q: %w: use lower-case letters, digits, '.', '_' or '-' (at most 64)", name, ErrInvalidUsername)
	}
	projects, err := checkAccess(role, projects)
	if err != nil {
		return fmt.Errorf("add user %q: %w", name, err)
	}
	if err := checkPassword(password); err != nil {
		return fmt.Errorf("add user %q: %w", name, err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), u.cost)
	if err != nil {
		return fmt.Errorf("add user %q: %w", name, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.users[name]; ok {
		return fmt.Errorf("add user %q: %w", name, ErrUserExists)
	}
	now := u.now().UTC()
	u.users[name] = StoredUser{User: User{Name: name, Role: role, Projects: projects, Created: now, Updated: now}, Hash: string(hash)}
	if err := u.saveLocked(); err != nil {
		delete(u.users, name)
		return fmt.Errorf("add user %q: %w", name, err)
	}
	return nil
}

// SetPassword changes a user's password.
func (u *Users) SetPassword(_ context.Context, name, password string) error {
	if err := checkPassword(password); err != nil {
		return fmt.Errorf("set password of %q: %w", name, err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), u.cost)
	if err != nil {
		return fmt.Errorf("set password of %q: %w", name, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	old, ok := u.users[name]
	if !ok {
		return fmt.Errorf("set password of %q: %w", name, ErrUserNotFound)
	}
	nu := old
	nu.Hash, nu.Updated = string(hash), u.now().UTC()
	u.users[name] = nu
	if err := u.saveLocked(); err != nil {
		u.users[name] = old
		return fmt.Errorf("set password of %q: %w", name, err)
	}
	return nil
}

// SetRole changes a user's role, keeping its projects; the last admin
// cannot be demoted.
func (u *Users) SetRole(ctx context.Context, name string, role Role) error {
	return u.setAccess(ctx, "set role of", name, &role, nil)
}

// SetAccess changes a user's role and projects together (nil projects: the
// role holds appliance-wide); the last admin cannot be demoted.
func (u *Users) SetAccess(ctx context.Context, name string, role Role, projects []string) error {
	if projects == nil {
		projects = []string{}
	}
	return u.setAccess(ctx, "set access of", name, &role, &projects)
}

// setAccess changes what is given: a nil role or projects keeps the user's.
func (u *Users) setAccess(_ context.Context, op, name string, role *Role, projects *[]string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	old, ok := u.users[name]
	if !ok {
		return fmt.Errorf("%s %q: %w", op, name, ErrUserNotFound)
	}
	nu := old
	if role != nil {
		nu.Role = *role
	}
	if projects != nil {
		nu.Projects = *projects
	}
	checked, err := checkAccess(nu.Role, nu.Projects)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, name, err)
	}
	nu.Projects = checked
	if old.Role == RoleAdmin && nu.Role != RoleAdmin && u.adminsLocked() == 1 {
		return fmt.Errorf("%s %q: %w", op, name, ErrLastAdmin)
	}
	nu.Updated = u.now().UTC()
	u.users[name] = nu
	if err := u.saveLocked(); err != nil {
		u.users[name] = old
		return fmt.Errorf("%s %q: %w", op, name, err)
	}
	return nil
}

func (u *Users) adminsLocked() int {
	n := 0
	for _, su := range u.users {
		if su.Role == RoleAdmin {
			n++
		}
	}
	return n
}

// Remove deletes a user; the last admin cannot be removed.
func (u *Users) Remove(_ context.Context, name string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	old, ok := u.users[name]
	if !ok {
		return fmt.Errorf("remove user %q: %w", name, ErrUserNotFound)
	}
	if old.Role == RoleAdmin && u.adminsLocked() == 1 {
		return fmt.Errorf("remove user %q: %w", name, ErrLastAdmin)
	}
	delete(u.users, name)
	if err := u.saveLocked(); err != nil {
		u.users[name] = old
		return fmt.Errorf("remove user %q: %w", name, err)
	}
	return nil
}

// List returns all users sorted by name.
func (u *Users) List(_ context.Context) []User {
	u.mu.RLock()
	defer u.mu.RUnlock()
	out := make([]User, 0, len(u.users))
	for _, su := range u.users {
		out = append(out, su.User)
	}
	slices.SortFunc(out, func(a, b User) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Len returns the number of users.
func (u *Users) Len() int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return len(u.users)
}

const verifiedTTL = 5 * time.Minute

// Verify checks a name and password and returns the user.
func (u *Users) Verify(name, password string) (User, error) {
	u.mu.RLock()
	su, ok := u.users[name]
	u.mu.RUnlock()
	if !ok {
		// Spend comparable time so that unknown names are not told apart.
		_ = bcrypt.CompareHashAndPassword([]byte("$2a$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4ZpBe0KXbwNB9sQTGdT5oXRvG"), []byte(password))
		return User{}, ErrBadCredentials
	}
	key := sha256.Sum256([]byte(name + "\x00" + password + "\x00" + su.Hash))
	now := u.now()
	u.mu.RLock()
	at, hit := u.verified[key]
	u.mu.RUnlock()
	if hit && now.Sub(at) < verifiedTTL {
		return su.User, nil
	}
	if err := bcrypt.CompareHashAndPassword([]byte(su.Hash), []byte(password)); err != nil {
		return User{}, ErrBadCredentials
	}
	u.mu.Lock()
	if len(u.verified) > 4096 {
		clear(u.verified)
	}
	u.verified[key] = now
	u.mu.Unlock()
	return su.User, nil
}

// Export returns every account with its hash, sorted by name.
func (u *Users) Export() []StoredUser {
	u.mu.RLock()
	defer u.mu.RUnlock()
	out := make([]StoredUser, 0, len(u.users))
	for _, su := range u.users {
		out = append(out, su)
	}
	slices.SortFunc(out, func(a, b StoredUser) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Replace makes list the accounts, in memory only: a read-only replica
// follows its writer's accounts so. Every name, role and hash is checked
// first; on an error nothing changes.
func (u *Users) Replace(list []StoredUser) error {
	next := make(map[string]StoredUser, len(list))
	for _, su := range list {
		if !usernameRE.MatchString(su.Name) {
			return fmt.Errorf("replace users: %w: %q", ErrInvalidUsername, su.Name)
		}
		if _, err := checkAccess(su.Role, su.Projects); err != nil {
			return fmt.Errorf("replace users: %q: %w", su.Name, err)
		}
		if _, err := bcrypt.Cost([]byte(su.Hash)); err != nil {
			return fmt.Errorf("replace users: %q has an invalid hash: %w", su.Name, err)
		}
		next[su.Name] = su
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.users = next
	clear(u.verified)
	return nil
}

// Get returns one user.
func (u *Users) Get(name string) (User, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	su, ok := u.users[name]
	return su.User, ok
}

// EnsureInitialAdmin creates the "admin" account with a random password when
// the store is empty, writes the password once to passwordPath (mode 0600)
// and returns it. When users already exist it returns "" and does nothing.
func (u *Users) EnsureInitialAdmin(ctx context.Context, passwordPath string) (string, error) {
	if u.Len() > 0 {
		return "", nil
	}
	password, err := RandomPassword()
	if err != nil {
		return "", fmt.Errorf("create initial admin: %w", err)
	}
	// The password file first: if the process dies before the store is
	// written, the next start creates a new password and overwrites it.
	if err := fsutil.WriteFileAtomic(passwordPath, []byte(password+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("create initial admin: %w", err)
	}
	if err := u.Add(ctx, "admin", password, RoleAdmin); err != nil {
		return "", fmt.Errorf("create initial admin: %w", err)
	}
	return password, nil
}

// RandomPassword returns 24 characters from an unambiguous alphabet (~137 bits).
func RandomPassword() (string, error) {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	out := make([]byte, 0, 24)
	buf := make([]byte, 64)
	for len(out) < cap(out) {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, c := range buf {
			// Rejection sampling keeps every character equally likely.
			if int(c) < 256-256%len(alphabet) && len(out) < cap(out) {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}
