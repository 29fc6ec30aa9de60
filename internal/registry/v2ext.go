package registry

import (
	"bytes"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// What the appliance adds to distribution's /v2/ writes for
// distribution-spec 1.1: the OCI-Subject header on a manifest PUT whose
// manifest has a subject, manifests PUT by a digest that is not sha256,
// and blobs uploaded or mounted by one (see digests.go). The referrers
// API itself is a read (referrers.go).

// maxManifestBody is distribution's limit on a manifest PUT's body.
const maxManifestBody = 4 << 20

// serveWrite handles, or prepares for distribution, a write that passed
// the read-only gate. It returns the writer distribution must answer
// through, and true when it answered the request itself.
func (r *Registry) serveWrite(w http.ResponseWriter, req *http.Request) (http.ResponseWriter, bool) {
	switch req.Method {
	case http.MethodPut:
		if repo, ref, ok := manifestPath(req.URL.Path); ok {
			return r.servePutManifest(w, req, repo, ref)
		}
		if repo, id, ok := uploadPath(req.URL.Path); ok && id != "" {
			if d, ok := uncanonical(req, "digest"); ok {
				return r.finishUpload(w, req, repo, d), false
			}
		}
	case http.MethodPost:
		if repo, id, ok := uploadPath(req.URL.Path); ok && id == "" {
			if d, ok := uncanonical(req, "mount"); ok && req.URL.Query().Get("from") != "" {
				r.prepareMount(req, repo, req.URL.Query().Get("from"), d)
			}
		}
	}
	return w, false
}

// servePutManifest stores a manifest PUT by a digest that is not sha256
// itself, and has distribution's answer to any other carry OCI-Subject
// when the manifest has a subject. distribution reads the manifest whole
// before it answers, once the caller may push: the subject is found in a
// copy of what it read.
func (r *Registry) servePutManifest(w http.ResponseWriter, req *http.Request, repo, ref string) (http.ResponseWriter, bool) {
	if d, err := digest.Parse(ref); err == nil && d.Algorithm() != digest.Canonical {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		r.putManifestByDigest(w, req, repo, d)
		return w, true
	}
	read := &cappedBuffer{max: maxManifestBody}
	req.Body = readCloser{io.TeeReader(req.Body, read), req.Body}
	return &hookWriter{ResponseWriter: w, hook: func(status int, h http.Header) {
		if status != http.StatusCreated || read.over {
			return
		}
		if s := subjectOf(read.Bytes()); s != "" {
			h.Set("OCI-Subject", s.String())
		}
	}}, false
}

// cappedBuffer keeps the first max bytes written to it, and whether more
// came.
type cappedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - b.Len(); n > room {
		b.over = true
		p = p[:max(room, 0)]
	}
	b.Buffer.Write(p)
	return n, nil
}

// readCloser is a request body read from r and closed with c.
type readCloser struct {
	io.Reader
	io.Closer
}

// hookWriter calls hook with the status and the headers just before the
// status is written, once.
type hookWriter struct {
	http.ResponseWriter
	hook    func(status int, h http.Header)
	written bool
}

func (w *hookWriter) WriteHeader(status int) {
	if !w.written && status >= 200 {
		w.written = true
		w.hook(status, w.Header())
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *hookWriter) Write(p []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (w *hookWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
