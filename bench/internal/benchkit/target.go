package benchkit

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Target is a registry under test over TLS: the appliance, or Debian's
// docker-registry with a test certificate.
type Target struct {
	Name string
	Base *url.URL // https://127.0.0.1:port
	// CAFile is the CA that clients (curl, skopeo) trust; Roots the same.
	CAFile string
	Roots  *x509.CertPool
	Proc   *Process
	// User and Password push (the appliance's admin); pulls are anonymous.
	// Empty for docker-registry, which runs without auth.
	User, Password string
	// Appliance is set when the target is an appliance.
	Appliance *Appliance
}

// StartApplianceTarget runs bin serve with its data under dir and extra
// serve flags args.
func StartApplianceTarget(ctx context.Context, name, bin, dir string, args ...string) (*Target, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	a, err := StartAppliance(ctx, bin, ApplianceOptions{DataDir: filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "appliance.log"), Env: CleanEnv("REGISTRY_"), Args: args, Ready: "/readyz"})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &Target{Name: name, Base: &url.URL{Scheme: "https", Host: a.HTTPSAddr}, CAFile: a.CAFile, Roots: a.Roots,
		Proc: a.Proc, User: "admin", Password: a.Password, Appliance: a}, nil
}

// StartDockerRegistryTLS runs Debian's docker-registry (distribution 2.8)
// serving TLS with a fresh ECDSA P-256 test certificate, no auth, log
// level warn, no access log (its cheapest configuration), storage in dir.
func StartDockerRegistryTLS(ctx context.Context, name, bin, dir string) (*Target, error) {
	cert, err := WriteTestCert(dir)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	p, addr, err := StartDockerRegistry(ctx, bin, dir, DockerRegistryOptions{
		Secret: hex.EncodeToString(secret), CertFile: cert.CertFile, KeyFile: cert.KeyFile, RootCAs: cert.Pool})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &Target{Name: name, Base: &url.URL{Scheme: "https", Host: addr}, CAFile: cert.CertFile, Roots: cert.Pool, Proc: p}, nil
}

// Client is an HTTPS client trusting t, HTTP/1.1 with up to conns
// keep-alive connections.
func (t *Target) Client(conns int) *http.Client {
	return &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: t.Roots, MinVersion: tls.VersionTLS12}, Proxy: nil,
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}}
}

// Token answers t's challenge for scope as a registry client does: ""
// when t asks for none, else "Bearer …" from its token realm, with t's
// credentials when push, anonymous otherwise.
func (t *Target) Token(ctx context.Context, hc *http.Client, scope string, push bool) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.Base.JoinPath("/v2/").String(), nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET /v2/: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return "", nil
	}
	if resp.StatusCode != http.StatusUnauthorized {
		return "", fmt.Errorf("GET /v2/: %s", resp.Status)
	}
	user, password := "", ""
	if push {
		user, password = t.User, t.Password
	}
	return FetchToken(ctx, hc, t.Base, resp.Header.Get("WWW-Authenticate"), scope, user, password)
}

// Push uploads every image of s into repo of t as t's admin (for
// docker-registry, anonymously).
func (t *Target) Push(ctx context.Context, repo string, s *ImageSet) error {
	hc := t.Client(1)
	defer hc.CloseIdleConnections()
	authz, err := t.Token(ctx, hc, "repository:"+repo+":push,pull", true)
	if err != nil {
		return fmt.Errorf("%s: push: %w", t.Name, err)
	}
	for _, img := range s.Images {
		Logf("%s: pushing %s:%s", t.Name, repo, img.Tag)
		if err := PushImage(ctx, hc, t.Base, authz, repo, s, img); err != nil {
			return fmt.Errorf("%s: push: %w", t.Name, err)
		}
	}
	return nil
}

// StopAll stops every target.
func StopAll(ts []*Target) {
	for _, t := range ts {
		if t != nil && t.Proc != nil {
			t.Proc.Stop()
		}
	}
}

// MustURL parses a URL the program made itself.
func MustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
