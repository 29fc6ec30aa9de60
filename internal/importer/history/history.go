// Package history keeps the import history: one JSON record per import,
// written atomically, that says what came in, from whom, what it added and
// how it ended. Records an interrupted process left "running" are marked
// "interrupted" on open; a record a full disk kept from its file is held
// in memory and written again once there is room.
package history

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// Outcomes of an import.
const (
	OutcomeRunning     = "running"
	OutcomeSucceeded   = "succeeded"
	OutcomeFailed      = "failed"
	OutcomeInterrupted = "interrupted"
)

// Record is one import, as kept in the history: what came in, from whom,
// what it added, and how it ended.
type Record struct {
	ID           string    `json:"id"`
	Source       string    `json:"source"`
	SourceSHA256 string    `json:"source_sha256,omitempty"`
	SourceBytes  int64     `json:"source_bytes"`
	Format       string    `json:"format,omitempty"` // imgpkg, oci-layout, docker-save
	Compression  string    `json:"compression,omitempty"`
	User         string    `json:"user,omitempty"`
	ToRepo       string    `json:"to_repo,omitempty"`
	KeepNames    bool      `json:"keep_names,omitempty"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished,omitzero"`
	Outcome      string    `json:"outcome"`
	Error        string    `json:"error,omitempty"`
	Warnings     []string  `json:"warnings,omitempty"`

	Repositories  []string         `json:"repositories,omitempty"`
	Manifests     []ManifestRecord `json:"manifests,omitempty"`
	Tags          []TagRecord      `json:"tags,omitempty"`
	BlobsNew      int              `json:"blobs_new"`
	BlobsExisting int              `json:"blobs_existing"`
	BytesNew      int64            `json:"bytes_new"`
	BytesExisting int64            `json:"bytes_existing"`

	// Bundle is set for the appliance's own bundles: signer and inventory.
	Bundle *BundleRecord `json:"bundle,omitempty"`
}

// BundleRecord is what the history keeps of a bundle import: who signed it
// and its whole inventory.
type BundleRecord struct {
	Name        string `json:"name,omitempty"`
	Signed      bool   `json:"signed"`
	SignedBy    string `json:"signed_by,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// AllowedUnsigned records that --allow-unsigned let an unsigned bundle in.
	AllowedUnsigned bool            `json:"allowed_unsigned,omitempty"`
	Since           string          `json:"since,omitempty"`
	Files           []string        `json:"files,omitempty"`
	Packages        []string        `json:"packages,omitempty"`
	Inventory       json.RawMessage `json:"inventory"`
}

// ManifestRecord is one manifest an import stored.
type ManifestRecord struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	MediaType  string `json:"media_type"`
}

// TagRecord is one tag an import applied; Previous is the digest the tag
// named before, when it moved.
type TagRecord struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	Previous   string `json:"previous,omitempty"`
}

// History keeps import records, one JSON file each, in a folder.
type History struct {
	records fsutil.RecordDir
	mu      sync.Mutex
	running map[string]bool // ids of the imports this process is running
	// unsaved holds the final records of imports whose file could not be
	// written (a full disk), by id: the file still says "running" (or is
	// missing), so List answers these instead, and every save, List and
	// Check tries again to write them.
	unsaved map[string]unsavedRecord
}

type unsavedRecord struct {
	rec Record
	err error // of the last write
}

// Open opens (creating) the history folder. Records left "running"
// by a process that died are marked "interrupted".
func Open(dir string) (*History, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open import history: %w", err)
	}
	h := &History{records: fsutil.RecordDir{Dir: dir, What: "import record"}, running: map[string]bool{}, unsaved: map[string]unsavedRecord{}}
	recs, err := h.List()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.Outcome == OutcomeRunning {
			r.Outcome = OutcomeInterrupted
			r.Error = "the appliance stopped before this import finished; nothing of it became visible, run it again to complete it"
			if err := h.Save(&r); err != nil {
				return nil, err
			}
		}
	}
	return h, nil
}

func (h *History) name(rec *Record) string { return fsutil.RecordName(rec.Started, rec.ID) }

// Save writes rec, replacing what an earlier Save of the same record
// wrote. A record that cannot be written (a full disk) is kept in memory,
// answered by List, and written by a later Save, List or Check.
func (h *History) Save(rec *Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.retryLocked()
	if rec.Outcome == OutcomeRunning {
		h.running[rec.ID] = true
	} else {
		delete(h.running, rec.ID)
	}
	err := h.writeLocked(rec)
	if err != nil && rec.Outcome != OutcomeRunning {
		h.unsaved[rec.ID] = unsavedRecord{rec: *rec, err: err}
	}
	return err
}

func (h *History) writeLocked(rec *Record) error {
	if err := h.records.Write(h.name(rec), rec); err != nil {
		return err
	}
	delete(h.unsaved, rec.ID)
	return nil
}

// retryLocked writes the records a full disk kept from their files, once
// it has room again.
func (h *History) retryLocked() {
	for id, u := range h.unsaved {
		if err := h.writeLocked(&u.rec); err != nil {
			h.unsaved[id] = unsavedRecord{rec: u.rec, err: err}
		}
	}
}

// List returns every record, newest first.
func (h *History) List() ([]Record, error) {
	h.mu.Lock()
	h.retryLocked()
	unsaved := make(map[string]Record, len(h.unsaved))
	for id, u := range h.unsaved {
		unsaved[id] = u.rec
	}
	h.mu.Unlock()
	names, err := h.records.Names()
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, n := range names {
		var r Record
		if err := h.records.Read(n, &r); err != nil {
			return nil, err
		}
		if u, ok := unsaved[r.ID]; ok {
			r = u
			delete(unsaved, r.ID)
		}
		out = append(out, r)
	}
	for _, r := range unsaved { // not even their start was written
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int { return cmp.Or(b.Started.Compare(a.Started), cmp.Compare(b.ID, a.ID)) })
	return out, nil
}

// Get returns one record by id.
func (h *History) Get(id string) (Record, bool, error) {
	recs, err := h.List()
	if err != nil {
		return Record{}, false, err
	}
	for _, r := range recs {
		if r.ID == id {
			return r, true, nil
		}
	}
	return Record{}, false, nil
}
