package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"sort"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-dev/appliance/internal/registry/storage"
)

// The methods below write straight into the registry's storage, not over
// HTTP, for the importer. Each one verifies what it stores.

// Errors of direct storage access.
var (
	// ErrDigestMismatch: the bytes written do not hash to the digest they
	// were named by (storage's, which fsck reports too).
	ErrDigestMismatch = storage.ErrDigestMismatch
	// ErrSizeMismatch: the bytes written are not as many as declared.
	ErrSizeMismatch = errors.New("content does not match its declared size")
	// ErrBlobUnknown: a manifest references a blob the repository lacks.
	ErrBlobUnknown = errors.New("manifest references a blob that is not present")
	// ErrReadOnly: the registry refuses writes.
	ErrReadOnly = errors.New("the registry is in read-only mode")
	// ErrInvalidManifest: a manifest that cannot be parsed or stored.
	ErrInvalidManifest = errors.New("invalid manifest")
	// ErrInvalidName: a repository name or tag the registry does not
	// accept (storage's, which refuses such names too).
	ErrInvalidName = storage.ErrInvalidName
)

// tagRE is reference.TagRegexp anchored (the library's is not).
var tagRE = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)

// ValidTag tells whether tag is a valid OCI tag.
func ValidTag(tag string) bool { return tagRE.MatchString(tag) }

// Descriptor names stored content.
type Descriptor struct {
	MediaType string
	Digest    digest.Digest
	Size      int64
}

func (r *Registry) repository(ctx context.Context, name string) (distribution.Repository, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, fmt.Errorf("%w: repository %q: %w", ErrInvalidName, name, err)
	}
	repo, err := r.namespace.Repository(ctx, named)
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", name, err)
	}
	return repo, nil
}

func (r *Registry) checkWritable() error {
	if m := r.readOnly.Load(); m.ReadOnly {
		return RefusedReadOnly(m.Reason)
	}
	return nil
}

// StatBlob reports whether the registry holds a blob, in any repository.
func (r *Registry) StatBlob(ctx context.Context, d digest.Digest) (Descriptor, bool, error) {
	desc, err := r.namespace.BlobStatter().Stat(ctx, d)
	if errors.Is(err, distribution.ErrBlobUnknown) {
		return Descriptor{}, false, nil
	}
	if err != nil {
		return Descriptor{}, false, fmt.Errorf("stat blob %s: %w", d, err)
	}
	return Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, true, nil
}

// WriteBlob streams src into repository repo. When want.Digest is set, the
// content must hash to it and, when want.Size is positive, be that long;
// otherwise the digest is computed. Nothing is stored unless it verifies.
// It returns the stored blob's descriptor.
func (r *Registry) WriteBlob(ctx context.Context, repo string, want Descriptor, src io.Reader) (Descriptor, error) {
	if err := r.checkWritable(); err != nil {
		return Descriptor{}, err
	}
	return r.writeBlob(ctx, repo, want, src)
}

func (r *Registry) writeBlob(ctx context.Context, repo string, want Descriptor, src io.Reader) (Descriptor, error) {
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return Descriptor{}, err
	}
	bw, err := rp.Blobs(ctx).Create(ctx)
	if err != nil {
		return Descriptor{}, fmt.Errorf("write blob: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = bw.Cancel(context.WithoutCancel(ctx))
		}
	}()
	var h hash.Hash
	if want.Digest == "" {
		h = sha256.New()
		src = io.TeeReader(src, h)
	}
	n, err := io.Copy(bw, src)
	if err != nil {
		return Descriptor{}, fmt.Errorf("write blob: %w", err)
	}
	if want.Size > 0 && n != want.Size {
		return Descriptor{}, fmt.Errorf("write blob %s: %w: got %d bytes, want %d", want.Digest, ErrSizeMismatch, n, want.Size)
	}
	d := want.Digest
	if h != nil {
		d = digest.NewDigest(digest.SHA256, h)
	}
	desc, err := bw.Commit(ctx, v1.Descriptor{MediaType: want.MediaType, Digest: d, Size: n})
	if err != nil {
		var bad distribution.ErrBlobInvalidDigest
		if errors.As(err, &bad) {
			return Descriptor{}, fmt.Errorf("write blob %s: %w", d, ErrDigestMismatch)
		}
		if errors.Is(err, distribution.ErrBlobInvalidLength) {
			return Descriptor{}, fmt.Errorf("write blob %s: %w", d, ErrSizeMismatch)
		}
		return Descriptor{}, fmt.Errorf("write blob %s: %w", d, err)
	}
	committed = true
	if d != desc.Digest { // stored as sha256: keep it under the digest asked for
		if err := r.adoptBlob(ctx, repo, d, desc.Digest); err != nil {
			return Descriptor{}, fmt.Errorf("write blob %s: %w", d, err)
		}
	}
	return Descriptor{MediaType: want.MediaType, Digest: d, Size: desc.Size}, nil
}

// mountStat is a create option that links an existing blob into a
// repository without copying it.
type mountStat struct {
	from reference.Canonical
	desc v1.Descriptor
}

func (m mountStat) Apply(v any) error {
	opts, ok := v.(*distribution.CreateOptions)
	if !ok {
		return fmt.Errorf("unexpected options type %T", v)
	}
	opts.Mount.ShouldMount = true
	opts.Mount.From = m.from
	opts.Mount.Stat = &m.desc
	return nil
}

// LinkBlob makes a blob the registry already holds part of repository repo.
func (r *Registry) LinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	if err := r.checkWritable(); err != nil {
		return err
	}
	return r.linkBlob(ctx, repo, d)
}

func (r *Registry) linkBlob(ctx context.Context, repo string, d digest.Digest) error {
	stat, ok, err := r.StatBlob(ctx, d)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("link blob %s into %s: %w", d, repo, distribution.ErrBlobUnknown)
	}
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return err
	}
	from, err := reference.WithDigest(rp.Named(), d)
	if err != nil {
		return fmt.Errorf("link blob %s: %w", d, err)
	}
	bw, err := rp.Blobs(ctx).Create(ctx, mountStat{from: from, desc: v1.Descriptor{Digest: d, Size: stat.Size, MediaType: "application/octet-stream"}})
	var mounted distribution.ErrBlobMounted
	if errors.As(err, &mounted) {
		return nil
	}
	if err == nil {
		_ = bw.Cancel(ctx)
		return fmt.Errorf("link blob %s into %s: not linked", d, repo)
	}
	return fmt.Errorf("link blob %s into %s: %w", d, repo, err)
}

// PutManifest stores a manifest, byte for byte, by its digest. Everything
// it references must already be in the repository.
func (r *Registry) PutManifest(ctx context.Context, repo, mediaType string, payload []byte) (digest.Digest, error) {
	if err := r.checkWritable(); err != nil {
		return "", err
	}
	return r.putManifest(ctx, repo, mediaType, payload)
}

func (r *Registry) putManifest(ctx context.Context, repo, mediaType string, payload []byte) (digest.Digest, error) {
	r.cache.Invalidate(repo)
	defer r.cache.Invalidate(repo)
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return "", err
	}
	m, _, err := distribution.UnmarshalManifest(mediaType, payload)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalidManifest, mediaType, err)
	}
	ms, err := rp.Manifests(ctx)
	if err != nil {
		return "", fmt.Errorf("put manifest: %w", err)
	}
	d, err := ms.Put(ctx, m)
	if err != nil {
		var verr distribution.ErrManifestVerification
		if errors.As(err, &verr) {
			for _, e := range verr {
				var unknown distribution.ErrManifestBlobUnknown
				if errors.As(e, &unknown) {
					return "", fmt.Errorf("put manifest in %s: %w: %s", repo, ErrBlobUnknown, unknown.Digest)
				}
			}
			return "", fmt.Errorf("put manifest in %s: %w: %w", repo, ErrInvalidManifest, err)
		}
		return "", fmt.Errorf("put manifest in %s: %w", repo, err)
	}
	if want := digest.FromBytes(payload); d != want {
		return "", fmt.Errorf("put manifest in %s: stored as %s, want %s: %w", repo, d, want, ErrDigestMismatch)
	}
	return d, nil
}

// Tag points tag in repo at a stored manifest.
func (r *Registry) Tag(ctx context.Context, repo, tag string, d digest.Digest) error {
	if err := r.checkWritable(); err != nil {
		return err
	}
	return r.tag(ctx, repo, tag, d)
}

func (r *Registry) tag(ctx context.Context, repo, tag string, d digest.Digest) error {
	r.cache.Invalidate(repo)
	defer r.cache.Invalidate(repo)
	if !ValidTag(tag) {
		return fmt.Errorf("%w: tag %q", ErrInvalidName, tag)
	}
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return err
	}
	if err := rp.Tags(ctx).Tag(ctx, tag, v1.Descriptor{Digest: d}); err != nil {
		return fmt.Errorf("tag %s:%s: %w", repo, tag, err)
	}
	return nil
}

// TagDigest returns the digest a tag points at, and whether it exists.
func (r *Registry) TagDigest(ctx context.Context, repo, tag string) (digest.Digest, bool, error) {
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return "", false, err
	}
	desc, err := rp.Tags(ctx).Get(ctx, tag)
	var unknown distribution.ErrTagUnknown
	if errors.As(err, &unknown) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read tag %s:%s: %w", repo, tag, err)
	}
	return desc.Digest, true, nil
}

// Tags lists a repository's tags, sorted.
func (r *Registry) Tags(ctx context.Context, repo string) ([]string, error) {
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	tags, err := rp.Tags(ctx).All(ctx)
	var unknown distribution.ErrRepositoryUnknown
	if errors.As(err, &unknown) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	sort.Strings(tags)
	return tags, nil
}

// RemoveRepository deletes a repository's links and tags (not shared blobs).
func (r *Registry) RemoveRepository(ctx context.Context, repo string) error {
	r.cache.Invalidate(repo)
	defer r.cache.Invalidate(repo)
	named, err := reference.WithName(repo)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrInvalidName, repo)
	}
	remover, ok := r.namespace.(distribution.RepositoryRemover)
	if !ok {
		return errors.New("remove repository: not supported by storage")
	}
	if err := remover.Remove(ctx, named); err != nil {
		var notFound storagedriver.PathNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("remove repository %s: %w", repo, err)
	}
	return nil
}

// ReadBlob opens a blob linked into repo.
func (r *Registry) ReadBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, error) {
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	rc, err := rp.Blobs(ctx).Open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("read blob %s from %s: %w", d, repo, err)
	}
	return &blobReader{ReadSeekCloser: rc}, nil
}

// blobReader closes distribution's reader without its error: that
// reader's Close always returns "fileReader: closed", which net/http takes
// for a failed request body.
type blobReader struct {
	io.ReadSeekCloser
	closed bool
}

func (b *blobReader) Close() error {
	if !b.closed {
		b.closed = true
		_ = b.ReadSeekCloser.Close()
	}
	return nil
}

// GetManifest returns a stored manifest's media type and bytes.
func (r *Registry) GetManifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error) {
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return "", nil, err
	}
	ms, err := rp.Manifests(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("get manifest: %w", err)
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return "", nil, fmt.Errorf("get manifest %s from %s: %w", d, repo, err)
	}
	mt, payload, err := m.Payload()
	if err != nil {
		return "", nil, fmt.Errorf("get manifest %s: %w", d, err)
	}
	return mt, payload, nil
}

// Blobs lists every blob in storage with its size, sorted by digest: what a
// receipt reports the appliance holds.
func (r *Registry) Blobs(ctx context.Context) ([]Descriptor, error) {
	var out []Descriptor
	err := r.namespace.Blobs().Enumerate(ctx, func(d digest.Digest) error {
		desc, err := r.namespace.BlobStatter().Stat(ctx, d)
		if errors.Is(err, distribution.ErrBlobUnknown) {
			return nil // removed while listing
		}
		if err != nil {
			return err
		}
		out = append(out, Descriptor{Digest: d, Size: desc.Size, MediaType: desc.MediaType})
		return nil
	})
	var notFound storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// ManifestDigests lists every manifest stored in repo, tagged or not
// (index children, referrers, earlier targets of moved tags), sorted.
func (r *Registry) ManifestDigests(ctx context.Context, repo string) ([]digest.Digest, error) {
	rp, err := r.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	ms, err := rp.Manifests(ctx)
	if err != nil {
		return nil, fmt.Errorf("list manifests of %s: %w", repo, err)
	}
	en, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return nil, errors.New("list manifests: not supported by storage")
	}
	var out []digest.Digest
	err = en.Enumerate(ctx, func(d digest.Digest) error {
		out = append(out, d)
		return nil
	})
	var notFound storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		return nil, fmt.Errorf("list manifests of %s: %w", repo, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// SyncWriter is the registry's storage as a standby's follow of its
// primary writes it: the same verified direct writes as the Registry's
// own, but allowed while read-only, since a standby is read-only to
// everyone else exactly while it follows. Only the follower holds one.
type SyncWriter struct{ *Registry }

// SyncWriter returns the writer a standby's follow uses.
func (r *Registry) SyncWriter() SyncWriter { return SyncWriter{r} }

// WriteBlob is Registry.WriteBlob, allowed while read-only.
func (w SyncWriter) WriteBlob(ctx context.Context, repo string, want Descriptor, src io.Reader) (Descriptor, error) {
	return w.writeBlob(ctx, repo, want, src)
}

// LinkBlob is Registry.LinkBlob, allowed while read-only.
func (w SyncWriter) LinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	return w.linkBlob(ctx, repo, d)
}

// PutManifest is Registry.PutManifest, allowed while read-only.
func (w SyncWriter) PutManifest(ctx context.Context, repo, mediaType string, payload []byte) (digest.Digest, error) {
	return w.putManifest(ctx, repo, mediaType, payload)
}

// Tag is Registry.Tag, allowed while read-only.
func (w SyncWriter) Tag(ctx context.Context, repo, tag string, d digest.Digest) error {
	return w.tag(ctx, repo, tag, d)
}
