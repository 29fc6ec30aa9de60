package benchkit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ManifestAccept is the Accept header of a manifest GET, as crane and
// containerd send it.
var ManifestAccept = strings.Join([]string{MediaTypeManifest, MediaTypeIndex,
	"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ", ")

// ErrDigestMismatch marks content whose sha256 or size is not what its
// descriptor says.
var ErrDigestMismatch = errors.New("digest mismatch")

// WriteImage generates one image into an OCI image layout at dir: a layer
// of each size in sizes (random, incompressible, see WriteLayer), tagged
// tag. The layers' random bytes are keyed (seed, 1<<40, i), which no image
// of WriteImageSet uses.
func WriteImage(ctx context.Context, dir, tag string, sizes []int64, seed uint64) (*ImageSet, error) {
	s := &ImageSet{Layout: dir}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o750); err != nil {
		return nil, err
	}
	layers := make([]Layer, len(sizes))
	err := Parallel(ctx, len(sizes), func(i int) error {
		var err error
		layers[i], err = s.writeLayer(sizes[i], seed, 1<<40, i)
		return err
	})
	if err != nil {
		return nil, err
	}
	img := NewImage(tag, layers)
	for _, b := range [][]byte{img.Config, img.Manifest} {
		if err := os.WriteFile(s.BlobPath(sha256Digest(b)), b, 0o644); err != nil { //nolint:gosec // test data
			return nil, err
		}
	}
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": []map[string]any{{
		"mediaType": MediaTypeManifest, "digest": img.ManifestDigest, "size": len(img.Manifest), "annotations": map[string]string{refNameAnnotation: tag}}}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil { //nolint:gosec // test data
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil { //nolint:gosec // test data
		return nil, err
	}
	s.Images = []Image{img}
	for _, l := range layers {
		s.LayerCount++
		s.LayerBytes += l.Size
	}
	s.Payload = s.LayerBytes + int64(len(img.Config)+len(img.Manifest))
	return s, nil
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// PushImage uploads img of s (its layers, config and manifest, tagged
// img.Tag) into repo of the registry at base, sending authorization (a
// whole Authorization value, "" for none) with every request: one POST and
// one PUT per blob, then the manifest, whose digest the registry must
// confirm.
func PushImage(ctx context.Context, hc *http.Client, base *url.URL, authorization, repo string, s *ImageSet, img Image) error {
	do := func(method, u, contentType string, body io.Reader, size int64, want int) (http.Header, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, body)
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.ContentLength = size
			req.Header.Set("Content-Type", contentType)
		}
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			return nil, fmt.Errorf("%s %s: %s: %s", method, req.URL.Path, resp.Status, bytes.TrimSpace(msg))
		}
		return resp.Header, nil
	}
	blobs := []string{img.ConfigDigest}
	for _, l := range img.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		h, err := do(http.MethodPost, base.JoinPath("/v2/", repo, "/blobs/uploads/").String(), "", nil, 0, http.StatusAccepted)
		if err != nil {
			return fmt.Errorf("push %s: %w", d, err)
		}
		loc, err := base.Parse(h.Get("Location"))
		if err != nil || loc.Host != base.Host {
			return fmt.Errorf("push %s: upload location %q is not on the registry", d, h.Get("Location"))
		}
		q := loc.Query()
		q.Set("digest", d)
		loc.RawQuery = q.Encode()
		f, err := os.Open(s.BlobPath(d))
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err == nil {
			_, err = do(http.MethodPut, loc.String(), "application/octet-stream", f, st.Size(), http.StatusCreated)
		}
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("push %s: %w", d, err)
		}
	}
	h, err := do(http.MethodPut, base.JoinPath("/v2/", repo, "/manifests/", img.Tag).String(), MediaTypeManifest,
		bytes.NewReader(img.Manifest), int64(len(img.Manifest)), http.StatusCreated)
	if err != nil {
		return fmt.Errorf("push the manifest: %w", err)
	}
	if got := h.Get("Docker-Content-Digest"); got != img.ManifestDigest {
		return fmt.Errorf("push the manifest: the registry names it %q, want %s", got, img.ManifestDigest)
	}
	return nil
}

// ParseChallenge splits a WWW-Authenticate value,
// `Bearer realm="…",service="…",scope="a:b:c,d"`, into its scheme and
// parameters (names in lower case).
func ParseChallenge(h string) (scheme string, params map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params = map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k] = v[1 : 1+end]
			rest = strings.TrimLeft(v[2+end:], ", ")
		} else {
			val, next, _ := strings.Cut(v, ",")
			params[k] = strings.TrimSpace(val)
			rest = strings.TrimSpace(next)
		}
	}
	return scheme, params
}

// PullOptions says how a Puller pulls.
type PullOptions struct {
	// Roots trusts the registry's certificate.
	Roots *x509.CertPool
	// HTTP2 speaks HTTP/2 (containerd, crane), else HTTP/1.1 (skopeo,
	// podman); a connection of the other protocol is an error.
	HTTP2 bool
	// Token does what crane and skopeo do before a pull: GET /v2/, and on
	// a Bearer challenge fetch an anonymous token for the repository from
	// the challenge's realm. Without it, requests carry no Authorization,
	// as containerd's do when the registry answers its first request
	// without a challenge; a challenge then is answered with a token and
	// the request repeated, as containerd does.
	Token bool
	// Timeout bounds one pull.
	Timeout time.Duration
}

// Puller is one anonymous client that pulls images over its own
// connection (kept between its pulls, as a node's containerd keeps it).
// A Puller is not safe for concurrent use.
type Puller struct {
	base *url.URL
	o    PullOptions
	tr   *http.Transport
	hc   *http.Client
	buf  []byte
	sum  hash.Hash
}

// NewPuller returns a puller of the registry at base ("https://host:port").
func NewPuller(base *url.URL, o PullOptions) *Puller {
	var protos http.Protocols
	if o.HTTP2 {
		protos.SetHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: o.Roots, MinVersion: tls.VersionTLS12},
		Protocols:           &protos,
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 30 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		// The registry serves blobs as they are; a gzip the transport
		// undid would not hash to the digest.
		DisableCompression: true,
	}
	return &Puller{base: base, o: o, tr: tr, hc: &http.Client{Transport: tr}, buf: make([]byte, 32<<10), sum: sha256.New()}
}

// Close closes the puller's idle connections.
func (p *Puller) Close() { p.tr.CloseIdleConnections() }

// Pull is what one pull did.
type Pull struct {
	Start time.Time
	// Total is the whole pull.
	Total time.Duration
	// Digests counts the digests verified (the manifest's and each
	// blob's); Bytes the blob bytes they cover.
	Digests int
	Bytes   int64
	// Err is why the pull failed (a *PullError), nil if every digest of
	// the image was verified.
	Err error
}

// PullError is the step of a pull that failed, and why.
type PullError struct {
	Step   string // "GET /v2/", "GET token", "GET manifest", "GET blob sha256:…"
	Status int    // the HTTP status, when the registry answered
	After  time.Duration
	Err    error
}

func (e *PullError) Error() string {
	s := e.Step
	if e.Status != 0 {
		s += " " + strconv.Itoa(e.Status)
	}
	return fmt.Sprintf("%s (%.1f s into the pull): %v", s, e.After.Seconds(), e.Err)
}

func (e *PullError) Unwrap() error { return e.Err }

// Pull does what a client does to pull repo:tag, whose manifest digest must
// be want: (with PullOptions.Token, GET /v2/ and an anonymous token), the
// manifest by tag with ManifestAccept, then the config and every layer,
// one after the other. Every byte is verified: the manifest's sha256 and
// Docker-Content-Digest against want, each blob's sha256 and size against
// its descriptor.
func (p *Puller) Pull(ctx context.Context, repo, tag, want string) Pull {
	r := Pull{Start: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	fail := func(step string, status int, err error) Pull {
		r.Total = time.Since(r.Start)
		r.Err = &PullError{Step: step, Status: status, After: r.Total, Err: err}
		return r
	}
	scope := "repository:" + repo + ":pull"
	authz := ""
	if p.o.Token {
		var (
			step   string
			status int
			err    error
		)
		authz, step, status, err = p.authorize(ctx, scope)
		if err != nil {
			return fail(step, status, err)
		}
	}
	fallback := false
	body, status, _, err := p.manifest(ctx, repo, tag, want, &authz, &fallback)
	if err != nil {
		return fail("GET manifest", status, err)
	}
	r.Digests++
	var m struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return fail("GET manifest", status, err)
	}
	for _, d := range append([]descriptor{m.Config}, m.Layers...) {
		step := "GET blob " + d.Digest
		resp, err := p.get(ctx, "/v2/"+repo+"/blobs/"+d.Digest, "", &authz, &fallback, scope)
		if err != nil {
			return fail(step, 0, err)
		}
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			return fail(step, resp.StatusCode, fmt.Errorf("%s", bytes.TrimSpace(msg)))
		}
		p.sum.Reset()
		n, err := io.CopyBuffer(p.sum, io.LimitReader(resp.Body, d.Size+1), p.buf)
		_ = resp.Body.Close()
		if err != nil {
			return fail(step, resp.StatusCode, fmt.Errorf("after %d of %d bytes: %w", n, d.Size, err))
		}
		if got := "sha256:" + hex.EncodeToString(p.sum.Sum(nil)); got != d.Digest || n != d.Size {
			return fail(step, resp.StatusCode, fmt.Errorf("%w: %d bytes hashing to %s, want %d bytes", ErrDigestMismatch, n, got, d.Size))
		}
		r.Digests++
		r.Bytes += n
	}
	r.Total = time.Since(r.Start)
	return r
}

// manifest GETs repo:tag with ManifestAccept and checks it: 200, the
// puller's protocol, an OCI manifest whose sha256 and Docker-Content-Digest
// are want. It returns the body, the HTTP status and the protocol.
func (p *Puller) manifest(ctx context.Context, repo, tag, want string, authz *string, fallback *bool) ([]byte, int, string, error) {
	resp, err := p.get(ctx, "/v2/"+repo+"/manifests/"+tag, ManifestAccept, authz, fallback, "repository:"+repo+":pull")
	if err != nil {
		return nil, 0, "", err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	_ = resp.Body.Close()
	switch {
	case err != nil:
	case resp.StatusCode != http.StatusOK:
		err = fmt.Errorf("%s", bytes.TrimSpace(body))
	case resp.ProtoMajor != map[bool]int{true: 2, false: 1}[p.o.HTTP2]:
		err = fmt.Errorf("answered over %s", resp.Proto)
	case resp.Header.Get("Content-Type") != MediaTypeManifest:
		err = fmt.Errorf("content type %q", resp.Header.Get("Content-Type"))
	case sha256Digest(body) != want || resp.Header.Get("Docker-Content-Digest") != want:
		err = fmt.Errorf("%w: body %s, Docker-Content-Digest %q, want %s", ErrDigestMismatch, sha256Digest(body), resp.Header.Get("Docker-Content-Digest"), want)
	}
	return body, resp.StatusCode, resp.Proto, err
}

// Manifest is the manifest GET of Pull alone (with a token when
// PullOptions.Token, fetched first and not timed): how long it took, from
// the request sent to its body read and checked.
func (p *Puller) Manifest(ctx context.Context, repo, tag, want string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	start := time.Now()
	authz, fallback := "", false
	if p.o.Token {
		var err error
		step := ""
		if authz, step, _, err = p.authorize(ctx, "repository:"+repo+":pull"); err != nil {
			return 0, &PullError{Step: step, After: time.Since(start), Err: err}
		}
	}
	t0 := time.Now()
	_, status, _, err := p.manifest(ctx, repo, tag, want, &authz, &fallback)
	d := time.Since(t0)
	if err != nil {
		return d, &PullError{Step: "GET manifest", Status: status, After: time.Since(start), Err: err}
	}
	return d, nil
}

type descriptor struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// get sends GET path with *authz. Without one, a Bearer challenge is
// answered with a token for scope, kept in *authz, and the request sent
// again (*fallback is then set). The caller closes the body.
func (p *Puller) get(ctx context.Context, path, accept string, authz *string, fallback *bool, scope string) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base.JoinPath(path).String(), nil)
		if err != nil {
			return nil, err
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if *authz != "" {
			req.Header.Set("Authorization", *authz)
		}
		resp, err := p.hc.Do(req)
		if err != nil || resp.StatusCode != http.StatusUnauthorized || *authz != "" || attempt > 0 {
			return resp, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		tok, err := p.token(ctx, resp.Header.Get("WWW-Authenticate"), scope)
		if err != nil {
			return nil, fmt.Errorf("challenged: %w", err)
		}
		*authz, *fallback = tok, true
	}
}

// authorize is a client's first steps: GET /v2/, then, on a Bearer
// challenge, the token. It returns the Authorization value ("" if GET /v2/
// answered 200), or the step that failed.
func (p *Puller) authorize(ctx context.Context, scope string) (authz, step string, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base.JoinPath("/v2/").String(), nil)
	if err != nil {
		return "", "GET /v2/", 0, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return "", "GET /v2/", 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return "", "", 0, nil
	case http.StatusUnauthorized:
	default:
		return "", "GET /v2/", resp.StatusCode, errors.New("want 200 or 401")
	}
	tok, err := p.token(ctx, resp.Header.Get("WWW-Authenticate"), scope)
	if err != nil {
		var te *tokenError
		if errors.As(err, &te) {
			return "", "GET token", te.status, err
		}
		return "", "GET token", 0, err
	}
	return tok, "", 0, nil
}

type tokenError struct {
	status int
	msg    string
}

func (e *tokenError) Error() string { return e.msg }

// token fetches an anonymous token for scope (see FetchToken).
func (p *Puller) token(ctx context.Context, challenge, scope string) (string, error) {
	return FetchToken(ctx, p.hc, p.base, challenge, scope, "", "")
}

// FetchToken answers challenge, a Bearer challenge whose realm must be on
// base's host, with a token for scope: anonymous, or with Basic
// credentials when user is set. It returns the whole Authorization value,
// "Bearer …"; a refusal is a *tokenError with the HTTP status.
func FetchToken(ctx context.Context, hc *http.Client, base *url.URL, challenge, scope, user, password string) (string, error) {
	scheme, params := ParseChallenge(challenge)
	if !strings.EqualFold(scheme, "bearer") || params["realm"] == "" {
		return "", fmt.Errorf("unusable challenge %q", challenge)
	}
	realm, err := base.Parse(params["realm"])
	if err != nil || realm.Host != base.Host {
		return "", fmt.Errorf("token realm %q is not the registry's host (only loopback)", params["realm"])
	}
	q := realm.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET token: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("GET token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", &tokenError{status: resp.StatusCode, msg: fmt.Sprintf("GET token: %s: %s", resp.Status, bytes.TrimSpace(body))}
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", fmt.Errorf("GET token: %w", err)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	if tr.Token == "" {
		return "", errors.New("GET token: no token in the answer")
	}
	return "Bearer " + tr.Token, nil
}
