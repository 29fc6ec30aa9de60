package filestore

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/internal/coalesce"
)

// Handler serves the store read-only. It expects the path with its mount
// prefix removed (http.StripPrefix("/files", h)):
//
//	GET /                  {"files":[Entry…]} (also /?format=json)
//	GET|HEAD /<name>       the content, with Range and If-None-Match;
//	                       ETag "sha256:<hex>", Digest: sha-256=<base64>,
//	                       X-Checksum-Sha256: <hex>
//	GET /<name>.sha256     "<hex>  <basename>\n", for sha256sum -c
//	GET /SHA256SUMS        one such line per file, names relative to /files/
//
// A stored file whose name ends in .sha256, or is SHA256SUMS, is served in
// place of the generated one. Unknown names answer 404, methods other than
// GET and HEAD 405.
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Store) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/")
	// A commit may replace a name and remove its old blob between the
	// lookup and the open: look again in the index that replaced it.
	refreshed := false
	for range 3 {
		snap := s.cur.Load()
		switch done, err := s.serveName(w, r, snap, name); {
		case done:
			return
		case err == nil:
			http.Error(w, "file not found", http.StatusNotFound)
			return
		case errors.Is(err, fs.ErrNotExist) && s.bucket != nil && s.cur.Load() == snap && !refreshed:
			// A replica's index may be older than its writer's, which
			// replaced the name and removed the content: read it again,
			// once.
			refreshed = true
			if rerr := s.Refresh(r.Context()); rerr != nil {
				s.log.Error("file index not read again", "name", name, "err", rerr)
				http.Error(w, "file content unavailable", http.StatusInternalServerError)
				return
			}
		case !errors.Is(err, fs.ErrNotExist) || s.cur.Load() == snap:
			s.log.Error("file content unavailable", "name", name, "err", err)
			http.Error(w, "file content unavailable", http.StatusInternalServerError)
			return
		}
	}
	http.Error(w, "file content unavailable, try again", http.StatusServiceUnavailable)
}

// serveName answers for name from snap: done when it wrote a response, an
// error when a blob could not be opened, neither when nothing has the name.
func (s *Store) serveName(w http.ResponseWriter, r *http.Request, snap *snapshot, name string) (bool, error) {
	if name == "" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		files := snap.sorted
		if files == nil {
			files = []Entry{}
		}
		if err := json.NewEncoder(w).Encode(struct {
			Files []Entry `json:"files"`
		}{files}); err != nil {
			s.log.Debug("file list not sent", "err", err)
		}
		return true, nil
	}
	if e, ok := snap.byName[name]; ok {
		return s.serveBlob(w, r, e)
	}
	if base, ok := strings.CutSuffix(name, ".sha256"); ok {
		if e, ok := snap.byName[base]; ok {
			serveText(w, r, sumLine(e, path.Base(base)))
			return true, nil
		}
	}
	if name == "SHA256SUMS" {
		var b strings.Builder
		for _, e := range snap.sorted {
			b.WriteString(sumLine(e, e.Name))
		}
		serveText(w, r, b.String())
		return true, nil
	}
	return false, nil
}

// serveBlob serves the content of e. There is no Last-Modified: a name can
// be replaced twice within a second, and a client's If-Modified-Since would
// then be answered 304 with the old content. The ETag is the validator.
func (s *Store) serveBlob(w http.ResponseWriter, r *http.Request, e Entry) (bool, error) {
	f, size, err := s.openBlob(r.Context(), e)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if size != e.Size {
		s.log.Error("file content has the wrong size", "name", e.Name, "digest", e.Digest, "size", size, "want", e.Size)
		http.Error(w, "file content damaged", http.StatusInternalServerError)
		return true, nil
	}
	hexd := strings.TrimPrefix(e.Digest, "sha256:")
	raw, _ := hex.DecodeString(hexd) // checked when the entry was committed or loaded
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+e.Digest+`"`)
	h.Set("Digest", "sha-256="+base64.StdEncoding.EncodeToString(raw))
	h.Set("X-Checksum-Sha256", hexd)
	coalesce.ServeContent(w, r, path.Base(e.Name), time.Time{}, f)
	return true, nil
}

// openBlob opens the content of e for serving and returns its size.
func (s *Store) openBlob(ctx context.Context, e Entry) (io.ReadSeekCloser, int64, error) {
	if s.bucket != nil {
		size, err := s.bucket.Size(ctx, blobKey(e.Digest))
		if err != nil {
			return nil, 0, err
		}
		return &objectReader{ctx: ctx, b: s.bucket, key: blobKey(e.Digest), size: size}, size, nil
	}
	f, err := os.Open(s.blobPath(e.Digest))
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// sumLine is e's line in sha256sum's format, naming the file as name.
func sumLine(e Entry, name string) string {
	return strings.TrimPrefix(e.Digest, "sha256:") + "  " + name + "\n"
}

func serveText(w http.ResponseWriter, r *http.Request, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(text))
}
