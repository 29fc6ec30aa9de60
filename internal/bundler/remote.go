package bundler

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// upstreams is how the connected side talks to registries and web
// servers: the system's CAs plus --ca files, TLS verification always,
// plain HTTP and unverified TLS only for hosts named --insecure-registry,
// credentials from the usual docker and podman files.
type upstreams struct {
	insecure []string
	rt       http.RoundTripper // registries: plain HTTP only for named hosts
	client   *http.Client      // file downloads: the URL's scheme, TLS verified
}

func newUpstreams(caFiles, insecure []string, parallel int) (*upstreams, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range caFiles {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read --ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read --ca %s: no PEM certificate in it", f)
		}
	}
	u := &upstreams{insecure: insecure}
	secure := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 30 * time.Second,
		MaxIdleConnsPerHost: parallel + 2,
		ForceAttemptHTTP2:   true,
	}
	lax := secure.Clone()
	lax.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} //nolint:gosec // only for hosts named --insecure-registry
	u.rt = &guard{u: u, secure: secure, lax: lax}
	u.client = &http.Client{Transport: &guard{u: u, secure: secure, lax: lax, allowHTTP: true}}
	return u, nil
}

func (u *upstreams) isInsecure(host string) bool {
	return slices.Contains(u.insecure, host) || slices.Contains(u.insecure, hostOnly(host))
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// guard refuses plain HTTP to, and skips TLS verification only for, the
// hosts named --insecure-registry. (go-containerregistry would otherwise
// fall back to plain HTTP for loopback and private addresses on its own.)
type guard struct {
	u      *upstreams
	secure http.RoundTripper
	lax    http.RoundTripper
	// allowHTTP lets a URL that says http:// be fetched (files, whose
	// integrity a sha256 pin in the spec guarantees instead).
	allowHTTP bool
}

// errPlainHTTP marks a refused plain-HTTP request.
var errPlainHTTP = errors.New("plain HTTP refused")

func (g *guard) RoundTrip(r *http.Request) (*http.Response, error) {
	insecure := g.u.isInsecure(r.URL.Host)
	if r.URL.Scheme == "http" && !insecure && !g.allowHTTP {
		return nil, fmt.Errorf("%w to %s: name the host with --insecure-registry %s to allow it", errPlainHTTP, r.URL.Host, r.URL.Host)
	}
	if insecure {
		return g.lax.RoundTrip(r)
	}
	return g.secure.RoundTrip(r)
}

// nameOptions parses references, insecure for the named hosts.
func (u *upstreams) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		r, err = name.ParseReference(ref)
	}
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w", ref, err)
	}
	if u.isInsecure(r.Context().RegistryStr()) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

func (u *upstreams) remote(o ...remote.Option) []remote.Option {
	return append([]remote.Option{
		remote.WithTransport(u.rt),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithUserAgent("appliance-bundle"),
	}, o...)
}

// explain turns registry errors into ones that say what to do.
func explain(ref string, err error) error {
	var te *transport.Error
	switch {
	case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%s: the registry refused access (HTTP %d); log in with `podman login` or `docker login`, or check the credentials in your auth file: %w", ref, te.StatusCode, err)
	case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: does not exist in the registry: %w", ref, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%s: the registry speaks plain HTTP; name its host with --insecure-registry to allow that: %w", ref, err)
	case strings.Contains(err.Error(), "certificate"):
		return fmt.Errorf("%s: the registry's TLS certificate is not trusted; give its CA with --ca FILE (or --insecure-registry HOST): %w", ref, err)
	case strings.Contains(err.Error(), "connection refused"), strings.Contains(err.Error(), "no such host"), strings.Contains(err.Error(), "i/o timeout"):
		return fmt.Errorf("%s: the registry is unreachable: %w", ref, err)
	case errors.Is(err, errPlainHTTP):
		return fmt.Errorf("%s: %w", ref, err)
	}
	return fmt.Errorf("%s: %w", ref, err)
}
