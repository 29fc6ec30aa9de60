// Package regclient is the appliance's client of other registries: the OCI
// Distribution API of a promotion target or of a standby's primary, and
// Harbor's REST API where that registry is Harbor. It trusts only the CA it
// is given, speaks HTTP/1.1 with gathered TLS writes (internal/coalesce) so
// that gigabyte blobs cost little CPU, authenticates with Basic credentials
// or the Docker token protocol (as Harbor, distribution and the appliance
// itself serve it), and turns every failure into an *Error that names the
// operation, the registry and the cause: unreachable, TLS, credentials,
// rights, read-only, missing.
package regclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/internal/coalesce"
)

// Errors a caller tells apart with errors.Is.
var (
	// ErrUnreachable: no connection could be made.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrTLS: the registry's certificate does not verify against the CA given.
	ErrTLS = errors.New("TLS certificate not trusted")
	// ErrUnauthorized: the credentials were refused (or are needed).
	ErrUnauthorized = errors.New("credentials refused")
	// ErrDenied: authenticated, but not allowed.
	ErrDenied = errors.New("access denied")
	// ErrNotFound: no such repository, manifest, blob or project.
	ErrNotFound = errors.New("not found")
	// ErrReadOnly: the registry refuses writes (Harbor's or distribution's read-only mode, a standby).
	ErrReadOnly = errors.New("registry is read-only")
	// ErrProtocol: an answer that is not what the API promises.
	ErrProtocol = errors.New("unexpected answer")
	// ErrDigestMismatch: content that does not hash to the digest it was asked by.
	ErrDigestMismatch = errors.New("content does not match its digest")
)

// Error is a failed call to a registry.
type Error struct {
	Op      string // "push blob", "put manifest", "list tags"…
	Target  string // what it was about: a repository, a reference, a project
	Status  int    // HTTP status, 0 when there was no answer
	Code    string // the OCI error code (DENIED, NAME_UNKNOWN…) when given
	Message string // the registry's own words, when given
	Err     error  // one of the sentinels above, or a transport error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Target != "" {
		b.WriteString(" " + e.Target)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d", e.Status)
		if e.Code != "" {
			b.WriteString(" " + e.Code)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Options say where the registry is and who calls it.
type Options struct {
	// URL is the registry's base, https://HOST[:PORT] (http:// only for
	// tests and registries that serve no TLS at all).
	URL string
	// CAPEM holds the PEM certificates to trust; empty means the system roots.
	CAPEM []byte
	// Username and Password authenticate; empty means anonymous. A Harbor
	// robot account (robot$…) works like a user.
	Username, Password string
	// MaxConns bounds the connections kept open (default 8).
	MaxConns int
	// UserAgent is sent with every request.
	UserAgent string
}

// Client calls one registry. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	http      *http.Client
	username  string
	password  string
	userAgent string

	authMu    sync.Mutex
	probed    bool
	challenge challenge
	tokens    map[string]token
}

// New checks the options and builds a client. It does not connect.
func New(o Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(o.URL, "/"))
	shown := o.URL
	if err == nil {
		shown = u.Redacted()
	}
	if err != nil || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") || (u.Path != "" && u.Path != "/") ||
		u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("registry URL %q: want https://HOST[:PORT] with no path, query or credentials", shown)
	}
	u.Path = ""
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(o.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, errors.New("registry CA: no PEM certificate in what was given")
		}
		tlsCfg.RootCAs = pool
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 8
	}
	if (o.Username == "") != (o.Password == "") {
		return nil, errors.New("registry credentials: give both a user name and a password, or neither")
	}
	tr := coalesce.Transport(tlsCfg, o.MaxConns)
	tr.Proxy = nil
	tr.ResponseHeaderTimeout = 5 * time.Minute
	ua := o.UserAgent
	if ua == "" {
		ua = "appliance"
	}
	return &Client{
		base:      u,
		http:      &http.Client{Transport: tr, CheckRedirect: sameHostRedirect},
		username:  o.Username,
		password:  o.Password,
		userAgent: ua,
		tokens:    map[string]token{},
	}, nil
}

// sameHostRedirect follows redirects (a registry may send blob reads to
// a storage URL) but never sends credentials to another host: the
// Authorization header is dropped by net/http itself on a host change.
func sameHostRedirect(_ *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	return nil
}

// URL is the registry's base URL.
func (c *Client) URL() string { return c.base.String() }

// Host is HOST[:PORT], as image references name the registry.
func (c *Client) Host() string { return c.base.Host }

// Username is who the client authenticates as ("" for anonymous).
func (c *Client) Username() string { return c.username }

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// request describes one call.
type request struct {
	op, target string
	method     string
	path       string // below the base URL, with its query
	scopes     []string
	header     http.Header
	body       io.Reader
	size       int64 // of body; -1 unknown
	rebody     func() (io.Reader, error)
	basic      bool // Basic credentials directly (Harbor's REST API), no token
	noAuth     bool
	absolute   string // a full URL (an upload location) instead of path
}

// send makes the call, authenticating as the registry asks. A 401 with
// a bearer token gets one retry with a fresh token, when the body can be
// sent again.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	if !r.noAuth && !r.basic {
		if err := c.probe(ctx); err != nil {
			return nil, c.wrap(r, err)
		}
	}
	for attempt := 0; ; attempt++ {
		req, err := c.newRequest(ctx, r)
		if err != nil {
			return nil, c.wrap(r, err)
		}
		if err := c.authorize(ctx, req, r); err != nil {
			return nil, c.wrap(r, err)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, c.wrap(r, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 && !r.noAuth && !r.basic && (r.body == nil || r.body == http.NoBody || r.rebody != nil) && c.usesBearer() {
			// The token may have expired, or the scope changed: once more.
			drain(resp)
			c.dropToken(r.scopes)
			if r.rebody != nil {
				if r.body, err = r.rebody(); err != nil {
					return nil, c.wrap(r, err)
				}
			}
			continue
		}
		return resp, nil
	}
}

func (c *Client) newRequest(ctx context.Context, r request) (*http.Request, error) {
	u := r.absolute
	if u == "" {
		u = c.base.String() + r.path
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, r.body)
	if err != nil {
		return nil, err
	}
	if r.body != nil && r.size >= 0 {
		req.ContentLength = r.size
		if r.size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", c.userAgent)
	return req, nil
}

// wrap turns a transport failure into an *Error.
func (c *Client) wrap(r request, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Op: r.op, Target: r.target, Err: classify(c.base.Host, err)}
}

// classify names what a transport error means for the operator.
func classify(host string, err error) error {
	var (
		unknown   x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		recordErr tls.RecordHeaderError
		opErr     *net.OpError
		dnsErr    *net.DNSError
	)
	switch {
	case errors.As(err, &unknown), errors.As(err, &verify) && errors.As(verify.Err, &unknown):
		return fmt.Errorf("%w: %s presents a certificate signed by an authority the given CA does not vouch for (give the registry's CA)", ErrTLS, host)
	case errors.As(err, &hostname):
		return fmt.Errorf("%w: %s presents a certificate for other names (%w)", ErrTLS, host, err)
	case errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("%w: %s: %w", ErrTLS, host, err)
	case errors.As(err, &recordErr), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w: %s does not speak TLS on that port (is it plain HTTP?)", ErrTLS, host)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &dnsErr):
		return fmt.Errorf("%w: %s: cannot resolve the host name: %w", ErrUnreachable, host, dnsErr)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, host, opErr.Err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, host, err)
}

// statusError reads an error answer into an *Error.
func statusError(op, target string, resp *http.Response) *Error {
	defer drain(resp)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Op: op, Target: target, Status: resp.StatusCode}
	var oci struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &oci) == nil && len(oci.Errors) > 0 {
		e.Code, e.Message = oci.Errors[0].Code, oci.Errors[0].Message
		for _, extra := range oci.Errors[1:] {
			if extra.Message != oci.Errors[0].Message {
				e.Message += "; " + extra.Message
			}
		}
	} else if s := strings.TrimSpace(string(body)); s != "" && len(s) < 512 && !strings.HasPrefix(s, "<") {
		e.Message = s
	}
	lower := strings.ToLower(e.Message)
	switch {
	case strings.Contains(lower, "read-only") || strings.Contains(lower, "read only") || strings.Contains(lower, "readonly"):
		e.Err = ErrReadOnly
	case resp.StatusCode == http.StatusUnauthorized:
		e.Err = ErrUnauthorized
	case resp.StatusCode == http.StatusForbidden:
		e.Err = ErrDenied
	case resp.StatusCode == http.StatusNotFound:
		e.Err = ErrNotFound
	case resp.StatusCode == http.StatusMethodNotAllowed && resp.Request != nil && resp.Request.Method != http.MethodGet && resp.Request.Method != http.MethodHead:
		// distribution's read-only maintenance mode refuses every write so.
		e.Err = fmt.Errorf("%w: it refuses writes (as distribution does in read-only maintenance mode)", ErrReadOnly)
	case resp.StatusCode == http.StatusServiceUnavailable:
		e.Err = fmt.Errorf("%w: the registry is unavailable", ErrUnreachable)
	default:
		e.Err = ErrProtocol
	}
	return e
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}
