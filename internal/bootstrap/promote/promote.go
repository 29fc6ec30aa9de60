// Package promote pushes the appliance's content, read from its own
// storage, into another registry — production Harbor, distribution,
// another appliance — and proves parity: checks first (every problem at
// once, before the first byte), a plan from what the target holds (HEAD),
// blobs in parallel with cross-repository mounts, manifests children
// first, tags last, referrers through the referrers API or their fallback
// tags, and a parity report of every tag and referrer on both sides.
// One promotion runs at a time; its record is kept in the data directory.
package promote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
)

// GCTurns is how a promotion takes turns with the appliance's garbage
// collection: a promotion holds a turn from its checks to its last byte,
// so nothing it planned to push is collected under it. Blobs that
// implement it (the registry does) are used for it.
type GCTurns interface {
	HoldGC(ctx context.Context, who string) (release func(), err error)
}

// Visibility is the appliance's project policy.
type Visibility interface {
	Public(project string) bool
}

// Target says where a promotion pushes, and as whom.
type Target struct {
	URL      string
	CAPEM    []byte
	Username string
	Password string
}

// Request is one promotion.
type Request struct {
	Target Target
	// Projects to promote; with All, every project the appliance holds.
	Projects []string
	All      bool
	DryRun   bool
	// Parallel is how many blobs move at once (default 4).
	Parallel int
	// By is who asked, for the record.
	By string
}

// ErrInvalid is returned for a request that names something impossible.
var ErrInvalid = errors.New("invalid request")

// ErrBusy is returned while another promotion runs.
var ErrBusy = errors.New("a promotion is already running")

// ErrNotFound is returned for a promotion that does not exist.
var ErrNotFound = errors.New("no such promotion")

// RefusedError is a promotion whose checks found problems before the first
// byte moved. Problems lists every one of them.
type RefusedError struct {
	Target   string
	Problems []string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("promotion to %s refused before anything was pushed:\n  - %s", e.Target, strings.Join(e.Problems, "\n  - "))
}

// Promoter pushes the appliance's content into another registry and
// proves parity. One promotion runs at a time.
type Promoter struct {
	content    Content
	blobs      Blobs
	visibility Visibility
	turns      GCTurns // nil: no garbage collection to take turns with
	store      *promotionStore
	log        *slog.Logger
	skip       func(repo string) bool

	mu      sync.Mutex
	running *run
	wg      sync.WaitGroup
}

// PromoterOption configures a Promoter.
type PromoterOption func(*Promoter)

// WithPromoterLogger sets the logger.
func WithPromoterLogger(l *slog.Logger) PromoterOption { return func(p *Promoter) { p.log = l } }

// WithSkip names repositories never promoted (the importer's staging area).
func WithSkip(skip func(repo string) bool) PromoterOption { return func(p *Promoter) { p.skip = skip } }

// NewPromoter builds a Promoter keeping its records under dataDir.
// Records a stopped process left running are marked interrupted.
func NewPromoter(content Content, blobs Blobs, visibility Visibility, dataDir string, opts ...PromoterOption) (*Promoter, error) {
	if content == nil || blobs == nil || visibility == nil {
		return nil, errors.New("new promoter: content, blobs and visibility are required")
	}
	st, err := openPromotionStore(dataDir)
	if err != nil {
		return nil, err
	}
	p := &Promoter{content: content, blobs: blobs, visibility: visibility, store: st, log: slog.New(slog.DiscardHandler), skip: func(string) bool { return false }}
	if t, ok := blobs.(GCTurns); ok {
		p.turns = t
	}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// run is one promotion in progress.
type run struct {
	p      *Promoter
	req    Request
	rec    *Promotion
	client *regclient.Client
	harbor *regclient.HarborInfo
	repos  []*repoContent
	work   map[string]*repoWork
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex // guards rec.Progress and transfers
	active   map[string]*Transfer
	pushed   map[digest.Digest]string // blob -> a target repository that holds it
	inflight map[digest.Digest]chan struct{}
}

// repoWork is what remains to do in one repository.
type repoWork struct {
	blobs     []blobRef                         // missing on the target
	manifests []*manifestNode                   // missing on the target, in push order
	tags      []tagRef                          // to create or move
	referrers map[digest.Digest][]*manifestNode // by subject
}

// Start checks the target and the request, plans, and (unless a dry run)
// runs the promotion in the background. Problems found before the first
// byte are all reported at once in a *RefusedError; the record is kept
// either way. ctx bounds the checks and the plan, not the push.
func (p *Promoter) Start(ctx context.Context, req Request) (Promotion, error) {
	if req.Parallel <= 0 {
		req.Parallel = 4
	}
	if req.Parallel > 64 {
		return Promotion{}, fmt.Errorf("%w: parallel %d: at most 64", ErrInvalid, req.Parallel)
	}
	if req.All && len(req.Projects) > 0 {
		return Promotion{}, fmt.Errorf("%w: give projects or all, not both", ErrInvalid)
	}
	if !req.All && len(req.Projects) == 0 {
		return Promotion{}, fmt.Errorf("%w: name the projects to promote, or all of them", ErrInvalid)
	}
	p.mu.Lock()
	if p.running != nil && !req.DryRun {
		id := p.running.rec.ID
		p.mu.Unlock()
		return Promotion{}, fmt.Errorf("%w (%s)", ErrBusy, id)
	}
	p.mu.Unlock()
	release := func() {}
	if p.turns != nil {
		var err error
		if release, err = p.turns.HoldGC(ctx, "promotion to "+req.Target.URL); err != nil {
			return Promotion{}, err
		}
	}
	handedOver := false // to the goroutine that pushes, which releases it
	defer func() {
		if !handedOver {
			release()
		}
	}()

	r := &run{p: p, req: req, work: map[string]*repoWork{}, active: map[string]*Transfer{},
		pushed: map[digest.Digest]string{}, inflight: map[digest.Digest]chan struct{}{}}
	r.rec = &Promotion{ID: newID(), Target: strings.TrimRight(req.Target.URL, "/"), TargetUser: req.Target.Username, By: req.By,
		Projects: slices.Clone(req.Projects), DryRun: req.DryRun, Parallel: req.Parallel, Started: time.Now().UTC(),
		State: StateRunning, Progress: Progress{Phase: PhaseChecking}}
	if problems := r.check(ctx); len(problems) > 0 {
		return r.refuse(problems)
	}
	r.setPhase(PhasePlanning)
	if err := r.plan(ctx); err != nil {
		if r.client != nil {
			r.client.Close()
		}
		return r.finishSync(err)
	}
	if req.DryRun {
		r.client.Close()
		r.rec.State, r.rec.Finished = StatePlanned, time.Now().UTC()
		r.rec.Progress.Phase = PhaseDone
		if err := p.store.save(r.rec); err != nil {
			return Promotion{}, err
		}
		return *r.rec, nil
	}
	p.mu.Lock()
	if p.running != nil {
		p.mu.Unlock()
		r.client.Close()
		return Promotion{}, fmt.Errorf("%w (%s)", ErrBusy, p.running.rec.ID)
	}
	bg, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	p.running = r
	p.wg.Add(1)
	p.mu.Unlock()
	if err := p.store.save(r.rec); err != nil {
		p.log.Warn("promotion record not saved", "id", r.rec.ID, "error", err)
	}
	p.log.Info("promotion started", "id", r.rec.ID, "target", r.rec.Target, "by", req.By,
		"blobs", r.rec.Plan.BlobsToPush, "bytes", r.rec.Plan.BytesToPush, "manifests", r.rec.Plan.ManifestsToPush, "tags", r.rec.Plan.TagsToSet)
	handedOver = true
	go func() {
		defer p.wg.Done()
		defer cancel()
		defer close(r.done)
		defer release()
		err := r.execute(bg)
		r.client.Close()
		// Finished and no longer the running one at once: whoever sees it
		// finished (Get) may start the next promotion.
		p.mu.Lock()
		r.finish(err)
		p.running = nil
		p.mu.Unlock()
	}()
	return r.snapshot(), nil
}

func (r *run) refuse(problems []string) (Promotion, error) {
	if r.client != nil {
		r.client.Close()
	}
	r.rec.State, r.rec.Problems, r.rec.Finished = StateRefused, problems, time.Now().UTC()
	r.rec.Progress.Phase = PhaseDone
	if err := r.p.store.save(r.rec); err != nil {
		r.p.log.Warn("promotion record not saved", "id", r.rec.ID, "error", err)
	}
	r.p.log.Warn("promotion refused", "id", r.rec.ID, "target", r.rec.Target, "problems", len(problems))
	return *r.rec, &RefusedError{Target: r.rec.Target, Problems: problems}
}

func (r *run) finishSync(err error) (Promotion, error) {
	r.finish(err)
	return *r.rec, err
}

func (r *run) finish(err error) {
	r.mu.Lock()
	r.rec.Finished = time.Now().UTC()
	r.rec.Progress.Active = nil
	r.rec.Progress.Phase = PhaseDone
	switch {
	case err == nil:
		r.rec.State = StateSucceeded
	case errors.Is(err, context.Canceled):
		r.rec.State, r.rec.Error = StateCanceled, "canceled; run it again to resume: it pushes only what is missing"
	default:
		r.rec.State, r.rec.Error = StateFailed, err.Error()
	}
	rec := *r.rec
	r.mu.Unlock()
	if serr := r.p.store.save(&rec); serr != nil {
		r.p.log.Error("promotion record not saved", "id", rec.ID, "error", serr)
	}
	if err != nil {
		r.p.log.Warn("promotion ended", "id", rec.ID, "state", rec.State, "error", err)
		return
	}
	r.p.log.Info("promotion succeeded", "id", rec.ID, "target", rec.Target, "bytes", rec.Progress.BytesDone)
}

// check finds every problem it can before the first byte moves.
func (r *run) check(ctx context.Context) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	t := r.req.Target
	client, err := regclient.New(regclient.Options{URL: t.URL, CAPEM: t.CAPEM, Username: t.Username, Password: t.Password, MaxConns: r.req.Parallel + 4, UserAgent: "appliance-promote"})
	if err != nil {
		add("target: %v", err)
		return problems
	}
	r.client = client
	projects, err := r.selectProjects(ctx)
	if err != nil {
		add("%v", err)
	}
	if err := client.Login(ctx); err != nil {
		add("target %s: %v", t.URL, err)
		return problems // nothing else can be checked without reaching it
	}
	harbor, err := client.Harbor(ctx)
	if err != nil {
		add("target %s: %v", t.URL, err)
		return problems
	}
	r.harbor = harbor
	r.rec.TargetKind = "registry"
	if harbor != nil {
		r.rec.TargetKind, r.rec.TargetVersion = "harbor", harbor.Version
		if harbor.ReadOnly {
			add("target %s: Harbor is in read-only mode (systeminfo read_only): it refuses every push; turn read-only off in Harbor's configuration first", t.URL)
		}
	}
	var user *regclient.HarborUser
	for _, pr := range projects {
		first := r.firstRepo(pr)
		pp := ProjectPlan{Name: pr, Public: r.p.visibility.Public(pr), Action: "none"}
		if harbor != nil {
			if !regclient.ValidHarborProject(pr) {
				add("project %q: Harbor refuses this name (lower-case letters and digits with single . _ - between them); rename it on the appliance before promoting", pr)
				r.planProject(pp)
				continue
			}
			hp, found, err := client.HarborGetProject(ctx, pr)
			switch {
			case err != nil:
				add("project %s on %s: %v", pr, t.URL, err)
			case found:
				pp.Action, pp.TargetPublic = "exists", &hp.Public
				if hp.Public != pp.Public {
					r.rec.Warnings = append(r.rec.Warnings, fmt.Sprintf("project %s is %s on the appliance but %s on %s; left as it is (change it in Harbor if it should match)",
						pr, visibilityWord(pp.Public), visibilityWord(hp.Public), t.URL))
				}
				if err := client.CheckPush(ctx, first); err != nil {
					add("project %s: %s may not push to %s: %v", pr, who(t.Username), first, err)
				}
			default:
				pp.Action = "create"
				if user == nil {
					u, err := client.HarborCurrentUser(ctx)
					if err != nil {
						add("target %s: cannot tell who %s is: %v", t.URL, who(t.Username), err)
						u = regclient.HarborUser{Username: t.Username}
					}
					user = &u
				}
				switch {
				case t.Username == "":
					add("project %s does not exist on %s, and creating it needs credentials", pr, t.URL)
				case !user.Robot && !user.SysAdmin && harbor.ProjectCreationRestriction == "adminonly":
					add("project %s does not exist on %s, and %s may not create projects there (project_creation_restriction is adminonly): create it in Harbor first, or promote as an admin", pr, t.URL, who(t.Username))
				}
			}
		} else if err := client.CheckPush(ctx, first); err != nil {
			add("project %s: %s may not push to %s: %v", pr, who(t.Username), first, err)
		}
		r.planProject(pp)
	}
	r.rec.Projects = projects
	return problems
}

func (r *run) planProject(pp ProjectPlan) {
	if r.rec.Plan == nil {
		r.rec.Plan = &Plan{}
	}
	r.rec.Plan.Projects = append(r.rec.Plan.Projects, pp)
}

func visibilityWord(public bool) string {
	if public {
		return "public"
	}
	return "private"
}

func who(user string) string {
	if user == "" {
		return "anonymous"
	}
	return "user " + user
}

// selectProjects resolves the request's projects against what the
// appliance holds, loading each repository's content.
func (r *run) selectProjects(ctx context.Context) ([]string, error) {
	all, err := r.p.content.Repositories(ctx)
	if err != nil {
		return nil, err
	}
	byProject := map[string][]string{}
	var order []string
	for _, repo := range all {
		if r.p.skip(repo) {
			continue
		}
		pr, _, _ := strings.Cut(repo, "/")
		if _, ok := byProject[pr]; !ok {
			order = append(order, pr)
		}
		byProject[pr] = append(byProject[pr], repo)
	}
	want := order
	if !r.req.All {
		want = nil
		var missing []string
		for _, pr := range r.req.Projects {
			pr = strings.TrimSpace(pr)
			if pr == "" || slices.Contains(want, pr) {
				continue
			}
			if _, ok := byProject[pr]; !ok {
				missing = append(missing, pr)
				continue
			}
			want = append(want, pr)
		}
		if len(missing) > 0 {
			return want, fmt.Errorf("the appliance holds no repository in project %s (it holds: %s)", strings.Join(missing, ", "), strings.Join(order, ", "))
		}
	}
	if len(want) == 0 {
		return nil, errors.New("the appliance holds nothing to promote")
	}
	sort.Strings(want)
	for _, pr := range want {
		for _, repo := range byProject[pr] {
			rc, err := loadRepo(ctx, r.p.content, repo)
			if err != nil {
				return want, fmt.Errorf("read %s from the appliance's storage: %w", repo, err)
			}
			if len(rc.tags) == 0 && len(rc.referrers) == 0 {
				continue // blob links only (an import's leftovers)
			}
			r.repos = append(r.repos, rc)
		}
	}
	return want, nil
}

func (r *run) firstRepo(project string) string {
	for _, rc := range r.repos {
		if strings.HasPrefix(rc.name, project+"/") {
			return rc.name
		}
	}
	return project + "/promotion-check"
}

// plan asks the target what it holds already (HEAD first), repository by
// repository, in parallel.
func (r *run) plan(ctx context.Context) error {
	plans := make([]RepoPlan, len(r.repos))
	works := make([]*repoWork, len(r.repos))
	err := forEach(ctx, len(r.repos), min(r.req.Parallel, 8), func(ctx context.Context, i int) error {
		rp, w, err := r.planRepo(ctx, r.repos[i])
		plans[i], works[i] = rp, w
		return err
	})
	if err != nil {
		return fmt.Errorf("plan against %s: %w", r.rec.Target, err)
	}
	pl := r.rec.Plan
	if pl == nil {
		pl = &Plan{}
		r.rec.Plan = pl
	}
	for _, rc := range r.repos {
		for child, index := range rc.absent {
			r.rec.Warnings = append(r.rec.Warnings, fmt.Sprintf("%s@%s lists %s, which the appliance does not hold (a platform the bundle did not carry); registries that check indexes, Harbor and distribution among them, refuse such an index",
				rc.name, index, child))
		}
	}
	slices.Sort(r.rec.Warnings)
	for i, rp := range plans {
		r.work[r.repos[i].name] = works[i]
		pl.Repositories = append(pl.Repositories, rp)
		pl.BlobsToPush += rp.BlobsToPush
		pl.BytesToPush += rp.BytesToPush
		pl.BlobsPresent += rp.BlobsPresent
		pl.BytesPresent += rp.BytesPresent
		pl.ManifestsToPush += rp.ManifestsToPush
		pl.ManifestsPresent += rp.ManifestsPresent
		pl.Referrers += rp.Referrers
		for _, t := range rp.Tags {
			if t.Action == "same" {
				pl.TagsSame++
			} else {
				pl.TagsToSet++
			}
		}
	}
	r.rec.Progress.BlobsTotal, r.rec.Progress.BytesTotal = pl.BlobsToPush, pl.BytesToPush
	r.rec.Progress.ManifestsTotal, r.rec.Progress.TagsTotal = pl.ManifestsToPush, pl.TagsToSet
	return nil
}

func (r *run) planRepo(ctx context.Context, rc *repoContent) (RepoPlan, *repoWork, error) {
	rp := RepoPlan{Name: rc.name, Referrers: len(rc.referrers), NotPromoted: rc.untagged}
	w := &repoWork{referrers: map[digest.Digest][]*manifestNode{}}
	// In a project the promotion creates, the target holds nothing yet
	// (and Harbor refuses to be asked).
	fresh := r.createsProject(strings.SplitN(rc.name, "/", 2)[0])
	for _, b := range rc.blobsToPush() {
		if b.foreign {
			if _, ok, err := r.p.blobs.StatBlob(ctx, b.digest); err != nil {
				return rp, nil, err
			} else if !ok {
				continue // non-distributable and not carried: never pushed
			}
		}
		ok := false
		if !fresh {
			var err error
			if ok, err = r.client.HeadBlob(ctx, rc.name, b.digest); err != nil {
				return rp, nil, err
			}
		}
		if ok {
			rp.BlobsPresent++
			rp.BytesPresent += b.size
			r.notePushed(b.digest, rc.name)
			continue
		}
		rp.BlobsToPush++
		rp.BytesToPush += b.size
		w.blobs = append(w.blobs, b)
	}
	for _, m := range rc.manifests {
		ok := false
		if !fresh {
			var err error
			if _, ok, err = r.client.HeadManifest(ctx, rc.name, m.digest.String()); err != nil {
				return rp, nil, err
			}
		}
		if ok {
			rp.ManifestsPresent++
		} else {
			rp.ManifestsToPush++
			w.manifests = append(w.manifests, m)
		}
		if m.subject != "" {
			w.referrers[m.subject] = append(w.referrers[m.subject], m)
		}
	}
	for _, t := range rc.tags {
		tp := TagPlan{Tag: t.tag, Digest: t.digest.String(), Action: "create"}
		var (
			desc regclient.Descriptor
			ok   bool
		)
		if !fresh {
			var err error
			if desc, ok, err = r.client.HeadManifest(ctx, rc.name, t.tag); err != nil {
				return rp, nil, err
			}
		}
		if ok {
			tp.TargetDigest = desc.Digest.String()
			tp.Action = "move"
			if desc.Digest == t.digest {
				tp.Action = "same"
			}
		}
		if tp.Action != "same" {
			w.tags = append(w.tags, t)
		}
		rp.Tags = append(rp.Tags, tp)
	}
	return rp, w, nil
}

func (r *run) createsProject(name string) bool {
	if r.rec.Plan == nil {
		return false
	}
	for _, p := range r.rec.Plan.Projects {
		if p.Name == name {
			return p.Action == "create"
		}
	}
	return false
}

func (r *run) notePushed(d digest.Digest, repo string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pushed[d]; !ok {
		r.pushed[d] = repo
	}
}

func (r *run) setPhase(phase string) {
	r.mu.Lock()
	r.rec.Progress.Phase = phase
	rec := *r.rec
	r.mu.Unlock()
	if rec.State == StateRunning && !rec.DryRun && phase != PhaseChecking && phase != PhasePlanning {
		if err := r.p.store.save(&rec); err != nil {
			r.p.log.Warn("promotion record not saved", "id", rec.ID, "error", err)
		}
	}
}

func (r *run) snapshot() Promotion {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := *r.rec
	if rec.Plan != nil {
		// The projects change while they are created; the rest of the plan
		// is fixed once the push begins.
		pl := *rec.Plan
		pl.Projects = slices.Clone(pl.Projects)
		rec.Plan = &pl
	}
	rec.Progress.Active = nil
	for _, t := range r.active {
		rec.Progress.Active = append(rec.Progress.Active, *t)
	}
	sort.Slice(rec.Progress.Active, func(i, j int) bool {
		a, b := rec.Progress.Active[i], rec.Progress.Active[j]
		return a.Repository+a.Digest < b.Repository+b.Digest
	})
	return rec
}

// Get returns a promotion: the running one as it stands, or a record.
func (p *Promoter) Get(id string) (Promotion, error) {
	p.mu.Lock()
	r := p.running
	p.mu.Unlock()
	if r != nil && (r.rec.ID == id || id == "latest") {
		return r.snapshot(), nil
	}
	recs, err := p.store.list()
	if err != nil {
		return Promotion{}, err
	}
	for _, rec := range recs {
		if rec.ID == id || id == "latest" {
			return rec, nil
		}
	}
	return Promotion{}, fmt.Errorf("promotion %q: %w", id, ErrNotFound)
}

// List returns the promotions, newest first, the running one as it stands.
func (p *Promoter) List() ([]Promotion, error) {
	recs, err := p.store.list()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	r := p.running
	p.mu.Unlock()
	if r != nil {
		snap := r.snapshot()
		for i := range recs {
			if recs[i].ID == snap.ID {
				recs[i] = snap
			}
		}
	}
	return recs, nil
}

// LastParity returns the newest promotion that reached a parity check.
func (p *Promoter) LastParity() (Promotion, bool, error) {
	recs, err := p.store.list()
	if err != nil {
		return Promotion{}, false, err
	}
	for _, rec := range recs {
		if rec.Parity != nil {
			return rec, true, nil
		}
	}
	return Promotion{}, false, nil
}

// Cancel stops the running promotion. What it pushed stays; a re-run
// resumes.
func (p *Promoter) Cancel(id string) error {
	p.mu.Lock()
	r := p.running
	p.mu.Unlock()
	if r == nil || r.rec.ID != id {
		return fmt.Errorf("promotion %q is not running: %w", id, ErrNotFound)
	}
	r.cancel()
	<-r.done
	return nil
}

// Shutdown cancels a running promotion and waits for it to record how it
// ended, within ctx.
func (p *Promoter) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	r := p.running
	p.mu.Unlock()
	if r != nil {
		r.cancel()
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("promotion did not stop in time: %w", ctx.Err())
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// forEach runs f for 0..n-1 on up to workers goroutines, stopping at the
// first error.
func forEach(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range max(1, min(workers, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
