package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// ErrBadPart names a part whose bytes do not match the signed parts list.
var ErrBadPart = errors.New("part does not match the parts list")

// PartsList is OUT.parts.json: every part of a split bundle in order, with
// its size and sha256, and the whole stream's sha256.
type PartsList struct {
	SchemaVersion int    `json:"schemaVersion"`
	Bundle        string `json:"bundle"` // base name of the parts
	Size          int64  `json:"size"`
	SHA256        string `json:"sha256"`
	Parts         []Part `json:"parts"`
}

// Part is one piece of a split bundle.
type Part struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ParseSize reads sizes such as 4700M, 4.7G, 25GB, 700MiB or 1048576.
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"TIB", 1 << 40}, {"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.m
			break
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional unit (K, M, G, T, KB, MB, GB)", s)
	}
	n := int64(f * float64(mult))
	if n < 1<<20 {
		return 0, fmt.Errorf("size %q: parts smaller than 1 MiB are not useful", s)
	}
	return n, nil
}

// SplitWriter writes a stream as numbered parts OUT.001, OUT.002, … of at
// most partSize bytes, each written atomically, and records their sums.
type SplitWriter struct {
	out       string
	partSize  int64
	list      PartsList
	whole     hashWriter
	cur       *os.File
	curDirect *fsutil.DirectWriter
	curHash   hashWriter
	curSize   int64
	tmpName   string
}

type hashWriter struct {
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func newHash() hashWriter { return hashWriter{h: sha256.New()} }

func (h *hashWriter) Write(p []byte) (int, error) {
	n, _ := h.h.Write(p)
	h.n += int64(n)
	return n, nil
}

func (h *hashWriter) hex() string { return hex.EncodeToString(h.h.Sum(nil)) }

// NewSplitWriter starts writing parts named out.NNN.
func NewSplitWriter(out string, partSize int64) *SplitWriter {
	return &SplitWriter{out: out, partSize: partSize, whole: newHash(), list: PartsList{SchemaVersion: 1, Bundle: filepath.Base(out)}}
}

func (w *SplitWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if w.cur == nil {
			if err := w.open(); err != nil {
				return written, err
			}
		}
		n := int64(len(p))
		if room := w.partSize - w.curSize; n > room {
			n = room
		}
		k, err := w.curDirect.Write(p[:n])
		_, _ = w.curHash.Write(p[:k])
		_, _ = w.whole.Write(p[:k])
		w.curSize += int64(k)
		written += k
		if err != nil {
			return written, fmt.Errorf("write part %d: %w", len(w.list.Parts)+1, err)
		}
		p = p[n:]
		if w.curSize == w.partSize {
			if err := w.closePart(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (w *SplitWriter) partName(i int) string { return fmt.Sprintf("%s.%03d", w.out, i) }

func (w *SplitWriter) open() error {
	name := w.partName(len(w.list.Parts) + 1)
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write part: %w", err)
	}
	w.cur, w.curDirect, w.tmpName, w.curHash, w.curSize = f, fsutil.NewDirectWriter(f), f.Name(), newHash(), 0
	return nil
}

func (w *SplitWriter) closePart() error {
	name := w.partName(len(w.list.Parts) + 1)
	if err := w.curDirect.Finish(); err != nil { // synced
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := w.cur.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(w.tmpName, name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	w.list.Parts = append(w.list.Parts, Part{Name: filepath.Base(name), Size: w.curSize, SHA256: w.curHash.hex()})
	w.cur = nil
	return nil
}

// Close finishes the last part and writes OUT.parts.json and, with a
// signer, OUT.parts.json.sig.
func (w *SplitWriter) Close(signer *Signer) (PartsList, error) {
	if w.cur != nil {
		if err := w.closePart(); err != nil {
			return PartsList{}, err
		}
	}
	w.list.Size, w.list.SHA256 = w.whole.n, w.whole.hex()
	data, err := json.MarshalIndent(w.list, "", "  ")
	if err != nil {
		return PartsList{}, err
	}
	if err := fsutil.WriteFileAtomic(w.out+".parts.json", data, 0o644); err != nil {
		return PartsList{}, err
	}
	if signer != nil {
		sig, err := signer.Sign(data)
		if err != nil {
			return PartsList{}, err
		}
		if err := fsutil.WriteFileAtomic(w.out+".parts.json.sig", sig, 0o644); err != nil {
			return PartsList{}, err
		}
	}
	return w.list, fsutil.SyncDir(filepath.Dir(w.out))
}

// ReadPartsList reads OUT.parts.json (and its signature, if present).
func ReadPartsList(out string) (PartsList, []byte, []byte, error) {
	data, err := os.ReadFile(out + ".parts.json")
	if err != nil {
		return PartsList{}, nil, nil, fmt.Errorf("read parts list: %w", err)
	}
	var l PartsList
	if err := json.Unmarshal(data, &l); err != nil {
		return PartsList{}, nil, nil, fmt.Errorf("read parts list %s.parts.json: %w", out, err)
	}
	sig, err := os.ReadFile(out + ".parts.json.sig")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return PartsList{}, nil, nil, fmt.Errorf("read parts list signature: %w", err)
	}
	return l, data, sig, nil
}

// JoinReader reads the parts in order as one stream, checking each part's
// size and sha256 as it ends; a damaged part fails with ErrBadPart naming it.
type JoinReader struct {
	dir   string
	list  PartsList
	i     int
	cur   *os.File
	hash  hashWriter
	whole hashWriter
}

// NewJoinReader opens the parts of list, found beside out.
func NewJoinReader(out string, list PartsList) *JoinReader {
	return &JoinReader{dir: filepath.Dir(out), list: list, whole: newHash()}
}

func (j *JoinReader) Read(p []byte) (int, error) {
	for {
		if j.cur == nil {
			if j.i == len(j.list.Parts) {
				if j.whole.hex() != j.list.SHA256 || j.whole.n != j.list.Size {
					return 0, fmt.Errorf("%w: the joined parts do not hash to the bundle's sha256", ErrBadPart)
				}
				return 0, io.EOF
			}
			part := j.list.Parts[j.i]
			if strings.ContainsAny(part.Name, `/\`) || part.Name == ".." {
				return 0, fmt.Errorf("%w: part name %q", ErrBadPart, part.Name)
			}
			f, err := os.Open(filepath.Join(j.dir, part.Name))
			if err != nil {
				return 0, fmt.Errorf("%w: %s: %w", ErrBadPart, part.Name, err)
			}
			j.cur, j.hash = f, newHash()
		}
		n, err := j.cur.Read(p)
		_, _ = j.hash.Write(p[:n])
		_, _ = j.whole.Write(p[:n])
		part := j.list.Parts[j.i]
		if j.hash.n > part.Size {
			return 0, fmt.Errorf("%w: %s is longer than the %d bytes listed", ErrBadPart, part.Name, part.Size)
		}
		if errors.Is(err, io.EOF) {
			_ = j.cur.Close()
			j.cur = nil
			j.i++
			if j.hash.n != part.Size || j.hash.hex() != part.SHA256 {
				return n, fmt.Errorf("%w: %s has sha256 %s (%d bytes), the list says %s (%d bytes); copy this part again", ErrBadPart, part.Name, j.hash.hex(), j.hash.n, part.SHA256, part.Size)
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			return n, fmt.Errorf("read %s: %w", part.Name, err)
		}
		return n, nil
	}
}

// Close releases the open part, if any.
func (j *JoinReader) Close() error {
	if j.cur != nil {
		return j.cur.Close()
	}
	return nil
}

// CheckParts verifies every part against the list without stopping at the
// first bad one, and returns the names of the damaged parts.
func CheckParts(out string, list PartsList) ([]string, error) {
	var bad []string
	for _, p := range list.Parts {
		f, err := os.Open(filepath.Join(filepath.Dir(out), p.Name))
		if err != nil {
			bad = append(bad, p.Name+" (missing)")
			continue
		}
		h := newHash()
		_, err = io.Copy(&h, f)
		_ = f.Close()
		if err != nil || h.n != p.Size || h.hex() != p.SHA256 {
			bad = append(bad, p.Name)
		}
	}
	if len(bad) > 0 {
		return bad, fmt.Errorf("%w: %s; copy these parts again", ErrBadPart, strings.Join(bad, ", "))
	}
	return nil, nil
}

// Abort removes what a failed write left: the part being written and the
// parts already finished (the parts list is only written by Close, so a
// reader never sees an incomplete set as whole).
func (w *SplitWriter) Abort() {
	if w.cur != nil {
		w.curDirect.Release()
		_ = w.cur.Close()
		_ = os.Remove(w.tmpName)
		w.cur = nil
	}
	for i := range w.list.Parts {
		_ = os.Remove(w.partName(i + 1))
	}
}
