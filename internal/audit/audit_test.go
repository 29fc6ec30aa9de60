package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/audit"
)

// open opens a log in a new folder; it is closed when the test ends.
func open(t *testing.T, dir string, opts ...audit.Option) *audit.Log {
	t.Helper()
	l, err := audit.Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func record(t *testing.T, l *audit.Log, n int, actor string) {
	t.Helper()
	for i := range n {
		err := l.Record(t.Context(), audit.Entry{Actor: actor, Remote: "192.0.2.7", Action: "registry.push.blob",
			Target: fmt.Sprintf("library/app@sha256:%064d", i), Outcome: audit.OK, Status: 201, Details: map[string]string{"i": fmt.Sprint(i)}})
		if err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
}

func verify(t *testing.T, l *audit.Log) audit.Report {
	t.Helper()
	rep, err := l.Verify(t.Context())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func mustOK(t *testing.T, rep audit.Report) {
	t.Helper()
	if !rep.OK || len(rep.Problems) > 0 {
		t.Fatalf("Verify found problems in an untouched log: %+v", rep.Problems)
	}
}

// lines reads a file of the log.
func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(data, []byte("\n"))[:bytes.Count(data, []byte("\n"))]
}

func write(t *testing.T, path string, ls [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(ls, nil), 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestRecordQuery(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	l := open(t, t.TempDir(), audit.WithClock(clock))
	entries := []audit.Entry{
		{Actor: "admin", Action: "user.add", Target: "dev", Outcome: audit.OK, Status: 201},
		{Actor: "dev", Action: "registry.push.blob", Target: "library/app@sha256:aa", Outcome: audit.OK},
		{Actor: "dev", Action: "registry.tag", Target: "library/app:1.0@sha256:bb", Outcome: audit.OK},
		{Action: "registry.push.blob", Target: "library/app", Outcome: audit.Refused, Status: 401, Reason: "UNAUTHORIZED"},
		{Actor: "admin", Action: "project.visibility", Target: "library", Outcome: audit.OK},
	}
	for i, e := range entries {
		e.Time = now.Add(time.Duration(i) * time.Hour).In(time.FixedZone("X", 3600))
		if err := l.Record(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Record(t.Context(), audit.Entry{Action: "x"}); err == nil {
		t.Fatal("an entry without an outcome was recorded")
	}
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want []uint64 // seqs, newest first
		more bool
	}{
		{"all, newest first", audit.Filter{}, []uint64{5, 4, 3, 2, 1}, false},
		{"limit", audit.Filter{Limit: 2}, []uint64{5, 4}, true},
		{"actor", audit.Filter{Actor: "dev"}, []uint64{3, 2}, false},
		{"anonymous", audit.Filter{Actor: audit.Anonymous}, []uint64{4}, false},
		{"action prefix", audit.Filter{Action: "registry."}, []uint64{4, 3, 2}, false},
		{"target substring", audit.Filter{Target: "app:1.0"}, []uint64{3}, false},
		{"outcome", audit.Filter{Outcome: audit.Refused}, []uint64{4}, false},
		{"since and until", audit.Filter{Since: now.Add(time.Hour), Until: now.Add(3 * time.Hour)}, []uint64{3, 2}, false},
	} {
		got, more, err := l.Query(t.Context(), tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, e := range got {
			seqs = append(seqs, e.Seq)
		}
		if fmt.Sprint(seqs) != fmt.Sprint(tc.want) || more != tc.more {
			t.Errorf("%s: seqs %v more %v, want %v more %v", tc.name, seqs, more, tc.want, tc.more)
		}
	}
	got, _, _ := l.Query(t.Context(), audit.Filter{Actor: audit.Anonymous})
	if e := got[0]; e.Time.Location() != time.UTC || e.Status != 401 || e.Reason != "UNAUTHORIZED" || len(e.Hash) != 64 || len(e.Prev) != 64 {
		t.Fatalf("entry read back = %+v", e)
	}
	mustOK(t, verify(t, l))
}

// TestRotationKeepsChain: segments are numbered, each one's first entry
// chains to the last of the one before, and the chain goes on after a
// restart.
func TestRotationKeepsChain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l := open(t, dir, audit.WithMaxSegmentBytes(2048))
	record(t, l, 40, "dev")
	rep := verify(t, l)
	mustOK(t, rep)
	if len(rep.Files) < 4 || rep.Entries != 40 || rep.LastSeq != 40 || !rep.Anchor.Genesis {
		t.Fatalf("report = %+v", rep)
	}
	for i, f := range rep.Files {
		if f.Bytes > 2048 {
			t.Fatalf("%s is %d bytes, over the limit", f.Name, f.Bytes)
		}
		if i > 0 && f.Entries > 0 && f.FirstSeq != rep.Files[i-1].LastSeq+1 {
			t.Fatalf("%s starts at seq %d after %s ended at %d", f.Name, f.FirstSeq, rep.Files[i-1].Name, rep.Files[i-1].LastSeq)
		}
	}
	if rep.Files[0].Name != "audit-000001.jsonl" || rep.Files[len(rep.Files)-1].Name != "audit.jsonl" {
		t.Fatalf("files = %+v", rep.Files)
	}
	// The first line of segment 2 names the hash of segment 1's last line.
	s1, s2 := lines(t, filepath.Join(dir, "audit-000001.jsonl")), lines(t, filepath.Join(dir, "audit-000002.jsonl"))
	last := s1[len(s1)-1]
	hash := string(last[len(last)-67 : len(last)-3])
	if !bytes.Contains(s2[0], []byte(`"prev":"`+hash+`"`)) {
		t.Fatalf("segment 2 starts with %s, not chained to %s", s2[0], hash)
	}
	head := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := open(t, dir, audit.WithMaxSegmentBytes(2048))
	if l2.Head() != head {
		t.Fatalf("reopened head %+v, want %+v", l2.Head(), head)
	}
	record(t, l2, 5, "dev")
	rep = verify(t, l2)
	mustOK(t, rep)
	if rep.LastSeq != 45 {
		t.Fatalf("after a restart the chain ends at %d, want 45", rep.LastSeq)
	}
}

// TestVerifyNamesTheBrokenLink edits the files on disk in every way the
// chain must catch, and checks that the first problem names the place.
func TestVerifyNamesTheBrokenLink(t *testing.T) {
	t.Parallel()
	// 30 entries of ~410 bytes (a fixed clock keeps their length) in
	// segments of 2300 bytes: 5 per file, so segments 1-5 hold seq 1-25
	// and audit.jsonl seq 26-30.
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, dir string)
		kind    string
		seq     uint64
		file    string
		message string
	}{
		{"an edited entry", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "audit-000002.jsonl")
			ls := lines(t, p)
			ls[2] = bytes.Replace(ls[2], []byte(`"actor":"dev"`), []byte(`"actor":"eve"`), 1)
			write(t, p, ls)
		}, audit.ProblemEdited, 8, "audit-000002.jsonl", "was changed"},
		{"an entry rewritten with a new hash", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "audit.jsonl")
			ls := lines(t, p)
			ls[1] = rehash(t, bytes.Replace(ls[1], []byte(`"actor":"dev"`), []byte(`"actor":"eve"`), 1))
			write(t, p, ls)
		}, audit.ProblemEdited, 28, "audit.jsonl", "does not chain to seq 27 before it: seq 27 was replaced"},
		{"a removed entry", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "audit-000003.jsonl")
			ls := lines(t, p)
			write(t, p, append(ls[:3:3], ls[4:]...))
		}, audit.ProblemMissing, 15, "audit-000003.jsonl", "seq 14 is missing before seq 15"},
		{"two entries swapped", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "audit-000001.jsonl")
			ls := lines(t, p)
			ls[1], ls[2] = ls[2], ls[1]
			write(t, p, ls)
		}, audit.ProblemReordered, 3, "audit-000001.jsonl", "reordered"},
		{"the current file cut short", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "audit.jsonl")
			data, _ := os.ReadFile(p)
			if err := os.WriteFile(p, data[:len(data)-100], 0o640); err != nil {
				t.Fatal(err)
			}
		}, audit.ProblemTruncated, 0, "audit.jsonl", "partial entry"},
		{"a segment's last entries removed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "audit-000002.jsonl")
			ls := lines(t, p)
			write(t, p, ls[:3])
		}, audit.ProblemMissing, 11, "audit-000003.jsonl", "seq 9–10 are missing before audit-000003.jsonl"},
		{"a middle segment deleted", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "audit-000003.jsonl")); err != nil {
				t.Fatal(err)
			}
		}, audit.ProblemMissingSegment, 0, "audit-000003.jsonl", "with seq 11–15"},
		{"the oldest segment deleted", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "audit-000001.jsonl")); err != nil {
				t.Fatal(err)
			}
		}, audit.ProblemMissingStart, 6, "audit-000002.jsonl", "no audit.prune entry"},
		{"the last entries removed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "audit.jsonl")
			write(t, p, lines(t, p)[:3])
		}, audit.ProblemTruncated, 29, "audit.jsonl", "the log ends at seq 28, but the appliance wrote up to seq 30"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			at := time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.UTC)
			l := open(t, dir, audit.WithMaxSegmentBytes(2300), audit.WithClock(func() time.Time { return at }))
			record(t, l, 30, "dev")
			rep := verify(t, l)
			mustOK(t, rep)
			if len(rep.Files) != 6 || rep.Files[5].FirstSeq != 26 {
				t.Fatalf("layout of the log changed, fix the test: %+v", rep.Files)
			}
			tc.tamper(t, dir)
			rep = verify(t, l)
			if rep.OK || len(rep.Problems) == 0 {
				t.Fatal("Verify found nothing")
			}
			p := rep.Problems[0]
			if p.Kind != tc.kind || p.Seq != tc.seq || p.File != tc.file || !strings.Contains(p.Message, tc.message) {
				t.Fatalf("first problem = %+v\nwant kind %s, seq %d, file %s, message with %q (all: %+v)", p, tc.kind, tc.seq, tc.file, tc.message, rep.Problems)
			}
		})
	}
}

// rehash recomputes a line's hash the way the log does (docs/audit.md).
func rehash(t *testing.T, line []byte) []byte {
	t.Helper()
	const suffix = len(`,"hash":"`) + 64 + len("\"}\n")
	obj := append(append([]byte{}, line[:len(line)-suffix]...), '}')
	return []byte(string(line[:len(line)-suffix]) + `,"hash":"` + sha256hex(obj) + "\"}\n")
}

// TestRestartNoticesTheEnd: after a clean stop, a log cut short (at a line
// end or mid-line) is noticed by the next start and reported by Verify; a
// partial line alone (a write a crash cut short) is removed quietly.
func TestRestartNoticesTheEnd(t *testing.T) {
	t.Parallel()
	t.Run("entries removed", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		l, err := audit.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		record(t, l, 10, "dev")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "audit.jsonl")
		write(t, p, lines(t, p)[:7])
		l2 := open(t, dir)
		rep := verify(t, l2)
		if rep.OK || rep.Problems[0].Kind != audit.ProblemRecorded || !strings.Contains(rep.Problems[0].Message, "ends at seq 7, but it held seq 10") {
			t.Fatalf("report after a restart on a cut log = %+v", rep.Problems)
		}
	})
	t.Run("a torn write", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		l, err := audit.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		record(t, l, 3, "dev")
		head := l.Head()
		// A crash: no clean stop, and half a line.
		if err := os.Remove(filepath.Join(dir, "head.json")); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(dir, "audit.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.WriteString(`{"seq":4,"time":"2026-`)
		_ = f.Close()
		l2 := open(t, dir)
		rep := verify(t, l2)
		mustOK(t, rep)
		got, _, _ := l2.Query(t.Context(), audit.Filter{Action: audit.ActionOpen})
		if len(got) != 1 || got[0].Seq != head.Seq+1 || !strings.Contains(got[0].Reason, "partial entry") {
			t.Fatalf("the repair was not recorded: %+v", got)
		}
		_ = l.Close()
	})
}

// TestKeepSegments: pruning moves the chain's start, and an audit.prune
// entry vouches for the new anchor; a segment removed by hand is not.
func TestKeepSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l := open(t, dir, audit.WithMaxSegmentBytes(2048), audit.WithKeepSegments(2))
	record(t, l, 60, "dev")
	rep := verify(t, l)
	mustOK(t, rep)
	if len(rep.Files) != 3 || rep.Anchor == nil || rep.Anchor.Genesis || rep.Anchor.PrunedBy == 0 || rep.Anchor.File != rep.Files[0].Name {
		t.Fatalf("report after pruning = %+v anchor %+v", rep.Files, rep.Anchor)
	}
	prunes, _, _ := l.Query(t.Context(), audit.Filter{Action: audit.ActionPrune, Limit: 1})
	if len(prunes) != 1 || prunes[0].Details["anchor_seq"] != fmt.Sprint(rep.Anchor.Seq) || prunes[0].Target != rep.Files[0].Name {
		t.Fatalf("prune entry = %+v, anchor %+v", prunes, rep.Anchor)
	}
	if err := os.Remove(filepath.Join(dir, rep.Files[0].Name)); err != nil {
		t.Fatal(err)
	}
	rep = verify(t, l)
	if rep.OK || rep.Problems[0].Kind != audit.ProblemMissingStart {
		t.Fatalf("a segment removed by hand after pruning: %+v", rep.Problems)
	}
}

// TestConcurrentRecord: writers at once share writes, never interleave
// within a line, and number entries without gaps across rotations.
func TestConcurrentRecord(t *testing.T) {
	t.Parallel()
	l := open(t, t.TempDir(), audit.WithMaxSegmentBytes(16<<10))
	const writers, each = 16, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := l.Record(context.Background(), audit.Entry{Actor: fmt.Sprint("w", w), Action: "registry.tag", Target: fmt.Sprint(i), Outcome: audit.OK}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Readers while writing.
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if rep, err := l.Verify(context.Background()); err != nil || !rep.OK {
					t.Errorf("Verify during writes: %v %+v", err, rep.Problems)
					return
				}
				if _, _, err := l.Query(context.Background(), audit.Filter{Limit: 10}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rep := verify(t, l)
	mustOK(t, rep)
	if rep.Entries != writers*each || rep.LastSeq != writers*each || len(rep.Files) < 3 {
		t.Fatalf("report = %d entries, last seq %d, %d files", rep.Entries, rep.LastSeq, len(rep.Files))
	}
	got, _, _ := l.Query(t.Context(), audit.Filter{Actor: "w3"})
	if len(got) != each {
		t.Fatalf("w3 has %d entries, want %d", len(got), each)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(t.Context(), audit.Entry{Action: "x", Outcome: audit.OK}); !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("Record after Close = %v", err)
	}
}

// TestBounds: long fields are cut, so that a line stays small.
func TestBounds(t *testing.T) {
	t.Parallel()
	l := open(t, t.TempDir())
	d := map[string]string{}
	for i := range 100 {
		d[fmt.Sprint("k", i)] = strings.Repeat("v", 5000)
	}
	if err := l.Record(t.Context(), audit.Entry{Action: "x", Outcome: audit.OK, Target: strings.Repeat("é", 3000), Details: d}); err != nil {
		t.Fatal(err)
	}
	got, _, _ := l.Query(t.Context(), audit.Filter{})
	if len(got[0].Target) > 1024 || !strings.HasSuffix(got[0].Target, "…") || len(got[0].Details) > 33 {
		t.Fatalf("target %d bytes, %d details", len(got[0].Target), len(got[0].Details))
	}
	mustOK(t, verify(t, l))
}
