package regclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// challenge is what GET /v2/ asked for.
type challenge struct {
	scheme  string // "", "basic" or "bearer"
	realm   string
	service string
}

type token struct {
	value   string
	expires time.Time
}

// probe asks GET /v2/ once for the authentication the registry wants.
func (c *Client) probe(ctx context.Context) error {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if c.probed {
		return nil
	}
	ch, err := c.ping(ctx)
	if err != nil {
		return err
	}
	c.challenge, c.probed = ch, true
	return nil
}

func (c *Client) ping(ctx context.Context) (challenge, error) {
	r := request{op: "reach registry", target: c.base.Host, method: http.MethodGet, path: "/v2/", noAuth: true}
	resp, err := c.send(ctx, r)
	if err != nil {
		return challenge{}, err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return challenge{}, nil
	case http.StatusUnauthorized:
		return parseChallenge(resp.Header.Get("WWW-Authenticate")), nil
	}
	e := statusError(r.op, r.target, resp)
	if errors.Is(e.Err, ErrNotFound) || errors.Is(e.Err, ErrProtocol) {
		e.Err = fmt.Errorf("%w: %s/v2/ is not an OCI registry", ErrProtocol, c.base)
	}
	return challenge{}, e
}

// parseChallenge reads a WWW-Authenticate value such as
// Bearer realm="https://h/service/token",service="harbor-registry".
func parseChallenge(h string) challenge {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	ch := challenge{scheme: strings.ToLower(scheme)}
	for rest != "" {
		rest = strings.TrimLeft(rest, ", ")
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		var val string
		if strings.HasPrefix(after, `"`) {
			end := strings.Index(after[1:], `"`)
			if end < 0 {
				val, rest = after[1:], ""
			} else {
				val, rest = after[1:1+end], after[2+end:]
			}
		} else {
			val, rest, _ = strings.Cut(after, ",")
		}
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "realm":
			ch.realm = val
		case "service":
			ch.service = val
		}
	}
	return ch
}

func (c *Client) usesBearer() bool {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	return c.challenge.scheme == "bearer"
}

// authorize adds credentials to req as the registry asked.
func (c *Client) authorize(ctx context.Context, req *http.Request, r request) error {
	if r.noAuth {
		return nil
	}
	if r.basic {
		if c.username != "" {
			req.SetBasicAuth(c.username, c.password)
		}
		return nil
	}
	c.authMu.Lock()
	ch := c.challenge
	c.authMu.Unlock()
	switch ch.scheme {
	case "basic":
		if c.username != "" {
			req.SetBasicAuth(c.username, c.password)
		}
	case "bearer":
		tok, err := c.token(ctx, r.scopes)
		if err != nil {
			return err
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	return nil
}

func scopeKey(scopes []string) string {
	s := append([]string(nil), scopes...)
	sort.Strings(s)
	return strings.Join(s, " ")
}

func (c *Client) dropToken(scopes []string) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	delete(c.tokens, scopeKey(scopes))
}

// token returns a bearer token for scopes from the registry's token
// service, cached until shortly before it expires.
func (c *Client) token(ctx context.Context, scopes []string) (string, error) {
	key := scopeKey(scopes)
	c.authMu.Lock()
	t, ok := c.tokens[key]
	ch := c.challenge
	c.authMu.Unlock()
	if ok && time.Now().Before(t.expires) {
		return t.value, nil
	}
	if ch.realm == "" {
		return "", &Error{Op: "authenticate", Target: c.base.Host, Err: fmt.Errorf("%w: the bearer challenge names no token service", ErrProtocol)}
	}
	realm, err := url.Parse(ch.realm)
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") {
		return "", &Error{Op: "authenticate", Target: c.base.Host, Err: fmt.Errorf("%w: token service %q", ErrProtocol, ch.realm)}
	}
	if c.base.Scheme == "https" && realm.Scheme != "https" {
		return "", &Error{Op: "authenticate", Target: c.base.Host, Err: fmt.Errorf("%w: the token service %s is plain HTTP; credentials are not sent there", ErrProtocol, ch.realm)}
	}
	q := realm.Query()
	if ch.service != "" {
		q.Set("service", ch.service)
	}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	realm.RawQuery = q.Encode()
	r := request{op: "authenticate", target: c.base.Host, method: http.MethodGet, absolute: realm.String(), basic: true}
	if c.username == "" {
		r.noAuth = true
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		e := statusError(r.op, r.target, resp)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			who := "anonymous access"
			if c.username != "" {
				who = "user " + c.username
			}
			e.Err = fmt.Errorf("%w: the token service refused %s", ErrUnauthorized, who)
		}
		return "", e
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", &Error{Op: r.op, Target: r.target, Err: fmt.Errorf("%w: token answer: %w", ErrProtocol, err)}
	}
	value := body.Token
	if value == "" {
		value = body.AccessToken
	}
	if value == "" {
		return "", &Error{Op: r.op, Target: r.target, Err: errors.Join(ErrProtocol, errors.New("the token service sent no token"))}
	}
	life := time.Duration(body.ExpiresIn) * time.Second
	if life <= 0 {
		life = 60 * time.Second
	}
	// Renew a little before the registry would refuse it.
	life -= min(life/10, 30*time.Second)
	c.authMu.Lock()
	c.tokens[key] = token{value: value, expires: time.Now().Add(life)}
	c.authMu.Unlock()
	return value, nil
}

// Login proves the credentials: a token from the token service, or an
// authenticated GET /v2/ where the registry uses Basic authentication.
// Anonymous clients only prove the registry answers.
func (c *Client) Login(ctx context.Context) error {
	if err := c.probe(ctx); err != nil {
		return err
	}
	c.authMu.Lock()
	ch := c.challenge
	c.authMu.Unlock()
	switch {
	case ch.scheme == "bearer":
		_, err := c.token(ctx, nil)
		return err
	case ch.scheme == "basic" && c.username == "":
		return &Error{Op: "log in", Target: c.base.Host, Err: fmt.Errorf("%w: the registry asks for credentials (give a user and password)", ErrUnauthorized)}
	case ch.scheme == "basic":
		r := request{op: "log in", target: c.base.Host, method: http.MethodGet, path: "/v2/"}
		resp, err := c.send(ctx, r)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			e := statusError(r.op, r.target, resp)
			if resp.StatusCode == http.StatusUnauthorized {
				e.Err = fmt.Errorf("%w: the registry refused user %s", ErrUnauthorized, c.username)
			}
			return e
		}
		drain(resp)
	}
	return nil
}

// Scopes for the token protocol.
func pullScope(repo string) string      { return "repository:" + repo + ":pull" }
func pushScope(repo string) string      { return "repository:" + repo + ":pull,push" }
func catalogScope() string              { return "registry:catalog:*" }
func scopes(s ...string) []string       { return s }
func repoPath(repo, rest string) string { return "/v2/" + repo + "/" + rest }
