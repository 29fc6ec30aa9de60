// Package mirror fetches packages, with their dependencies, from a signed
// upstream apt archive (aptly's mirror code), verifying the Release
// signature against a given keyring and every file against its sums, for
// bundles on the connected side. Its errors are aptrepo's.
package mirror

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/aptly-dev/aptly/aptly"
	"github.com/aptly-dev/aptly/deb"
	aptlyhttp "github.com/aptly-dev/aptly/http"
	"github.com/aptly-dev/aptly/pgp"
	"github.com/aptly-dev/aptly/query"
	"github.com/aptly-dev/aptly/utils"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/fsutil"
)

// archRE is what an architecture name looks like (as in aptrepo).
var archRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Spec says which packages to fetch from an upstream archive.
type Spec struct {
	URL           string   // archive root, e.g. http://archive.ubuntu.com/ubuntu
	Distributions []string // e.g. noble
	Components    []string // default [main]
	Architectures []string // default [amd64]
	Packages      []string // names (aptly package queries are fine too); dependencies are added
	Keyring       string   // file with the upstream's OpenPGP public key(s), binary or ASCII-armored
}

// Package is one .deb fetched and verified.
type Package struct {
	Name, Version, Architecture string
	Distribution, Component     string
	Filename                    string // its pool path upstream (Filename: field)
	SHA256                      string // hex
	Size                        int64
	Path                        string // the local file, inside dir
}

// Limits of Mirror. aptly's downloader has no limit of its own on what it
// writes; Mirror counts the bytes it is told about (see mirrorProgress).
const (
	mirrorWorkers    = 4 // .deb downloads at a time
	maxMirrorDists   = 32
	maxMirrorComps   = 64
	maxMirrorArchs   = 32
	maxMirrorQueries = 10000
	maxMirrorQuery   = 1024     // bytes of one package query
	maxKeyringSize   = 16 << 20 // the keyring file
	maxSignedSize    = 64 << 20 // InRelease, Release, Release.gpg
	maxIndexBytes    = 4 << 30  // all index files of one distribution
	maxMirrorDebSize = 16 << 30 // one .deb
	maxMissingLogged = 50       // unsatisfied dependencies named in the log
	// aptly's downloader is given one try: it sleeps a second after every
	// failed one, the last included, and its own retries would count the
	// bytes of every try against one limit. A .deb that fails for want of
	// a connection (or with a 5xx) is tried again by Mirror, up to
	// debAttempts times; aptly's sleep spaces the tries.
	debAttempts = 3
	// mirrorTempPrefix names the staging folder of a run inside dir;
	// staging folders older than staleTempAge are what a killed run left.
	mirrorTempPrefix = ".mirror-"
	staleTempAge     = 24 * time.Hour
)

var (
	// A distribution or component: "noble", "bookworm-security",
	// "stable/updates"; flat repositories ("./", "dir/") are not supported.
	mirrorNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}(?:/[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}){0,3}$`)
	sha256Pattern     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	localNamePattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]*_[A-Za-z0-9.+~%-]+_[a-z0-9-]+\.deb$`)
)

// Fetch fetches spec's packages and their dependencies into dir (a cache:
// files already there with the right size and sha256 are not fetched again,
// so an interrupted run resumes) and returns them sorted by name, version, arch.
//
// It uses aptly's mirror code: for each distribution a deb.RemoteRepo
// fetches the Release and verifies its signature with exactly the keyring
// spec.Keyring (InRelease first, then Release with Release.gpg; never the
// user's gpg keyrings), then downloads the Packages index of every
// component and architecture, checked against the sizes and SHA256 sums
// of the signed Release. The packages of all distributions make one list,
// in which each of spec.Packages must match at least one package;
// aptly's PackageList.Filter then adds their dependencies (Depends and
// Pre-Depends, the newest version satisfying each, Provides included),
// looking in every distribution. A package that is in several places with
// the same content is reported from the first distribution and component
// given. Dependencies nothing satisfies are logged as a warning, not
// refused: the machine the packages are for may have them already.
//
// The .deb files are downloaded a few at a time into a staging folder in
// dir, checked against the size and SHA256 of the Packages index, synced
// and renamed to <name>_<version>_<arch>.deb (an epoch's colon written
// %3a, as apt does). A failure is an *Error naming the upstream URL, the
// distribution and the file, wrapping aptrepo.ErrSignature (the Release does not
// verify with the keyring), aptrepo.ErrChecksum (an index or a .deb differs from
// what the signed Release says), aptrepo.ErrUnreachable (the upstream cannot be
// reached or answers with an error), aptrepo.ErrNotFound (a distribution,
// component, architecture or package the upstream does not have),
// aptrepo.ErrInvalid (a bad spec or keyring) or the context's error.
func Fetch(ctx context.Context, spec Spec, dir string, log *slog.Logger) ([]Package, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMirror(spec, dir, log)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, m.fail("", "", err)
	}
	union := deb.NewPackageList()
	origins := map[*deb.Package]origin{}
	for _, dist := range m.dists {
		if err := m.loadDist(ctx, dist, union, origins); err != nil {
			return nil, err
		}
	}
	jobs, err := m.resolve(union, origins)
	if err != nil {
		return nil, err
	}
	if err := m.download(ctx, jobs); err != nil {
		return nil, err
	}
	out := make([]Package, len(jobs))
	for i, j := range jobs {
		out[i] = j.pkg
	}
	return out, nil
}

// mirror is one Mirror call.
type mirror struct {
	url      string // as aptly gets it
	display  string // for errors and the log: without a password
	dists    []string
	comps    []string
	archs    []string
	names    []string
	queries  []deb.PackageQuery
	dir      string
	log      *slog.Logger
	verifier *keyringVerifier
}

// origin is where a package was found.
type origin struct {
	dist, comp string
	repo       *deb.RemoteRepo
}

// mirrorJob is one .deb to have in dir.
type mirrorJob struct {
	pkg Package
	url string
}

func newMirror(spec Spec, dir string, log *slog.Logger) (*mirror, error) {
	m := &mirror{url: strings.TrimSpace(spec.URL), dir: dir, log: log}
	invalid := func(format string, a ...any) error {
		return m.fail("", "", fmt.Errorf("%w: "+format, append([]any{aptrepo.ErrInvalid}, a...)...))
	}
	u, err := url.Parse(m.url)
	if err != nil {
		return nil, invalid("upstream URL: %w", err)
	}
	m.display = strings.TrimSuffix(u.Redacted(), "/")
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, invalid("upstream URL %s: want http:// or https:// and a host", m.display)
	}
	if dir == "" {
		return nil, invalid("no directory to mirror into")
	}
	var ok bool
	if m.dists, ok = cleanList(spec.Distributions, nil, maxMirrorDists, mirrorNamePattern.MatchString); !ok {
		return nil, invalid("distributions %q: want 1 to %d names like noble or bookworm-security (flat repositories are not supported)", spec.Distributions, maxMirrorDists)
	}
	if m.comps, ok = cleanList(spec.Components, []string{"main"}, maxMirrorComps, mirrorNamePattern.MatchString); !ok {
		return nil, invalid("components %q: want at most %d names like main or universe", spec.Components, maxMirrorComps)
	}
	if m.archs, ok = cleanList(spec.Architectures, []string{"amd64"}, maxMirrorArchs, archRE.MatchString); !ok {
		return nil, invalid("architectures %q: want at most %d names like amd64 or arm64", spec.Architectures, maxMirrorArchs)
	}
	validQuery := func(s string) bool {
		return len(s) <= maxMirrorQuery && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
	}
	if m.names, ok = cleanList(spec.Packages, nil, maxMirrorQueries, validQuery); !ok {
		return nil, invalid("packages: want 1 to %d package names or queries of at most %d bytes", maxMirrorQueries, maxMirrorQuery)
	}
	for _, name := range m.names {
		q, err := query.Parse(name)
		if err != nil {
			return nil, m.fail("", name, fmt.Errorf("%w: package query: %w", aptrepo.ErrInvalid, err))
		}
		m.queries = append(m.queries, q)
	}
	if spec.Keyring == "" {
		return nil, invalid("no keyring to verify the upstream's Release with")
	}
	if m.verifier, err = loadKeyring(spec.Keyring); err != nil {
		return nil, m.fail("", spec.Keyring, fmt.Errorf("%w: keyring: %w", aptrepo.ErrInvalid, err))
	}
	return m, nil
}

// cleanList trims the names, drops empty ones and repeats (keeping the
// order), and checks each; an empty list becomes def.
func cleanList(in, def []string, limit int, valid func(string) bool) ([]string, bool) {
	if len(in) > limit {
		return nil, false
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" || seen[s] {
			continue
		}
		if !valid(s) {
			return nil, false
		}
		seen[s] = true
		out = append(out, s)
	}
	if len(out) == 0 {
		out = slices.Clone(def)
	}
	return out, len(out) > 0
}

func (m *mirror) fail(dist, file string, err error) error {
	return &aptrepo.Error{Op: "mirror", URL: m.display, Dist: dist, File: file, Err: err}
}

// loadDist fetches and verifies dist's Release and Packages indexes and
// adds their packages to union.
func (m *mirror) loadDist(ctx context.Context, dist string, union *deb.PackageList, origins map[*deb.Package]origin) error {
	prog := &mirrorProgress{log: m.log, limit: maxIndexBytes,
		over: fmt.Errorf("the index files are larger than %d bytes in all", int64(maxIndexBytes))}
	actx, stop := plainCancel(ctx)
	defer stop()
	d := &ctxDownloader{ctx: actx, inner: aptlyhttp.NewDownloader(0, 1, prog)}
	repo, err := deb.NewRemoteRepo("upstream", m.url, dist, m.comps, m.archs, false, false, false)
	if err != nil {
		return m.fail(dist, "", fmt.Errorf("%w: %w", aptrepo.ErrInvalid, err))
	}
	// Mirror checks components and architectures itself, for clearer errors
	// than aptly's (which suggest its command-line flags).
	repo.SkipComponentCheck, repo.SkipArchitectureCheck = true, true
	m.verifier.failures = nil
	if err := repo.Fetch(d, m.verifier, false); err != nil {
		return m.fail(dist, "Release", m.fetchError(ctx, err))
	}
	if err := checkOffered("component", m.comps, repo.Meta["Components"], dist); err != nil {
		return m.fail(dist, "Release", err)
	}
	if archs := onlyAll(m.archs, repo.Meta["Architectures"]); archs != nil {
		// An archive of architecture-independent packages only (its
		// Release lists "all" and none of the wanted architectures):
		// every machine installs those, so read the binary-all indexes.
		repo.Architectures = archs
	} else if err := checkOffered("architecture", m.archs, repo.Meta["Architectures"], dist); err != nil {
		return m.fail(dist, "Release", err)
	}
	total, conflicts := 0, 0
	for _, comp := range m.comps {
		if err := ctx.Err(); err != nil {
			return m.fail(dist, "", err)
		}
		// One RemoteRepo per component, copied from the fetched one, so
		// that each package's component is known: aptly puts the packages
		// of all components into one list.
		r := *repo
		r.Components = []string{comp}
		if err := r.DownloadPackageIndexes(nil, d, m.verifier, nil, false, false); err != nil {
			return m.fail(dist, "", fmt.Errorf("component %s: %w", comp, downloadError(ctx, err)))
		}
		err := r.PackageList().ForEach(func(p *deb.Package) error {
			total++
			if union.Has(p) {
				// The same package found before (kept from there), or one
				// with the same name, version and architecture but other
				// content (the first one wins).
				if union.Add(p) != nil {
					conflicts++
				}
				return nil
			}
			if err := union.Add(p); err != nil {
				return err
			}
			origins[p] = origin{dist: dist, comp: comp, repo: &r}
			return nil
		})
		if err != nil {
			return m.fail(dist, "", fmt.Errorf("component %s: %w", comp, err))
		}
	}
	if conflicts > 0 {
		m.log.Warn("apt mirror: packages with the same name, version and architecture but other content in two places; the first one found is used",
			"url", m.display, "dist", dist, "packages", conflicts)
	}
	m.log.Info("apt mirror: indexes verified", "url", m.display, "dist", dist,
		"components", strings.Join(m.comps, " "), "architectures", strings.Join(m.archs, " "), "packages", total)
	return nil
}

// onlyAll returns ["all"] when a Release offers "all" and none of the
// wanted architectures, else nil.
func onlyAll(want []string, field string) []string {
	offered := strings.Fields(field)
	if !slices.Contains(offered, deb.ArchitectureAll) {
		return nil
	}
	for _, w := range want {
		if slices.Contains(offered, w) {
			return nil
		}
	}
	return []string{deb.ArchitectureAll}
}

// checkOffered checks that the Release offers what was asked for; a
// Release that does not say is taken at its word.
func checkOffered(kind string, want []string, field, dist string) error {
	offered := strings.Fields(field)
	if len(offered) == 0 {
		return nil
	}
	// debian-security's "bullseye/updates" lists "updates/main"; aptly
	// strips the prefix the same way.
	prefix := dist[strings.LastIndex(dist, "/")+1:] + "/"
	for i, s := range offered {
		offered[i] = strings.TrimPrefix(s, prefix)
	}
	for _, w := range want {
		if !slices.Contains(offered, w) && (kind != "architecture" || w != deb.ArchitectureAll) {
			return fmt.Errorf("%w: %s %s is not in %s (its Release lists %s)", aptrepo.ErrNotFound, kind, w, dist, strings.Join(offered, " "))
		}
	}
	return nil
}

// fetchError explains why aptly's RemoteRepo.Fetch failed. When InRelease
// did not verify, that is the news, whatever the fallback to Release and
// Release.gpg then ran into (often a 404: many archives have InRelease
// alone).
func (m *mirror) fetchError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if fs := m.verifier.failures; len(fs) > 0 {
		msg := strings.Join(fs, "; ")
		if !errors.Is(err, aptrepo.ErrSignature) {
			msg += fmt.Sprintf(" (then Release and Release.gpg: %v)", err)
		}
		return fmt.Errorf("%w: %s", aptrepo.ErrSignature, msg)
	}
	return downloadError(ctx, err)
}

// downloadError sorts what aptly's downloader returned.
func downloadError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, aptrepo.ErrChecksum) || errors.Is(err, aptrepo.ErrSignature) {
		return err
	}
	var herr *aptlyhttp.Error
	if errors.As(err, &herr) {
		if herr.Code == http.StatusNotFound || herr.Code == http.StatusGone {
			return fmt.Errorf("%w: %s", aptrepo.ErrNotFound, herr.Error())
		}
		return fmt.Errorf("%w: %w", aptrepo.ErrUnreachable, herr)
	}
	var nc *aptlyhttp.NoCandidateFoundError
	if errors.As(err, &nc) {
		return fmt.Errorf("%w: the signed Release lists no index %s", aptrepo.ErrNotFound, nc.URL)
	}
	var uerr *url.Error
	var nerr net.Error
	if errors.As(err, &uerr) || errors.As(err, &nerr) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", aptrepo.ErrUnreachable, err)
	}
	return err
}

// transient tells whether a download failure, sorted by downloadError, may
// go away by itself: no connection, a connection lost, a 5xx or a 429.
func transient(err error) bool {
	var herr *aptlyhttp.Error
	if errors.As(err, &herr) {
		return herr.Code >= 500 || herr.Code == http.StatusTooManyRequests
	}
	return errors.Is(err, aptrepo.ErrUnreachable)
}

// resolve picks the requested packages and their dependencies out of
// union.
func (m *mirror) resolve(union *deb.PackageList, origins map[*deb.Package]origin) ([]*mirrorJob, error) {
	dists := strings.Join(m.dists, " ")
	union.PrepareIndex()
	for i, q := range m.queries {
		if q.Query(union).Len() == 0 {
			return nil, m.fail(dists, "", fmt.Errorf("%w: package %q: nothing matches it in %s (components %s; architectures %s)",
				aptrepo.ErrNotFound, m.names[i], dists, strings.Join(m.comps, " "), strings.Join(m.archs, " ")))
		}
	}
	result, err := union.Filter(deb.FilterOptions{
		Queries:          m.queries,
		WithDependencies: true,
		Architectures:    m.archs,
	})
	if err != nil {
		return nil, m.fail(dists, "", fmt.Errorf("resolve dependencies: %w", err))
	}
	if missing, err := result.VerifyDependencies(0, m.archs, result, nil); err == nil && len(missing) > 0 {
		names := make([]string, 0, min(len(missing), maxMissingLogged))
		for _, d := range missing[:min(len(missing), maxMissingLogged)] {
			names = append(names, d.String())
		}
		m.log.Warn("apt mirror: dependencies no package satisfies", "url", m.display, "dists", dists,
			"count", len(missing), "dependencies", strings.Join(names, ", "))
	}
	jobs := make([]*mirrorJob, 0, result.Len())
	err = result.ForEach(func(p *deb.Package) error {
		o, ok := origins[p]
		if !ok {
			return fmt.Errorf("package %s: not from any index (aptly returned a package it was not given)", p)
		}
		j, err := m.job(p, o)
		if err != nil {
			return err
		}
		jobs = append(jobs, j)
		return nil
	})
	if err != nil {
		var e *aptrepo.Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, m.fail(dists, "", err)
	}
	slices.SortFunc(jobs, func(a, b *mirrorJob) int {
		return cmp.Or(cmp.Compare(a.pkg.Name, b.pkg.Name), deb.CompareVersions(a.pkg.Version, b.pkg.Version),
			cmp.Compare(a.pkg.Architecture, b.pkg.Architecture))
	})
	m.log.Info("apt mirror: packages resolved", "url", m.display, "dists", dists,
		"requested", len(m.names), "with dependencies", len(jobs))
	return jobs, nil
}

// job describes the .deb of p.
func (m *mirror) job(p *deb.Package, o origin) (*mirrorJob, error) {
	files := p.Files()
	if len(files) != 1 {
		return nil, m.fail(o.dist, p.String(), fmt.Errorf("%w: %d files in the Packages entry, want 1", aptrepo.ErrInvalid, len(files)))
	}
	f := files[0]
	filename := filepath.ToSlash(f.DownloadURL())
	sum := strings.ToLower(f.Checksums.SHA256)
	if !sha256Pattern.MatchString(sum) {
		return nil, m.fail(o.dist, filename, fmt.Errorf("%w: the Packages file gives no SHA256 for it", aptrepo.ErrChecksum))
	}
	if f.Checksums.Size <= 0 || f.Checksums.Size > maxMirrorDebSize {
		return nil, m.fail(o.dist, filename, fmt.Errorf("%w: the Packages file gives its size as %d, want 1 to %d", aptrepo.ErrInvalid, f.Checksums.Size, int64(maxMirrorDebSize)))
	}
	local := p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + p.Architecture + ".deb"
	if len(local) > 255 || !localNamePattern.MatchString(local) {
		return nil, m.fail(o.dist, filename, fmt.Errorf("%w: package name, version or architecture unfit for a file name: %s", aptrepo.ErrInvalid, local))
	}
	return &mirrorJob{
		pkg: Package{
			Name: p.Name, Version: p.Version, Architecture: p.Architecture,
			Distribution: o.dist, Component: o.comp,
			Filename: filename, SHA256: sum, Size: f.Checksums.Size,
			Path: filepath.Join(m.dir, local),
		},
		url: o.repo.PackageURL(f.DownloadURL()).String(),
	}, nil
}

// download makes every job's file present in dir, a few downloads at a
// time; the first failure stops the rest.
func (m *mirror) download(ctx context.Context, jobs []*mirrorJob) error {
	if err := os.MkdirAll(m.dir, 0o750); err != nil {
		return m.fail("", m.dir, err)
	}
	m.removeStaleTemps()
	tmp, err := os.MkdirTemp(m.dir, mirrorTempPrefix+"*")
	if err != nil {
		return m.fail("", m.dir, err)
	}
	defer os.RemoveAll(tmp)

	// The first failure stops the other downloads.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	actx, stop := plainCancel(wctx)
	defer stop()
	var (
		first                 error
		once                  sync.Once
		fetched, fetchedBytes atomic.Int64
		wg                    sync.WaitGroup
	)
	ch := make(chan *mirrorJob)
	for range min(mirrorWorkers, len(jobs)) {
		wg.Go(func() {
			for j := range ch {
				got, err := m.fetchDeb(wctx, actx, tmp, j)
				if err != nil {
					once.Do(func() { first = err })
					cancel()
					continue
				}
				if got {
					fetched.Add(1)
					fetchedBytes.Add(j.pkg.Size)
				}
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-wctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return m.fail("", "", err)
	}
	if first != nil {
		return first
	}
	if err := fsutil.SyncDir(m.dir); err != nil {
		return m.fail("", m.dir, err)
	}
	m.log.Info("apt mirror: packages present", "url", m.display, "dir", m.dir,
		"packages", len(jobs), "fetched", fetched.Load(), "fetched bytes", fetchedBytes.Load())
	return nil
}

// fetchDeb downloads j's file unless dir has it already; true when it was
// downloaded. aptly's downloader gets actx (see plainCancel).
func (m *mirror) fetchDeb(ctx, actx context.Context, tmp string, j *mirrorJob) (bool, error) {
	p := j.pkg
	if err := ctx.Err(); err != nil {
		return false, m.fail(p.Distribution, p.Filename, err)
	}
	have, err := hasFile(p.Path, p.Size, p.SHA256)
	if err != nil {
		return false, m.fail(p.Distribution, p.Filename, err)
	}
	if have {
		m.log.Debug("apt mirror: already present", "file", p.Path)
		return false, nil
	}
	part := filepath.Join(tmp, filepath.Base(p.Path))
	for attempt := 1; ; attempt++ {
		prog := &mirrorProgress{log: m.log, limit: p.Size,
			over: fmt.Errorf("%w: the download is larger than the %d bytes the Packages file gives", aptrepo.ErrChecksum, p.Size)}
		d := &ctxDownloader{ctx: actx, inner: aptlyhttp.NewDownloader(0, 1, prog)}
		err := d.DownloadWithChecksum(ctx, j.url, part, nil, false)
		if err == nil {
			break
		}
		if err = downloadError(ctx, err); !transient(err) || attempt == debAttempts {
			return false, m.fail(p.Distribution, p.Filename, err)
		}
		m.log.Warn("apt mirror: download failed, trying again", "url", j.url, "attempt", attempt, "err", err)
	}
	if err := finishDeb(part, p.Path, p.Size, p.SHA256); err != nil {
		_ = os.Remove(part)
		return false, m.fail(p.Distribution, p.Filename, err)
	}
	m.log.Debug("apt mirror: fetched", "file", p.Path, "size", p.Size)
	return true, nil
}

// hasFile tells whether path is a regular file of the given size and
// sha256.
func hasFile(path string, size int64, sum string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != size {
		return false, nil
	}
	got, _, err := hashReader(f, size)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return got == sum, nil
}

// finishDeb checks a downloaded file, syncs it and renames it into place.
func finishDeb(part, path string, size int64, sum string) error {
	f, err := os.OpenFile(part, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	got, n, err := hashReader(f, size)
	if err != nil {
		return fmt.Errorf("read %s: %w", part, err)
	}
	if n != size || got != sum {
		return fmt.Errorf("%w: downloaded %d bytes with sha256 %s, the Packages file gives %d bytes with sha256 %s",
			aptrepo.ErrChecksum, n, got, size, sum)
	}
	if err := f.Chmod(0o644); err != nil { //nolint:gosec // G302: a package file, public by design
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", part, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(part, path)
}

// hashReader returns the sha256 and length of r, reading at most size+1
// bytes.
func hashReader(r io.Reader, size int64) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, size+1))
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// removeStaleTemps removes the staging folders of runs killed long ago;
// a failure only costs disk space.
func (m *mirror) removeStaleTemps() {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), mirrorTempPrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTempAge {
			p := filepath.Join(m.dir, e.Name())
			if err := os.RemoveAll(p); err != nil {
				m.log.Warn("apt mirror: remove stale staging folder", "path", p, "err", err)
			}
		}
	}
}

// plainCancel returns a context that is cancelled, with context.Canceled,
// when ctx is done for whatever reason. aptly's downloader stops at once
// on context.Canceled alone: on a deadline, or a cancellation with a cause
// (which the HTTP client reports in its place), it sleeps and tries again.
func plainCancel(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	return c, func() {
		stop()
		cancel()
	}
}

// ctxDownloader is aptly's downloader with the context of the Mirror call
// (aptly's RemoteRepo hands it a context of its own; see also plainCancel) and with index files
// checked here rather than by aptly, so that a mismatch wraps aptrepo.ErrChecksum
// and a checksum weaker than SHA256 is not enough. Its errors are aptly's
// own otherwise: aptly looks at their type (a 404 on Packages.xz makes it
// try Packages.gz).
type ctxDownloader struct {
	ctx   context.Context
	inner aptly.Downloader
}

var _ aptly.Downloader = (*ctxDownloader)(nil)

// Download downloads url to destination.
func (d *ctxDownloader) Download(_ context.Context, url, destination string) error {
	return d.inner.Download(d.ctx, url, destination)
}

// DownloadWithChecksum downloads url to destination and checks it against
// expected, from the signed Release.
func (d *ctxDownloader) DownloadWithChecksum(_ context.Context, url, destination string, expected *utils.ChecksumInfo, ignoreMismatch bool) error {
	if err := d.inner.DownloadWithChecksum(d.ctx, url, destination, nil, false); err != nil {
		return err
	}
	if expected == nil || ignoreMismatch {
		return nil
	}
	if expected.SHA256 == "" && expected.SHA512 == "" {
		_ = os.Remove(destination)
		return fmt.Errorf("%w: %s: the signed Release gives no SHA256 for it", aptrepo.ErrChecksum, url)
	}
	actual, err := utils.ChecksumsForFile(destination)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	if actual.Size != expected.Size ||
		(expected.SHA256 != "" && !strings.EqualFold(actual.SHA256, expected.SHA256)) ||
		(expected.SHA512 != "" && !strings.EqualFold(actual.SHA512, expected.SHA512)) {
		_ = os.Remove(destination)
		return fmt.Errorf("%w: %s: %d bytes with sha256 %s, the signed Release gives %d bytes with sha256 %s",
			aptrepo.ErrChecksum, url, actual.Size, actual.SHA256, expected.Size, expected.SHA256)
	}
	*expected = actual
	return nil
}

// GetProgress returns the progress aptly reports to.
func (d *ctxDownloader) GetProgress() aptly.Progress { return d.inner.GetProgress() }

// GetLength asks for the length of url.
func (d *ctxDownloader) GetLength(_ context.Context, url string) (int64, error) {
	return d.inner.GetLength(d.ctx, url)
}

// mirrorProgress is the aptly.Progress given to aptly's downloader: its
// messages go to the log at debug level (aptly's own progress prints to
// the terminal), and the bytes it is told about are counted, so that a
// download is cut off past limit with the error over.
type mirrorProgress struct {
	log   *slog.Logger
	limit int64
	over  error
	n     atomic.Int64
}

var _ aptly.Progress = (*mirrorProgress)(nil)

// Write counts downloaded bytes.
func (p *mirrorProgress) Write(b []byte) (int, error) {
	if p.n.Add(int64(len(b))) > p.limit {
		return 0, p.over
	}
	return len(b), nil
}

// Start, Shutdown, Flush and the bar methods have nothing to show.
func (p *mirrorProgress) Start()                             {}
func (p *mirrorProgress) Shutdown()                          {}
func (p *mirrorProgress) Flush()                             {}
func (p *mirrorProgress) InitBar(int64, bool, aptly.BarType) {}
func (p *mirrorProgress) ShutdownBar()                       {}
func (p *mirrorProgress) AddBar(int)                         {}
func (p *mirrorProgress) SetBar(int)                         {}

// Printf logs aptly's message at debug level.
func (p *mirrorProgress) Printf(msg string, a ...any) {
	p.log.Debug("apt mirror: aptly", "msg", strings.TrimSpace(fmt.Sprintf(msg, a...)))
}

// ColoredPrintf logs aptly's message at debug level.
func (p *mirrorProgress) ColoredPrintf(msg string, a ...any) { p.Printf(msg, a...) }

// PrintfStdErr logs aptly's message at debug level.
func (p *mirrorProgress) PrintfStdErr(msg string, a ...any) { p.Printf(msg, a...) }

// keyringVerifier is the pgp.Verifier Mirror gives aptly: it trusts the
// keys of one keyring file, binary or armored, and nothing else. aptly's
// GoVerifier was not used: it prints every signature it checks to stdout
// (a library's output in the middle of the caller's), reads binary
// keyrings only, looks names without a slash up in ~/.gnupg, and refuses
// a Release with several signatures unless every signer's key is in the
// keyring (Debian signs with two or three keys; apt and gpgv want one good
// signature). Here, as in apt, the first signature made by a key in the
// keyring must verify (go-crypto also checks the key's expiry and
// revocation), and signatures by other keys are ignored.
type keyringVerifier struct {
	file    string
	keyring openpgp.EntityList
	// failures are the verifications that failed, for Mirror's error:
	// aptly's Fetch falls back to Release and Release.gpg when InRelease
	// does not verify, and reports the fallback's error alone.
	failures []string
}

var _ pgp.Verifier = (*keyringVerifier)(nil)

const armoredKeyBegin = "-----BEGIN PGP PUBLIC KEY BLOCK-----"

// loadKeyring reads the public keys of file: binary packets, or one or
// more ASCII-armored blocks.
func loadKeyring(file string) (*keyringVerifier, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyringSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyringSize {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyringSize)
	}
	var keys openpgp.EntityList
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN ")) {
		// Every pass moves past one BEGIN line, so this ends.
		for rest := data; ; {
			i := bytes.Index(rest, []byte(armoredKeyBegin))
			if i < 0 {
				break
			}
			blk, err := armor.Decode(bytes.NewReader(rest[i:]))
			if err != nil {
				return nil, fmt.Errorf("armored key block: %w", err)
			}
			el, err := openpgp.ReadKeyRing(blk.Body)
			if err != nil {
				return nil, fmt.Errorf("armored key block: %w", err)
			}
			keys = append(keys, el...)
			rest = rest[i+len(armoredKeyBegin):]
		}
	} else if keys, err = openpgp.ReadKeyRing(bytes.NewReader(data)); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no OpenPGP public key in it")
	}
	return &keyringVerifier{file: file, keyring: keys}, nil
}

// InitKeyring and AddKeyring satisfy pgp.Verifier: the keyring is read
// by loadKeyring, and no other is ever added.
func (v *keyringVerifier) InitKeyring(bool) error { return nil }

// AddKeyring ignores keyring: see InitKeyring.
func (v *keyringVerifier) AddKeyring(string) {}

// VerifyDetachedSignature verifies Release against Release.gpg.
func (v *keyringVerifier) VerifyDetachedSignature(signature, cleartext io.Reader, _ bool) error {
	sig, err := readSigned(signature)
	if err != nil {
		return v.fail("Release.gpg", err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(sig), []byte("-----BEGIN ")) {
		blk, err := armor.Decode(bytes.NewReader(sig))
		if err != nil {
			return v.fail("Release.gpg", err)
		}
		if sig, err = io.ReadAll(io.LimitReader(blk.Body, maxSignedSize)); err != nil {
			return v.fail("Release.gpg", err)
		}
	}
	text, err := readSigned(cleartext)
	if err != nil {
		return v.fail("Release", err)
	}
	if _, err := openpgp.CheckDetachedSignature(v.keyring, bytes.NewReader(text), bytes.NewReader(sig), nil); err != nil {
		return v.fail("Release.gpg", v.explain(sig, err))
	}
	return nil
}

// IsClearSigned tells whether r holds a clear-signed message.
func (v *keyringVerifier) IsClearSigned(r io.Reader) (bool, error) {
	data, err := readSigned(r)
	if err != nil {
		return false, err
	}
	b, _ := clearsign.Decode(data)
	return b != nil, nil
}

// VerifyClearsigned verifies InRelease.
func (v *keyringVerifier) VerifyClearsigned(r io.Reader, _ bool) (*pgp.KeyInfo, error) {
	b, err := readClearsigned(r)
	if err != nil {
		return nil, v.fail("InRelease", err)
	}
	sig, err := io.ReadAll(io.LimitReader(b.ArmoredSignature.Body, maxSignedSize))
	if err != nil {
		return nil, v.fail("InRelease", fmt.Errorf("signature block: %w", err))
	}
	signer, err := openpgp.CheckDetachedSignature(v.keyring, bytes.NewReader(b.Bytes), bytes.NewReader(sig), nil)
	if err != nil {
		return nil, v.fail("InRelease", v.explain(sig, err))
	}
	return &pgp.KeyInfo{GoodKeys: []pgp.Key{pgp.KeyFromUint64(signer.PrimaryKey.KeyId)}}, nil
}

// ExtractClearsigned returns the text of a clear-signed message, in an
// unlinked temporary file, as aptly expects. Fetch calls it only on what
// VerifyClearsigned accepted.
func (v *keyringVerifier) ExtractClearsigned(r io.Reader) (*os.File, error) {
	b, err := readClearsigned(r)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "appliance-release-")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name()) // unlinked: gone when closed
	if _, err := f.Write(b.Plaintext); err != nil {
		_ = f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

func (v *keyringVerifier) fail(what string, err error) error {
	if len(v.failures) < 8 {
		v.failures = append(v.failures, what+": "+err.Error())
	}
	return fmt.Errorf("%w: %s: %w", aptrepo.ErrSignature, what, err)
}

// explain says why a signature did not verify: for an unknown signer,
// which keys signed and which the keyring holds.
func (v *keyringVerifier) explain(sig []byte, err error) error {
	if errors.Is(err, pgperrors.ErrUnknownIssuer) {
		return fmt.Errorf("signed by key %s, not in keyring %s (which holds %s)",
			strings.Join(issuers(sig), ", "), v.file, strings.Join(v.keyIDs(), ", "))
	}
	var serr pgperrors.SignatureError
	if errors.As(err, &serr) {
		return fmt.Errorf("the signature does not match the signed text (tampered with or damaged): %w", err)
	}
	return err
}

// issuers lists the key IDs that made the signatures in sig.
func issuers(sig []byte) []string {
	var ids []string
	r := packet.NewReader(bytes.NewReader(sig))
	for range 64 {
		p, err := r.Next()
		if err != nil {
			break
		}
		if s, ok := p.(*packet.Signature); ok && s.IssuerKeyId != nil {
			ids = append(ids, fmt.Sprintf("%016X", *s.IssuerKeyId))
		}
	}
	if len(ids) == 0 {
		return []string{"(none named)"}
	}
	return ids
}

// keyIDs lists the primary key IDs of the keyring, the first few.
func (v *keyringVerifier) keyIDs() []string {
	const shown = 8
	ids := make([]string, 0, min(len(v.keyring), shown)+1)
	for _, e := range v.keyring[:min(len(v.keyring), shown)] {
		ids = append(ids, fmt.Sprintf("%016X", e.PrimaryKey.KeyId))
	}
	if len(v.keyring) > shown {
		ids = append(ids, fmt.Sprintf("and %d more", len(v.keyring)-shown))
	}
	return ids
}

// readSigned reads a Release or signature, at most maxSignedSize bytes.
func readSigned(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSignedSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSignedSize {
		return nil, fmt.Errorf("larger than %d bytes", maxSignedSize)
	}
	return data, nil
}

func readClearsigned(r io.Reader) (*clearsign.Block, error) {
	data, err := readSigned(r)
	if err != nil {
		return nil, err
	}
	b, _ := clearsign.Decode(data)
	if b == nil {
		return nil, errors.New("not a clear-signed message")
	}
	return b, nil
}
