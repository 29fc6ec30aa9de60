package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
)

// The referrers API (distribution-spec 1.1), which distribution v3 lacks:
// GET /v2/<name>/referrers/<digest> answers an OCI image index of every
// manifest in the repository whose subject is that digest.
//
// The list is not a second record beside storage that could drift from
// it: it is computed from the repository's manifests, as storage holds
// them, and cached until the repository's next write. Every write that
// can add or remove a manifest, over /v2/, through the direct-storage
// methods or by gc, already invalidates the repository's manifest cache; the
// referrers index is built at one of that cache's generations and is
// stale as soon as the generation moves. Rebuilding after a write reads
// only the manifests not seen before: what a manifest says is cached by
// digest, and a digest's content never changes.

// referrersCache holds, per repository, which manifests refer to which
// subjects, and, per manifest digest, what a referrers list says of it.
type referrersCache struct {
	mu        sync.Mutex
	repos     map[string]referrersIndex
	summaries map[digest.Digest]manifestSummary
	builds    singleflight.Group
}

// referrersIndex is one repository's referrers at one cache generation.
type referrersIndex struct {
	gen       uint64
	bySubject map[digest.Digest][]v1.Descriptor // sorted by digest
}

// manifestSummary is what the referrers list needs of a manifest.
type manifestSummary struct {
	subject digest.Digest // "" when it has none
	desc    v1.Descriptor
}

const (
	maxReferrerRepos     = 10000
	maxManifestSummaries = 100000
)

func newReferrersCache() *referrersCache {
	return &referrersCache{repos: map[string]referrersIndex{}, summaries: map[digest.Digest]manifestSummary{}}
}

// manifestDoc is the part of a manifest or index this package reads.
type manifestDoc struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *v1.Descriptor    `json:"config"`
	Subject       *v1.Descriptor    `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// subjectOf returns the digest a manifest's subject names, or "".
func subjectOf(payload []byte) digest.Digest {
	var doc manifestDoc
	if json.Unmarshal(payload, &doc) != nil || doc.Subject == nil {
		return ""
	}
	return doc.Subject.Digest
}

// summarize reads what a referrers list says of a stored manifest: its
// media type, digest and size, its annotations, and its artifact type —
// the manifest's artifactType, else its config's media type.
func summarize(d digest.Digest, mediaType string, payload []byte) manifestSummary {
	var doc manifestDoc
	if json.Unmarshal(payload, &doc) != nil {
		return manifestSummary{}
	}
	s := manifestSummary{desc: v1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(payload)), ArtifactType: doc.ArtifactType, Annotations: doc.Annotations}}
	if s.desc.ArtifactType == "" && doc.Config != nil {
		s.desc.ArtifactType = doc.Config.MediaType
	}
	if doc.Subject == nil || doc.Subject.Digest.Validate() != nil {
		return manifestSummary{} // no one's referrer: nothing to keep
	}
	s.subject = doc.Subject.Digest
	return s
}

// referrersPath splits /v2/<name>/referrers/<digest>.
func referrersPath(p string) (repo, ref string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/referrers/")
	if i <= 0 {
		return "", "", false
	}
	repo, ref = rest[:i], rest[i+len("/referrers/"):]
	if ref == "" || strings.Contains(ref, "/") {
		return "", "", false
	}
	return repo, ref, true
}

// serveReferrers answers the referrers API. It returns false for any other
// request.
func (r *Registry) serveReferrers(w http.ResponseWriter, req *http.Request) bool {
	repo, ref, ok := referrersPath(req.URL.Path)
	if !ok {
		return false
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if _, err := reference.WithName(repo); err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeNameInvalid.WithDetail(repo))
		return true
	}
	if !r.authorize(w, req, Access{Type: "repository", Name: repo, Action: "pull"}) {
		return true
	}
	subject, err := digest.Parse(ref)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeDigestInvalid.WithDetail(err.Error()))
		return true
	}
	list, err := r.referrers(req.Context(), repo, subject)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return true
	}
	if at := req.URL.Query().Get("artifactType"); at != "" {
		kept := make([]v1.Descriptor, 0, len(list))
		for _, d := range list {
			if d.ArtifactType == at {
				kept = append(kept, d)
			}
		}
		list = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	body, err := json.Marshal(v1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageIndex,
		Manifests: list,
	})
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return true
	}
	w.Header().Set("Content-Type", v1.MediaTypeImageIndex)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	return true
}

// referrers lists the manifests of repo whose subject is subject, sorted
// by digest; never nil. A repository that does not exist has none.
func (r *Registry) referrers(ctx context.Context, repo string, subject digest.Digest) ([]v1.Descriptor, error) {
	gen := r.cache.generation(repo)
	rc := r.refs
	rc.mu.Lock()
	idx, ok := rc.repos[repo]
	rc.mu.Unlock()
	if !ok || idx.gen != gen {
		// Callers that arrive at the same generation share one build; a
		// caller after a write never joins a build that began before it.
		v, err, _ := rc.builds.Do(repo+"@"+strconv.FormatUint(gen, 10), func() (any, error) {
			return r.buildReferrers(context.WithoutCancel(ctx), repo, gen)
		})
		if err != nil {
			return nil, err
		}
		idx = v.(referrersIndex)
	}
	out := make([]v1.Descriptor, len(idx.bySubject[subject]))
	copy(out, idx.bySubject[subject])
	return out, nil
}

// buildReferrers reads every manifest of repo (those it has not read
// before) and keeps the index if the repository did not change meanwhile.
func (r *Registry) buildReferrers(ctx context.Context, repo string, gen uint64) (referrersIndex, error) {
	rc := r.refs
	idx := referrersIndex{gen: gen, bySubject: map[digest.Digest][]v1.Descriptor{}}
	ds, err := r.store.Revisions(ctx, repo)
	if err != nil {
		return idx, err
	}
	for _, d := range ds { // sorted, so each subject's list is too
		rc.mu.Lock()
		s, ok := rc.summaries[d]
		rc.mu.Unlock()
		if !ok {
			mt, payload, err := r.GetManifest(ctx, repo, d)
			if err != nil {
				// Listed but unreadable (removed meanwhile, or damaged):
				// it is no one's referrer now; do not remember that.
				r.log.Warn("referrers: unreadable manifest", "repository", repo, "digest", d, "error", err)
				continue
			}
			s = summarize(d, mt, payload)
			rc.mu.Lock()
			if len(rc.summaries) >= maxManifestSummaries {
				clear(rc.summaries)
			}
			rc.summaries[d] = s
			rc.mu.Unlock()
		}
		if s.subject != "" {
			idx.bySubject[s.subject] = append(idx.bySubject[s.subject], s.desc)
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if r.cache.generation(repo) == gen {
		if len(rc.repos) >= maxReferrerRepos {
			clear(rc.repos)
		}
		rc.repos[repo] = idx
	}
	return idx, nil
}
