package server

import (
	"errors"
	"net"
	"net/http"
	"strconv"

	"github.com/appliance-dev/appliance/internal/auth"
)

// Logins are rate-limited per client address (auth.LoginLimiter): the API,
// the token endpoint and /v2/ count a failed name and password alike, and
// refuse the next with 429 and Retry-After once an address failed too
// often. Anonymous requests are never refused for it.

// clientAddr is the address a request came from: the peer, never a header
// the client wrote (X-Forwarded-For would let it pick its own bucket).
func clientAddr(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// login authenticates an Authorization header value sent with r, counting
// a wrong password against r's address and refusing a locked-out address
// before its credentials are checked.
func (s *Server) login(r *http.Request, header string) (auth.Principal, error) {
	if p, ok, err := s.consolePrincipal(r); ok {
		return p, err
	}
	if !auth.HasPassword(header) {
		return s.authz.Authenticate(header)
	}
	addr := clientAddr(r)
	if err := s.logins.Check(addr); err != nil {
		return auth.Principal{}, err
	}
	p, err := s.authz.Authenticate(header)
	if errors.Is(err, auth.ErrBadCredentials) {
		s.logins.Failed(addr)
	}
	return p, err
}

// verifyPassword is login for a name and password given apart (the token
// endpoint's POST form).
func (s *Server) verifyPassword(r *http.Request, name, password string) (auth.User, error) {
	addr := clientAddr(r)
	if err := s.logins.Check(addr); err != nil {
		return auth.User{}, err
	}
	u, err := s.users.Verify(name, password)
	if errors.Is(err, auth.ErrBadCredentials) {
		s.logins.Failed(addr)
	}
	return u, err
}

// setRetryAfter sets Retry-After when err is a lockout and says whether it is.
func setRetryAfter(h http.Header, err error) bool {
	var lo *auth.LoginLockout
	if !errors.As(err, &lo) {
		return false
	}
	h.Set("Retry-After", strconv.Itoa(lo.RetrySeconds()))
	return true
}

// refuseLockedOut answers a /v2/ request that offers a password from a
// locked-out address: 429 with the OCI TOOMANYREQUESTS error. It says
// whether it answered (distribution's own auth path answers every refusal with 401).
func (s *Server) refuseLockedOut(w http.ResponseWriter, r *http.Request) bool {
	if !auth.HasPassword(r.Header.Get("Authorization")) {
		return false
	}
	err := s.logins.Check(clientAddr(r))
	if err == nil {
		return false
	}
	setRetryAfter(w.Header(), err)
	writeRegistryError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", err.Error())
	return true
}
