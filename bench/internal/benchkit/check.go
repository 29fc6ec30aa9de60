package benchkit

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// CheckImageSet proves, by HEAD requests to the registry at base (no
// auth), that repo holds every image of s: each tag names the image's
// manifest digest, and each layer and config is there with its size. It
// returns how many tags and blobs it checked.
func CheckImageSet(ctx context.Context, hc *http.Client, base *url.URL, repo string, s *ImageSet) (tags, blobs int, err error) {
	return checkImageSet(ctx, hc, base, repo, s, false)
}

// CheckImageSetByDigest is CheckImageSet with each manifest fetched by
// its digest, for tools (imgpkg) that tag the images their own way.
func CheckImageSetByDigest(ctx context.Context, hc *http.Client, base *url.URL, repo string, s *ImageSet) (manifests, blobs int, err error) {
	return checkImageSet(ctx, hc, base, repo, s, true)
}

func checkImageSet(ctx context.Context, hc *http.Client, base *url.URL, repo string, s *ImageSet, byDigest bool) (tags, blobs int, err error) {
	// head answers the headers only: the body of a HEAD is empty, and closed here.
	head := func(path, accept string) (http.Header, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, base.JoinPath(path).String(), nil)
		if err != nil {
			return nil, err
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("HEAD %s: HTTP %d", path, resp.StatusCode)
		}
		return resp.Header, nil
	}
	seen := map[string]bool{}
	for _, img := range s.Images {
		ref := img.Tag
		if byDigest {
			ref = img.ManifestDigest
		}
		h, err := head("/v2/"+repo+"/manifests/"+ref, strings.Join([]string{MediaTypeManifest, MediaTypeIndex}, ", "))
		if err != nil {
			return tags, blobs, err
		}
		if got := h.Get("Docker-Content-Digest"); got != img.ManifestDigest {
			return tags, blobs, fmt.Errorf("%s:%s names %q, want %s", repo, img.Tag, got, img.ManifestDigest)
		}
		tags++
		want := map[string]int64{img.ConfigDigest: int64(len(img.Config))}
		for _, l := range img.Layers {
			want[l.Digest] = l.Size
		}
		for d, size := range want {
			if seen[d] {
				continue
			}
			seen[d] = true
			h, err := head("/v2/"+repo+"/blobs/"+d, "")
			if err != nil {
				return tags, blobs, err
			}
			if n, _ := strconv.ParseInt(h.Get("Content-Length"), 10, 64); n != size {
				return tags, blobs, fmt.Errorf("%s@%s: %d bytes, want %d", repo, d, n, size)
			}
			blobs++
		}
	}
	return tags, blobs, nil
}

// WithAuthorization is hc with authz (a whole Authorization value) set on
// every request that has none.
func WithAuthorization(hc *http.Client, authz string) *http.Client {
	c := *hc
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = roundTripper(func(req *http.Request) (*http.Response, error) {
		if authz != "" && req.Header.Get("Authorization") == "" {
			req = req.Clone(req.Context())
			req.Header.Set("Authorization", authz)
		}
		return next.RoundTrip(req)
	})
	return &c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
