package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/registry"
)

// registryAuth adapts the appliance's Authorizer to the registry, answering
// refusals with a Docker token-protocol challenge that points at this
// appliance's token endpoint, under the host name the client used.
type registryAuth struct{ s *Server }

// challenge is a refusal carrying its WWW-Authenticate value.
type challenge struct {
	header string
	err    error
}

func (c *challenge) Error() string     { return c.err.Error() }
func (c *challenge) Unwrap() error     { return c.err }
func (c *challenge) Challenge() string { return c.header }

// errAuthRequired is the reason of a challenge to an anonymous caller.
var errAuthRequired = errors.New("authentication required")

func (ra registryAuth) AuthorizeRegistry(r *http.Request, want []registry.Access) (string, error) {
	p, err := ra.s.login(r, r.Header.Get("Authorization"))
	if err != nil {
		kind := ""
		if errors.Is(err, auth.ErrInvalidToken) {
			kind = "invalid_token"
		}
		return "", newChallenge(r, want, kind, err)
	}
	if len(want) == 0 {
		// GET /v2/: anonymous callers must be challenged, or skopeo and
		// podman never send the credentials they have.
		if p.Anonymous {
			return "", newChallenge(r, nil, "", errAuthRequired)
		}
		return p.Name, nil
	}
	for _, w := range want {
		if w.Type == "repository" && auth.ProjectOf(w.Name) == importer.StagingProject {
			// Imports in progress keep their blobs there; nobody else
			// reads or writes it.
			return "", newChallenge(r, want, "insufficient_scope", fmt.Errorf("%s is reserved for imports in progress", importer.StagingProject))
		}
		if !ra.s.authz.Allowed(p, auth.Access{Type: w.Type, Name: w.Name, Action: w.Action}) {
			kind := ""
			if !p.Anonymous {
				kind = "insufficient_scope"
			}
			return "", newChallenge(r, want, kind, fmt.Errorf("%s may not %s %s", p.Name, w.Action, w.Name))
		}
	}
	return p.Name, nil
}

func newChallenge(r *http.Request, want []registry.Access, kind string, err error) *challenge {
	h := fmt.Sprintf(`Bearer realm=%q,service=%q`, tokenRealm(r), auth.Service)
	if scope := scopeOf(want); scope != "" {
		h += fmt.Sprintf(`,scope=%q`, scope)
	}
	if kind != "" {
		h += fmt.Sprintf(`,error=%q`, kind)
	}
	return &challenge{header: h, err: err}
}

// tokenRealm is the token endpoint under the host the client addressed.
func tokenRealm(r *http.Request) string {
	return "https://" + r.Host + tokenPath
}

// scopeOf renders accesses as token scopes, one per resource:
// "repository:a/b:pull,push repository:c/d:pull".
func scopeOf(want []registry.Access) string {
	var order []string
	actions := map[string][]string{}
	for _, w := range want {
		key := w.Type + ":" + w.Name
		if _, ok := actions[key]; !ok {
			order = append(order, key)
		}
		actions[key] = append(actions[key], w.Action)
	}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		parts = append(parts, k+":"+strings.Join(actions[k], ","))
	}
	return strings.Join(parts, " ")
}
