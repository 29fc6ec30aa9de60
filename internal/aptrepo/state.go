package aptrepo

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// Actions recorded in a Publish.
const (
	ActionAdd      = "add"
	ActionRemove   = "remove"
	ActionRollback = "rollback"
)

// maxHistory bounds the records kept per distribution; the oldest go first
// (their snapshots are long gone by then: KeepSnapshots is far smaller).
const maxHistory = 1000

// maxChanges bounds the change lines kept in one record.
const maxChanges = 50

// Publish is one published state of a distribution: a new set of aptly
// snapshots (one per component), published, signed and switched in.
type Publish struct {
	ID     string    `json:"id"`
	Repo   string    `json:"repo"`
	Dist   string    `json:"dist"`
	Time   time.Time `json:"time"`
	By     string    `json:"by,omitempty"`
	Action string    `json:"action"` // ActionAdd, ActionRemove, ActionRollback
	// RollbackTo is the publish whose package set a rollback restored.
	RollbackTo string `json:"rollback_to,omitempty"`
	// Changes lists what the publish changed against the one before:
	// "+name_version_arch (component)" and "-…"; at most 50 lines, the last
	// one then says how many more there were.
	Changes []string `json:"changes,omitempty"`
	// Components maps each component to its package count.
	Components    map[string]int `json:"components"`
	Architectures []string       `json:"architectures"`
	Packages      int            `json:"packages"`
	// Snapshots maps each component to its aptly snapshot's name.
	Snapshots map[string]string `json:"snapshots"`
	// Kept is true while the snapshots and the published tree are still on
	// disk (the KeepSnapshots newest publishes): Rollback can return to it.
	Kept bool `json:"kept"`
	// Current is true for the publish clients are served.
	Current bool `json:"current"`
}

// clone returns a deep copy.
func (p Publish) clone() Publish {
	p.Changes = slices.Clone(p.Changes)
	p.Architectures = slices.Clone(p.Architectures)
	p.Snapshots = maps.Clone(p.Snapshots)
	p.Components = maps.Clone(p.Components)
	return p
}

// distState is a distribution's history; the last record is the current
// publish.
type distState struct {
	Current string    `json:"current"`
	History []Publish `json:"history"` // oldest first
}

func (d *distState) find(id string) (int, bool) {
	for i := range d.History {
		if d.History[i].ID == id {
			return i, true
		}
	}
	return 0, false
}

func (d *distState) current() (Publish, bool) {
	if i, ok := d.find(d.Current); ok {
		p := d.History[i].clone()
		p.Current = true
		return p, true
	}
	return Publish{}, false
}

// state is everything Repos keeps beside aptly's database: which publish
// is current for each distribution and the history of publishes.
type state struct {
	Version int                              `json:"version"`
	Repos   map[string]map[string]*distState `json:"repos"` // repository → distribution → state
}

const stateFile = "state.json"

func loadState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &state{Version: 1, Repos: map[string]map[string]*distState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("state %s is corrupt: %w", path, err)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("state %s has unknown version %d", path, st.Version)
	}
	if st.Repos == nil {
		st.Repos = map[string]map[string]*distState{}
	}
	return &st, nil
}

func (st *state) save(path string) error {
	data, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, data, 0o640); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

func (st *state) dist(repo, dist string) *distState {
	return st.Repos[repo][dist]
}

// clone returns a deep copy, so that a failed change can be thrown away.
func (st *state) clone() *state {
	c := &state{Version: st.Version, Repos: make(map[string]map[string]*distState, len(st.Repos))}
	for repo, dists := range st.Repos {
		c.Repos[repo] = make(map[string]*distState, len(dists))
		for name, d := range dists {
			h := make([]Publish, len(d.History))
			for i, p := range d.History {
				h[i] = p.clone()
			}
			c.Repos[repo][name] = &distState{Current: d.Current, History: h}
		}
	}
	return c
}

// newPublishID returns a sortable, unique publish id.
func newPublishID(now time.Time) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}
