// Package apiclient is the client of the appliance's JSON API that the
// subcommands acting on a running appliance (user, readonly, project; later
// import, apt, promote, validate) share. It trusts only the CA it is given,
// authenticates with Basic credentials, and turns API error bodies back into
// errors that carry the server's message.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/internal/coalesce"
)

// Options say where the appliance is and who is calling.
type Options struct {
	Server   string // base URL, e.g. https://127.0.0.1:8443
	CAFile   string // PEM file of the CA to trust; empty means the system roots
	Username string
	Password string
}

// Client calls the API.
type Client struct {
	base     *url.URL
	http     *http.Client
	upload   *http.Transport // HTTP/1.1 with gathered TLS writes, for Upload
	username string
	password string
}

// ErrHTTP is wrapped by every error that carries a status from the server.
var ErrHTTP = errors.New("appliance API error")

// StatusError is an error answer of the API.
type StatusError struct {
	Status  int
	Code    string
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// Unwrap lets callers test errors.Is(err, ErrHTTP).
func (e *StatusError) Unwrap() error { return ErrHTTP }

// New checks the options and builds a client.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.Server)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("server %q: want a URL such as https://appliance.example:8443", o.Server)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pemBytes, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.Proxy = nil
	return &Client{
		base:     u,
		http:     &http.Client{Transport: tr, Timeout: 5 * time.Minute},
		upload:   coalesce.Transport(tlsCfg, 2),
		username: o.Username,
		password: o.Password,
	}, nil
}

// Upload streams body (size bytes, or -1 when unknown) to path with no
// overall time limit (ctx bounds it), and decodes the JSON answer into out.
// On an error answer, the body is decoded into failure as well (when not
// nil) so callers can show what the server recorded.
func (c *Client) Upload(ctx context.Context, path, contentType string, body io.Reader, size int64, out, failure any) error {
	u := c.base.JoinPath(strings.Split(path, "?")[0])
	if _, q, ok := strings.Cut(path, "?"); ok {
		u.RawQuery = q
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), body)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	if c.username != "" {
		req.SetBasicAuth(c.username, c.password)
	}
	streaming := &http.Client{Transport: c.upload}
	resp, err := streaming.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the appliance at %s: %w", c.base.Redacted(), err)
	}
	defer resp.Body.Close()
	return c.decode(resp, http.MethodPost, path, out, failure)
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when out is not nil). It gives up after five minutes.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, c.http, method, path, in, out, nil)
}

// DoLong is Do without the five-minute limit, for calls that take as long
// as the work they start (an import of mounted media); ctx bounds it.
func (c *Client) DoLong(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, &http.Client{Transport: c.http.Transport}, method, path, in, out, nil)
}

// DoLongFailure is DoLong that also decodes an error answer's body into
// failure, for answers that carry more than the error (a refused
// promotion's record).
func (c *Client) DoLongFailure(ctx context.Context, method, path string, in, out, failure any) error {
	return c.do(ctx, &http.Client{Transport: c.http.Transport}, method, path, in, out, failure)
}

func (c *Client) do(ctx context.Context, hc *http.Client, method, path string, in, out, failure any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base.JoinPath(strings.Split(path, "?")[0])
	if _, q, ok := strings.Cut(path, "?"); ok {
		u.RawQuery = q
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.username != "" {
		req.SetBasicAuth(c.username, c.password)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the appliance at %s: %w", c.base.Redacted(), err)
	}
	defer resp.Body.Close()
	return c.decode(resp, method, path, out, failure)
}

func (c *Client) decode(resp *http.Response, method, path string, out, failure any) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		se := &StatusError{Status: resp.StatusCode, Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(data))}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			se.Code, se.Message = e.Error.Code, e.Error.Message
		}
		if resp.StatusCode == http.StatusUnauthorized && c.username == "" {
			se.Message += "; give credentials with --username and --password-stdin, or APPLIANCE_USERNAME and APPLIANCE_PASSWORD"
		}
		if failure != nil {
			_ = json.Unmarshal(data, failure)
		}
		return se
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: invalid JSON answer: %w", method, path, err)
		}
	}
	return nil
}
