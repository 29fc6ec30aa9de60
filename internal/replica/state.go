// Package replica carries, from the one writer of a bucket to its
// read-only replicas, the state that decides who may pull what: the
// projects and their visibility, the users with their password hashes,
// roles and projects, the token keys, and the writer's mode
// (docs/architecture.md, "Writer and read-only replicas").
//
// The writer's Publisher writes the whole state as one small versioned
// JSON object (state-<version>.json) and then the pointer object
// current, which names that version and its SHA-256: a reader never
// sees half a state, and a replica that read a pointer finds its object
// (the two versions before it are kept). A replica's Follower reads
// current every poll interval and, when it names a new version, the
// object, checks its sum and hands it to Apply; when the store is away
// it keeps the last good state and says so in its Status. It knows
// nothing of HTTP or of the object store's API: Objects is the small
// interface it needs, which the registry provides.
package replica

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/appliance-dev/appliance/internal/auth"
)

// CurrentObject is the pointer object's name.
const CurrentObject = "current"

// Format is the version of the state's format; a replica refuses another.
const Format = 1

// State is what a writer publishes.
type State struct {
	Format    int       `json:"format"`
	Version   uint64    `json:"version"`
	Published time.Time `json:"published"`
	// Projects are the writer's declared projects: those of its
	// configuration file (source "config") and those set through its API
	// (source "api"). Any other project is public.
	Projects []auth.Project `json:"projects"`
	// Users are the writer's accounts with their bcrypt hashes, so that a
	// replica checks passwords itself.
	Users []auth.StoredUser `json:"users"`
	// TokenKeys let a token issued on any replica, or by the writer,
	// verify on every replica.
	TokenKeys TokenKeys `json:"token_keys"`
	// Mode is the writer's lifecycle mode and read-only switch.
	Mode Mode `json:"mode"`
}

// TokenKeys are the token keys of a bucket's appliances. A replica
// signs its tokens with Replica and trusts Writer's too. The writer
// trusts only its own key: a replica's token, which anyone able to read
// the bucket could forge, never grants a write.
type TokenKeys struct {
	// Writer is the public half of the writer's token key (PKIX DER).
	Writer []byte `json:"writer"`
	// Replica is the key every replica signs its tokens with (PKCS #8 DER).
	Replica []byte `json:"replica"`
}

// Mode is the writer's mode, as its status reports it.
type Mode struct {
	Lifecycle string `json:"lifecycle"`
	ReadOnly  bool   `json:"read_only"`
	Reason    string `json:"reason,omitempty"`
}

// pointer is the content of the current object.
type pointer struct {
	Version uint64 `json:"version"`
	Object  string `json:"object"`
	SHA256  string `json:"sha256"`
	// Content is the SHA-256 of the state without its version and time:
	// a restarted writer publishes only what changed.
	Content string `json:"content"`
}

func objectName(version uint64) string { return fmt.Sprintf("state-%020d.json", version) }

// ErrBadState marks a published state that cannot be used; the replica
// keeps the last good one.
var ErrBadState = errors.New("bad published state")

// Keys builds TokenKeys from the writer's token key and the replicas'.
func Keys(writer, replica *ecdsa.PrivateKey) (TokenKeys, error) {
	pub, err := x509.MarshalPKIXPublicKey(&writer.PublicKey)
	if err != nil {
		return TokenKeys{}, fmt.Errorf("token keys: %w", err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(replica)
	if err != nil {
		return TokenKeys{}, fmt.Errorf("token keys: %w", err)
	}
	return TokenKeys{Writer: pub, Replica: priv}, nil
}

// parse reads the keys back.
func (k TokenKeys) parse() (writer *ecdsa.PublicKey, replica *ecdsa.PrivateKey, err error) {
	pub, err := x509.ParsePKIXPublicKey(k.Writer)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the writer's token key: %w", ErrBadState, err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(k.Replica)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the replicas' token key: %w", ErrBadState, err)
	}
	w, ok1 := pub.(*ecdsa.PublicKey)
	r, ok2 := priv.(*ecdsa.PrivateKey)
	if !ok1 || !ok2 {
		return nil, nil, fmt.Errorf("%w: the token keys are not ECDSA keys", ErrBadState)
	}
	return w, r, nil
}

// contentSum is the SHA-256 of s without its version and time.
func contentSum(s State) (string, error) {
	s.Version, s.Published = 0, time.Time{}
	data, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// Target is what a replica's state goes into: its own users, projects
// and tokens, which answer every pull and token request.
type Target struct {
	Users    *auth.Users
	Projects *auth.Projects
	Tokens   *auth.Tokens
}

// Apply checks every part of s, then puts it into t: the users, the
// projects and the token keys. A part that fails leaves the target as it
// was for that part and every later one.
func (t Target) Apply(s State) error {
	if s.Format != Format {
		return fmt.Errorf("%w: format %d, this appliance reads %d (upgrade the replicas with the writer)", ErrBadState, s.Format, Format)
	}
	writer, replica, err := s.TokenKeys.parse()
	if err != nil {
		return err
	}
	if err := t.Users.Replace(s.Users); err != nil {
		return fmt.Errorf("%w: %w", ErrBadState, err)
	}
	if err := t.Projects.Replace(s.Projects); err != nil {
		return fmt.Errorf("%w: %w", ErrBadState, err)
	}
	if err := t.Tokens.Rekey(replica, writer); err != nil {
		return fmt.Errorf("%w: %w", ErrBadState, err)
	}
	return nil
}
