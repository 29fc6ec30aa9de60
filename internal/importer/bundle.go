package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/filestore"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/importer/tarstream"
)

// FormatBundle is the appliance's own transfer bundle (package bundle).
const FormatBundle = "bundle"

// Files is the file store bundles put their files into.
type Files interface {
	Stage(id string) (*filestore.Stage, error)
	Commit(ctx context.Context, st *filestore.Stage, entries []filestore.Entry) ([]filestore.Entry, error)
	HasDigest(d string) bool
}

// Apt is the apt repository bundles put their packages into.
type Apt interface {
	// AddFiles publishes .deb files into repo/dist/component at once and
	// returns how to undo that publish.
	AddFiles(ctx context.Context, repo, dist, component string, paths []string, by string) (undo func(context.Context) error, err error)
	// HeldDigests returns the sha256 (hex) of every package some
	// repository holds.
	HeldDigests(ctx context.Context) (map[string]bool, error)
}

// bundleState is a bundle import in progress.
type bundleState struct {
	check *bundle.Checker
	ready bool
	side  map[string]string // digests of files and debs -> artifact kind
	stage *filestore.Stage
}

// bundleEntry handles one entry of a bundle archive.
func (s *session) bundleEntry(e *tarstream.Entry) error {
	b := s.bundle
	if e.IsLink {
		return s.fail("read", e.Name, fmt.Errorf("%w: a link in a bundle (points to %s)", ErrUnsafeLink, e.Link))
	}
	s.order = append(s.order, e.Name)
	if bundle.IsMeta(e.Name) {
		if e.Size > bundle.MetaLimit {
			return s.fail("read", e.Name, fmt.Errorf("%w: %d bytes of metadata", ErrAbsurdSize, e.Size))
		}
		data, err := readAllExact(e.R, e.Size)
		if err != nil {
			return s.fail("read", e.Name, err)
		}
		if err := b.check.Meta(e.Name, data); err != nil {
			return s.bundleFail(e.Name, err)
		}
		return s.bundleReady()
	}
	d, err := b.check.Blob(e.Name, e.Size)
	if err != nil {
		return s.bundleFail(e.Name, err)
	}
	if err := s.bundleReady(); err != nil {
		return err
	}
	if _, side := b.side[d]; side {
		if err := b.stage.Write(s.ctx, d, e.Size, e.R); err != nil {
			if errors.Is(err, filestore.ErrDigestMismatch) || errors.Is(err, filestore.ErrSizeMismatch) {
				return s.fail("verify", e.Name, fmt.Errorf("%w: %w", ErrDigestMismatch, truncated(err)))
			}
			return s.fail("store", e.Name, truncated(err))
		}
		s.rec.BlobsNew++
		s.rec.BytesNew += e.Size
		return nil
	}
	ref, err := s.storeBlob(e, digest.Digest(d))
	if err != nil {
		return err
	}
	s.files[e.Name] = ref
	return nil
}

// bundleFail maps the bundle package's errors to the importer's.
func (s *session) bundleFail(entry string, err error) error {
	switch {
	case errors.Is(err, bundle.ErrUnsigned):
		err = fmt.Errorf("%w: %w", ErrUnsigned, err)
	case errors.Is(err, bundle.ErrUntrusted), errors.Is(err, bundle.ErrBadSignature), errors.Is(err, bundle.ErrBadKey):
		err = fmt.Errorf("%w: %w", ErrSignature, err)
	case errors.Is(err, bundle.ErrBlobChanged):
		err = fmt.Errorf("%w: %w", ErrDigestMismatch, err)
	case errors.Is(err, bundle.ErrBlobMissing):
		err = fmt.Errorf("%w: %w", ErrMissingBlob, err)
	default:
		err = fmt.Errorf("%w: %w", ErrUnexpected, err)
	}
	return s.fail("verify", entry, err)
}

// bundleReady prepares, once the signature is decided, where files and
// debs will be staged.
func (s *session) bundleReady() error {
	b := s.bundle
	inv := b.check.Inventory()
	if b.ready || inv == nil {
		return nil
	}
	b.ready = true
	s.rec.Format = FormatBundle
	s.rec.Bundle = &history.BundleRecord{Name: inv.Name, Signed: !b.check.Unsigned, SignedBy: b.check.SignedBy, Fingerprint: b.check.Fingerprint,
		AllowedUnsigned: b.check.Unsigned, Since: inv.Since, Inventory: json.RawMessage(b.check.InventoryBytes())}
	b.side = map[string]string{}
	for _, a := range inv.Artifacts {
		if a.Kind == bundle.KindFile || a.Kind == bundle.KindApt {
			b.side[a.Digest] = a.Kind
		}
	}
	if len(b.side) == 0 {
		return nil
	}
	if s.imp.files == nil {
		return s.fail("verify", bundle.EntryInventory, fmt.Errorf("%w: the bundle carries files or apt packages, and this importer has no file store", ErrInvalidRequest))
	}
	st, err := s.imp.files.Stage(s.rec.ID)
	if err != nil {
		return s.fail("store", "", err)
	}
	b.stage = st
	return nil
}

// planBundle plans a bundle's images from its verified inventory, and
// checks that what a delta relies on is here.
func (s *session) planBundle() (*plan, error) {
	b := s.bundle
	if err := b.check.Finish(); err != nil {
		return nil, s.bundleFail("", err)
	}
	inv := b.check.Inventory()
	if err := s.bundlePresent(inv); err != nil {
		return nil, err
	}
	p := newPlan(FormatBundle)
	for _, a := range inv.Artifacts {
		var err error
		switch a.Kind {
		case bundle.KindImage:
			err = s.planBundleImage(p, a)
		case bundle.KindBundle:
			err = s.planBundleImgpkg(p, a)
		case bundle.KindFile, bundle.KindApt:
		default:
			err = s.fail("parse", bundle.EntryInventory, fmt.Errorf("%w: artifact kind %q", ErrUnknownFormat, a.Kind))
		}
		if err != nil {
			return nil, err
		}
	}
	if err := s.planReferrers(p); err != nil {
		return nil, err
	}
	return p, nil
}

// bundlePresent checks, for a delta, that every blob it leaves out is
// held here, and makes registry blobs readable from staging.
func (s *session) bundlePresent(inv *bundle.Inventory) error {
	var missing []string
	var debs map[string]bool // read once, when first needed
	for _, bl := range inv.Present {
		d, err := digest.Parse(bl.Digest)
		if err != nil {
			return s.fail("parse", bundle.EntryInventory, fmt.Errorf("%w: present digest %q", ErrInvalidJSON, bl.Digest))
		}
		visible, err := s.store.BlobVisible(s.ctx, d)
		if err != nil {
			return s.fail("verify", d.String(), err)
		}
		if desc, ok, err := s.store.StatBlob(s.ctx, d); err != nil {
			return s.fail("verify", d.String(), err)
		} else if visible && ok && desc.Size == bl.Size {
			if _, linked := s.have[d]; !linked {
				if err := s.store.LinkBlob(s.ctx, s.staging, d); err != nil {
					return s.fail("store", d.String(), err)
				}
				s.have[d] = bl.Size
			}
			continue
		}
		if s.imp.files != nil && s.imp.files.HasDigest(bl.Digest) {
			continue
		}
		if s.imp.apt != nil {
			if debs == nil {
				var err error
				if debs, err = s.imp.apt.HeldDigests(s.ctx); err != nil {
					return s.fail("verify", d.String(), err)
				}
			}
			if debs[d.Encoded()] {
				continue
			}
		}
		missing = append(missing, bl.Digest)
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return s.fail("verify", bundle.EntryInventory, fmt.Errorf("%w: this bundle is a delta (against receipt %s) and relies on %d blobs this appliance does not hold: %s; import the bundles it builds on first",
			ErrMissingBlob, inv.Since, len(missing), strings.Join(firstN(missing, 5), ", ")))
	}
	return nil
}

func firstN(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
}

func splitDest(dest string) (repo, tag string) {
	repo, tag, _ = strings.Cut(dest, ":")
	return repo, tag
}

func (s *session) checkDestRepo(repo string) error {
	if !validRepo(repo) || strings.HasPrefix(repo, StagingProject+"/") {
		return s.fail("parse", bundle.EntryInventory, fmt.Errorf("%w: destination %q is not a valid repository", ErrInvalidRequest, repo))
	}
	return nil
}

func (s *session) planBundleImage(p *plan, a bundle.Artifact) error {
	repo, tag := splitDest(a.Destination)
	if err := s.checkDestRepo(repo); err != nil {
		return err
	}
	if len(a.Platforms) > 0 {
		s.partial[digest.Digest(a.Digest)] = true
	}
	md, err := s.planOCIManifest(p, repo, descriptor{MediaType: a.MediaType, Digest: a.Digest, Size: a.Size}, 0)
	if err != nil {
		return err
	}
	if tag != "" {
		if err := p.addTag(repo, tag, md); err != nil {
			return s.fail("tag", a.Destination, err)
		}
	}
	for _, r := range a.Related {
		rd, err := s.planOCIManifest(p, repo, descriptor{MediaType: r.MediaType, Digest: r.Digest, Size: r.Size}, 0)
		if err != nil {
			return err
		}
		if r.Tag != "" {
			if err := p.addTag(repo, r.Tag, rd); err != nil {
				return s.fail("tag", repo+":"+r.Tag, err)
			}
		}
	}
	return nil
}

// planBundleImgpkg plans an imgpkg bundle as `imgpkg copy --to-repo`
// leaves it: everything in one repository, each manifest tagged
// sha256-<hex>.imgpkg, the bundle's tag, the signatures' tags and a
// locations image for every bundle.
func (s *session) planBundleImgpkg(p *plan, a bundle.Artifact) error {
	repo, tag := splitDest(a.Destination)
	if err := s.checkDestRepo(repo); err != nil {
		return err
	}
	type member struct {
		desc     descriptor
		tag      string
		isBundle bool
		root     bool
	}
	members := []member{{desc: descriptor{MediaType: a.MediaType, Digest: a.Digest, Size: a.Size}, tag: tag, isBundle: true, root: true}}
	for _, r := range a.Related {
		members = append(members, member{desc: descriptor{MediaType: r.MediaType, Digest: r.Digest, Size: r.Size}, tag: r.Tag, isBundle: r.Kind == bundle.RelatedBundle})
	}
	var bundles []bundleRef
	bundleSet := map[digest.Digest]bool{}
	for _, m := range members {
		d, err := s.planOCIManifest(p, repo, m.desc, 0)
		if err != nil {
			return err
		}
		if err := s.imgpkgTags(p, repo, d, m.tag); err != nil {
			return err
		}
		if !m.isBundle {
			continue
		}
		raw, err := s.readBlob(d, maxManifestSize)
		if err != nil {
			return s.fail("read", d.String(), err)
		}
		doc, _, err := parseManifest(m.desc.MediaType, raw)
		if err != nil {
			return s.fail("parse", d.String(), err)
		}
		if len(doc.Layers) != 1 {
			return s.fail("parse", d.String(), fmt.Errorf("%w: an imgpkg bundle has exactly one layer, this one %d", ErrInvalidJSON, len(doc.Layers)))
		}
		bundles = append(bundles, bundleRef{digest: d, layer: digest.Digest(doc.Layers[0].Digest), root: m.root, tag: m.tag})
		bundleSet[d] = true
	}
	for _, b := range bundles {
		if err := s.planLocations(p, repo, b, bundleSet); err != nil {
			return err
		}
	}
	return nil
}

// commitBundle makes a bundle visible: after every check, apt packages
// first (each publish undone if a later step fails), then the files (one
// atomic switch of the file store's index), then the registry's manifests
// and tags.
func (s *session) commitBundle(p *plan) (err error) {
	if err := s.check(p); err != nil {
		return err
	}
	inv := s.bundle.check.Inventory()
	type aptDest struct{ repo, dist, component string }
	debs := map[aptDest][]string{}
	var dests []aptDest
	var entries []filestore.Entry
	for _, a := range inv.Artifacts {
		switch a.Kind {
		case bundle.KindApt:
			parts := strings.Split(a.Destination, "/")
			if len(parts) != 3 {
				return s.fail("parse", bundle.EntryInventory, fmt.Errorf("%w: apt destination %q is not repo/distribution/component", ErrInvalidJSON, a.Destination))
			}
			path, ok := s.bundle.stage.Path(a.Digest)
			if !ok {
				return s.fail("verify", a.Digest, fmt.Errorf("%w: package %s", ErrMissingBlob, a.Source))
			}
			k := aptDest{parts[0], parts[1], parts[2]}
			if _, seen := debs[k]; !seen {
				dests = append(dests, k)
			}
			debs[k] = append(debs[k], path)
			s.rec.Bundle.Packages = append(s.rec.Bundle.Packages, a.Destination+" "+a.Metadata["package"]+"_"+a.Metadata["version"]+"_"+a.Metadata["architecture"])
		case bundle.KindFile:
			entries = append(entries, filestore.Entry{Name: a.Destination, Digest: a.Digest, Size: a.Size, Kind: a.FileKind, Version: a.Version,
				Refresh: a.Refresh, Source: a.Source, Metadata: a.Metadata, ImportID: s.rec.ID})
		}
	}
	if len(debs) > 0 && s.imp.apt == nil {
		return s.fail("store", "", fmt.Errorf("%w: the bundle carries apt packages, and this importer has no apt repository", ErrInvalidRequest))
	}
	var undo []func(context.Context) error
	defer func() {
		if err == nil {
			return
		}
		ctx := context.WithoutCancel(s.ctx)
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](ctx); uerr != nil {
				s.imp.log.Error("apt publish not undone after a failed bundle import", "id", s.rec.ID, "error", uerr)
			}
		}
	}()
	for _, k := range dests {
		u, err := s.imp.apt.AddFiles(s.ctx, k.repo, k.dist, k.component, debs[k], s.req.User)
		if err != nil {
			return s.fail("store", k.repo+"/"+k.dist+"/"+k.component, err)
		}
		undo = append(undo, u)
	}
	if len(entries) > 0 {
		stored, err := s.imp.files.Commit(s.ctx, s.bundle.stage, entries)
		if err != nil {
			return s.fail("store", "files", err)
		}
		s.bundle.stage = nil
		for _, e := range stored {
			s.rec.Bundle.Files = append(s.rec.Bundle.Files, e.Name+" "+e.Digest)
		}
	}
	return s.apply(p)
}
