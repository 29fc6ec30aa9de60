package promote

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	records fsutil.RecordDir
	mu      sync.Mutex
}

func openPromotionStore(dataDir string) (*promotionStore, error) {
	dir := filepath.Join(dataDir, promotionsDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open promotions: %w", err)
	}
	s := &promotionStore{records: fsutil.RecordDir{Dir: dir, What: "promotion"}}
	names, err := s.records.Names()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		var r Promotion
		if err := s.records.Read(n, &r); err != nil {
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
		// In place: the record keeps its file.
		if err := s.records.Write(n, r); err != nil {
			return nil, fmt.Errorf("open promotions: %w", err)
		}
	}
	return s, nil
}

func (s *promotionStore) save(p *Promotion) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.records.Write(fsutil.RecordName(p.Started, p.ID), p); err != nil {
		return err
	}
	return s.pruneLocked()
}

// pruneLocked keeps the newest records only.
func (s *promotionStore) pruneLocked() error {
	names, err := s.records.Names()
	if err != nil || len(names) <= maxPromotionsKept {
		return err
	}
	for _, n := range names[:len(names)-maxPromotionsKept] {
		if err := s.records.Remove(n); err != nil {
			return err
		}
	}
	return nil
}

// list returns every record, newest first.
func (s *promotionStore) list() ([]Promotion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.records.Names()
	if err != nil {
		return nil, err
	}
	out := make([]Promotion, 0, len(names))
	for _, n := range names {
		var p Promotion
		if err := s.records.Read(n, &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Promotion) int { return cmp.Or(b.Started.Compare(a.Started), cmp.Compare(b.ID, a.ID)) })
	return out, nil
}
