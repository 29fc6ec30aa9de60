package importer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/importer/tarstream"
	"github.com/appliance-dev/appliance/internal/registry"
)

// maxMetaSize bounds the metadata files read into memory (manifest.json,
// index.json, oci-layout, repositories).
const maxMetaSize = 64 << 20

var ociBlobName = regexp.MustCompile(`^blobs/sha256/([a-f0-9]{64})$`)

// session is one import in progress: what the stream has delivered so far.
type session struct {
	imp     *Importer
	store   Store // the importer's, or its sync store for a standby's follow
	ctx     context.Context
	req     Request
	rec     *history.Record
	staging string

	files map[string]fileRef         // regular entries by name
	links map[string]string          // link entries: name -> target name
	have  map[digest.Digest]int64    // blobs now linked into staging
	fresh map[digest.Digest]struct{} // of those, the ones this import wrote
	held  map[digest.Digest]bool     // blobs not carried: visible in the registry? (asked once)
	meta  map[string][]byte          // metadata files by name
	order []string                   // entry names as they came

	pending []*pendingWrite // blob writes still running (pipeline.go)

	bundle  *bundleState           // set when the archive is an appliance bundle
	partial map[digest.Digest]bool // indexes carried with only some platforms
}

type fileRef struct {
	digest digest.Digest
	size   int64
}

func (imp *Importer) newSession(ctx context.Context, req Request, rec *history.Record) (*session, error) {
	store := imp.store
	if req.Sync {
		if imp.syncStore == nil {
			return nil, &Error{Op: "request", Source: req.Source, Err: fmt.Errorf("%w: this importer has no sync store", ErrInvalidRequest)}
		}
		store = imp.syncStore
	}
	return &session{
		imp: imp, store: store, ctx: ctx, req: req, rec: rec,
		staging: StagingProject + "/" + rec.ID,
		files:   map[string]fileRef{}, links: map[string]string{},
		have: map[digest.Digest]int64{}, fresh: map[digest.Digest]struct{}{}, held: map[digest.Digest]bool{},
		meta: map[string][]byte{}, partial: map[digest.Digest]bool{},
	}, nil
}

// cleanup removes the staging repository (its links, not the blobs, which
// the destination repositories now link too, or garbage collection frees).
func (s *session) cleanup() {
	_ = s.wait(0) // no writer may still be adding to staging
	if s.bundle != nil && s.bundle.stage != nil {
		if err := s.bundle.stage.Discard(); err != nil {
			s.imp.log.Warn("file staging not removed", "id", s.rec.ID, "error", err)
		}
	}
	ctx := context.WithoutCancel(s.ctx)
	if err := s.store.RemoveRepository(ctx, s.staging); err != nil {
		s.imp.log.Warn("staging repository not removed", "repository", s.staging, "error", err)
	}
}

func (s *session) fail(op, entry string, err error) error {
	var ee *tarstream.EntryError
	if errors.As(err, &ee) {
		entry, err = ee.Name, ee.Err
	}
	return &Error{Op: op, Source: s.req.Source, Entry: entry, Err: err}
}

// consume reads every entry of the stream.
func (s *session) consume(er *tarstream.Reader) error {
	for {
		if err := s.ctx.Err(); err != nil {
			return s.fail("read", "", err)
		}
		e, err := er.Next()
		if errors.Is(err, io.EOF) {
			return s.wait(0)
		}
		if err != nil {
			return s.fail("read", "", err)
		}
		if err := s.entry(e); err != nil {
			return err
		}
	}
}

func isMetaName(name string) bool {
	switch name {
	case "manifest.json", "index.json", "oci-layout", "repositories":
		return true
	}
	return false
}

// legacyDockerJunk are per-layer files of docker-save's legacy format that
// carry nothing the registry needs.
func legacyDockerJunk(name string) bool {
	return strings.HasSuffix(name, "/json") || strings.HasSuffix(name, "/VERSION")
}

func (s *session) entry(e *tarstream.Entry) error {
	if len(s.order) == 0 && s.bundle == nil {
		if bundle.IsBundleStart(e.Name) && !e.IsLink {
			s.bundle = &bundleState{check: bundle.NewChecker(s.req.Trust)}
		} else if s.req.ToRepo == "" && !s.req.KeepNames {
			return s.fail("read", "", errNoDestination)
		}
	}
	if s.bundle != nil {
		return s.bundleEntry(e)
	}
	if e.IsLink {
		// Only docker-save's layer entries may legitimately be links (one
		// layer linked to another inside the archive).
		if !strings.HasSuffix(e.Name, "/layer.tar") && !strings.HasSuffix(e.Name, ".tar") {
			return s.fail("read", e.Name, fmt.Errorf("%w: a link where a regular file is expected (points to %s)", ErrUnsafeLink, e.Link))
		}
		if old, ok := s.links[e.Name]; ok && old != e.Link {
			return s.fail("read", e.Name, ErrDuplicate)
		}
		s.links[e.Name] = e.Link
		s.order = append(s.order, e.Name)
		return nil
	}
	s.order = append(s.order, e.Name)
	switch {
	case isMetaName(e.Name):
		if e.Size > maxMetaSize {
			return s.fail("read", e.Name, fmt.Errorf("%w: %d bytes of metadata (limit %d)", ErrAbsurdSize, e.Size, maxMetaSize))
		}
		data, err := readAllExact(e.R, e.Size)
		if err != nil {
			return s.fail("read", e.Name, err)
		}
		if old, ok := s.meta[e.Name]; ok && !bytes.Equal(old, data) {
			return s.fail("read", e.Name, ErrDuplicate)
		}
		s.meta[e.Name] = data
		return nil
	case legacyDockerJunk(e.Name):
		_, err := io.Copy(io.Discard, e.R)
		if err != nil {
			return s.fail("read", e.Name, truncated(err))
		}
		return nil
	}
	var want digest.Digest
	if m := imgpkgBlobName.FindStringSubmatch(e.Name); m != nil {
		want = digest.NewDigestFromEncoded(digest.SHA256, m[1])
	} else if m := ociBlobName.FindStringSubmatch(e.Name); m != nil {
		want = digest.NewDigestFromEncoded(digest.SHA256, m[1])
	}
	ref, err := s.storeBlob(e, want)
	if err != nil {
		return err
	}
	if old, ok := s.files[e.Name]; ok && old.digest != ref.digest {
		return s.fail("read", e.Name, ErrDuplicate)
	}
	s.files[e.Name] = ref
	return nil
}

// storeBlob verifies an entry's bytes and makes them available in the
// staging repository: written when new, linked when the registry already
// holds them (still hashed, so every byte of the input is checked).
func (s *session) storeBlob(e *tarstream.Entry, want digest.Digest) (fileRef, error) {
	st := s.store
	if want != "" {
		if _, seen := s.have[want]; !seen {
			if desc, ok, err := st.StatBlob(s.ctx, want); err != nil {
				return fileRef{}, s.fail("store", e.Name, err)
			} else if !ok {
				// Written on a goroutine of its own (pipeline.go); a
				// failure surfaces, naming this entry, before anything is
				// planned or committed.
				if err := s.writeAsync(e, want); err != nil {
					return fileRef{}, err
				}
				s.have[want], s.fresh[want] = e.Size, struct{}{}
				s.rec.BlobsNew++
				s.rec.BytesNew += e.Size
				return fileRef{digest: want, size: e.Size}, nil
			} else if desc.Size != e.Size {
				return fileRef{}, s.fail("verify", e.Name, fmt.Errorf("%w: %d bytes, but the registry holds %s with %d", ErrDigestMismatch, e.Size, want, desc.Size))
			}
		}
		// Present already: check the bytes all the same, then link.
		got, n, err := hashAll(e.R)
		if err != nil {
			return fileRef{}, s.fail("read", e.Name, err)
		}
		if got != want || n != e.Size {
			return fileRef{}, s.fail("verify", e.Name, fmt.Errorf("%w: named %s, hashes to %s", ErrDigestMismatch, want, got))
		}
		if _, seen := s.have[want]; !seen {
			if err := st.LinkBlob(s.ctx, s.staging, want); err != nil {
				return fileRef{}, s.fail("store", e.Name, err)
			}
			s.have[want] = n
			s.rec.BlobsExisting++
			s.rec.BytesExisting += n
		}
		return fileRef{digest: want, size: n}, nil
	}
	// Digest unknown (docker-save's legacy files): compute while writing.
	got, err := st.WriteBlob(s.ctx, s.staging, registry.Descriptor{Size: e.Size}, e.R)
	if err != nil {
		return fileRef{}, s.fail("store", e.Name, mapStoreErr(err))
	}
	if _, seen := s.have[got.Digest]; !seen {
		s.have[got.Digest], s.fresh[got.Digest] = got.Size, struct{}{}
		s.rec.BlobsNew++
		s.rec.BytesNew += got.Size
	}
	return fileRef{digest: got.Digest, size: got.Size}, nil
}

// writeRaw stores bytes the importer holds in memory (imgpkg configs,
// generated images) in staging, verified against d.
func (s *session) writeRaw(d digest.Digest, mediaType string, data []byte) error {
	if digest.FromBytes(data) != d {
		return fmt.Errorf("%w: %s", ErrDigestMismatch, d)
	}
	if _, ok := s.have[d]; ok {
		return nil
	}
	if _, ok, err := s.store.StatBlob(s.ctx, d); err != nil {
		return err
	} else if ok {
		if err := s.store.LinkBlob(s.ctx, s.staging, d); err != nil {
			return err
		}
		s.have[d] = int64(len(data))
		return nil
	}
	if _, err := s.store.WriteBlob(s.ctx, s.staging, registry.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
		return mapStoreErr(err)
	}
	s.have[d], s.fresh[d] = int64(len(data)), struct{}{}
	s.rec.BlobsNew++
	s.rec.BytesNew += int64(len(data))
	return nil
}

// readBlob reads a whole (small) blob back from staging.
func (s *session) readBlob(d digest.Digest, limit int64) ([]byte, error) {
	rc, err := s.store.ReadBlob(s.ctx, s.staging, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: blob %s exceeds %d bytes", ErrAbsurdSize, d, limit)
	}
	return data, nil
}

// resolve follows links (inside the archive only, bounded) to a regular file.
func (s *session) resolve(name string) (fileRef, error) {
	for range 16 {
		if f, ok := s.files[name]; ok {
			return f, nil
		}
		target, ok := s.links[name]
		if !ok {
			return fileRef{}, fmt.Errorf("%w: %s is not in the archive", ErrMissingBlob, name)
		}
		name = target
	}
	return fileRef{}, fmt.Errorf("%w: too many links from %s", ErrUnsafeLink, name)
}

// available tells whether a blob can be linked into a destination: it
// is in the archive, or a visible manifest of the registry references
// it. A blob merely lying in storage (left by a refused import, or by a
// tag that moved) does not count: garbage collection may take it, and an
// archive that lacks it is incomplete.
func (s *session) available(d digest.Digest) (bool, error) {
	if _, ok := s.have[d]; ok {
		return true, nil
	}
	if ok, asked := s.held[d]; asked {
		return ok, nil
	}
	ok, err := s.store.BlobVisible(s.ctx, d)
	if err != nil {
		return false, err
	}
	s.held[d] = ok
	return ok, nil
}

func readAllExact(r io.Reader, size int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, size))
	if err != nil {
		return nil, truncated(err)
	}
	if int64(len(data)) != size {
		return nil, ErrTruncated
	}
	return data, nil
}

func hashAll(r io.Reader) (digest.Digest, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", n, truncated(err)
	}
	return digest.NewDigest(digest.SHA256, h), n, nil
}

func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}

// mapStoreErr turns the registry's verification errors into the importer's.
func mapStoreErr(err error) error {
	switch {
	case errors.Is(err, registry.ErrDigestMismatch), errors.Is(err, registry.ErrSizeMismatch):
		return fmt.Errorf("%w (%w)", ErrDigestMismatch, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTruncated
	}
	return err
}
