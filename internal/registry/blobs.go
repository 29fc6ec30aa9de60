package registry

import (
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/coalesce"
)

// serveBlob answers a blob GET or HEAD by handing the stored file straight
// to http.ServeContent (ranges, If-None-Match and HEAD included), after the
// same checks distribution makes: the caller may pull, and the blob is
// linked into the repository. distribution's own path reads through a
// 4 MiB buffered reader, an extra copy of every byte served. Anything
// unusual falls through to distribution, which answers it properly.
//
// A blob pushed by a digest other than sha256 is answered under that
// digest, also when its repository links it as an alias of the sha256
// file (as distribution itself stores it; see digests.go): distribution
// would name the sha256.
func (r *Registry) serveBlob(w http.ResponseWriter, req *http.Request) bool {
	repo, ref, ok := blobPath(req.URL.Path)
	if !ok || r.onS3 { // in an object store, distribution reads through its driver
		return false
	}
	d, err := digest.Parse(ref)
	if err != nil {
		return false
	}
	if _, err := r.authorizer.AuthorizeRegistry(req, []Access{{Type: "repository", Name: repo, Action: "pull"}}); err != nil {
		return false
	}
	rp, err := r.repository(req.Context(), repo)
	if err != nil {
		return false
	}
	desc, err := rp.Blobs(req.Context()).Stat(req.Context(), d)
	if err != nil {
		return false
	}
	f, err := os.Open(r.store.BlobDataPath(desc.Digest))
	if err != nil {
		return false
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || info.Size() != desc.Size {
		return false
	}
	h := w.Header()
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000")
	h.Set("Docker-Content-Digest", d.String())
	mt := desc.MediaType
	if mt == "" {
		mt = "application/octet-stream"
	}
	h.Set("Content-Type", mt)
	// The body in large writes, and over HTTP/1.1 in large TLS writes: one
	// write(2) per 16 KiB record, or over HTTP/2 one trip per 32 KiB through
	// the connection's serve loop, was most of the CPU a blob pull cost.
	coalesce.ServeContent(w, req, d.String(), time.Time{}, f)
	return true
}

// blobPath splits /v2/<name>/blobs/<digest> (not uploads).
func blobPath(p string) (repo, ref string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/blobs/")
	if i <= 0 {
		return "", "", false
	}
	repo, ref = rest[:i], rest[i+len("/blobs/"):]
	if ref == "" || strings.Contains(ref, "/") || strings.HasPrefix(ref, "uploads") {
		return "", "", false
	}
	return repo, ref, true
}
