package bundler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/appliance-dev/appliance/internal/bundle"
)

// file adds one file of the spec: a local path is hashed and read in place
// when the bundle is written; a URL is downloaded into the cache, resuming
// a partial download with a range request.
func (b *builder) file(ctx context.Context, f bundle.FileSpec) error {
	name := f.Name
	if name == "" {
		name = filepath.Base(strings.TrimRight(f.Path+strings.SplitN(strings.SplitN(f.URL, "?", 2)[0], "#", 2)[0], "/"))
	}
	var d, source string
	var size int64
	var err error
	if f.Path != "" {
		p := f.Path
		if !filepath.IsAbs(p) {
			p = filepath.Join(b.o.SpecDir, p)
		}
		source = p
		d, size, err = hashFile(p)
		if err != nil {
			return err
		}
		b.cache.addLocal(d, p)
	} else {
		source = f.URL
		if u, perr := url.Parse(f.URL); perr == nil && u.Scheme == "http" && f.SHA256 == "" && !b.up.isInsecure(u.Host) {
			return fmt.Errorf("%s: plain HTTP proves nothing about the bytes; pin the file with sha256: in the spec, or name the host with --insecure-registry %s", f.URL, u.Host)
		}
		d, size, err = b.downloadURL(ctx, f.URL, f.SHA256)
		if err != nil {
			return err
		}
	}
	if f.SHA256 != "" && d != "sha256:"+strings.ToLower(f.SHA256) {
		return fmt.Errorf("%s: its sha256 is %s, the spec says %s", source, strings.TrimPrefix(d, "sha256:"), f.SHA256)
	}
	b.mu.Lock()
	if b.heldFiles[d] {
		b.present[d] = size
	} else {
		b.blobs[d] = size
	}
	b.mu.Unlock()
	meta := maps.Clone(f.Metadata)
	b.addArtifact(bundle.Artifact{Kind: bundle.KindFile, FileKind: f.Kind, Source: source, Destination: name, Digest: d, Size: size,
		Version: f.Version, Refresh: f.Refresh, Metadata: meta}, zeroDesc)
	return nil
}

func hashFile(p string) (string, int64, error) {
	fh, err := os.Open(p)
	if err != nil {
		return "", 0, fmt.Errorf("file: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return "", 0, fmt.Errorf("file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("file %s: not a regular file", p)
	}
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		return "", 0, fmt.Errorf("file %s: %w", p, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

// maxFileDownloadRounds bounds the resumes of one download.
const maxFileDownloadRounds = 5

// downloadURL fetches a URL into the cache. A partial download left by an
// interrupted run is resumed with a Range request; a file whose sha256 the
// spec gives and the cache already holds is not fetched at all.
func (b *builder) downloadURL(ctx context.Context, url, want string) (string, int64, error) {
	if want != "" {
		d := "sha256:" + strings.ToLower(want)
		if fi, err := os.Stat(b.cache.path(d)); err == nil {
			return d, fi.Size(), nil
		}
	}
	key := sha256.Sum256([]byte(url))
	partial := filepath.Join(b.cache.dir, "tmp", "url-"+hex.EncodeToString(key[:12])+".partial")
	for range maxFileDownloadRounds {
		done, err := b.downloadRound(ctx, url, partial)
		if err != nil {
			return "", 0, err
		}
		if done {
			break
		}
	}
	d, size, err := hashFile(partial)
	if err != nil {
		return "", 0, err
	}
	if err := os.Rename(partial, b.cache.path(d)); err != nil {
		return "", 0, fmt.Errorf("download %s: %w", url, err)
	}
	return d, size, nil
}

// downloadRound appends what the server sends to the partial file and
// tells whether the file is complete.
func (b *builder) downloadRound(ctx context.Context, url, partial string) (bool, error) {
	var have int64
	if fi, err := os.Stat(partial); err == nil {
		have = fi.Size()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, fmt.Errorf("download %s: %w", url, err)
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := b.up.client.Do(req)
	if err != nil {
		return false, explain(url, err)
	}
	defer resp.Body.Close()
	flags := os.O_CREATE | os.O_WRONLY
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		flags |= os.O_APPEND
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		return true, nil // the partial file is already whole
	case resp.StatusCode == http.StatusOK:
		flags |= os.O_TRUNC
		have = 0
	default:
		return false, fmt.Errorf("download %s: HTTP %s", url, resp.Status)
	}
	fh, err := os.OpenFile(partial, flags, 0o600)
	if err != nil {
		return false, fmt.Errorf("download %s: %w", url, err)
	}
	var count func(int64)
	if b.o.Progress != nil {
		count = b.o.Progress.Add
	}
	n, err := io.Copy(io.MultiWriter(fh, counter(count)), resp.Body)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, fmt.Errorf("download %s: %w", url, ctx.Err())
		}
		return false, nil // resume in the next round
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return false, nil
	}
	_ = have
	return true, nil
}
