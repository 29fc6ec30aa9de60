package filestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// Problem is one file whose content is not what its entry says.
type Problem struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Detail string `json:"detail"`
}

// VerifyReport is what Verify read and found.
type VerifyReport struct {
	Files    int       `json:"files"`
	Bytes    int64     `json:"bytes"`
	Problems []Problem `json:"problems"`
}

// Verify reads the content of every file in the index and checks it
// against the entry's SHA-256 and size, as /files/ serves it. It changes
// nothing. Commits go on meanwhile: content that disappears because a
// commit replaced its last name is not reported.
func (s *Store) Verify(ctx context.Context) (VerifyReport, error) {
	snap := s.cur.Load()
	rep := VerifyReport{Problems: []Problem{}}
	checked := map[string]string{} // digest -> the problem found ("" when sound)
	buf := make([]byte, copyBuffer)
	for _, e := range snap.sorted {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		rep.Files++
		rep.Bytes += e.Size
		detail, done := checked[e.Digest]
		if !done {
			detail = s.verifyBlob(ctx, e, buf)
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			checked[e.Digest] = detail
		}
		if detail == "" {
			continue
		}
		if cur, ok := s.cur.Load().byName[e.Name]; !ok || cur.Digest != e.Digest {
			continue // replaced meanwhile
		}
		rep.Problems = append(rep.Problems, Problem{Name: e.Name, Digest: e.Digest, Detail: detail})
	}
	return rep, nil
}

// verifyBlob returns what is wrong with an entry's content, or "".
func (s *Store) verifyBlob(ctx context.Context, e Entry, buf []byte) string {
	var f io.ReadCloser
	var err error
	if s.bucket != nil {
		f, err = s.bucket.Open(ctx, blobKey(e.Digest), 0)
	} else {
		f, err = os.Open(s.blobPath(e.Digest))
	}
	if errors.Is(err, fs.ErrNotExist) {
		return "the content is missing from the store"
	}
	if err != nil {
		return fmt.Sprintf("the content cannot be read: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, fsutil.ContextReader(ctx, f), buf)
	if err != nil {
		return fmt.Sprintf("the content cannot be read: %v", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.TrimPrefix(e.Digest, "sha256:") {
		return fmt.Sprintf("the content (%d bytes) hashes to sha256:%s", n, got)
	}
	if n != e.Size {
		return fmt.Sprintf("the content is %d bytes, the entry says %d", n, e.Size)
	}
	return ""
}
