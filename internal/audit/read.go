package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// view is the log's files as they stood at one moment: the rotated
// segments oldest first, then the current file up to its last complete
// entry. The files are opened while no write is under way, so a rotation
// after the moment does not move them under the reader.
type view struct {
	files []viewFile
	head  Head
}

type viewFile struct {
	name string
	num  int // 0 for the current file
	f    *os.File
	size int64
}

func (l *Log) snapshot() (*view, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.flushing {
		l.cond.Wait()
	}
	segs, err := listSegments(l.dir)
	if err != nil {
		return nil, err
	}
	v := &view{head: l.head}
	for _, s := range segs {
		f, err := os.Open(filepath.Join(l.dir, s.name))
		if err != nil {
			v.close()
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			_ = f.Close()
			v.close()
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		v.files = append(v.files, viewFile{name: s.name, num: s.num, f: f, size: st.Size()})
	}
	f, err := os.Open(filepath.Join(l.dir, currentFile))
	if err != nil {
		v.close()
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	v.files = append(v.files, viewFile{name: currentFile, f: f, size: l.size})
	return v, nil
}

func (v *view) close() {
	for _, f := range v.files {
		_ = f.f.Close()
	}
}

// lines calls fn for each line of vf (without its newline), numbered from
// 1; partial is true for a last line without a newline.
func (vf viewFile) lines(ctx context.Context, fn func(n int, line []byte, partial bool) error) error {
	r := bufio.NewReaderSize(io.NewSectionReader(vf.f, 0, vf.size), 256<<10)
	for n := 1; ; n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		line, err := r.ReadBytes('\n')
		switch {
		case errors.Is(err, io.EOF):
			if len(line) > 0 {
				return fn(n, line, true)
			}
			return nil
		case err != nil:
			return fmt.Errorf("read audit log %s: %w", vf.name, err)
		}
		if err := fn(n, line[:len(line)-1], false); err != nil {
			return err
		}
	}
}

// Filter selects entries for Query. Zero fields select everything.
type Filter struct {
	Since time.Time // at or after
	Until time.Time // before
	Actor string    // exactly
	// Action is a prefix: "registry." selects every registry write,
	// "user" every user change.
	Action string
	// Target is a substring: "library/app" selects that repository's tags
	// and digests.
	Target  string
	Outcome Outcome
	// Limit bounds the answer (0: no limit).
	Limit int
}

func (f Filter) match(e Entry) bool {
	return (f.Since.IsZero() || !e.Time.Before(f.Since)) &&
		(f.Until.IsZero() || e.Time.Before(f.Until)) &&
		(f.Actor == "" || e.Actor == f.Actor) &&
		strings.HasPrefix(e.Action, f.Action) &&
		strings.Contains(e.Target, f.Target) &&
		(f.Outcome == "" || e.Outcome == f.Outcome)
}

// Bounds of ParseFilter's limit.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// ParseFilter reads a filter from query parameters: since and until (RFC
// 3339 times, or durations back from now such as 24h), actor, action (a
// prefix), target (a substring), outcome and limit (1 to MaxLimit,
// DefaultLimit when absent). Errors wrap ErrInvalid.
func ParseFilter(q url.Values, now time.Time) (Filter, error) {
	f := Filter{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"), Outcome: Outcome(q.Get("outcome")), Limit: DefaultLimit}
	var err error
	if f.Since, err = parseWhen(q.Get("since"), now); err != nil {
		return f, fmt.Errorf("%w: since %w", ErrInvalid, err)
	}
	if f.Until, err = parseWhen(q.Get("until"), now); err != nil {
		return f, fmt.Errorf("%w: until %w", ErrInvalid, err)
	}
	switch f.Outcome {
	case "", OK, Refused, Failed:
	default:
		return f, fmt.Errorf("%w: outcome %q: want ok, refused or failed", ErrInvalid, f.Outcome)
	}
	if l := q.Get("limit"); l != "" {
		if f.Limit, err = strconv.Atoi(l); err != nil || f.Limit < 1 || f.Limit > MaxLimit {
			return f, fmt.Errorf("%w: limit %q: want 1 to %d", ErrInvalid, l, MaxLimit)
		}
	}
	return f, nil
}

// parseWhen reads a time (RFC 3339) or a duration back from now ("24h").
func parseWhen(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want a time (2026-11-01T12:00:00Z) or a duration (24h)", v)
	}
	return t, nil
}

// Query returns the entries f selects, newest first, and whether more
// matched than f.Limit let through. Lines that are not entries are
// skipped (Verify names them).
func (l *Log) Query(ctx context.Context, f Filter) ([]Entry, bool, error) {
	v, err := l.snapshot()
	if err != nil {
		return nil, false, err
	}
	defer v.close()
	out := []Entry{}
	for i := len(v.files) - 1; i >= 0; i-- {
		var (
			found  []Entry
			oldest time.Time
		)
		err := v.files[i].lines(ctx, func(_ int, line []byte, partial bool) error {
			if partial {
				return nil
			}
			e, err := parseLine(line)
			if err != nil {
				return nil
			}
			if oldest.IsZero() {
				oldest = e.Time
			}
			if f.match(e) {
				found = append(found, e)
			}
			return nil
		})
		if err != nil {
			return nil, false, err
		}
		slices.Reverse(found)
		out = append(out, found...)
		if f.Limit > 0 && len(out) > f.Limit {
			return out[:f.Limit], true, nil
		}
		if !f.Since.IsZero() && !oldest.IsZero() && oldest.Before(f.Since) {
			break // older files hold older entries
		}
	}
	return out, false, nil
}
