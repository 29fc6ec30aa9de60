// Package audit keeps the appliance's audit trail: one entry for every
// write (a push, a delete, a tag move, an import, a promotion, a mode
// change, a user or project change, a refused login), saying who did it,
// from which address, when, and how it ended.
//
// The trail is a folder of append-only JSON-lines files. Every entry
// carries its sequence number, the hash of the entry before it (prev) and
// its own hash, a SHA-256 over its line without the hash member, so an
// entry that is edited, removed or moved breaks the chain where it was.
// The current file, audit.jsonl, is renamed to a numbered segment
// (audit-000001.jsonl, …) when it reaches its size limit, and the next
// entry chains on to the last one of that segment: the chain survives
// rotation. Verify walks every segment and names the first broken link;
// Query reads entries back, newest first, for the API.
//
// Record returns once the entry is on disk (fsynced). Callers that write
// at the same time share one write and one fsync (group commit).
//
// The package knows nothing of HTTP routing: the server says what
// happened, the package records it (Registry, a net/http middleware, is
// the one helper that reads requests).
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// Outcome is how a recorded action ended.
type Outcome string

// Outcomes.
const (
	// OK: the action was done.
	OK Outcome = "ok"
	// Refused: the appliance said no (authentication, permission, an
	// invalid request, read-only mode): nothing changed.
	Refused Outcome = "refused"
	// Failed: the action was attempted and did not complete (a server
	// error, another registry or vCenter failing, a cancel).
	Failed Outcome = "failed"
)

// OutcomeOf classifies an HTTP status: below 400 ok, 4xx refused, 5xx failed.
func OutcomeOf(status int) Outcome {
	switch {
	case status >= 500:
		return Failed
	case status >= 400:
		return Refused
	}
	return OK
}

// Anonymous is the actor of requests without (valid) credentials.
const Anonymous = "anonymous"

// Actions the appliance records. Callers may record others; these are the
// names docs/audit.md explains.
const (
	ActionPushBlob     = "registry.push.blob"     // a blob upload completed (or mounted)
	ActionPushManifest = "registry.push.manifest" // a manifest put by digest
	ActionTag          = "registry.tag"           // a manifest put by tag: stored, and the tag set or moved
	ActionDelete       = "registry.delete"        // a manifest, tag or blob deleted
	ActionRegistry     = "registry.write"         // any other write request on /v2/ (an upload step that failed)
	ActionToken        = "auth.token"             // a token request refused (wrong credentials)
	ActionLogin        = "login"                  // a console login
	ActionOpen         = "audit.open"             // the log found damage when it opened (or repaired a torn write)
	ActionPrune        = "audit.prune"            // old segments removed (keep_segments); the chain's start moved
)

// Entry is one line of the audit trail.
type Entry struct {
	// Seq numbers entries from 1, without gaps, across segments.
	Seq uint64 `json:"seq"`
	// Time is when the entry was recorded, in UTC.
	Time time.Time `json:"time"`
	// Actor is the user name, a token bearer's subject, "anonymous", or
	// the appliance's own part ("standby", "appliance").
	Actor string `json:"actor"`
	// Remote is the client's address (IP), when a request caused it.
	Remote string `json:"remote,omitempty"`
	// Action says what was done: "registry.push.blob", "user.add", …
	Action string `json:"action"`
	// Target is what it was done to: "library/app:1.0@sha256:…", a user
	// name, a project, a promotion's target.
	Target string `json:"target,omitempty"`
	// Outcome, with the HTTP status answered and a short reason when not ok.
	Outcome Outcome           `json:"outcome"`
	Status  int               `json:"status,omitempty"`
	Reason  string            `json:"reason,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	// Prev is the hash of the entry before (64 zeros for the first).
	Prev string `json:"prev"`
	// Hash is the SHA-256, in hex, of this entry's line without its hash
	// member (see docs/audit.md).
	Hash string `json:"hash"`
}

// Errors callers test with errors.Is.
var (
	ErrClosed  = errors.New("audit log closed")
	ErrInvalid = errors.New("invalid audit entry")
)

// Bounds of one entry, so that a line stays small whatever a client sends.
const (
	maxField      = 1024
	maxDetails    = 32
	maxDetailKey  = 64
	maxEntryBytes = 64 << 10
)

// DefaultMaxSegmentBytes is the size at which the current file is rotated.
const DefaultMaxSegmentBytes = 64 << 20

// File names in the log's folder.
const (
	currentFile = "audit.jsonl"
	headFile    = "head.json"
)

// Option configures a Log.
type Option func(*Log)

// WithMaxSegmentBytes sets the size at which the current file is rotated
// (default 64 MiB; a value below 1 KiB means the default).
func WithMaxSegmentBytes(n int64) Option {
	return func(l *Log) {
		if n >= 1<<10 {
			l.max = n
		}
	}
}

// WithKeepSegments keeps only the newest n rotated segments (the current
// file besides); 0, the default, keeps them all. The chain then starts at
// the first kept entry, and an audit.prune entry records where.
func WithKeepSegments(n int) Option {
	return func(l *Log) {
		if n >= 0 {
			l.keep = n
		}
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(log *slog.Logger) Option { return func(l *Log) { l.log = log } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(l *Log) { l.now = now } }

// Log is an open audit trail. Its methods are safe for concurrent use.
type Log struct {
	dir  string
	max  int64
	keep int
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	cond     *sync.Cond
	pending  []*request
	flushing bool // a caller is writing a batch; the fields below are its own until it ends
	closed   bool

	f    *os.File // the current file, opened for appending
	size int64    // bytes of complete entries in it
	next int      // the number the current file gets when rotated
	head Head     // the last entry on disk
}

// Head is the last entry written: where the chain ends.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

type request struct {
	e    Entry
	done bool
	err  error
}

// Open opens the log in dir, creating it when needed, and finds the end
// of the chain. A partial line at the end of the current file (a write cut
// short by a crash, never acknowledged) is removed. When the file ends
// before the entry the last clean stop recorded, Open records what is
// missing as an audit.open entry that Verify reports.
func Open(dir string, opts ...Option) (*Log, error) {
	l := &Log{dir: dir, max: DefaultMaxSegmentBytes, log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, o := range opts {
		o(l)
	}
	l.cond = sync.NewCond(&l.mu)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	l.next = 1
	if len(segs) > 0 {
		l.next = segs[len(segs)-1].num + 1
	}
	path := filepath.Join(dir, currentFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640) //nolint:gosec // the log's own file
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	notes, err := l.findHead(f, segs)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	l.f = f
	for _, n := range notes {
		if err := l.Record(context.Background(), n); err != nil {
			_ = l.Close()
			return nil, err
		}
	}
	return l, nil
}

// findHead reads the end of the chain from the current file, or the newest
// segment when the current file is empty, and returns the entries that
// tell what Open had to mend or found missing.
func (l *Log) findHead(f *os.File, segs []segment) ([]Entry, error) {
	var notes []Entry
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	size := st.Size()
	last, complete, found, err := lastEntry(f, size)
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", currentFile, err)
	}
	if complete < size {
		// A write cut short: the caller was never told it succeeded.
		if err := f.Truncate(complete); err != nil {
			return nil, fmt.Errorf("open audit log: remove a partial entry: %w", err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("open audit log: %w", err)
		}
		notes = append(notes, Entry{Actor: "appliance", Action: ActionOpen, Target: currentFile, Outcome: OK,
			Reason: fmt.Sprintf("removed a partial entry of %d bytes at the end (a write a stop cut short, never acknowledged)", size-complete)})
	}
	l.size = complete
	for i := len(segs) - 1; !found && i >= 0; i-- {
		sf, err := os.Open(filepath.Join(l.dir, segs[i].name))
		if err != nil {
			return nil, fmt.Errorf("open audit log: %w", err)
		}
		sst, err := sf.Stat()
		if err == nil {
			last, _, found, err = lastEntry(sf, sst.Size())
		}
		_ = sf.Close()
		if err != nil {
			return nil, fmt.Errorf("open audit log %s: %w", segs[i].name, err)
		}
	}
	l.head = Head{Hash: genesis}
	if found {
		l.head = Head{Seq: last.Seq, Hash: last.Hash}
	}
	var saved Head
	data, err := os.ReadFile(filepath.Join(l.dir, headFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open audit log: %w", err)
	case json.Unmarshal(data, &saved) != nil:
		notes = append(notes, Entry{Actor: "appliance", Action: ActionOpen, Target: headFile, Outcome: Failed, Reason: headFile + " is corrupt"})
	case saved.Seq > l.head.Seq || (saved.Seq == l.head.Seq && saved.Seq > 0 && saved.Hash != l.head.Hash):
		notes = append(notes, Entry{Actor: "appliance", Action: ActionOpen, Target: currentFile, Outcome: Failed,
			Reason:  fmt.Sprintf("the log ends at seq %d, but it held seq %d when the appliance last stopped: its end was removed or changed", l.head.Seq, saved.Seq),
			Details: map[string]string{"ends_at": fmt.Sprint(l.head.Seq), "expected": fmt.Sprint(saved.Seq), "expected_hash": saved.Hash}})
	}
	return notes, nil
}

// Record appends e and returns once it is on disk. Seq, Prev and Hash are
// set by the log; Time defaults to now (it is kept in UTC); Actor to
// "anonymous". Action and Outcome are required. Long fields are cut to
// bound the line. ctx is checked before the entry is queued: once queued,
// Record waits for the write (a few milliseconds at most), so that a
// cancelled request still leaves its entry.
func (l *Log) Record(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := normalize(&e); err != nil {
		return err
	}
	r := &request{e: e}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if r.e.Time.IsZero() {
		r.e.Time = l.now()
	}
	r.e.Time = r.e.Time.UTC()
	l.pending = append(l.pending, r)
	for !r.done {
		if l.flushing {
			l.cond.Wait()
			continue
		}
		l.flushLocked()
	}
	return r.err
}

// flushLocked writes what is pending with l.mu held on entry and exit; it
// releases the lock while it writes, so that others can queue behind it.
func (l *Log) flushLocked() {
	batch := l.pending
	l.pending = nil
	l.flushing = true
	l.mu.Unlock()
	n, err := l.write(batch)
	l.mu.Lock()
	l.flushing = false
	for i, r := range batch {
		r.done = true
		if i >= n {
			r.err = err
		}
	}
	if err != nil {
		l.log.Error("audit entries not written", "entries", len(batch)-n, "error", err)
	}
	l.cond.Broadcast()
}

// write appends batch to the current file, rotating it when the next
// entry would pass the size limit, and fsyncs. It returns how many entries
// were written; the rest failed with err, and the file was cut back to
// its last complete entry. Only the flushing caller runs it.
func (l *Log) write(batch []*request) (int, error) {
	var (
		buf         []byte
		done, inBuf int // entries of batch on disk, and in buf
		head        = l.head
	)
	commit := func() error {
		if len(buf) == 0 {
			return nil
		}
		if _, err := l.f.Write(buf); err != nil {
			return l.undo(fmt.Errorf("write audit log: %w", err))
		}
		if err := l.f.Sync(); err != nil {
			return l.undo(fmt.Errorf("write audit log: sync: %w", err))
		}
		l.setHead(head, l.size+int64(len(buf)))
		done += inBuf
		buf, inBuf = buf[:0], 0
		return nil
	}
	for _, r := range batch {
		line, h := encode(r.e, head)
		if l.size+int64(len(buf)) > 0 && l.size+int64(len(buf)+len(line)) > l.max {
			if err := commit(); err != nil {
				return done, err
			}
			removed, err := l.rotate()
			if err != nil {
				return done, err
			}
			if len(removed) > 0 {
				// The new file's first entry records the pruning: the
				// chain now starts in the first kept segment.
				if p, err := l.pruneEntry(removed); err != nil {
					l.log.Warn("audit prune not recorded", "error", err)
				} else {
					pl, ph := encode(p, head)
					buf = append(buf, pl...)
					head = Head{Seq: head.Seq + 1, Hash: ph}
				}
			}
			line, h = encode(r.e, head)
		}
		buf = append(buf, line...)
		inBuf++
		head = Head{Seq: head.Seq + 1, Hash: h}
	}
	err := commit()
	return done, err
}

// undo cuts the current file back to its last complete entry after a
// failed write, so that the next entry is not appended to half a line.
func (l *Log) undo(err error) error {
	if terr := l.f.Truncate(l.size); terr != nil {
		return errors.Join(err, fmt.Errorf("cut back the audit log: %w", terr))
	}
	return err
}

func (l *Log) setHead(h Head, size int64) {
	l.mu.Lock()
	l.head, l.size = h, size
	l.mu.Unlock()
}

// rotate renames the current file to the next numbered segment, starts a
// new one, and removes segments beyond keep. It returns the names removed.
func (l *Log) rotate() ([]string, error) {
	name := segmentName(l.next)
	cur := filepath.Join(l.dir, currentFile)
	if err := os.Rename(cur, filepath.Join(l.dir, name)); err != nil {
		return nil, fmt.Errorf("rotate audit log: %w", err)
	}
	if err := fsutil.SyncDir(l.dir); err != nil {
		return nil, fmt.Errorf("rotate audit log: %w", err)
	}
	f, err := os.OpenFile(cur, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640) //nolint:gosec // the log's own file
	if err != nil {
		return nil, fmt.Errorf("rotate audit log: %w", err)
	}
	_ = l.f.Close()
	l.mu.Lock()
	l.f, l.size = f, 0
	l.next++
	l.mu.Unlock()
	if err := fsutil.SyncDir(l.dir); err != nil {
		return nil, fmt.Errorf("rotate audit log: %w", err)
	}
	if err := l.saveHead(); err != nil {
		l.log.Warn("audit head not saved", "error", err)
	}
	l.log.Info("audit log rotated", "segment", name)
	if l.keep == 0 {
		return nil, nil
	}
	segs, err := listSegments(l.dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for len(segs) > l.keep {
		if err := os.Remove(filepath.Join(l.dir, segs[0].name)); err != nil {
			return removed, fmt.Errorf("prune audit log: %w", err)
		}
		removed = append(removed, segs[0].name)
		segs = segs[1:]
	}
	if len(removed) > 0 {
		if err := fsutil.SyncDir(l.dir); err != nil {
			return removed, fmt.Errorf("prune audit log: %w", err)
		}
	}
	return removed, nil
}

// pruneEntry says which segments were removed and where the chain now
// starts: the first entry of the first kept segment, and its prev.
func (l *Log) pruneEntry(removed []string) (Entry, error) {
	segs, err := listSegments(l.dir)
	if err != nil || len(segs) == 0 {
		return Entry{}, fmt.Errorf("prune audit log: no segment left: %w", err)
	}
	f, err := os.Open(filepath.Join(l.dir, segs[0].name))
	if err != nil {
		return Entry{}, fmt.Errorf("prune audit log: %w", err)
	}
	defer f.Close()
	first, err := firstEntry(f)
	if err != nil {
		return Entry{}, fmt.Errorf("prune audit log %s: %w", segs[0].name, err)
	}
	return Entry{Time: l.now().UTC(), Actor: "appliance", Action: ActionPrune, Target: segs[0].name, Outcome: OK,
		Details: map[string]string{
			"removed":     strings.Join(removed, " "),
			"anchor_seq":  fmt.Sprint(first.Seq),
			"anchor_prev": first.Prev,
		}}, nil
}

// saveHead keeps the end of the chain beside the log, so that the next
// Open notices when entries after it were removed.
func (l *Log) saveHead() error {
	l.mu.Lock()
	h := l.head
	l.mu.Unlock()
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(l.dir, headFile), data, 0o640)
}

// Head returns the last entry on disk.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Close waits for pending entries, saves the head and closes the file.
// Record fails with ErrClosed afterwards.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for l.flushing || len(l.pending) > 0 {
		if !l.flushing {
			l.flushLocked()
			continue
		}
		l.cond.Wait()
	}
	l.mu.Unlock()
	return errors.Join(l.saveHead(), l.f.Close())
}

// normalize checks the required fields and bounds the others.
func normalize(e *Entry) error {
	if e.Action == "" {
		return fmt.Errorf("%w: no action", ErrInvalid)
	}
	switch e.Outcome {
	case OK, Refused, Failed:
	default:
		return fmt.Errorf("%w: outcome %q (want ok, refused or failed)", ErrInvalid, e.Outcome)
	}
	if e.Actor == "" {
		e.Actor = Anonymous
	}
	e.Actor, e.Remote, e.Action = clip(e.Actor, 256), clip(e.Remote, 256), clip(e.Action, 128)
	e.Target, e.Reason = clip(e.Target, maxField), clip(e.Reason, maxField)
	if len(e.Details) > 0 {
		d := make(map[string]string, min(len(e.Details), maxDetails))
		for k, v := range e.Details {
			if len(d) == maxDetails {
				d["truncated"] = "more details were left out"
				break
			}
			d[clip(k, maxDetailKey)] = clip(v, maxField)
		}
		e.Details = d
	}
	e.Seq, e.Prev, e.Hash = 0, "", ""
	return nil
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// firstEntry reads the first complete entry of r.
func firstEntry(r io.Reader) (Entry, error) {
	buf := make([]byte, maxEntryBytes+1024)
	n, err := io.ReadFull(r, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return Entry{}, err
	}
	line, _, ok := strings.Cut(string(buf[:n]), "\n")
	if !ok {
		return Entry{}, errors.New("no complete entry")
	}
	e, perr := parseLine([]byte(line))
	if perr != nil {
		return Entry{}, perr
	}
	return e, nil
}
