package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/importer"
)

// memberCatalog serves GET /v2/_catalog itself to a member of some
// projects only (auth.User.Projects): the catalog names every repository,
// and such a caller sees the public projects' and its own, as the
// registry would let it pull them. Everyone else gets distribution's
// catalog (anonymous callers are challenged there).
func (s *Server) memberCatalog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/_catalog" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		// Authenticate without counting a failure: distribution's path
		// counts it, and refuses.
		p, console, err := s.consolePrincipal(r)
		if !console {
			p, err = s.authz.Authenticate(r.Header.Get("Authorization"))
		}
		if err != nil || p.Anonymous || s.authz.SeesAll(p) ||
			!s.authz.Allowed(p, auth.Access{Type: "registry", Name: "catalog", Action: auth.ActionAll}) {
			next.ServeHTTP(w, r)
			return
		}
		if err := s.serveCatalog(w, r, p); err != nil {
			s.log.Error("catalog failed", "user", p.Name, "error", err)
			writeRegistryError(w, http.StatusInternalServerError, "UNKNOWN", "internal error; see the appliance's log")
		}
	})
}

// serveCatalog answers with the repositories p may pull, paginated as
// distribution does: n at most, after last, a Link to the next page.
func (s *Server) serveCatalog(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q := r.URL.Query()
	n := 100
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			writeRegistryError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", fmt.Sprintf("n=%q: want a number of entries, 0 or more", v))
			return nil
		}
	}
	n = min(n, 1000)
	repos, err := s.reg.Repositories(r.Context())
	if err != nil {
		return err
	}
	repos = slices.DeleteFunc(repos, func(repo string) bool {
		return auth.ProjectOf(repo) == importer.StagingProject || !s.authz.MayPull(p, repo)
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

// writeRegistryError answers in the registry API's error shape.
func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}
