// Package catalog serves the registry's GET /v2/_catalog to a member of
// some projects only: the catalog names every repository, and such a
// caller sees the public projects' and its own, as the registry would let
// it pull them. Everyone else is handed to distribution's catalog.
package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/importer"
)

// Authorizer is what the catalog asks of the appliance's authorization.
type Authorizer interface {
	Authenticate(header string) (auth.Principal, error)
	SeesAll(p auth.Principal) bool
	Allowed(p auth.Principal, a auth.Access) bool
	MayPull(p auth.Principal, repo string) bool
}

// Deps are what the catalog is built from.
type Deps struct {
	Authz Authorizer
	// ConsolePrincipal is the principal of an in-process console
	// request (ok false for any other request).
	ConsolePrincipal func(r *http.Request) (p auth.Principal, ok bool, err error)
	// Repositories lists every repository the registry holds.
	Repositories func(ctx context.Context) ([]string, error)
	Log          *slog.Logger
}

// Catalog is the member catalog.
type Catalog struct{ deps Deps }

// New returns the catalog; every dependency is required.
func New(d Deps) (*Catalog, error) {
	if d.Authz == nil || d.ConsolePrincipal == nil || d.Repositories == nil || d.Log == nil {
		return nil, fmt.Errorf("catalog: Authz, ConsolePrincipal, Repositories and Log are required")
	}
	return &Catalog{deps: d}, nil
}

// Wrap serves GET /v2/_catalog itself to a member of some
// projects only (auth.User.Projects): the catalog names every repository,
// and such a caller sees the public projects' and its own, as the
// registry would let it pull them. Everyone else gets distribution's
// catalog (anonymous callers are challenged there).
func (c *Catalog) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/_catalog" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		// Authenticate without counting a failure: distribution's path
		// counts it, and refuses.
		p, console, err := c.deps.ConsolePrincipal(r)
		if !console {
			p, err = c.deps.Authz.Authenticate(r.Header.Get("Authorization"))
		}
		if err != nil || p.Anonymous || c.deps.Authz.SeesAll(p) ||
			!c.deps.Authz.Allowed(p, auth.Access{Type: "registry", Name: "catalog", Action: auth.ActionAll}) {
			next.ServeHTTP(w, r)
			return
		}
		if err := c.serve(w, r, p); err != nil {
			c.deps.Log.Error("catalog failed", "user", p.Name, "error", err)
			writeError(w, http.StatusInternalServerError, "UNKNOWN", "internal error; see the appliance's log")
		}
	})
}

// serve answers with the repositories p may pull, paginated as
// distribution does: n at most, after last, a Link to the next page.
func (c *Catalog) serve(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q := r.URL.Query()
	n := 100
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", fmt.Sprintf("n=%q: want a number of entries, 0 or more", v))
			return nil
		}
	}
	n = min(n, 1000)
	repos, err := c.deps.Repositories(r.Context())
	if err != nil {
		return err
	}
	repos = slices.DeleteFunc(repos, func(repo string) bool {
		return auth.ProjectOf(repo) == importer.StagingProject || !c.deps.Authz.MayPull(p, repo)
	})
	sort.Strings(repos)
	last := q.Get("last")
	start, _ := slices.BinarySearch(repos, last)
	if start < len(repos) && repos[start] == last {
		start++
	}
	page := repos[start:min(start+n, len(repos))]
	if end := start + len(page); n > 0 && end < len(repos) {
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {page[len(page)-1]}}
		w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?%s>; rel="next"`, next.Encode()))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	return json.NewEncoder(w).Encode(struct {
		Repositories []string `json:"repositories"`
	}{append([]string{}, page...)})
}

// writeError answers in the registry API's error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}
