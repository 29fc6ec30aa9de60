package regclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ManifestTypes are the manifest media types the client accepts.
var ManifestTypes = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	"application/vnd.docker.distribution.manifest.v1+json",
}

var acceptManifests = strings.Join(ManifestTypes, ", ")

// MaxManifestSize bounds a manifest read (distribution refuses larger ones too).
const MaxManifestSize = 4 << 20

// Descriptor names content in a registry.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// CheckPush proves the credentials may push to repo: it starts a blob
// upload there and cancels it. Nothing is stored.
func (c *Client) CheckPush(ctx context.Context, repo string) error {
	r := request{op: "check push rights on", target: c.Host() + "/" + repo, method: http.MethodPost,
		path: repoPath(repo, "blobs/uploads/"), scopes: scopes(pushScope(repo)), body: http.NoBody, size: 0}
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return statusError(r.op, r.target, resp)
	}
	loc := resp.Header.Get("Location")
	drain(resp)
	if loc == "" {
		return &Error{Op: r.op, Target: r.target, Status: resp.StatusCode, Err: fmt.Errorf("%w: no upload location", ErrProtocol)}
	}
	abs, err := c.resolve(resp.Request.URL, loc)
	if err != nil {
		return &Error{Op: r.op, Target: r.target, Err: err}
	}
	cancel := request{op: "cancel upload in", target: r.target, method: http.MethodDelete, absolute: abs, scopes: r.scopes}
	if resp, err := c.send(ctx, cancel); err == nil {
		drain(resp)
	}
	return nil
}

func (c *Client) resolve(from *url.URL, loc string) (string, error) {
	u, err := from.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("%w: upload location %q", ErrProtocol, loc)
	}
	if u.Host != from.Host || u.Scheme != from.Scheme {
		// Credentials go only to the registry itself.
		return "", fmt.Errorf("%w: upload location %q is on another host", ErrProtocol, loc)
	}
	return u.String(), nil
}

// HeadBlob tells whether repo holds blob d.
func (c *Client) HeadBlob(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	r := request{op: "check blob", target: c.Host() + "/" + repo + "@" + d.String(), method: http.MethodHead,
		path: repoPath(repo, "blobs/"+d.String()), scopes: scopes(pullScope(repo))}
	resp, err := c.send(ctx, r)
	if err != nil {
		return false, err
	}
	drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, statusError(r.op, r.target, resp)
}

// PushBlob uploads blob d (size bytes) into repo. With mountFrom, a
// repository of the same registry that holds it, it asks the registry to
// link it from there instead, and only uploads when that is refused.
// open is called only when the bytes must be sent. It reports whether the
// blob was mounted rather than sent.
func (c *Client) PushBlob(ctx context.Context, repo string, d digest.Digest, size int64, open func() (io.ReadCloser, error), mountFrom string) (mounted bool, err error) {
	target := c.Host() + "/" + repo + "@" + d.String()
	sc := scopes(pushScope(repo))
	path := repoPath(repo, "blobs/uploads/")
	if mountFrom != "" && mountFrom != repo {
		sc = append(sc, pullScope(mountFrom))
		path += "?" + url.Values{"mount": {d.String()}, "from": {mountFrom}}.Encode()
	}
	r := request{op: "start upload of", target: target, method: http.MethodPost, path: path, scopes: sc, body: http.NoBody, size: 0}
	resp, err := c.send(ctx, r)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		drain(resp)
		return true, nil
	case http.StatusAccepted:
	default:
		return false, statusError(r.op, r.target, resp)
	}
	loc := resp.Header.Get("Location")
	drain(resp)
	if loc == "" {
		return false, &Error{Op: r.op, Target: target, Status: resp.StatusCode, Err: fmt.Errorf("%w: no upload location", ErrProtocol)}
	}
	abs, err := c.resolve(resp.Request.URL, loc)
	if err != nil {
		return false, &Error{Op: r.op, Target: target, Err: err}
	}
	u, _ := url.Parse(abs)
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	rc, err := open()
	if err != nil {
		return false, &Error{Op: "read blob", Target: d.String(), Err: err}
	}
	defer rc.Close()
	body := &sourceReader{r: rc}
	put := request{op: "push blob", target: target, method: http.MethodPut, absolute: u.String(), scopes: sc,
		header: http.Header{"Content-Type": {"application/octet-stream"}}, body: body, size: size}
	resp, err = c.send(ctx, put)
	if err != nil {
		// A failure of the appliance's own read is not the registry's.
		switch {
		case body.err != nil:
			return false, &Error{Op: "read blob", Target: d.String(), Err: body.err}
		case body.eof && body.n != size:
			return false, &Error{Op: "read blob", Target: d.String(), Err: fmt.Errorf("the blob holds %d bytes, not the %d its descriptor says", body.n, size)}
		}
		return false, err
	}
	if resp.StatusCode != http.StatusCreated {
		e := statusError(put.op, put.target, resp)
		if e.Code == "DIGEST_INVALID" || e.Code == "SIZE_INVALID" {
			e.Err = ErrDigestMismatch
		}
		return false, e
	}
	drain(resp)
	return false, nil
}

// sourceReader remembers how reading a blob's source went, to tell a
// local failure from the registry's.
type sourceReader struct {
	r   io.Reader
	n   int64
	err error
	eof bool
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		s.eof = true
	case err != nil:
		s.err = err
	}
	return n, err
}

// OpenBlob streams blob d from repo. The caller verifies what it reads.
func (c *Client) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	r := request{op: "read blob", target: c.Host() + "/" + repo + "@" + d.String(), method: http.MethodGet,
		path: repoPath(repo, "blobs/"+d.String()), scopes: scopes(pullScope(repo))}
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, statusError(r.op, r.target, resp)
	}
	return resp.Body, resp.ContentLength, nil
}

// HeadManifest resolves ref (a tag or a digest) in repo. It reports false
// when there is no such manifest.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string) (Descriptor, bool, error) {
	r := request{op: "check manifest", target: c.Host() + "/" + repo + refSep(ref) + ref, method: http.MethodHead,
		path: repoPath(repo, "manifests/"+ref), scopes: scopes(pullScope(repo)), header: http.Header{"Accept": {acceptManifests}}}
	resp, err := c.send(ctx, r)
	if err != nil {
		return Descriptor{}, false, err
	}
	drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return Descriptor{}, false, nil
	default:
		return Descriptor{}, false, statusError(r.op, r.target, resp)
	}
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		if strings.HasPrefix(ref, "sha256:") {
			d = digest.Digest(ref)
		} else {
			// Without the header, only the body tells the digest.
			desc, _, gerr := c.GetManifest(ctx, repo, ref)
			return desc, gerr == nil, gerr
		}
	}
	return Descriptor{MediaType: mediaType(resp), Digest: d, Size: resp.ContentLength}, true, nil
}

func refSep(ref string) string {
	if strings.Contains(ref, ":") {
		return "@"
	}
	return ":"
}

func mediaType(resp *http.Response) string {
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return strings.TrimSpace(mt)
}

// GetManifest reads ref from repo. A manifest asked for by digest is
// checked against it.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) (Descriptor, []byte, error) {
	r := request{op: "read manifest", target: c.Host() + "/" + repo + refSep(ref) + ref, method: http.MethodGet,
		path: repoPath(repo, "manifests/"+ref), scopes: scopes(pullScope(repo)), header: http.Header{"Accept": {acceptManifests}}}
	resp, err := c.send(ctx, r)
	if err != nil {
		return Descriptor{}, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return Descriptor{}, nil, statusError(r.op, r.target, resp)
	}
	defer drain(resp)
	payload, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return Descriptor{}, nil, &Error{Op: r.op, Target: r.target, Err: classify(c.Host(), err)}
	}
	if len(payload) > MaxManifestSize {
		return Descriptor{}, nil, &Error{Op: r.op, Target: r.target, Err: fmt.Errorf("%w: manifest over %d bytes", ErrProtocol, MaxManifestSize)}
	}
	got := digest.FromBytes(payload)
	if want, err := digest.Parse(ref); err == nil {
		if want.Algorithm().Available() && want.Algorithm().FromBytes(payload) != want {
			return Descriptor{}, nil, &Error{Op: r.op, Target: r.target, Err: ErrDigestMismatch}
		}
		got = want
	}
	mt := mediaType(resp)
	if mt == "" || mt == "application/json" || mt == "text/plain" {
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(payload, &probe) == nil && probe.MediaType != "" {
			mt = probe.MediaType
		}
	}
	return Descriptor{MediaType: mt, Digest: got, Size: int64(len(payload))}, payload, nil
}

// PutResult is what a manifest push answered.
type PutResult struct {
	Digest digest.Digest
	// Subject is the OCI-Subject header: set when the registry indexed the
	// manifest's subject for the referrers API.
	Subject string
}

// PutManifest stores payload under ref (a tag, or its digest) in repo,
// byte for byte.
func (c *Client) PutManifest(ctx context.Context, repo, ref, mediaType string, payload []byte) (PutResult, error) {
	r := request{op: "push manifest", target: c.Host() + "/" + repo + refSep(ref) + ref, method: http.MethodPut,
		path: repoPath(repo, "manifests/"+ref), scopes: scopes(pushScope(repo)),
		header: http.Header{"Content-Type": {mediaType}}, body: bytes.NewReader(payload), size: int64(len(payload)),
		rebody: func() (io.Reader, error) { return bytes.NewReader(payload), nil }}
	resp, err := c.send(ctx, r)
	if err != nil {
		return PutResult{}, err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return PutResult{}, statusError(r.op, r.target, resp)
	}
	drain(resp)
	want := digest.FromBytes(payload)
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != want.String() {
		return PutResult{}, &Error{Op: r.op, Target: r.target, Err: fmt.Errorf("%w: the registry stored it as %s, not %s", ErrDigestMismatch, got, want)}
	}
	return PutResult{Digest: want, Subject: resp.Header.Get("OCI-Subject")}, nil
}

// Tags lists repo's tags, following the registry's pages. A repository
// the registry does not know has none.
func (c *Client) Tags(ctx context.Context, repo string) ([]string, error) {
	var out []string
	next := repoPath(repo, "tags/list?n=1000")
	for page := 0; next != "" && page < 10000; page++ {
		r := request{op: "list tags of", target: c.Host() + "/" + repo, method: http.MethodGet, path: next, scopes: scopes(pullScope(repo))}
		resp, err := c.send(ctx, r)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusNotFound {
			drain(resp)
			return nil, nil
		}
		if resp.StatusCode != http.StatusOK {
			return nil, statusError(r.op, r.target, resp)
		}
		var body struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&body)
		link := resp.Header.Get("Link")
		drain(resp)
		if err != nil {
			return nil, &Error{Op: r.op, Target: r.target, Err: fmt.Errorf("%w: %w", ErrProtocol, err)}
		}
		out = append(out, body.Tags...)
		next = nextLink(link)
	}
	return out, nil
}

// Catalog lists the registry's repositories (where the credentials may see
// the catalog).
func (c *Client) Catalog(ctx context.Context) ([]string, error) {
	var out []string
	next := "/v2/_catalog?n=1000"
	for page := 0; next != "" && page < 10000; page++ {
		r := request{op: "list repositories of", target: c.Host(), method: http.MethodGet, path: next, scopes: scopes(catalogScope())}
		resp, err := c.send(ctx, r)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, statusError(r.op, r.target, resp)
		}
		var body struct {
			Repositories []string `json:"repositories"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&body)
		link := resp.Header.Get("Link")
		drain(resp)
		if err != nil {
			return nil, &Error{Op: r.op, Target: r.target, Err: fmt.Errorf("%w: %w", ErrProtocol, err)}
		}
		out = append(out, body.Repositories...)
		next = nextLink(link)
	}
	return out, nil
}

// nextLink reads the path of the link with rel="next" in a Link header
// (RFC 8288: several links, comma-separated, each <URI> then parameters).
func nextLink(h string) string {
	for _, link := range strings.Split(h, ",") {
		link = strings.TrimSpace(link)
		if !strings.HasPrefix(link, "<") {
			continue
		}
		end := strings.Index(link, ">")
		if end < 0 {
			continue
		}
		next := false
		for _, param := range strings.Split(link[end+1:], ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(param), "=")
			if strings.EqualFold(k, "rel") && strings.Trim(v, `"`) == "next" {
				next = true
			}
		}
		if !next {
			continue
		}
		u, err := url.Parse(link[1:end])
		if err != nil {
			return ""
		}
		return u.RequestURI()
	}
	return ""
}

// Referrers lists the manifests in repo whose subject is d, through the
// referrers API. supported is false when the registry does not serve that
// API (it answers 404), in which case clients look for the fallback tag.
func (c *Client) Referrers(ctx context.Context, repo string, d digest.Digest) (list []Descriptor, supported bool, err error) {
	r := request{op: "list referrers of", target: c.Host() + "/" + repo + "@" + d.String(), method: http.MethodGet,
		path: repoPath(repo, "referrers/"+d.String()), scopes: scopes(pullScope(repo)),
		header: http.Header{"Accept": {"application/vnd.oci.image.index.v1+json"}}}
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest:
		drain(resp)
		return nil, false, nil
	default:
		return nil, false, statusError(r.op, r.target, resp)
	}
	defer drain(resp)
	var idx struct {
		Manifests []Descriptor `json:"manifests"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxManifestSize)).Decode(&idx); err != nil {
		return nil, false, &Error{Op: r.op, Target: r.target, Err: fmt.Errorf("%w: %w", ErrProtocol, err)}
	}
	return idx.Manifests, true, nil
}

// FallbackTag is the tag that lists d's referrers on a registry without
// the referrers API (OCI distribution-spec 1.1, "Referrers Tag Schema"):
// <alg>-<encoded>, the encoded part truncated to 64 characters.
func FallbackTag(d digest.Digest) string {
	enc := d.Encoded()
	if len(enc) > 64 {
		enc = enc[:64]
	}
	return d.Algorithm().String() + "-" + enc
}

// IsFallbackTag tells whether tag is a referrers fallback tag.
func IsFallbackTag(tag string) bool {
	alg, hex, ok := strings.Cut(tag, "-")
	if !ok || (alg != "sha256" && alg != "sha512") || len(hex) != 64 {
		return false
	}
	return strings.Trim(hex, "0123456789abcdef") == ""
}
