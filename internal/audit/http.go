package audit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// RemoteAddr is the address a request came from: the peer's IP, or, when
// the peer is one of the trusted proxies, the last address in
// X-Forwarded-For that is not. Without trusted proxies the header is
// ignored: anyone can write it.
func RemoteAddr(r *http.Request, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || len(trusted) == 0 || !inAny(peer.Unmap(), trusted) {
		return host
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hops = append(hops, h)
			}
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			return host // a forged or broken header: the proxy is what we know
		}
		if !inAny(a.Unmap(), trusted) || i == 0 {
			return a.Unmap().String()
		}
	}
	return host
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParseTrusted reads proxy addresses and networks ("10.0.0.5",
// "10.0.0.0/24") for RemoteAddr.
func ParseTrusted(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: want an IP address or a network (10.0.0.0/24)", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// Claimed is the details of credentials that did not verify: the user
// name a Basic header claims, never the password.
func Claimed(header string) map[string]string {
	d := map[string]string{"credentials": "invalid"}
	if scheme, v, _ := strings.Cut(header, " "); strings.EqualFold(scheme, "basic") {
		if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v)); err == nil {
			if u, _, _ := strings.Cut(string(raw), ":"); u != "" {
				d["user"] = u
			}
		}
	}
	return d
}

// RedactURL hides the password a URL may carry, for a target or a detail.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}

// RegistryOptions say how Registry learns what it cannot read from the
// request alone.
type RegistryOptions struct {
	// Who names the caller, and details such as the user name claimed by
	// credentials that did not verify. Required.
	Who func(*http.Request) (actor string, details map[string]string)
	// Remote is the caller's address (default: the peer's IP).
	Remote func(*http.Request) string
	// TagDigest reads the digest a tag names, before a manifest is put by
	// tag, so that a moved tag says where it was. Optional.
	TagDigest func(ctx context.Context, repo, tag string) (string, bool)
	// Route names the request's route for details["route"]. Optional.
	Route func(*http.Request) string
	// Log reports entries that could not be recorded.
	Log *slog.Logger
}

// Registry records the writes of an OCI distribution API (/v2/) served
// by next: completed blob uploads and mounts, manifests and tags put,
// deletes, and every write request refused or failed. GET, HEAD and
// OPTIONS pass untouched, and so do upload steps that succeed (the start
// of an upload, each PATCH chunk): the upload's last request records it.
func Registry(l *Log, next http.Handler, o RegistryOptions) http.Handler {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		req := parseV2(r)
		previous := ""
		if req.kind == "manifest" && r.Method == http.MethodPut && !req.byDigest && o.TagDigest != nil {
			if d, ok := o.TagDigest(r.Context(), req.repo, req.ref); ok {
				previous = d
			}
		}
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rw, r)
		e, ok := req.entry(r.Method, rw.status, rw.Header().Get("Docker-Content-Digest"))
		if !ok {
			return
		}
		if previous != "" && !strings.HasSuffix(e.Target, "@"+previous) {
			e.Details["previous"] = previous
		}
		actor, who := o.Who(r)
		e.Actor = actor
		for k, v := range who {
			e.Details[k] = v
		}
		if o.Remote != nil {
			e.Remote = o.Remote(r)
		} else {
			e.Remote = RemoteAddr(r, nil)
		}
		if o.Route != nil {
			e.Details["route"] = o.Route(r)
		}
		if e.Outcome != OK {
			e.Reason = errorReason(rw.body, rw.status)
		}
		if err := l.Record(context.WithoutCancel(r.Context()), e); err != nil {
			log.Error("audit entry lost", "action", e.Action, "target", e.Target, "actor", e.Actor, "error", err)
		}
	})
}

// v2Request is what a /v2/ path names.
type v2Request struct {
	kind     string // "manifest", "upload", "blob", or "" for anything else
	repo     string
	ref      string // a tag or digest; an upload's id
	byDigest bool
	path     string
	query    map[string][]string
}

// parseV2 reads /v2/<name>/manifests/<ref>, /v2/<name>/blobs/<digest> and
// /v2/<name>/blobs/uploads/[<id>]. A reference holds no slash, so the name
// is everything before the last /manifests/ or /blobs/.
func parseV2(r *http.Request) v2Request {
	p := r.URL.Path
	q := r.URL.Query()
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return v2Request{path: p, query: q}
	}
	if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
		ref := rest[i+len("/manifests/"):]
		return v2Request{kind: "manifest", repo: rest[:i], ref: ref, byDigest: strings.Contains(ref, ":"), path: p, query: q}
	}
	if i := strings.LastIndex(rest, "/blobs/uploads"); i > 0 && (strings.HasSuffix(rest, "/blobs/uploads") || strings.Contains(rest[i:], "/blobs/uploads/")) {
		id := strings.TrimPrefix(strings.TrimPrefix(rest[i:], "/blobs/uploads"), "/")
		return v2Request{kind: "upload", repo: rest[:i], ref: id, path: p, query: q}
	}
	if i := strings.LastIndex(rest, "/blobs/"); i > 0 {
		return v2Request{kind: "blob", repo: rest[:i], ref: rest[i+len("/blobs/"):], byDigest: true, path: p, query: q}
	}
	return v2Request{path: p, query: q}
}

func (q v2Request) first(key string) string {
	if v := q.query[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// entry is the entry a write request makes, or false for a step of an
// upload that succeeded (the upload's end records it).
func (q v2Request) entry(method string, status int, digest string) (Entry, bool) {
	e := Entry{Outcome: OutcomeOf(status), Status: status, Details: map[string]string{"method": method}}
	ok := e.Outcome == OK
	switch {
	case q.kind == "manifest" && method == http.MethodPut:
		if q.byDigest {
			e.Action, e.Target = ActionPushManifest, q.repo+"@"+q.ref
		} else {
			e.Action, e.Target = ActionTag, q.repo+":"+q.ref
			if digest != "" {
				e.Target += "@" + digest
			}
		}
	case q.kind == "manifest" && method == http.MethodDelete:
		e.Action, e.Details["kind"] = ActionDelete, "manifest"
		if q.byDigest {
			e.Target = q.repo + "@" + q.ref
		} else {
			e.Target, e.Details["kind"] = q.repo+":"+q.ref, "tag"
		}
	case q.kind == "blob" && method == http.MethodDelete:
		e.Action, e.Target, e.Details["kind"] = ActionDelete, q.repo+"@"+q.ref, "blob"
	case q.kind == "upload":
		e.Action, e.Target = ActionPushBlob, q.repo
		d := firstNonEmpty(digest, q.first("digest"), q.first("mount"))
		switch {
		case method == http.MethodPost && status == http.StatusCreated:
			// A whole blob in one POST, or a mount from another repository.
			if from := q.first("from"); from != "" && q.first("mount") != "" {
				e.Details["mounted_from"] = from
			}
		case method == http.MethodPut:
		case ok:
			return Entry{}, false // the start of an upload, a chunk, a cancel
		default:
			e.Details["step"] = map[string]string{http.MethodPost: "start", http.MethodPatch: "chunk", http.MethodDelete: "cancel"}[method]
		}
		if d != "" {
			e.Target += "@" + d
		}
	default:
		e.Action, e.Target = ActionRegistry, q.path
		if q.repo != "" {
			e.Target = q.repo
		}
	}
	return e, true
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// errorReason reads an OCI error body ({"errors":[{"code","message"}]}),
// or falls back to the status text.
func errorReason(body []byte, status int) string {
	var b struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &b) == nil && len(b.Errors) > 0 {
		r := b.Errors[0].Code
		if m := b.Errors[0].Message; m != "" {
			r += ": " + m
		}
		return clip(r, 256)
	}
	return http.StatusText(status)
}

// statusWriter keeps the status, and the start of an error body.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	body        []byte
}

const maxErrorBody = 2048

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	if w.status >= 400 && len(w.body) < maxErrorBody {
		w.body = append(w.body, b[:min(len(b), maxErrorBody-len(w.body))]...)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
