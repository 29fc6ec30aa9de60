package registry

import (
	"net/http"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	dauth "github.com/distribution/distribution/v3/registry/auth"
)

// accessController adapts an Authorizer to distribution's AccessController.
type accessController struct{ a Authorizer }

func (c *accessController) Authorized(r *http.Request, access ...dauth.Access) (*dauth.Grant, error) {
	want := make([]Access, len(access))
	resources := make([]dauth.Resource, len(access))
	for i, a := range access {
		want[i] = Access{Type: a.Type, Name: a.Name, Action: a.Action}
		resources[i] = a.Resource
	}
	user, err := c.a.AuthorizeRegistry(r, want)
	if err != nil {
		return nil, challengeError{err: err}
	}
	return &dauth.Grant{User: dauth.UserInfo{Name: user}, Resources: resources}, nil
}

// challengeError makes every refusal a 401 with a WWW-Authenticate header,
// never distribution's bare 400 for non-challenge errors.
type challengeError struct{ err error }

func (e challengeError) Error() string { return e.err.Error() }
func (e challengeError) Unwrap() error { return e.err }

func (e challengeError) SetHeaders(_ *http.Request, w http.ResponseWriter) {
	if ch, ok := e.err.(Challenger); ok { //nolint:errorlint // the Authorizer returns it directly
		w.Header().Set("WWW-Authenticate", ch.Challenge())
	}
}

// authorize asks the Authorizer for access to a route that distribution
// does not serve itself, and answers a refusal as distribution does: 401,
// the challenge, an UNAUTHORIZED error body.
func (r *Registry) authorize(w http.ResponseWriter, req *http.Request, access ...Access) bool {
	if _, err := r.authorizer.AuthorizeRegistry(req, access); err != nil {
		challengeError{err: err}.SetHeaders(req, w)
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnauthorized.WithDetail(access))
		return false
	}
	return true
}
