package validate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/validate/refs"
)

// puller reaches the appliance's registry over the network, trusting its
// CA only: anonymously, or with the run's credentials.
type puller struct {
	v     *Validator
	creds Credentials // nil: anonymous
	mu    sync.Mutex
	auth  map[string]authn.Authenticator // per repository, with credentials
	trans map[string]http.RoundTripper   // per repository, with its pull token
}

func (v *Validator) newPuller(creds Credentials) *puller {
	return &puller{v: v, creds: creds, auth: map[string]authn.Authenticator{}, trans: map[string]http.RoundTripper{}}
}

// authFor is what the puller presents for repo: nothing, or a pull token
// the credentials mint for it.
func (p *puller) authFor(ctx context.Context, repo name.Repository) (authn.Authenticator, error) {
	if p.creds == nil {
		return authn.Anonymous, nil
	}
	p.mu.Lock()
	a, ok := p.auth[repo.String()]
	p.mu.Unlock()
	if ok {
		return a, nil
	}
	tok, err := p.creds.PullToken(ctx, repo.RepositoryStr())
	if err != nil {
		return nil, fmt.Errorf("a pull token of %s for %s: %w", p.creds.Who(), repo.RepositoryStr(), err)
	}
	a = &authn.Bearer{Token: tok}
	p.mu.Lock()
	p.auth[repo.String()] = a
	p.mu.Unlock()
	return a, nil
}

func (p *puller) opts(ctx context.Context, repo name.Repository) ([]remote.Option, error) {
	a, err := p.authFor(ctx, repo)
	if err != nil {
		return nil, err
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithTransport(p.v.tr), remote.WithAuth(a)}, nil
}

// blobPresent asks with HEAD whether the registry serves a blob.
func (p *puller) blobPresent(ctx context.Context, repo name.Repository, d v1.Hash) error {
	p.mu.Lock()
	rt, ok := p.trans[repo.String()]
	p.mu.Unlock()
	if !ok {
		a, err := p.authFor(ctx, repo)
		if err != nil {
			return err
		}
		rt, err = transport.NewWithContext(ctx, repo.Registry, a, p.v.tr, []string{repo.Scope(transport.PullScope)})
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.trans[repo.String()] = rt
		p.mu.Unlock()
	}
	u := fmt.Sprintf("https://%s/v2/%s/blobs/%s", repo.RegistryStr(), repo.RepositoryStr(), d)
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("blob %s: HTTP %d", d, resp.StatusCode)
	}
	return nil
}

// resolve proves a reference pulls: its manifest (for an index, the
// children of every platform asked), the config and every layer.
func (p *puller) resolve(ctx context.Context, ref name.Reference, platforms []string) (string, []string, error) {
	opts, err := p.opts(ctx, ref.Context())
	if err != nil {
		return "", nil, err
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return "", nil, err
	}
	top := desc.Digest.String()
	var notes []string
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return top, nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return top, nil, err
		}
		for _, ps := range platforms {
			want, _ := parsePlatform(ps)
			var child *v1.Descriptor
			for i := range im.Manifests {
				if pl := im.Manifests[i].Platform; pl != nil && pl.Satisfies(want) {
					child = &im.Manifests[i]
					break
				}
			}
			if child == nil {
				return top, nil, fmt.Errorf("the index %s has no manifest for %s", top, ps)
			}
			cref := ref.Context().Digest(child.Digest.String())
			if err := p.image(ctx, cref); err != nil {
				return top, nil, fmt.Errorf("%s (%s): %w", ps, child.Digest, err)
			}
			notes = append(notes, ps+" "+child.Digest.String())
		}
		return top, notes, nil
	}
	return top, nil, p.image(ctx, ref)
}

func (p *puller) image(ctx context.Context, ref name.Reference) error {
	opts, err := p.opts(ctx, ref.Context())
	if err != nil {
		return err
	}
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	if err := p.blobPresent(ctx, ref.Context(), m.Config.Digest); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	for _, l := range m.Layers {
		if !l.MediaType.IsDistributable() {
			continue
		}
		if err := p.blobPresent(ctx, ref.Context(), l.Digest); err != nil {
			return fmt.Errorf("layer: %w", err)
		}
	}
	return nil
}

func (r *run) mapper() *refs.Mapper {
	var inv *bundle.Inventory
	if r.against != nil {
		inv = r.against.inv
	}
	return refs.NewMapper(r.v.base.Host, r.v.o.Names, inv)
}

// publicProjects are the projects the appliance lists to an anonymous
// client: its public ones.
func (r *run) publicProjects(ctx context.Context) (map[string]bool, error) {
	var projects []struct {
		Name   string `json:"name"`
		Public bool   `json:"public"`
	}
	if err := r.v.getJSON(ctx, "/api/v1/projects", &projects); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, p := range projects {
		if p.Public {
			out[p.Name] = true
		}
	}
	return out, nil
}

// projectOf is the project of a repository (its first path segment).
func projectOf(repo string) string {
	p, _, _ := strings.Cut(repo, "/")
	return p
}

// imagesGate: every reference resolves in the appliance; outside ones are
// reported with their local replacement. An image of a public project is
// pulled anonymously; one of a private project with the run's
// credentials (a warning: pods need a pull secret), or anonymously when
// the run has none or asks so (then red).
func (r *run) imagesGate(ctx context.Context, g *GateResult) {
	refs := r.parsed.images
	if len(refs) == 0 {
		g.Status, g.Summary = StatusSkipped, "nothing to check: give --images, --manifests or --pods"
		return
	}
	public, err := r.publicProjects(ctx)
	if err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: r.v.base.Host, Problem: "the appliance's API does not answer: " + err.Error()})
		return
	}
	creds := r.v.o.Credentials
	if r.req.Anonymous {
		creds = nil
	}
	m := r.mapper()
	anon, withCreds := r.v.newPuller(nil), r.v.newPuller(creds)
	type result struct {
		repo    string
		private bool // pulled with credentials
		digest  string
		notes   []string
		err     error
	}
	// Every distinct local reference is resolved once, eight at a time.
	cache := map[string]*result{}
	var order []string
	for _, ir := range refs {
		if local, err := m.Map(ir.Ref); err == nil && cache[local] == nil {
			cache[local] = &result{}
			order = append(order, local)
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, local := range order {
		wg.Add(1)
		sem <- struct{}{}
		go func(local string, res *result) {
			defer func() { <-sem; wg.Done() }()
			ref, err := name.ParseReference(local)
			if err != nil {
				res.err = err
				return
			}
			res.repo = ref.Context().RepositoryStr()
			p := anon
			if !public[projectOf(res.repo)] && creds != nil {
				p, res.private = withCreds, true
			}
			res.digest, res.notes, res.err = p.resolve(ctx, ref, r.platforms)
		}(local, cache[local])
	}
	wg.Wait()
	outside, private := 0, 0
	recorded := map[string]bool{}
	for _, ir := range refs {
		local, err := m.Map(ir.Ref)
		if err != nil {
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: ir.Ref, Where: ir.Where(), Problem: err.Error()})
			continue
		}
		res := cache[local]
		project := projectOf(res.repo)
		if m.Outside(ir.Ref) {
			outside++
			g.Findings = append(g.Findings, Finding{Severity: SeverityInfo, What: ir.Ref, Where: ir.Where(), Local: local, Repository: res.repo,
				Problem: "names an outside registry", Action: "use " + local + " (appliance rewrite prints the manifests so)"})
		}
		if res.err != nil {
			f := Finding{Severity: SeverityError, What: ir.Ref, Where: ir.Where(), Local: local, Repository: res.repo,
				Problem: "does not pull from the appliance: " + pullError(res.err), Action: "carry " + ir.Ref + " in a bundle and import it"}
			if refused(res.err) && !public[project] {
				switch {
				case res.private:
					f.Problem = fmt.Sprintf("refused to %s too: %s", creds.Who(), pullError(res.err))
				case r.req.Anonymous:
					f.Problem = fmt.Sprintf("refused to an anonymous client: %s; project %s is not public", pullError(res.err), project)
					f.Action = "run without --anonymous to pull it with your credentials, as a pod with an imagePullSecret does; or make " + project + " public (appliance project set " + project + " --public)"
				default:
					f.Problem = fmt.Sprintf("refused to an anonymous client: %s; project %s is not public and the gate ran without credentials", pullError(res.err), project)
					f.Action = "run the gate with an admin's credentials (appliance validate --username …), which pull it as a pod with an imagePullSecret does; or make " + project + " public"
				}
			}
			g.Findings = append(g.Findings, f)
			continue
		}
		if res.private {
			private++
			g.Findings = append(g.Findings, Finding{Severity: SeverityWarning, What: ir.Ref, Where: ir.Where(), Local: local, Repository: res.repo,
				Problem: fmt.Sprintf("in private project %s: pulled with the credentials of %s; an anonymous client is refused", project, creds.Who()),
				Action:  "give the pods an imagePullSecret of a user of " + project + " (imagePullSecrets), or make " + project + " public"})
		}
		if recorded[local] {
			continue
		}
		recorded[local] = true
		r.checkedImage(GateImages, local, res.digest, res.repo)
		for _, n := range res.notes {
			if pl, d, ok := strings.Cut(n, " "); ok {
				r.checkedImage(GateImages, local+" "+pl, d, res.repo)
			}
		}
	}
	g.Checked = len(cache)
	failed := 0
	for _, f := range g.Findings {
		if f.Severity == SeverityError {
			failed++
		}
	}
	g.Summary = fmt.Sprintf("%d references (%d distinct), %d from outside registries, %d in private projects, %d missing", len(refs), len(cache), outside, private, failed)
	sort.SliceStable(g.Findings, func(i, j int) bool { return sevRank(g.Findings[i].Severity) < sevRank(g.Findings[j].Severity) })
}

func sevRank(s string) int {
	switch s {
	case SeverityError:
		return 0
	case SeverityWarning:
		return 1
	}
	return 2
}

// refused tells whether the registry refused the client (401 or 403).
func refused(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden)
}

// pullError shortens go-containerregistry's errors to what an operator reads.
func pullError(err error) string {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusNotFound:
			return "not found (HTTP 404)"
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Sprintf("refused (HTTP %d): a private project?", te.StatusCode)
		}
	}
	return err.Error()
}
