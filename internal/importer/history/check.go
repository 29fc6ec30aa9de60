package history

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Problem is one record of the import history that is not sound.
type Problem struct {
	// Kind: "unreadable-record", "invalid-record" or "left-running".
	Kind   string `json:"kind"`
	File   string `json:"file"`
	ID     string `json:"id,omitempty"`
	Detail string `json:"detail"`
}

// Report is what Check read and found.
type Report struct {
	Records  int       `json:"records"`
	Problems []Problem `json:"problems"`
}

// Check reads every record of the history: each must parse, carry an id
// and a known outcome, and none may be left "running" unless this
// process is running that import (Open marks those of a process
// that died "interrupted"). It changes nothing, but first writes the
// records a full disk kept from their files, if there is room now.
func (h *History) Check() (Report, error) {
	rep := Report{Problems: []Problem{}}
	h.mu.Lock()
	h.retryLocked()
	h.mu.Unlock()
	ents, err := os.ReadDir(h.records.Dir)
	if err != nil {
		return rep, fmt.Errorf("check import history: %w", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		rep.Records++
		fail := func(kind, id, format string, args ...any) {
			rep.Problems = append(rep.Problems, Problem{Kind: kind, File: e.Name(), ID: id, Detail: fmt.Sprintf(format, args...)})
		}
		data, err := os.ReadFile(filepath.Join(h.records.Dir, e.Name()))
		if err != nil {
			fail("unreadable-record", "", "cannot be read: %v", err)
			continue
		}
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			fail("invalid-record", "", "does not parse: %v", err)
			continue
		}
		switch {
		case r.ID == "":
			fail("invalid-record", "", "the record has no id")
		case !strings.HasSuffix(e.Name(), "-"+r.ID+".json"):
			fail("invalid-record", r.ID, "the file's name does not end in the record's id")
		}
		switch r.Outcome {
		case OutcomeSucceeded, OutcomeFailed, OutcomeInterrupted:
		case OutcomeRunning:
			h.mu.Lock()
			live := h.running[r.ID]
			u, unsaved := h.unsaved[r.ID]
			h.mu.Unlock()
			switch {
			case unsaved:
				fail("left-running", r.ID, "left %q: the import %s, but its record could not be written: %v", r.Outcome, u.rec.Outcome, u.err)
			case !live:
				fail("left-running", r.ID, "left %q, but no such import is running (started %s)", r.Outcome, r.Started.Format("2006-01-02 15:04:05Z07:00"))
			}
		default:
			fail("invalid-record", r.ID, "unknown outcome %q", r.Outcome)
		}
	}
	return rep, nil
}
