package aptrepo

import (
	"errors"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/internal/coalesce"
)

// routes is what Handler needs to find a file, rebuilt after every switch
// and read without the mutex.
type routes struct {
	repos map[string]*repoRoutes
}

type repoRoutes struct {
	// dists maps a distribution to its kept publishes, current first, then
	// newest first.
	dists map[string][]string
	// pool lists every kept publish of the repository, the current ones of
	// each distribution first: pool files are looked up in that order.
	pool []string
}

// rebuildRoutes recomputes the routes from the state; call with mu held
// (or before Repos is shared).
func (r *Repos) rebuildRoutes() {
	rt := &routes{repos: map[string]*repoRoutes{}}
	for repo, dists := range r.st.Repos {
		rr := &repoRoutes{dists: map[string][]string{}}
		var older []string
		for _, dist := range slices.Sorted(keysOf(dists)) {
			ds := dists[dist]
			ids := []string{}
			if _, ok := ds.find(ds.Current); ok {
				ids = append(ids, ds.Current)
				rr.pool = append(rr.pool, ds.Current)
			}
			for i := len(ds.History) - 1; i >= 0; i-- {
				if p := ds.History[i]; p.Kept && p.ID != ds.Current {
					ids = append(ids, p.ID)
					older = append(older, p.ID)
				}
			}
			rr.dists[dist] = ids
		}
		rr.pool = append(rr.pool, older...)
		rt.repos[repo] = rr
	}
	r.routes.Store(rt)
}

// Handler serves the published trees read-only:
//
//	GET /<repo>/dists/<dist>/…   InRelease, Release, Release.gpg, Packages…
//	GET /<repo>/pool/…           the package files
//
// The caller mounts it where it likes (the appliance: under /apt/ with
// http.StripPrefix). dists/ files come from the distribution's current
// publish; by-hash index files and pool files are also found in the kept
// older publishes, so a client that read an InRelease just before a switch
// still gets what it names.
func (r *Repos) Handler() http.Handler {
	return http.HandlerFunc(r.serveHTTP)
}

func (r *Repos) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rt := r.routes.Load()
	if rt == nil {
		http.Error(w, "apt repositories closed", http.StatusServiceUnavailable)
		return
	}
	p := req.URL.Path
	if strings.Contains(p, "\x00") || strings.Contains(p, "\\") || path.Clean("/"+p) != "/"+strings.TrimPrefix(p, "/") {
		http.NotFound(w, req)
		return
	}
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 3)
	if len(parts) != 3 || parts[2] == "" {
		http.NotFound(w, req)
		return
	}
	rr := rt.repos[parts[0]]
	if rr == nil {
		http.NotFound(w, req)
		return
	}
	var candidates []string
	switch parts[1] {
	case "dists":
		dist, _, _ := strings.Cut(parts[2], "/")
		ids := rr.dists[dist]
		if len(ids) == 0 {
			http.NotFound(w, req)
			return
		}
		if strings.Contains(parts[2], "/by-hash/") {
			candidates = ids
		} else {
			candidates = ids[:1]
			w.Header().Set("Cache-Control", "no-cache")
		}
	case "pool":
		candidates = rr.pool
	default:
		http.NotFound(w, req)
		return
	}
	for _, id := range candidates {
		if r.serveFile(w, req, id+"/"+parts[1]+"/"+parts[2]) {
			return
		}
	}
	http.NotFound(w, req)
}

// serveFile serves a regular file under the public root; false when there
// is none (a folder, a symbolic link out of the tree, nothing).
func (r *Repos) serveFile(w http.ResponseWriter, req *http.Request, name string) bool {
	f, err := r.root.Open(name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Debug("apt repository: open", "path", name, "err", err)
		}
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	// No Last-Modified: two publishes can fall within one second, and a
	// client's If-Modified-Since would then be answered 304 with the old
	// InRelease still in its lists. Index files are small, and apt keeps
	// the package files it already has by their hash.
	coalesce.ServeContent(w, req, "", time.Time{}, f) // over HTTPS: fewer, larger TLS writes
	return true
}
