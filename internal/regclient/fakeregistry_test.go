package regclient_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
)

// fakeRegistry is a small in-memory registry of the OCI distribution API
// (blobs, monolithic uploads with cross-repository mounts, manifests)
// behind a fake of the documented Docker token protocol
// (https://distribution.github.io/distribution/spec/auth/token/): GET /v2/
// answers 401 with a Bearer challenge naming the realm and the service, the
// token endpoint checks the service, the Basic credentials and grants the
// scopes asked for, and the registry checks that each call's token is
// unexpired and covers the call's scope. Harbor and the appliance serve
// this protocol for real in the e2e tests (test/e2e); this fake lets the
// tests here expire and revoke tokens and look at every request.
type fakeRegistry struct {
	srv *httptest.Server

	// Settings, fixed before the first request.
	users         map[string]string // user -> password
	anonymousPull bool              // the token service grants pull to anonymous callers
	service       string
	realm         string                      // the challenge's realm; default srv.URL+"/token"
	noRealm       bool                        // the challenge names no realm
	expiresIn     int                         // seconds; 0 leaves expires_in out of the answer
	uploadHost    string                      // when set, upload locations are absolute URLs on it
	noLocation    bool                        // upload starts answer 202 without a Location
	rejectTokens  bool                        // the registry refuses every token (as after a key rotation)
	tokenAnswer   func(w http.ResponseWriter) // replaces the token service's answer

	mu            sync.Mutex
	blobs         map[string][]byte // repo@digest
	manifests     map[string]fakeManifest
	uploads       map[string]string // id -> repo
	tokens        map[string]fakeGrant
	tokenRequests []fakeTokenRequest
	unauthorized  int      // 401s the registry (not the token service) answered
	requests      []string // "METHOD /path?query" of every registry request
}

type fakeManifest struct {
	mediaType string
	payload   []byte
}

type fakeGrant struct {
	access  map[string][]string // "repository:a/b" -> actions
	expires time.Time
}

type fakeTokenRequest struct {
	user   string // "" for anonymous
	scopes []string
}

func newFakeRegistry(t *testing.T, configure func(*fakeRegistry)) *fakeRegistry {
	t.Helper()
	f := &fakeRegistry{
		users:     map[string]string{"alice": "alice-pw-S3cr3t"},
		service:   "fake-registry",
		blobs:     map[string][]byte{},
		manifests: map[string]fakeManifest{},
		uploads:   map[string]string{},
		tokens:    map[string]fakeGrant{},
	}
	if configure != nil {
		configure(f)
	}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	if f.realm == "" {
		f.realm = f.srv.URL + "/token"
	}
	return f
}

// caPEM is the PEM of the certificate httptest's TLS servers share.
func (f *fakeRegistry) caPEM() []byte { return serverPEM(f.srv) }

// serverPEM is the PEM of an httptest TLS server's certificate.
func serverPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// client is a client of the fake as user (anonymous when "").
func (f *fakeRegistry) client(t *testing.T, user string) *regclient.Client {
	t.Helper()
	o := regclient.Options{URL: f.srv.URL, CAPEM: f.caPEM(), UserAgent: "regclient-test"}
	if user != "" {
		o.Username, o.Password = user, f.users[user]
	}
	return newClient(t, o)
}

func (f *fakeRegistry) host() string { return f.srv.Listener.Addr().String() }

func (f *fakeRegistry) revokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.tokens)
}

func (f *fakeRegistry) counts() (tokenRequests, unauthorized int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tokenRequests), f.unauthorized
}

func (f *fakeRegistry) lastTokenRequest() fakeTokenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.tokenRequests) == 0 {
		return fakeTokenRequest{}
	}
	return f.tokenRequests[len(f.tokenRequests)-1]
}

func (f *fakeRegistry) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func (f *fakeRegistry) putBlob(repo string, data []byte) digest.Digest {
	d := digest.FromBytes(data)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[repo+"@"+d.String()] = data
	return d
}

func (f *fakeRegistry) blob(repo string, d digest.Digest) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blobs[repo+"@"+d.String()]
	return b, ok
}

func (f *fakeRegistry) manifest(repo, ref string) (fakeManifest, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.manifests[repo+"@"+ref]
	return m, ok
}

func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

var fakePathRE = regexp.MustCompile(`^/v2/(.+?)/(blobs/uploads/|blobs/|manifests/|tags/list|referrers/)(.*)$`)

func (f *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		f.serveToken(w, r)
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
	f.mu.Unlock()

	if r.URL.Path == "/v2/" {
		if f.authorized(w, r, "", "") {
			w.WriteHeader(http.StatusOK)
		}
		return
	}
	m := fakePathRE.FindStringSubmatch(r.URL.Path)
	if m == nil {
		ociError(w, http.StatusNotFound, "NAME_UNKNOWN", "no such endpoint")
		return
	}
	repo, kind, rest := m[1], m[2], m[3]
	action := "pull"
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		action = "push"
	}
	if !f.authorized(w, r, "repository:"+repo, action) {
		return
	}
	switch {
	case kind == "blobs/" && (r.Method == http.MethodHead || r.Method == http.MethodGet):
		b, ok := f.blob(repo, digest.Digest(rest))
		if !ok {
			ociError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
			return
		}
		w.Header().Set("Docker-Content-Digest", rest)
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(b)
		}
	case kind == "blobs/uploads/" && rest == "" && r.Method == http.MethodPost:
		if mount, from := r.URL.Query().Get("mount"), r.URL.Query().Get("from"); mount != "" && from != "" && f.mayPull(r, from) {
			if b, ok := f.blob(from, digest.Digest(mount)); ok {
				f.putBlob(repo, b)
				w.Header().Set("Location", "/v2/"+repo+"/blobs/"+mount)
				w.WriteHeader(http.StatusCreated)
				return
			}
		}
		id := randomHex(8)
		f.mu.Lock()
		f.uploads[id] = repo
		f.mu.Unlock()
		loc := "/v2/" + repo + "/blobs/uploads/" + id
		if f.uploadHost != "" {
			loc = f.uploadHost + loc
		}
		if !f.noLocation {
			w.Header().Set("Location", loc)
		}
		w.WriteHeader(http.StatusAccepted)
	case kind == "blobs/uploads/" && rest != "" && r.Method == http.MethodPut:
		f.mu.Lock()
		upRepo, ok := f.uploads[rest]
		delete(f.uploads, rest)
		f.mu.Unlock()
		if !ok || upRepo != repo {
			ociError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if want := digest.Digest(r.URL.Query().Get("digest")); digest.FromBytes(body) != want {
			ociError(w, http.StatusBadRequest, "DIGEST_INVALID", "provided digest did not match uploaded content")
			return
		}
		d := f.putBlob(repo, body)
		w.Header().Set("Location", "/v2/"+repo+"/blobs/"+d.String())
		w.Header().Set("Docker-Content-Digest", d.String())
		w.WriteHeader(http.StatusCreated)
	case kind == "blobs/uploads/" && rest != "" && r.Method == http.MethodDelete:
		f.mu.Lock()
		delete(f.uploads, rest)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case kind == "manifests/" && r.Method == http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(r.Body, regclient.MaxManifestSize))
		if err != nil {
			return
		}
		d := digest.FromBytes(body)
		m := fakeManifest{mediaType: r.Header.Get("Content-Type"), payload: body}
		f.mu.Lock()
		f.manifests[repo+"@"+rest] = m
		f.manifests[repo+"@"+d.String()] = m
		f.mu.Unlock()
		var probe struct {
			Subject *struct {
				Digest string `json:"digest"`
			} `json:"subject"`
		}
		if json.Unmarshal(body, &probe) == nil && probe.Subject != nil {
			w.Header().Set("OCI-Subject", probe.Subject.Digest)
		}
		w.Header().Set("Docker-Content-Digest", d.String())
		w.WriteHeader(http.StatusCreated)
	case kind == "manifests/" && (r.Method == http.MethodHead || r.Method == http.MethodGet):
		m, ok := f.manifest(repo, rest)
		if !ok {
			ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		w.Header().Set("Content-Type", m.mediaType)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.payload).String())
		w.Header().Set("Content-Length", fmt.Sprint(len(m.payload)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(m.payload)
		}
	default:
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "the fake does not serve "+r.Method+" "+kind)
	}
}

// authorized checks the request's credentials for resource:action ("" for
// GET /v2/, which any valid token passes) and answers 401 when they fail.
func (f *fakeRegistry) authorized(w http.ResponseWriter, r *http.Request, resource, action string) bool {
	scope := ""
	if resource != "" {
		scope = resource + ":" + action
	}
	refuse := func() bool {
		f.mu.Lock()
		f.unauthorized++
		f.mu.Unlock()
		ch := fmt.Sprintf(`Bearer realm=%q,service=%q`, f.realm, f.service)
		if f.noRealm {
			ch = fmt.Sprintf(`Bearer service=%q`, f.service)
		}
		if scope != "" {
			ch += fmt.Sprintf(`,scope=%q`, scope)
		}
		w.Header().Set("WWW-Authenticate", ch)
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return false
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || f.rejectTokens {
		return refuse()
	}
	f.mu.Lock()
	g, ok := f.tokens[tok]
	f.mu.Unlock()
	if !ok || time.Now().After(g.expires) {
		return refuse()
	}
	if resource != "" && !slices.Contains(g.access[resource], action) {
		return refuse()
	}
	return true
}

// mayPull tells whether the request's token grants pull on repo (needed
// to mount a blob from it, as distribution checks).
func (f *fakeRegistry) mayPull(r *http.Request, repo string) bool {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.tokens[tok].access["repository:"+repo], "pull")
}

func (f *fakeRegistry) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	user, pw, hasCreds := r.BasicAuth()
	req := fakeTokenRequest{user: user, scopes: q["scope"]}
	f.mu.Lock()
	f.tokenRequests = append(f.tokenRequests, req)
	f.mu.Unlock()
	if q.Get("service") != f.service {
		ociError(w, http.StatusBadRequest, "UNSUPPORTED", "unknown service "+q.Get("service"))
		return
	}
	if hasCreds && (f.users[user] == "" || f.users[user] != pw) {
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	if !hasCreds && !f.anonymousPull {
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	if f.tokenAnswer != nil {
		f.tokenAnswer(w)
		return
	}
	g := fakeGrant{access: map[string][]string{}, expires: time.Now().Add(time.Duration(f.expiresIn) * time.Second)}
	if f.expiresIn == 0 {
		g.expires = time.Now().Add(60 * time.Second) // the protocol's default
	}
	for _, s := range q["scope"] {
		i, j := strings.Index(s, ":"), strings.LastIndex(s, ":")
		if i < 0 || i == j {
			ociError(w, http.StatusBadRequest, "INVALID_SCOPE", "scope "+s)
			return
		}
		for _, a := range strings.Split(s[j+1:], ",") {
			if hasCreds || a == "pull" {
				g.access[s[:j]] = append(g.access[s[:j]], a)
			}
		}
	}
	tok := randomHex(16)
	f.mu.Lock()
	f.tokens[tok] = g
	f.mu.Unlock()
	answer := map[string]any{"token": tok, "issued_at": time.Now().UTC().Format(time.RFC3339)}
	if f.expiresIn != 0 {
		answer["expires_in"] = f.expiresIn
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
