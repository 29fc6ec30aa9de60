package history_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/importer/history"
)

// TestHistory: records are listed newest first; a record a dead process
// left running is marked interrupted when the history is opened again;
// Check names a corrupt record, a record without an id and an unknown
// outcome, and changes nothing.
func TestHistory(t *testing.T) {
	dir := t.TempDir()
	h, err := history.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	done := &history.Record{ID: "a1", Source: "one.tar", Started: t0, Outcome: history.OutcomeSucceeded}
	left := &history.Record{ID: "b2", Source: "two.tar", Started: t0.Add(time.Minute), Outcome: history.OutcomeRunning}
	for _, r := range []*history.Record{done, left} {
		if err := h.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := h.Check(); err != nil || rep.Records != 2 || len(rep.Problems) != 0 {
		t.Fatalf("Check while b2 runs in this process = %+v, %v", rep, err)
	}

	// A new process: b2's import died with the old one.
	h, err = history.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := h.List()
	if err != nil || len(recs) != 2 || recs[0].ID != "b2" || recs[1].ID != "a1" {
		t.Fatalf("List = %+v, %v", recs, err)
	}
	if recs[0].Outcome != history.OutcomeInterrupted || recs[0].Error == "" {
		t.Fatalf("the dead import's record = %+v, want interrupted with a reason", recs[0])
	}
	if r, ok, err := h.Get("a1"); err != nil || !ok || r.Source != "one.tar" {
		t.Fatalf("Get(a1) = %+v %v %v", r, ok, err)
	}
	if _, ok, err := h.Get("zz"); err != nil || ok {
		t.Fatalf("Get(zz) = %v %v, want not found", ok, err)
	}

	bad := map[string]string{
		"20261202T090000Z-c3.json": "{not json",
		"20261202T090100Z-d4.json": `{"outcome":"succeeded"}`,
		"20261202T090200Z-e5.json": `{"id":"e5","outcome":"maybe"}`,
	}
	for name, body := range bad {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := h.Check()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, p := range rep.Problems {
		kinds[p.File] = p.Kind
	}
	if rep.Records != 5 || len(rep.Problems) != 3 || kinds["20261202T090000Z-c3.json"] != "invalid-record" ||
		kinds["20261202T090100Z-d4.json"] != "invalid-record" || kinds["20261202T090200Z-e5.json"] != "invalid-record" {
		t.Fatalf("Check = %+v", rep)
	}
	if _, err := h.List(); err == nil {
		t.Fatal("List read a corrupt record without an error")
	}
	for name, body := range bad {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != body {
			t.Fatalf("Check changed %s", name)
		}
	}
}
