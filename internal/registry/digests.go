package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/distribution/v3/manifest/schema2"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-dev/appliance/internal/registry/storage"
)

// Digests other than sha256 (sha512, which distribution-spec 1.1 names).
//
// distribution v3 hashes every upload with sha256 and keeps the data
// under that digest: a blob pushed as sha512 is verified against its
// sha512, then stored as sha256 with the sha512 linked into the
// repository as an alias of it. It answers with the sha256, and a mount
// of the sha512 links the target repository to data that is not there.
// Its manifest store only knows sha256, so a manifest pushed by its
// sha512 digest is refused.
//
// Here a blob or manifest is kept under the digest it was pushed by, as
// distribution's layout already allows: the data at blobs/sha512/…/data
// (a hard link to the verified sha256 file, so no second copy), the
// repository's link naming the sha512 itself. Then distribution serves,
// mounts, deletes and enumerates it like any other, and a garbage
// collector that keeps what manifests reference keeps it. The /v2/ paths
// distribution cannot do are done here: the end of an upload (the
// answer names the digest pushed), a mount from an alias, and a manifest
// PUT by a digest that is not sha256.

// adoptBlob keeps blob want, which distribution stored as canonical (the
// same bytes, verified against want when they were pushed), under want
// itself: the data linked to want's own path, and repo's link naming want.
func (r *Registry) adoptBlob(ctx context.Context, repo string, want, canonical digest.Digest) error {
	if want == canonical {
		return nil
	}
	link := r.store.LinkData
	if r.onS3 {
		link = func(want, canonical digest.Digest) error { return r.copyData(ctx, want, canonical) }
	}
	if err := link(want, canonical); err != nil {
		return fmt.Errorf("keep blob %s under its own digest: %w", want, err)
	}
	if err := r.driver.PutContent(ctx, storage.LayerLinkKey(repo, want), []byte(want.String())); err != nil {
		return fmt.Errorf("keep blob %s under its own digest: link into %s: %w", want, repo, err)
	}
	return nil
}

// uploadPath splits /v2/<name>/blobs/uploads/<id>; id is "" for the
// request that starts an upload.
func uploadPath(p string) (repo, id string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/blobs/uploads/")
	if i <= 0 {
		return "", "", false
	}
	repo, id = rest[:i], rest[i+len("/blobs/uploads/"):]
	if strings.Contains(id, "/") {
		return "", "", false
	}
	return repo, id, true
}

// uncanonical returns the digest a request names in its query parameter
// key when that digest is valid and not sha256.
func uncanonical(req *http.Request, key string) (digest.Digest, bool) {
	d, err := digest.Parse(req.URL.Query().Get(key))
	if err != nil || d.Algorithm() == digest.Canonical {
		return "", false
	}
	return d, true
}

// finishUpload wraps the response to the PUT that ends an upload of blob
// want: once distribution has verified and stored it (as sha256), it is
// kept under want and the answer names want.
func (r *Registry) finishUpload(w http.ResponseWriter, req *http.Request, repo string, want digest.Digest) http.ResponseWriter {
	return &hookWriter{ResponseWriter: w, hook: func(status int, h http.Header) {
		if status != http.StatusCreated {
			return
		}
		canonical, err := digest.Parse(h.Get("Docker-Content-Digest"))
		if err != nil || canonical == want {
			return
		}
		if err := r.adoptBlob(req.Context(), repo, want, canonical); err != nil {
			// The alias distribution linked still reads the same bytes.
			r.log.Error("upload", "repository", repo, "digest", want, "error", err)
		}
		h.Set("Docker-Content-Digest", want.String())
		h.Set("Location", strings.Replace(h.Get("Location"), canonical.String(), want.String(), 1))
	}}
}

// prepareMount makes a blob the mount source holds as an alias of its
// sha256 (pushed before blobs were kept under their own digest) a blob of
// its own, so that distribution's mount links the target to real data.
// Only a caller who may make the mount gets this done.
func (r *Registry) prepareMount(req *http.Request, repo, from string, d digest.Digest) {
	access := []Access{{Type: "repository", Name: repo, Action: "pull"}, {Type: "repository", Name: repo, Action: "push"}, {Type: "repository", Name: from, Action: "pull"}}
	if _, err := r.authorizer.AuthorizeRegistry(req, access); err != nil {
		return // distribution refuses it
	}
	rp, err := r.repository(req.Context(), from)
	if err != nil {
		return
	}
	desc, err := rp.Blobs(req.Context()).Stat(req.Context(), d)
	if err != nil || desc.Digest == d {
		return
	}
	if err := r.adoptBlob(req.Context(), from, d, desc.Digest); err != nil {
		r.log.Error("mount", "repository", from, "digest", d, "error", err)
	}
}

// putManifestByDigest stores a manifest PUT by a digest that is not
// sha256, which distribution's manifest store refuses: it checks the
// payload against the digest and the references as distribution does,
// then stores it under that digest.
func (r *Registry) putManifestByDigest(w http.ResponseWriter, req *http.Request, repo string, d digest.Digest) {
	ctx := req.Context()
	rp, err := r.repository(ctx, repo)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeNameInvalid.WithDetail(repo))
		return
	}
	if !r.authorize(w, req, Access{Type: "repository", Name: repo, Action: "pull"}, Access{Type: "repository", Name: repo, Action: "push"}) {
		return
	}
	payload, err := io.ReadAll(io.LimitReader(req.Body, maxManifestBody+1))
	if err == nil && len(payload) > maxManifestBody {
		err = fmt.Errorf("a manifest is at most %d bytes", maxManifestBody)
	}
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeManifestInvalid.WithDetail(err.Error()))
		return
	}
	if d.Algorithm().FromBytes(payload) != d {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeDigestInvalid.WithDetail("the manifest does not match its digest"))
		return
	}
	m, _, err := distribution.UnmarshalManifest(req.Header.Get("Content-Type"), payload)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeManifestInvalid.WithDetail(err.Error()))
		return
	}
	var doc manifestDoc
	if json.Unmarshal(payload, &doc) != nil || doc.SchemaVersion != 2 {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeManifestInvalid.WithDetail("schemaVersion must be 2"))
		return
	}
	if err := verifyReferences(ctx, rp, m); err != nil {
		var errs errcode.Errors
		var verr distribution.ErrManifestVerification
		if errors.As(err, &verr) {
			for _, e := range verr {
				var unknown distribution.ErrManifestBlobUnknown
				if errors.As(e, &unknown) {
					errs = append(errs, errcode.ErrorCodeManifestBlobUnknown.WithDetail(unknown.Digest))
				} else {
					errs = append(errs, errcode.ErrorCodeManifestInvalid.WithDetail(e.Error()))
				}
			}
		} else {
			errs = append(errs, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		}
		_ = errcode.ServeJSON(w, errs)
		return
	}
	if err := r.storeManifest(ctx, repo, d, payload); err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return
	}
	h := w.Header()
	h.Set("Location", (&url.URL{Path: "/v2/" + repo + "/manifests/" + d.String()}).String())
	h.Set("Docker-Content-Digest", d.String())
	if doc.Subject != nil {
		h.Set("OCI-Subject", doc.Subject.Digest.String())
	}
	w.WriteHeader(http.StatusCreated)
}

// storeManifest writes a verified manifest's payload under digest d and
// links it into repo, as distribution stores a sha256 manifest: the data
// first, so that the link never names what is not there.
func (r *Registry) storeManifest(ctx context.Context, repo string, d digest.Digest, payload []byte) error {
	if err := r.driver.PutContent(ctx, storage.BlobDataKey(d), payload); err != nil {
		return fmt.Errorf("store manifest %s: %w", d, err)
	}
	if err := r.driver.PutContent(ctx, storage.RevisionLinkKey(repo, d), []byte(d.String())); err != nil {
		return fmt.Errorf("store manifest %s in %s: %w", d, repo, err)
	}
	return nil
}

// Errors of a foreign layer's URLs, as distribution names them.
var (
	errInvalidURL = errors.New("invalid URL on layer")
	errMissingURL = errors.New("missing URL on layer")
)

// verifyReferences checks what distribution's manifest handlers check
// before storing a manifest, with the appliance's configuration (any
// http or https URL allowed): an image's config and layers are in the
// repository, except non-distributable (foreign) layers with URLs, which
// are never pushed; the URLs of layers are http or https without a
// fragment; an index's children are manifests of the repository.
func verifyReferences(ctx context.Context, rp distribution.Repository, m distribution.Manifest) error {
	ms, err := rp.Manifests(ctx)
	if err != nil {
		return err
	}
	blobs := rp.Blobs(ctx)
	var errs distribution.ErrManifestVerification
	switch m.(type) {
	case *ocischema.DeserializedImageIndex, *manifestlist.DeserializedManifestList:
		for _, c := range m.References() {
			if ok, err := ms.Exists(ctx, c.Digest); err != nil || !ok {
				errs = append(errs, distribution.ErrManifestBlobUnknown{Digest: c.Digest})
			}
		}
	case *ocischema.DeserializedManifest, *schema2.DeserializedManifest:
		for _, c := range m.References() {
			if err := c.Digest.Validate(); err != nil {
				errs = append(errs, err, distribution.ErrManifestBlobUnknown{Digest: c.Digest})
				continue
			}
			var err error
			switch c.MediaType {
			case v1.MediaTypeImageLayer, v1.MediaTypeImageLayerGzip, v1.MediaTypeImageLayerNonDistributable, v1.MediaTypeImageLayerNonDistributableGzip, schema2.MediaTypeForeignLayer: //nolint:staticcheck // non-distributable layers are deprecated in image-spec 1.1, and still pushed
				if c.MediaType == schema2.MediaTypeForeignLayer && len(c.URLs) == 0 {
					err = errMissingURL
				}
				if !validURLs(c.URLs) {
					err = errInvalidURL
				}
				if err == nil && (len(c.URLs) == 0 || !foreignLayer(c.MediaType)) {
					_, err = blobs.Stat(ctx, c.Digest)
				}
			case v1.MediaTypeImageManifest, schema2.MediaTypeManifest:
				if ok, xerr := ms.Exists(ctx, c.Digest); xerr != nil || !ok {
					err = distribution.ErrBlobUnknown
					break
				}
				_, err = blobs.Stat(ctx, c.Digest)
			default:
				_, err = blobs.Stat(ctx, c.Digest)
			}
			if err != nil {
				if !errors.Is(err, distribution.ErrBlobUnknown) {
					errs = append(errs, err)
				}
				errs = append(errs, distribution.ErrManifestBlobUnknown{Digest: c.Digest})
			}
		}
	default:
		return fmt.Errorf("%w: %T", ErrInvalidManifest, m)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// foreignLayer tells whether a layer is one clients fetch from its URLs,
// never from the registry.
func foreignLayer(mediaType string) bool {
	switch mediaType {
	case v1.MediaTypeImageLayerNonDistributable, v1.MediaTypeImageLayerNonDistributableGzip, schema2.MediaTypeForeignLayer: //nolint:staticcheck // see verifyReferences
		return true
	}
	return false
}

// validURLs is distribution's rule for a layer's URLs: http or https,
// without a fragment.
func validURLs(urls []string) bool {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Fragment != "" {
			return false
		}
	}
	return true
}
