package registry

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
)

// manifestCache serves manifest GETs and HEADs from memory: distribution
// reads three small files and parses the manifest on every GET, which caps
// a registry that mostly answers "what is gpu-operator:v24.9?" well below
// what the hardware can do.
//
// Correctness rests on one rule: every write to a repository, whether over
// /v2/ or through the direct-storage methods the importer uses, goes
// through this package and invalidates that repository before and after;
// so does every removal gc and fsck --repair make in package storage,
// which is handed this cache as its storage.Changes.
// A per-repository generation stops a lookup that raced a write from
// filling the cache with what it read before the write.
type manifestCache struct {
	mu  sync.RWMutex
	gen map[string]uint64 // repository → generation
	// epoch moves every repository's generation on at once (InvalidateAll):
	// a repository's generation is gen[repo] + epoch.
	epoch uint64
	repos map[string]*repoCache
	n     int   // manifests cached
	bytes int64 // their payload bytes
}

// repoCache is what is cached for one repository: invalidating it is
// dropping it.
type repoCache struct {
	tags  map[string]digest.Digest // tag → digest
	mans  map[digest.Digest]cachedManifest
	bytes int64
}

type cachedManifest struct {
	mediaType string
	payload   []byte
}

const (
	maxCachedManifests    = 20000
	maxCachedManifestSize = 1 << 20
	maxCacheBytes         = 64 << 20
)

func newManifestCache() *manifestCache {
	return &manifestCache{gen: map[string]uint64{}, repos: map[string]*repoCache{}}
}

// Invalidate drops everything cached for repo and moves its generation on.
func (c *manifestCache) Invalidate(repo string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen[repo]++
	if rc, ok := c.repos[repo]; ok {
		c.n -= len(rc.mans)
		c.bytes -= rc.bytes
		delete(c.repos, repo)
	}
}

// InvalidateAll drops everything cached and moves every repository's
// generation on, those of repositories not seen yet too: what a
// read-only replica does on every poll, since its repositories are
// written by another process.
func (c *manifestCache) InvalidateAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	clear(c.repos)
	c.n, c.bytes = 0, 0
}

// generation is repo's generation, which every invalidation moves on: what
// was read from storage at one generation is stale at the next.
func (c *manifestCache) generation(repo string) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen[repo] + c.epoch
}

// Generations copies every repository's generation: a repository whose
// generation moved was written (what package storage's visible set is
// recomputed from).
func (c *manifestCache) Generations() map[string]uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := maps.Clone(c.gen)
	for k := range out {
		out[k] += c.epoch
	}
	return out
}

// get returns the cached manifest for repo and ref (a tag or a digest),
// and the generation to hand to put on a miss.
func (c *manifestCache) get(repo, ref string) (digest.Digest, cachedManifest, bool, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	gen := c.gen[repo] + c.epoch
	rc, ok := c.repos[repo]
	if !ok {
		return "", cachedManifest{}, false, gen
	}
	d := digest.Digest(ref)
	if !strings.Contains(ref, ":") {
		if d, ok = rc.tags[ref]; !ok {
			return "", cachedManifest{}, false, gen
		}
	}
	m, ok := rc.mans[d]
	return d, m, ok, gen
}

// put stores what a lookup found, unless the repository changed meanwhile.
func (c *manifestCache) put(repo, ref string, gen uint64, d digest.Digest, m cachedManifest) {
	if len(m.payload) > maxCachedManifestSize {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen[repo]+c.epoch != gen {
		return
	}
	if c.n >= maxCachedManifests || c.bytes+int64(len(m.payload)) > maxCacheBytes {
		clear(c.repos)
		c.n, c.bytes = 0, 0
	}
	rc, ok := c.repos[repo]
	if !ok {
		rc = &repoCache{tags: map[string]digest.Digest{}, mans: map[digest.Digest]cachedManifest{}}
		c.repos[repo] = rc
	}
	if !strings.Contains(ref, ":") {
		rc.tags[ref] = d
	}
	if _, ok := rc.mans[d]; !ok {
		rc.mans[d] = m
		rc.bytes += int64(len(m.payload))
		c.n++
		c.bytes += int64(len(m.payload))
	}
}

// manifestPath splits /v2/<name>/manifests/<ref>.
func manifestPath(p string) (repo, ref string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/manifests/")
	if i <= 0 {
		return "", "", false
	}
	repo, ref = rest[:i], rest[i+len("/manifests/"):]
	if ref == "" || strings.Contains(ref, "/") {
		return "", "", false
	}
	return repo, ref, true
}

// acceptsType tells whether the Accept headers take mediaType. Like
// distribution, a client that names no manifest type at all is served.
func acceptsType(r *http.Request, mediaType string) bool {
	accepts := r.Header.Values("Accept")
	named := false
	for _, h := range accepts {
		for _, part := range strings.Split(h, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			mt = strings.TrimSpace(mt)
			if mt == mediaType {
				return true
			}
			if strings.Contains(mt, "manifest") || strings.Contains(mt, "index") {
				named = true
			}
		}
	}
	return !named && mediaType != "application/vnd.oci.image.manifest.v1+json" && mediaType != "application/vnd.oci.image.index.v1+json"
}

// serveCachedManifest answers a manifest GET or HEAD from the cache, or
// fills the cache and answers, when the caller may pull and the request is
// one the cache can answer exactly as distribution would. It returns false
// to let distribution handle the request.
func (r *Registry) serveCachedManifest(w http.ResponseWriter, req *http.Request) bool {
	repo, ref, ok := manifestPath(req.URL.Path)
	if !ok {
		return false
	}
	if _, err := r.authorizer.AuthorizeRegistry(req, []Access{{Type: "repository", Name: repo, Action: "pull"}}); err != nil {
		return false // distribution answers with the challenge
	}
	d, m, hit, gen := r.cache.get(repo, ref)
	if !hit {
		var err error
		if d, m, err = r.lookupManifest(req.Context(), repo, ref); err != nil {
			return false // not found, invalid, …: distribution says so properly
		}
		r.cache.put(repo, ref, gen, d, m)
	}
	if !acceptsType(req, m.mediaType) {
		return false
	}
	h := w.Header()
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	h.Set("Content-Type", m.mediaType)
	h.Set("Content-Length", strconv.Itoa(len(m.payload)))
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Etag", `"`+d.String()+`"`)
	if inm := req.Header.Get("If-None-Match"); inm != "" && strings.Trim(inm, `"`) == d.String() {
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(m.payload)
	}
	return true
}

func (r *Registry) lookupManifest(ctx context.Context, repo, ref string) (digest.Digest, cachedManifest, error) {
	d := digest.Digest(ref)
	if strings.Contains(ref, ":") {
		if err := d.Validate(); err != nil {
			return "", cachedManifest{}, err
		}
	} else {
		var ok bool
		var err error
		if d, ok, err = r.TagDigest(ctx, repo, ref); err != nil || !ok {
			return "", cachedManifest{}, errors.Join(err, distribution.ErrManifestUnknownRevision{Name: repo, Revision: d})
		}
	}
	mt, payload, err := r.GetManifest(ctx, repo, d)
	if err != nil {
		return "", cachedManifest{}, err
	}
	if !d.Algorithm().Available() || d.Algorithm().FromBytes(payload) != d {
		return "", cachedManifest{}, ErrDigestMismatch
	}
	return d, cachedManifest{mediaType: mt, payload: payload}, nil
}
