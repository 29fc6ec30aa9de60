package vsphere

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/vmware/govmomi/vapi/namespace"
	"github.com/vmware/govmomi/vapi/rest"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
)

// Config says which vCenter to log in to, how to trust it and which
// Supervisor to hand over to.
type Config struct {
	// URL of vCenter: https://vcenter.example, https://vcenter.example:8443
	// or the same with /sdk, as govc takes it. A missing scheme means
	// https; plain http is refused.
	URL string
	// Username and Password of a vCenter SSO user, such as
	// administrator@vsphere.local. The password is sent in the login only,
	// and never logged nor put in an error.
	Username string
	Password string
	// CAPEM is the PEM of the CA (or the self-signed certificate) that
	// vCenter's certificate chains to. When set, only this CA is trusted.
	CAPEM []byte
	// Thumbprint is the SHA-256 or SHA-1 thumbprint of vCenter's own
	// certificate, colon-separated hex as govc shows it. It is checked when
	// the certificate does not chain to CAPEM (or no CAPEM is given).
	Thumbprint string
	// Supervisor is the id of the Supervisor to hand over to, as vCenter
	// lists it under /api/vcenter/namespace-management/supervisors.
	Supervisor string
}

// Validate reports every problem of the configuration at once, wrapped in
// ErrInvalidConfig.
func (c Config) Validate() error {
	var problems []string
	if _, err := parseVCenterURL(c.URL); err != nil {
		problems = append(problems, err.Error())
	}
	if c.Username == "" {
		problems = append(problems, "no username")
	}
	if c.Password == "" {
		problems = append(problems, "no password")
	}
	if len(c.CAPEM) == 0 && c.Thumbprint == "" {
		problems = append(problems, "neither a CA (CAPEM) nor a certificate thumbprint: give one, TLS verification is never skipped")
	}
	if len(c.CAPEM) != 0 {
		if _, err := certPool(c.CAPEM); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if c.Thumbprint != "" {
		if _, err := normalizeThumbprint(c.Thumbprint); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if c.Supervisor == "" {
		problems = append(problems, "no Supervisor id")
	} else if err := checkSegment("Supervisor id", c.Supervisor); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(problems, "; "))
	}
	return nil
}

// parseVCenterURL turns what an operator typed into https://host[:port].
func parseVCenterURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("no vCenter URL")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("vCenter URL: %w", err)
	}
	switch {
	case u.Scheme != "https":
		return nil, fmt.Errorf("vCenter URL %q: scheme must be https", u.Redacted())
	case u.Hostname() == "":
		return nil, fmt.Errorf("vCenter URL %q: no host", u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("vCenter URL %q: put the credentials in Username and Password, not in the URL", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("vCenter URL %q: no query or fragment expected", u.Redacted())
	}
	switch strings.TrimSuffix(u.Path, "/") {
	case "", "/sdk":
	default:
		return nil, fmt.Errorf("vCenter URL %q: path must be empty or /sdk", u.Redacted())
	}
	return &url.URL{Scheme: "https", Host: u.Host}, nil
}

// certPool parses every CERTIFICATE block of pemBytes.
func certPool(pemBytes []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of CAPEM: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("CAPEM holds no PEM CERTIFICATE block")
	}
	return pool, nil
}

// normalizeThumbprint accepts a SHA-1 or SHA-256 thumbprint in hex, with or
// without colons, in either case, and gives govmomi's form: upper-case hex
// pairs joined by colons.
func normalizeThumbprint(s string) (string, error) {
	raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if err != nil || (len(raw) != 20 && len(raw) != 32) {
		return "", fmt.Errorf("thumbprint %q is not a SHA-1 or SHA-256 thumbprint (20 or 32 colon-separated hex bytes)", s)
	}
	pairs := make([]string, len(raw))
	for i, b := range raw {
		pairs[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(pairs, ":"), nil
}

// checkSegment refuses an id that cannot be one segment of a URL path.
func checkSegment(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("empty %s", what)
	case id == "." || id == "..", strings.ContainsAny(id, "/\\?#"), strings.TrimSpace(id) != id:
		return fmt.Errorf("%s %q cannot be a URL path segment", what, id)
	}
	return nil
}

// Client is a logged-in session with vCenter, bound to one Supervisor. It is
// safe for concurrent use. Close logs out.
type Client struct {
	rest       *rest.Client
	ns         *namespace.Manager
	log        *slog.Logger
	url        string // https://host[:port], for messages
	user       string
	supervisor string
}

// Dial validates cfg, connects to vCenter and logs in. A nil log discards.
//
// A refused login gives ErrLoginRefused, an unverifiable certificate
// ErrUntrusted, a vCenter that cannot be reached ErrUnreachable, each
// wrapped with the URL and the user name (never the password).
func Dial(ctx context.Context, cfg Config, log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	u, _ := parseVCenterURL(cfg.URL) // Validate checked it

	sc := soap.NewClient(&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/sdk"}, false)
	tlsConfig := sc.DefaultTransport().TLSClientConfig
	tlsConfig.MinVersion = tls.VersionTLS12
	// An empty pool trusts nothing: without CAPEM only the thumbprint can
	// vouch for vCenter, and the host's system roots never do.
	tlsConfig.RootCAs = x509.NewCertPool()
	if len(cfg.CAPEM) != 0 {
		pool, _ := certPool(cfg.CAPEM) // Validate checked it
		tlsConfig.RootCAs = pool
	}
	if cfg.Thumbprint != "" {
		tp, _ := normalizeThumbprint(cfg.Thumbprint) // Validate checked it
		sc.SetThumbprint(u.Host, tp)
	}

	// rest.NewClient only needs the soap transport: no SOAP session is made.
	rc := rest.NewClient(&vim25.Client{Client: sc})
	if err := rc.Login(ctx, url.UserPassword(cfg.Username, cfg.Password)); err != nil {
		return nil, fmt.Errorf("vsphere: login to %s as %q: %w", u, cfg.Username, classifyLogin(err))
	}
	log.Info("vcenter login", "url", u.String(), "user", cfg.Username, "supervisor", cfg.Supervisor)
	return &Client{
		rest:       rc,
		ns:         namespace.NewManager(rc),
		log:        log,
		url:        u.String(),
		user:       cfg.Username,
		supervisor: cfg.Supervisor,
	}, nil
}

// classifyLogin maps what a failed login returned to this package's
// sentinels, keeping the cause in the message.
func classifyLogin(err error) error {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verification     *tls.CertificateVerificationError
		record           tls.RecordHeaderError
		netErr           net.Error
	)
	switch {
	case rest.IsStatusError(err, http.StatusUnauthorized), rest.IsStatusError(err, http.StatusForbidden):
		return fmt.Errorf("%w: check the user name, the password and that the account is not locked (%w)", ErrLoginRefused, err)
	case errors.As(err, &unknownAuthority), errors.As(err, &invalid), errors.As(err, &verification),
		// govmomi's thumbprint check returns an untyped error.
		strings.Contains(err.Error(), "thumbprint does not match"):
		return fmt.Errorf("%w (%w)", ErrUntrusted, err)
	case errors.As(err, &hostname):
		return fmt.Errorf("%w, or use the host name the certificate names (%w)", ErrUntrusted, err)
	case errors.As(err, &record):
		return fmt.Errorf("%w: it does not speak TLS on that port (%w)", ErrUnreachable, err)
	case errors.As(err, &netErr):
		return fmt.Errorf("%w (%w)", ErrUnreachable, err)
	}
	return err
}

// Close logs out of vCenter.
func (c *Client) Close(ctx context.Context) error {
	defer c.rest.CloseIdleConnections()
	if err := c.rest.Logout(ctx); err != nil {
		return fmt.Errorf("vsphere: logout from %s as %q: %w", c.url, c.user, err)
	}
	c.log.Info("vcenter logout", "url", c.url, "user", c.user)
	return nil
}

// Supervisor returns the id of the Supervisor the client hands over to.
func (c *Client) Supervisor() string { return c.supervisor }

// request is one call of vCenter's REST API.
type request struct {
	op     string // for the error: "create registry"
	method string
	path   string
	action string // ?action=…
	body   any    // JSON; nil for none
	out    any    // decoded answer; nil to ignore it
	secret string // hidden from the error should vCenter echo it
}

// do sends r and wraps any failure in *Error.
func (c *Client) do(ctx context.Context, r request) error {
	res := c.rest.Resource(r.path)
	if r.action != "" {
		res = res.WithParam("action", r.action)
	}
	var req *http.Request
	if r.body != nil {
		req = res.Request(r.method, r.body)
	} else {
		req = res.Request(r.method)
	}
	if err := c.rest.Do(ctx, req, r.out); err != nil {
		return c.fail(r.op, r.method, r.path, err, r.secret)
	}
	return nil
}

// fail wraps err, an answer of the REST client, with the operation.
func (c *Client) fail(op, method, path string, err error, secret string) error {
	switch {
	case rest.IsStatusError(err, http.StatusNotFound):
		err = ErrNotFound
	case rest.IsStatusError(err, http.StatusForbidden):
		err = ErrForbidden
	case rest.IsStatusError(err, http.StatusUnauthorized):
		err = fmt.Errorf("401 Unauthorized: the session of %q is no longer valid", c.user)
	default:
		err = redact(err, secret)
	}
	return &Error{Op: op, Method: method, Path: path, Err: err}
}
