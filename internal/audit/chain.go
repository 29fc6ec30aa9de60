package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The chain. An entry's line is the JSON object of its members in a fixed
// order, ending with its hash:
//
//	{"seq":7,"time":"…","actor":"admin",…,"prev":"<64 hex>","hash":"<64 hex>"}
//
// and hash is the SHA-256 of the same line without its hash member, that
// is of the bytes before `,"hash":"` followed by `}`. The hash covers prev,
// so every entry vouches for all those before it.

// genesis is the prev of the very first entry.
var genesis = strings.Repeat("0", 64)

// body is an entry without its hash, in the order of the line.
type body struct {
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`
	Remote  string            `json:"remote,omitempty"`
	Action  string            `json:"action"`
	Target  string            `json:"target,omitempty"`
	Outcome Outcome           `json:"outcome"`
	Status  int               `json:"status,omitempty"`
	Reason  string            `json:"reason,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	Prev    string            `json:"prev"`
}

// hashSuffix is how every line ends: `,"hash":"<64 hex>"}` and a newline.
const hashSuffixLen = len(`,"hash":"`) + 64 + len(`"}`)

// encode renders e as the entry after prev, with its newline, and returns
// the line and its hash.
func encode(e Entry, prev Head) ([]byte, string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	// A struct of strings, numbers, a time and a string map cannot fail.
	_ = enc.Encode(body{Seq: prev.Seq + 1, Time: e.Time, Actor: e.Actor, Remote: e.Remote, Action: e.Action, Target: e.Target,
		Outcome: e.Outcome, Status: e.Status, Reason: e.Reason, Details: e.Details, Prev: prev.Hash})
	obj := bytes.TrimRight(b.Bytes(), "\n")
	sum := sha256.Sum256(obj)
	h := hex.EncodeToString(sum[:])
	line := make([]byte, 0, len(obj)+hashSuffixLen+1)
	line = append(line, obj[:len(obj)-1]...)
	line = append(line, `,"hash":"`...)
	line = append(line, h...)
	line = append(line, "\"}\n"...)
	return line, h
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// errNotEntry marks a line that is not an entry at all.
var errNotEntry = errors.New("not an audit entry")

// parseLine reads one line (without its newline) into an entry, with its
// hash as the line states it. checkHash tells whether that hash is the
// line's own.
func parseLine(line []byte) (Entry, error) {
	var e Entry
	if len(line) < hashSuffixLen+2 || !bytes.HasSuffix(line, []byte(`"}`)) ||
		!bytes.Equal(line[len(line)-hashSuffixLen:len(line)-hashSuffixLen+len(`,"hash":"`)], []byte(`,"hash":"`)) {
		return e, errNotEntry
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return e, fmt.Errorf("%w: %w", errNotEntry, err)
	}
	if !hexRE.MatchString(e.Hash) || !hexRE.MatchString(e.Prev) || e.Seq == 0 {
		return e, errNotEntry
	}
	return e, nil
}

// ownHash is the hash the line's content gives.
func ownHash(line []byte) string {
	obj := make([]byte, 0, len(line)-hashSuffixLen+1)
	obj = append(obj, line[:len(line)-hashSuffixLen]...)
	obj = append(obj, '}')
	sum := sha256.Sum256(obj)
	return hex.EncodeToString(sum[:])
}

// lastEntry finds the last complete entry of the first size bytes of f.
// complete is where the last complete line ends (size, unless the file
// ends with a partial line).
func lastEntry(f *os.File, size int64) (e Entry, complete int64, found bool, err error) {
	const window = 1 << 20
	off := max(size-window, 0)
	buf := make([]byte, size-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return e, 0, false, err
	}
	end := bytes.LastIndexByte(buf, '\n') + 1
	complete = off + int64(end)
	if end == 0 && off > 0 {
		return e, size, false, fmt.Errorf("no line end in the last %d bytes", window)
	}
	lines := bytes.Split(buf[:end], []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if i == 0 && off > 0 {
			break // possibly the tail of a line that began before the window
		}
		if len(lines[i]) == 0 {
			continue
		}
		if e, err := parseLine(lines[i]); err == nil {
			return e, complete, true, nil
		}
	}
	return e, complete, false, nil
}

// segment is a rotated file: audit-000001.jsonl, …
type segment struct {
	num  int
	name string
}

var segmentRE = regexp.MustCompile(`^audit-([0-9]{6,})\.jsonl$`)

func segmentName(n int) string { return fmt.Sprintf("audit-%06d.jsonl", n) }

// listSegments returns the rotated files of dir, oldest first.
func listSegments(dir string) ([]segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list audit segments: %w", err)
	}
	var segs []segment
	for _, de := range ents {
		m := segmentRE.FindStringSubmatch(de.Name())
		if m == nil || !de.Type().IsRegular() {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		segs = append(segs, segment{num: n, name: de.Name()})
	}
	slices.SortFunc(segs, func(a, b segment) int { return a.num - b.num })
	return segs, nil
}
