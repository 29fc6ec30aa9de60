package importer

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/importer/tarstream"
	"github.com/opencontainers/go-digest"
)

// Format names, as recorded in the history.
const (
	FormatImgpkg     = "imgpkg"
	FormatOCILayout  = "oci-layout"
	FormatDockerSave = "docker-save"
)

// complete decides the format, plans what becomes visible, and commits it.
func (s *session) complete() error {
	if s.bundle != nil {
		p, err := s.planBundle()
		if err != nil {
			return err
		}
		return s.commitBundle(p)
	}
	p, err := s.plan()
	if err != nil {
		return err
	}
	s.rec.Format = p.format
	return s.commit(p)
}

func (s *session) plan() (*plan, error) {
	_, hasManifest := s.meta["manifest.json"]
	_, hasIndex := s.meta["index.json"]
	_, hasLayout := s.meta["oci-layout"]
	switch {
	case hasManifest && isImgpkgManifest(s.meta["manifest.json"]):
		return s.planImgpkg()
	case hasIndex && hasLayout:
		// OCI layouts, including the one Docker 25+ writes beside its
		// legacy docker-save files: the OCI side keeps registry digests.
		return s.planOCI()
	case hasManifest:
		return s.planDockerSave()
	case hasIndex || hasLayout:
		missing := "index.json"
		if hasIndex {
			missing = "oci-layout"
		}
		return nil, s.fail("parse", missing, fmt.Errorf("%w: an OCI layout needs both oci-layout and index.json; %s is missing", ErrUnknownFormat, missing))
	}
	return nil, s.fail("parse", "", fmt.Errorf("%w: no manifest.json, index.json or oci-layout entry", ErrUnknownFormat))
}

// onlyEntries refuses any entry name outside the allowed ones.
func (s *session) onlyEntries(format string, allowed func(string) bool) error {
	for _, n := range s.order {
		if !allowed(n) {
			return s.fail("parse", n, fmt.Errorf("%w: not part of an %s archive", ErrUnexpected, format))
		}
	}
	return nil
}

// --- imgpkg ---

func (s *session) planImgpkg() (*plan, error) {
	if s.req.ToRepo == "" {
		return nil, s.fail("parse", "", fmt.Errorf("%w: an imgpkg tar goes into one repository: give --to-repo", ErrInvalidRequest))
	}
	if err := s.onlyEntries("imgpkg", func(n string) bool {
		return n == "manifest.json" || imgpkgBlobName.MatchString(n)
	}); err != nil {
		return nil, err
	}
	entries, err := parseImgpkgManifest(s.meta["manifest.json"])
	if err != nil {
		return nil, s.fail("parse", "manifest.json", err)
	}
	p := newPlan(FormatImgpkg)
	repo := s.req.ToRepo
	var bundles []bundleRef
	addImage := func(img imgpkgImage, top bool) (digest.Digest, error) {
		md, err := checkRaw("manifest", img.Manifest.Raw, img.Manifest.Digest)
		if err != nil {
			return "", s.fail("verify", "manifest.json", err)
		}
		doc, mt, err := parseManifest(img.Manifest.MediaType, []byte(img.Manifest.Raw))
		if err != nil {
			return "", s.fail("parse", md.String(), err)
		}
		if isIndex(mt) {
			return "", s.fail("parse", md.String(), fmt.Errorf("%w: an Image entry holds an index", ErrInvalidJSON))
		}
		cd, err := checkRaw("config", img.Config.Raw, img.Config.Digest)
		if err != nil {
			return "", s.fail("verify", md.String(), err)
		}
		if cd.String() != doc.Config.Digest {
			return "", s.fail("verify", md.String(), fmt.Errorf("%w: config %s is not the one the manifest names (%s)", ErrDigestMismatch, cd, doc.Config.Digest))
		}
		if err := s.writeRaw(cd, doc.Config.MediaType, []byte(img.Config.Raw)); err != nil {
			return "", s.fail("store", cd.String(), err)
		}
		p.addManifest(imageManifest(repo, mt, []byte(img.Manifest.Raw), md, doc))
		if top {
			if err := s.imgpkgTags(p, repo, md, img.Tag); err != nil {
				return "", err
			}
		}
		if isBundleConfig(img.Config.Raw) {
			if len(doc.Layers) != 1 {
				return "", s.fail("parse", md.String(), fmt.Errorf("%w: an imgpkg bundle has exactly one layer, this one %d", ErrInvalidJSON, len(doc.Layers)))
			}
			_, isRoot := img.Labels[rootBundleLabel]
			bundles = append(bundles, bundleRef{digest: md, layer: digest.Digest(doc.Layers[0].Digest), root: isRoot, tag: img.Tag})
		}
		return md, nil
	}
	// Index children are pushed by digest, untagged, before their index;
	// only top-level entries are tagged, as imgpkg does.
	var addIndex func(ix imgpkgIndex, top bool) error
	addIndex = func(ix imgpkgIndex, top bool) error {
		for _, c := range ix.Images {
			if _, err := addImage(c, false); err != nil {
				return err
			}
		}
		for _, c := range ix.Indexes {
			if err := addIndex(c, false); err != nil {
				return err
			}
		}
		id, err := checkRaw("index", ix.Raw, ix.Digest)
		if err != nil {
			return s.fail("verify", "manifest.json", err)
		}
		doc, mt, err := parseManifest(ix.MediaType, []byte(ix.Raw))
		if err != nil {
			return s.fail("parse", id.String(), err)
		}
		if !isIndex(mt) {
			return s.fail("parse", id.String(), fmt.Errorf("%w: an ImageIndex entry holds %s", ErrInvalidJSON, mt))
		}
		p.addManifest(imageManifest(repo, mt, []byte(ix.Raw), id, doc))
		if !top {
			return nil
		}
		return s.imgpkgTags(p, repo, id, ix.Tag)
	}
	for _, e := range entries {
		if e.Image != nil {
			if _, err := addImage(*e.Image, true); err != nil {
				return nil, err
			}
		} else if err := addIndex(*e.ImageIndex, true); err != nil {
			return nil, err
		}
	}
	bundleSet := map[digest.Digest]bool{}
	for _, b := range bundles {
		bundleSet[b.digest] = true
	}
	for _, b := range bundles {
		if err := s.planLocations(p, repo, b, bundleSet); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// imgpkgTags applies what `imgpkg copy --to-repo` tags: every top-level
// manifest as sha256-<hex>.imgpkg, and the entry's own tag (a bundle's, or a cosign
// signature's sha256-<hex>.sig) when it has one.
func (s *session) imgpkgTags(p *plan, repo string, d digest.Digest, tag string) error {
	if err := p.addTag(repo, d.Algorithm().String()+"-"+d.Encoded()+".imgpkg", d); err != nil {
		return s.fail("tag", d.String(), err)
	}
	if tag != "" {
		if err := p.addTag(repo, tag, d); err != nil {
			return s.fail("tag", tag, err)
		}
	}
	return nil
}

// --- OCI image layout ---

const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.Name"
)

func (s *session) planOCI() (*plan, error) {
	if err := s.onlyEntries("OCI layout", func(n string) bool {
		if n == "oci-layout" || n == "index.json" || ociBlobName.MatchString(n) {
			return true
		}
		// Docker 25+ writes its legacy files beside the layout.
		return n == "manifest.json" || n == "repositories" || legacyDockerJunk(n) || strings.HasSuffix(n, "/layer.tar")
	}); err != nil {
		return nil, err
	}
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(s.meta["oci-layout"], &layout); err != nil {
		return nil, s.fail("parse", "oci-layout", fmt.Errorf("%w: %w", ErrInvalidJSON, err))
	}
	if layout.Version != "1.0.0" {
		return nil, s.fail("parse", "oci-layout", fmt.Errorf("%w: imageLayoutVersion %q (want 1.0.0)", ErrUnknownFormat, layout.Version))
	}
	var index manifestDoc
	if err := json.Unmarshal(s.meta["index.json"], &index); err != nil {
		return nil, s.fail("parse", "index.json", fmt.Errorf("%w: %w", ErrInvalidJSON, err))
	}
	if len(index.Manifests) == 0 {
		return nil, s.fail("parse", "index.json", fmt.Errorf("%w: the layout lists no images", ErrInvalidJSON))
	}
	p := newPlan(FormatOCILayout)
	for _, d := range index.Manifests {
		name := d.Annotations[annotationRefName]
		if name == "" || (!strings.ContainsAny(name, "/:@") && d.Annotations[annotationContainerdName] != "" && s.req.KeepNames) {
			if cn := d.Annotations[annotationContainerdName]; cn != "" {
				name = cn
			}
		}
		repo, tag := s.req.ToRepo, ""
		if name != "" {
			var err error
			repo, tag, err = s.destination(name)
			if err != nil {
				return nil, s.fail("parse", "index.json", err)
			}
		} else if repo == "" {
			return nil, s.fail("parse", "index.json", fmt.Errorf("%w: image %s has no name; give --to-repo", ErrInvalidRequest, d.Digest))
		}
		md, err := s.planOCIManifest(p, repo, d, 0)
		if err != nil {
			return nil, err
		}
		if tag != "" {
			if err := p.addTag(repo, tag, md); err != nil {
				return nil, s.fail("tag", name, err)
			}
		}
	}
	if err := s.planReferrers(p); err != nil {
		return nil, err
	}
	return p, nil
}

// maxManifestSize bounds a manifest read back for parsing (distribution
// refuses larger ones too).
const maxManifestSize = 4 << 20

func (s *session) planOCIManifest(p *plan, repo string, d descriptor, depth int) (digest.Digest, error) {
	if depth > 8 {
		return "", s.fail("parse", d.Digest, fmt.Errorf("%w: indexes nested too deep", ErrInvalidJSON))
	}
	md, err := digest.Parse(d.Digest)
	if err != nil {
		return "", s.fail("parse", "index.json", fmt.Errorf("%w: digest %q", ErrInvalidJSON, d.Digest))
	}
	if _, ok := s.have[md]; !ok {
		return "", s.fail("verify", md.String(), fmt.Errorf("%w: manifest blobs/sha256/%s", ErrMissingBlob, md.Encoded()))
	}
	raw, err := s.readBlob(md, maxManifestSize)
	if err != nil {
		return "", s.fail("read", md.String(), err)
	}
	if d.Size != int64(len(raw)) {
		return "", s.fail("verify", md.String(), fmt.Errorf("%w: descriptor says %d bytes, the blob has %d", ErrDigestMismatch, d.Size, len(raw)))
	}
	doc, mt, err := parseManifest(d.MediaType, raw)
	if err != nil {
		return "", s.fail("parse", md.String(), err)
	}
	if isIndex(mt) {
		for _, c := range doc.Manifests {
			if s.partial[md] {
				if cd, err := digest.Parse(c.Digest); err == nil {
					if _, ok := s.have[cd]; !ok {
						continue // a platform the bundle did not carry
					}
				}
			}
			if _, err := s.planOCIManifest(p, repo, c, depth+1); err != nil {
				return "", err
			}
		}
	}
	p.addManifest(imageManifest(repo, mt, raw, md, doc))
	return md, nil
}

// planReferrers makes the referrers the import carries findable the way
// clients look for them on a registry without the referrers API: the
// fallback tag sha256-<subject hex>, an index listing them.
func (s *session) planReferrers(p *plan) error {
	type key struct{ repo, subject string }
	refs := map[key][]descriptor{}
	var order []key
	for _, m := range p.manifests {
		if m.subject == nil {
			continue
		}
		k := key{m.repo, m.subject.Digest}
		if _, ok := refs[k]; !ok {
			order = append(order, k)
		}
		refs[k] = append(refs[k], m.desc)
	}
	for _, k := range order {
		subject, err := digest.Parse(k.subject)
		if err != nil {
			return s.fail("parse", k.subject, fmt.Errorf("%w: subject digest", ErrInvalidJSON))
		}
		tag := subject.Algorithm().String() + "-" + subject.Encoded()
		list := refs[k]
		// Merge with the fallback index already in the registry.
		if old, ok, err := s.store.TagDigest(s.ctx, k.repo, tag); err != nil {
			return s.fail("read", tag, err)
		} else if ok {
			_, payload, err := s.store.GetManifest(s.ctx, k.repo, old)
			if err != nil {
				return s.fail("read", tag, err)
			}
			var prev manifestDoc
			if json.Unmarshal(payload, &prev) == nil {
				for _, d := range prev.Manifests {
					if !slices.ContainsFunc(list, func(x descriptor) bool { return x.Digest == d.Digest }) {
						list = append(list, d)
					}
				}
			}
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Digest < list[j].Digest })
		idx := struct {
			SchemaVersion int          `json:"schemaVersion"`
			MediaType     string       `json:"mediaType"`
			Manifests     []descriptor `json:"manifests"`
		}{2, mtOCIIndex, list}
		raw, err := json.Marshal(idx)
		if err != nil {
			return s.fail("parse", tag, err)
		}
		d := digest.FromBytes(raw)
		p.addManifest(planManifest{repo: k.repo, mediaType: mtOCIIndex, payload: raw, digest: d})
		if err := p.addTag(k.repo, tag, d); err != nil {
			return s.fail("tag", tag, err)
		}
	}
	return nil
}

// --- docker save ---

type dockerSaveEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

func (s *session) planDockerSave() (*plan, error) {
	var entries []dockerSaveEntry
	if err := json.Unmarshal(s.meta["manifest.json"], &entries); err != nil {
		return nil, s.fail("parse", "manifest.json", fmt.Errorf("%w: %w", ErrInvalidJSON, err))
	}
	if len(entries) == 0 {
		return nil, s.fail("parse", "manifest.json", fmt.Errorf("%w: the archive lists no images", ErrInvalidJSON))
	}
	p := newPlan(FormatDockerSave)
	for i, e := range entries {
		if e.Config == "" {
			return nil, s.fail("parse", "manifest.json", fmt.Errorf("%w: image %d has no Config", ErrInvalidJSON, i))
		}
		if err := s.planDockerImage(p, e); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (s *session) planDockerImage(p *plan, e dockerSaveEntry) error {
	cname, err := tarstream.CleanName(e.Config)
	if err != nil {
		return s.fail("parse", "manifest.json", err)
	}
	cfg, err := s.resolve(cname)
	if err != nil {
		return s.fail("parse", cname, err)
	}
	cfgRaw, err := s.readBlob(cfg.digest, maxManifestSize)
	if err != nil {
		return s.fail("read", cname, err)
	}
	var config struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cfgRaw, &config); err != nil {
		return s.fail("parse", cname, fmt.Errorf("%w: %w", ErrInvalidJSON, err))
	}
	if len(config.RootFS.DiffIDs) != len(e.Layers) {
		return s.fail("verify", cname, fmt.Errorf("%w: the config lists %d layers, manifest.json %d", ErrInvalidJSON, len(config.RootFS.DiffIDs), len(e.Layers)))
	}
	type dl struct {
		MediaType string `json:"mediaType"`
		Size      int64  `json:"size"`
		Digest    string `json:"digest"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        dl     `json:"config"`
		Layers        []dl   `json:"layers"`
	}{SchemaVersion: 2, MediaType: mtDockerManifest, Config: dl{mtDockerConfig, cfg.size, cfg.digest.String()}}
	for i, l := range e.Layers {
		lname, err := tarstream.CleanName(l)
		if err != nil {
			return s.fail("parse", "manifest.json", err)
		}
		f, err := s.resolve(lname)
		if err != nil {
			return s.fail("parse", lname, err)
		}
		mt := mtDockerLayer
		if head, err := s.readHead(f.digest, 2); err == nil && len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
			mt = mtDockerLayerGz
		} else if f.digest.String() != config.RootFS.DiffIDs[i] {
			// An uncompressed layer's digest is its diff id: the config
			// proves the layer.
			return s.fail("verify", lname, fmt.Errorf("%w: layer hashes to %s, the config's diff id is %s", ErrDigestMismatch, f.digest, config.RootFS.DiffIDs[i]))
		}
		m.Layers = append(m.Layers, dl{mt, f.size, f.digest.String()})
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return s.fail("parse", cname, err)
	}
	md := digest.FromBytes(raw)
	doc, mt, err := parseManifest(mtDockerManifest, raw)
	if err != nil {
		return s.fail("parse", cname, err)
	}
	names := e.RepoTags
	if len(names) == 0 {
		if s.req.ToRepo == "" {
			return s.fail("parse", cname, fmt.Errorf("%w: an untagged image needs --to-repo", ErrInvalidRequest))
		}
		p.addManifest(imageManifest(s.req.ToRepo, mt, raw, md, doc))
	}
	for _, n := range names {
		repo, tag, err := s.destination(n)
		if err != nil {
			return s.fail("parse", "manifest.json", err)
		}
		p.addManifest(imageManifest(repo, mt, raw, md, doc))
		if tag != "" {
			if err := p.addTag(repo, tag, md); err != nil {
				return s.fail("tag", n, err)
			}
		}
		s.rec.Warnings = append(s.rec.Warnings, fmt.Sprintf(
			"%s: docker save rebuilt this image's manifest (now %s); the digest it had in its registry, and any signature made for that digest, did not survive the save", n, md))
	}
	return nil
}

func (s *session) readHead(d digest.Digest, n int) ([]byte, error) {
	rc, err := s.store.ReadBlob(s.ctx, s.staging, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, n)
	k, err := rc.Read(buf)
	if k == 0 && err != nil {
		return nil, err
	}
	return buf[:k], nil
}

// --- commit ---

// commit makes the plan visible: first check that everything it needs is
// there, then, holding the destination repositories, link blobs, store
// manifests children first, and apply the tags last.
func (s *session) commit(p *plan) error {
	if err := s.check(p); err != nil {
		return err
	}
	return s.apply(p)
}

// check verifies that everything the plan needs is there.
func (s *session) check(p *plan) error {
	planned := map[digest.Digest]bool{}
	for _, m := range p.manifests {
		planned[m.digest] = true
	}
	for _, m := range p.manifests {
		for _, b := range m.blobs {
			ok, err := s.available(b)
			if err != nil {
				return s.fail("verify", m.digest.String(), err)
			}
			if !ok && !m.optional[b] {
				return s.fail("verify", m.digest.String(), fmt.Errorf("%w: %s", ErrMissingBlob, b))
			}
		}
		for _, c := range m.children {
			if planned[c] || s.partial[m.digest] {
				continue
			}
			if _, _, err := s.store.GetManifest(s.ctx, m.repo, c); err != nil {
				return s.fail("verify", m.digest.String(), fmt.Errorf("%w: index entry %s is neither in the archive nor in %s", ErrMissingBlob, c, m.repo))
			}
		}
	}
	return nil
}

// apply makes the checked plan visible, holding the destination
// repositories: link blobs, store manifests children first, tags last.
func (s *session) apply(p *plan) error {
	repos := p.repos()
	unlock := s.imp.lockRepos(repos)
	defer unlock()
	linked := map[string]bool{}
	for _, m := range p.manifests {
		for _, b := range m.blobs {
			key := m.repo + "@" + b.String()
			if linked[key] {
				continue
			}
			if ok, _ := s.available(b); !ok && m.optional[b] {
				continue
			}
			if err := s.store.LinkBlob(s.ctx, m.repo, b); err != nil {
				return s.fail("store", b.String(), err)
			}
			linked[key] = true
		}
		if _, err := s.store.PutManifest(s.ctx, m.repo, m.mediaType, m.payload); err != nil {
			return s.fail("store", m.digest.String(), err)
		}
		s.rec.Manifests = append(s.rec.Manifests, history.ManifestRecord{Repository: m.repo, Digest: m.digest.String(), MediaType: m.mediaType})
	}
	for _, t := range p.tags {
		prev, had, err := s.store.TagDigest(s.ctx, t.repo, t.tag)
		if err != nil {
			return s.fail("tag", t.repo+":"+t.tag, err)
		}
		if err := s.store.Tag(s.ctx, t.repo, t.tag, t.digest); err != nil {
			return s.fail("tag", t.repo+":"+t.tag, err)
		}
		tr := history.TagRecord{Repository: t.repo, Tag: t.tag, Digest: t.digest.String()}
		if had && prev != t.digest {
			tr.Previous = prev.String()
		}
		s.rec.Tags = append(s.rec.Tags, tr)
	}
	s.rec.Repositories = repos
	return nil
}
