package promote

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// States of a promotion.
const (
	StateRunning     = "running"
	StatePlanned     = "planned"     // a dry run: checked and planned, nothing pushed
	StateRefused     = "refused"     // the checks before the first byte found problems
	StateSucceeded   = "succeeded"   // pushed, and parity proven
	StateFailed      = "failed"      // stopped by an error, or parity not reached
	StateInterrupted = "interrupted" // the appliance stopped during it
	StateCanceled    = "canceled"
)

// Promotion is one run of `appliance promote`, as kept in the data
// directory and shown through the API.
type Promotion struct {
	ID            string    `json:"id"`
	Target        string    `json:"target"`
	TargetKind    string    `json:"target_kind,omitempty"` // "harbor" or "registry"
	TargetVersion string    `json:"target_version,omitempty"`
	TargetUser    string    `json:"target_user,omitempty"`
	By            string    `json:"by"`
	Projects      []string  `json:"projects"`
	DryRun        bool      `json:"dry_run,omitempty"`
	Parallel      int       `json:"parallel"`
	Started       time.Time `json:"started"`
	Finished      time.Time `json:"finished,omitzero"`
	State         string    `json:"state"`
	Error         string    `json:"error,omitempty"`
	// Problems are what the checks before the first byte found, all of them.
	Problems []string `json:"problems,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	Plan     *Plan    `json:"plan,omitempty"`
	Progress Progress `json:"progress"`
	Parity   *Parity  `json:"parity,omitempty"`
}

// Plan is what a promotion will do (or, for a dry run, would do).
type Plan struct {
	Projects         []ProjectPlan `json:"projects"`
	Repositories     []RepoPlan    `json:"repositories"`
	BlobsToPush      int           `json:"blobs_to_push"`
	BytesToPush      int64         `json:"bytes_to_push"`
	BlobsPresent     int           `json:"blobs_present"`
	BytesPresent     int64         `json:"bytes_present"`
	ManifestsToPush  int           `json:"manifests_to_push"`
	ManifestsPresent int           `json:"manifests_present"`
	TagsToSet        int           `json:"tags_to_set"`
	TagsSame         int           `json:"tags_same"`
	Referrers        int           `json:"referrers"`
}

// ProjectPlan is what happens to one project on the target.
type ProjectPlan struct {
	Name string `json:"name"`
	// Public is the appliance's policy for the project.
	Public bool `json:"public"`
	// Action: "create" (Harbor, missing), "exists", or "none" (a plain
	// registry has no projects).
	Action string `json:"action"`
	// TargetPublic is the visibility the project has on Harbor, when it exists.
	TargetPublic *bool `json:"target_public,omitempty"`
}

// RepoPlan is what happens to one repository.
type RepoPlan struct {
	Name             string    `json:"name"`
	Tags             []TagPlan `json:"tags"`
	BlobsToPush      int       `json:"blobs_to_push"`
	BytesToPush      int64     `json:"bytes_to_push"`
	BlobsPresent     int       `json:"blobs_present"`
	BytesPresent     int64     `json:"bytes_present"`
	ManifestsToPush  int       `json:"manifests_to_push"`
	ManifestsPresent int       `json:"manifests_present"`
	Referrers        int       `json:"referrers"`
	// NotPromoted counts manifests no tag reaches and that refer to
	// nothing promoted (earlier targets of moved tags, for instance).
	NotPromoted int `json:"not_promoted,omitempty"`
}

// TagPlan is one tag: "create", "move" (it names another digest on the
// target) or "same".
type TagPlan struct {
	Tag          string `json:"tag"`
	Digest       string `json:"digest"`
	TargetDigest string `json:"target_digest,omitempty"`
	Action       string `json:"action"`
}

// Progress is how far a promotion got.
type Progress struct {
	Phase          string     `json:"phase"`
	BlobsTotal     int        `json:"blobs_total"`
	BlobsDone      int        `json:"blobs_done"`
	BlobsMounted   int        `json:"blobs_mounted"`
	BytesTotal     int64      `json:"bytes_total"`
	BytesDone      int64      `json:"bytes_done"`
	ManifestsTotal int        `json:"manifests_total"`
	ManifestsDone  int        `json:"manifests_done"`
	TagsTotal      int        `json:"tags_total"`
	TagsDone       int        `json:"tags_done"`
	Active         []Transfer `json:"active,omitempty"`
}

// Transfer is one blob on its way.
type Transfer struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	Size       int64  `json:"size"`
	Done       int64  `json:"done"`
}

// Phases of a promotion.
const (
	PhaseChecking     = "checking"
	PhasePlanning     = "planning"
	PhaseProjects     = "creating projects"
	PhaseBlobs        = "pushing blobs"
	PhaseManifests    = "pushing manifests"
	PhaseTags         = "tagging"
	PhaseReferrers    = "indexing referrers"
	PhaseParity       = "verifying parity"
	PhaseDone         = "done"
	promotionsDir     = "promotions"
	maxPromotionsKept = 200
)

// promotionStore keeps promotion records, one JSON file each.
type promotionStore struct {
	dir string
	mu  sync.Mutex
}

func openPromotionStore(dataDir string) (*promotionStore, error) {
	dir := filepath.Join(dataDir, promotionsDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open promotions: %w", err)
	}
	s := &promotionStore{dir: dir}
	names, err := s.namesLocked()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		r, err := s.read(n)
		if err != nil {
			return nil, err
		}
		if r.State != StateRunning {
			continue
		}
		r.State = StateInterrupted
		r.Error = "the appliance stopped during this promotion; run it again: it pushes only what is missing"
		if r.Finished.IsZero() {
			r.Finished = time.Now().UTC()
		}
		r.Progress.Active = nil
		data, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("open promotions: %w", err)
		}
		// In place: the record keeps its file.
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, n), data, 0o640); err != nil {
			return nil, fmt.Errorf("open promotions: %w", err)
		}
	}
	return s, nil
}

func (s *promotionStore) read(name string) (Promotion, error) {
	var p Promotion
	data, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return p, fmt.Errorf("read promotion: %w", err)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("read promotion: %s is corrupt: %w", name, err)
	}
	return p, nil
}

func (s *promotionStore) path(p *Promotion) string {
	return filepath.Join(s.dir, p.Started.Format("20060102T150405Z")+"-"+p.ID+".json")
}

func (s *promotionStore) save(p *Promotion) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("save promotion: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := fsutil.WriteFileAtomic(s.path(p), data, 0o640); err != nil {
		return fmt.Errorf("save promotion: %w", err)
	}
	return s.pruneLocked()
}

// pruneLocked keeps the newest records only.
func (s *promotionStore) pruneLocked() error {
	names, err := s.namesLocked()
	if err != nil || len(names) <= maxPromotionsKept {
		return err
	}
	for _, n := range names[:len(names)-maxPromotionsKept] {
		if err := os.Remove(filepath.Join(s.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("prune promotions: %w", err)
		}
	}
	return nil
}

func (s *promotionStore) namesLocked() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list promotions: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// list returns every record, newest first.
func (s *promotionStore) list() ([]Promotion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.namesLocked()
	if err != nil {
		return nil, err
	}
	out := make([]Promotion, 0, len(names))
	for _, n := range names {
		p, err := s.read(n)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Promotion) int { return cmp.Or(b.Started.Compare(a.Started), cmp.Compare(b.ID, a.ID)) })
	return out, nil
}
