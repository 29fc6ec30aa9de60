package audit

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// Kinds of problems Verify finds.
const (
	// ProblemEdited: an entry's content no longer gives its hash, or the
	// next entry does not chain to it (it was rewritten, hash and all).
	ProblemEdited = "edited"
	// ProblemMissing: sequence numbers are missing: entries were removed.
	ProblemMissing = "missing"
	// ProblemReordered: an entry stands after one it should precede, or twice.
	ProblemReordered = "reordered"
	// ProblemTruncated: a file ends in a partial entry, or the log ends
	// before the last entry the appliance wrote.
	ProblemTruncated = "truncated"
	// ProblemMissingSegment: a numbered segment between two others is gone.
	ProblemMissingSegment = "missing-segment"
	// ProblemMissingStart: the chain does not start at the first entry
	// ever written, and no pruning explains it.
	ProblemMissingStart = "missing-start"
	// ProblemCorrupt: a line that is not an entry.
	ProblemCorrupt = "corrupt"
	// ProblemRecorded: an audit.open entry: damage the log found when the
	// appliance started.
	ProblemRecorded = "recorded"
)

// maxProblems bounds a report.
const maxProblems = 100

// Problem is one broken link.
type Problem struct {
	Kind    string `json:"kind"`
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	Message string `json:"message"`
}

// FileReport is what Verify read in one file.
type FileReport struct {
	Name     string `json:"name"`
	Entries  int    `json:"entries"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
	Bytes    int64  `json:"bytes"`
}

// Anchor is where the chain Verify checked starts: the first entry ever
// written (Genesis), or, after keep_segments pruned older segments, the
// first entry of the first kept segment, whose prev is vouched for by the
// audit.prune entry PrunedBy.
type Anchor struct {
	Genesis  bool   `json:"genesis"`
	File     string `json:"file,omitempty"`
	Seq      uint64 `json:"seq,omitempty"`
	Prev     string `json:"prev,omitempty"`
	PrunedBy uint64 `json:"pruned_by,omitempty"`
}

// Report is the outcome of Verify. Problems are in the order of the
// chain: the first is the first broken link.
type Report struct {
	OK       bool         `json:"ok"`
	Checked  time.Time    `json:"checked"`
	Entries  int          `json:"entries"`
	FirstSeq uint64       `json:"first_seq,omitempty"`
	LastSeq  uint64       `json:"last_seq,omitempty"`
	Head     Head         `json:"head"`
	Anchor   *Anchor      `json:"anchor,omitempty"`
	Files    []FileReport `json:"files"`
	Problems []Problem    `json:"problems,omitempty"`
}

// window is how far back Verify remembers hashes, to tell a reordered
// entry from a foreign one.
const window = 4096

// verifier walks the chain entry by entry.
type verifier struct {
	rep     Report
	hashes  map[uint64]string // claimed hash by seq, the last window of them
	last    uint64            // the highest seq seen
	missing []*gap            // open gaps, with the problem reporting them
	prunes  map[string]uint64 // "seq prev" of audit.prune anchors -> the prune entry's seq
	anchor  *Anchor
}

type gap struct {
	from, to uint64
	p        int // index in rep.Problems, -1 when the report was full
}

func (v *verifier) problem(p Problem) int {
	if len(v.rep.Problems) >= maxProblems {
		return -1
	}
	if len(v.rep.Problems) == maxProblems-1 {
		p = Problem{Kind: p.Kind, File: p.File, Line: p.Line, Seq: p.Seq, Message: "more problems follow; the report shows the first " + strconv.Itoa(maxProblems)}
	}
	v.rep.Problems = append(v.rep.Problems, p)
	return len(v.rep.Problems) - 1
}

// Verify walks every segment and the current file and checks the chain:
// each entry's hash, each prev, the sequence without gaps or repeats, the
// segments' numbering, the chain's start, and that the log still ends
// where this process last wrote. It reads the log as it stood when called;
// writes go on meanwhile. The error is for a log that cannot be read;
// a broken chain is a report that is not OK.
func (l *Log) Verify(ctx context.Context) (Report, error) {
	vw, err := l.snapshot()
	if err != nil {
		return Report{}, err
	}
	defer vw.close()
	v := &verifier{hashes: map[uint64]string{}, prunes: map[string]uint64{}}
	v.rep.Checked = l.now().UTC()
	v.rep.Files = []FileReport{}
	prevNum := 0
	for _, vf := range vw.files {
		fr := FileReport{Name: vf.name, Bytes: vf.size}
		segGap := -1
		if vf.num > 0 {
			if prevNum > 0 && vf.num != prevNum+1 {
				for n := prevNum + 1; n < vf.num; n++ {
					segGap = v.problem(Problem{Kind: ProblemMissingSegment, File: segmentName(n),
						Message: fmt.Sprintf("segment %s is missing (%s and %s are here)", segmentName(n), segmentName(prevNum), vf.name)})
				}
			}
			prevNum = vf.num
		}
		first := true
		err := vf.lines(ctx, func(n int, line []byte, partial bool) error {
			if partial {
				v.problem(Problem{Kind: ProblemTruncated, File: vf.name, Line: n,
					Message: fmt.Sprintf("%s ends in a partial entry at line %d: the file was cut", vf.name, n)})
				return nil
			}
			e, err := parseLine(line)
			if err != nil {
				v.problem(Problem{Kind: ProblemCorrupt, File: vf.name, Line: n, Message: fmt.Sprintf("line %d of %s is not an audit entry", n, vf.name)})
				return nil
			}
			fr.Entries++
			if fr.FirstSeq == 0 {
				fr.FirstSeq = e.Seq
			}
			fr.LastSeq = e.Seq
			v.entry(vf.name, n, line, e, first, segGap)
			first = false
			return nil
		})
		if err != nil {
			return Report{}, err
		}
		v.rep.Files = append(v.rep.Files, fr)
	}
	v.finish(vw.head)
	return v.rep, nil
}

// entry checks one entry against those before it.
func (v *verifier) entry(file string, line int, raw []byte, e Entry, firstOfFile bool, segGap int) {
	v.rep.Entries++
	at := func(kind, msg string, args ...any) int {
		return v.problem(Problem{Kind: kind, File: file, Line: line, Seq: e.Seq, Message: fmt.Sprintf(msg, args...)})
	}
	if own := ownHash(raw); own != e.Hash {
		at(ProblemEdited, "seq %d (%s line %d) was changed after it was written: its content does not give its hash", e.Seq, file, line)
	}
	switch {
	case v.anchor == nil:
		v.anchor = &Anchor{Genesis: e.Seq == 1 && e.Prev == genesis, File: file, Seq: e.Seq, Prev: e.Prev}
		v.rep.FirstSeq = e.Seq
	case e.Seq == v.last+1:
		if h, ok := v.hashes[v.last]; ok && e.Prev != h {
			at(ProblemEdited, "seq %d (%s line %d) does not chain to seq %d before it: seq %d was replaced, or this entry's prev changed", e.Seq, file, line, v.last, v.last)
		}
	case e.Seq > v.last+1:
		g := &gap{from: v.last + 1, to: e.Seq - 1}
		rng, are := strconv.FormatUint(g.from, 10), "is"
		if g.to > g.from {
			rng, are = rng+"–"+strconv.FormatUint(g.to, 10), "are"
		}
		switch {
		case segGap >= 0 && firstOfFile:
			v.rep.Problems[segGap].Message += ", with seq " + rng
			g.p = segGap
		case firstOfFile:
			g.p = at(ProblemMissing, "seq %s %s missing before %s: the end of the file before it or the start of %s was removed", rng, are, file, file)
		default:
			g.p = at(ProblemMissing, "seq %s %s missing before seq %d (%s line %d): entries were removed", rng, are, e.Seq, file, line)
		}
		v.missing = append(v.missing, g)
	default: // e.Seq <= v.last
		reordered := false
		for _, g := range v.missing {
			if e.Seq >= g.from && e.Seq <= g.to && g.p >= 0 && v.rep.Problems[g.p].Kind == ProblemMissing {
				v.rep.Problems[g.p].Kind = ProblemReordered
				v.rep.Problems[g.p].Message = fmt.Sprintf("seq %d stands after seq %d (%s line %d): entries were reordered", e.Seq, v.last, file, line)
				reordered = true
				break
			}
		}
		if !reordered {
			at(ProblemReordered, "seq %d (%s line %d) comes after seq %d: an entry was repeated or moved", e.Seq, file, line, v.last)
		}
		if h, ok := v.hashes[e.Seq-1]; ok && e.Prev != h {
			at(ProblemEdited, "seq %d (%s line %d) does not chain to seq %d", e.Seq, file, line, e.Seq-1)
		}
	}
	v.hashes[e.Seq] = e.Hash
	if e.Seq > v.last {
		v.last = e.Seq
		delete(v.hashes, e.Seq-window)
		v.rep.LastSeq = e.Seq
		v.rep.Head = Head{Seq: e.Seq, Hash: e.Hash}
	}
	switch {
	case e.Action == ActionPrune && e.Details != nil:
		seq, _ := strconv.ParseUint(e.Details["anchor_seq"], 10, 64)
		v.prunes[fmt.Sprint(seq, " ", e.Details["anchor_prev"])] = e.Seq
	case e.Action == ActionOpen && e.Outcome != OK:
		at(ProblemRecorded, "when the appliance started (seq %d, %s): %s", e.Seq, e.Time.Format(time.RFC3339), e.Reason)
	}
}

// finish checks the chain's two ends: where it starts, and that it ends
// where this process last wrote.
func (v *verifier) finish(head Head) {
	if a := v.anchor; a != nil && !a.Genesis {
		if seq, ok := v.prunes[fmt.Sprint(a.Seq, " ", a.Prev)]; ok {
			a.PrunedBy = seq
		} else {
			// The first broken link, before anything found after it.
			v.rep.Problems = append([]Problem{{Kind: ProblemMissingStart, File: a.File, Line: 1, Seq: a.Seq,
				Message: fmt.Sprintf("the chain starts at seq %d in %s, not at the first entry, and no audit.prune entry records removing what came before: earlier segments or entries were removed", a.Seq, a.File)}},
				v.rep.Problems...)
		}
	}
	v.rep.Anchor = v.anchor
	switch {
	case head.Seq > v.last:
		v.problem(Problem{Kind: ProblemTruncated, File: currentFile, Seq: v.last + 1,
			Message: fmt.Sprintf("the log ends at seq %d, but the appliance wrote up to seq %d: entries were removed from its end", v.last, head.Seq)})
	case head.Seq > 0 && head.Seq == v.last && head.Hash != v.rep.Head.Hash:
		v.problem(Problem{Kind: ProblemEdited, File: currentFile, Seq: head.Seq,
			Message: fmt.Sprintf("the last entry, seq %d, is not the one the appliance wrote", head.Seq)})
	}
	v.rep.OK = len(v.rep.Problems) == 0
}
