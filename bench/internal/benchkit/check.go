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
		h, err := head("/v2/"+repo+"/manifests/"+img.Tag, strings.Join([]string{MediaTypeManifest, MediaTypeIndex}, ", "))
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
