package promote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
)

// execute pushes what the plan found missing, in the order a registry
// accepts it: projects, blobs, manifests (children first, subjects before
// referrers), tags last, then the referrers fallback tags where the
// target has no referrers API; and ends with the parity check.
func (r *run) execute(ctx context.Context) error {
	r.setPhase(PhaseProjects)
	if err := r.createProjects(ctx); err != nil {
		return err
	}
	r.setPhase(PhaseBlobs)
	if err := r.pushBlobs(ctx); err != nil {
		return err
	}
	r.setPhase(PhaseManifests)
	if err := forEach(ctx, len(r.repos), r.req.Parallel, func(ctx context.Context, i int) error {
		return r.pushManifests(ctx, r.repos[i])
	}); err != nil {
		return err
	}
	r.setPhase(PhaseTags)
	if err := forEach(ctx, len(r.repos), r.req.Parallel, func(ctx context.Context, i int) error {
		return r.pushTags(ctx, r.repos[i])
	}); err != nil {
		return err
	}
	r.setPhase(PhaseReferrers)
	if err := forEach(ctx, len(r.repos), r.req.Parallel, func(ctx context.Context, i int) error {
		return r.indexReferrers(ctx, r.repos[i])
	}); err != nil {
		return err
	}
	r.setPhase(PhaseParity)
	par, err := checkParity(ctx, r.client, r.repos, r.req.Parallel)
	r.mu.Lock()
	r.rec.Parity = par
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("verify parity: %w", err)
	}
	if !par.OK {
		return fmt.Errorf("parity not reached: %d difference(s): %s", par.Differences, par.Summary())
	}
	return nil
}

func (r *run) createProjects(ctx context.Context) error {
	if r.harbor == nil || r.rec.Plan == nil {
		return nil
	}
	var errs []error
	for i, pp := range r.rec.Plan.Projects {
		if pp.Action != "create" {
			continue
		}
		created, err := r.client.HarborCreateProject(ctx, pp.Name, pp.Public)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if created {
			r.p.log.Info("Harbor project created", "project", pp.Name, "public", pp.Public, "target", r.rec.Target)
		}
		r.mu.Lock()
		r.rec.Plan.Projects[i].Action = "created"
		pub := pp.Public
		r.rec.Plan.Projects[i].TargetPublic = &pub
		r.mu.Unlock()
	}
	if len(errs) > 0 {
		return fmt.Errorf("create projects on %s (nothing else was pushed): %w", r.rec.Target, errors.Join(errs...))
	}
	return nil
}

type blobJob struct {
	repo string
	blob blobRef
}

func (r *run) pushBlobs(ctx context.Context) error {
	var jobs []blobJob
	for _, rc := range r.repos {
		for _, b := range r.work[rc.name].blobs {
			jobs = append(jobs, blobJob{repo: rc.name, blob: b})
		}
	}
	return forEach(ctx, len(jobs), r.req.Parallel, func(ctx context.Context, i int) error {
		return r.pushBlob(ctx, jobs[i])
	})
}

// pushBlob sends one blob, read from the appliance's storage. A blob that
// another repository of the target already holds (or is receiving in this
// run) is mounted from there instead of sent again.
func (r *run) pushBlob(ctx context.Context, j blobJob) error {
	d := j.blob.digest
	for {
		r.mu.Lock()
		from, have := r.pushed[d]
		wait, busy := r.inflight[d]
		if !have && !busy {
			r.inflight[d] = make(chan struct{})
		}
		r.mu.Unlock()
		if have || !busy {
			err := r.sendBlob(ctx, j, from)
			r.mu.Lock()
			if !have {
				close(r.inflight[d])
				delete(r.inflight, d)
			}
			if err == nil {
				if _, ok := r.pushed[d]; !ok {
					r.pushed[d] = j.repo
				}
			}
			r.mu.Unlock()
			return err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxAttempts bounds the tries of one blob when the connection fails.
const maxAttempts = 3

func (r *run) sendBlob(ctx context.Context, j blobJob, mountFrom string) error {
	key := j.repo + "@" + j.blob.digest.String()
	t := &Transfer{Repository: j.repo, Digest: j.blob.digest.String(), Size: j.blob.size}
	r.mu.Lock()
	r.active[key] = t
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.active, key)
		r.mu.Unlock()
	}()
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		var mounted bool
		mounted, err = r.client.PushBlob(ctx, j.repo, j.blob.digest, j.blob.size, func() (io.ReadCloser, error) {
			rc, err := r.p.blobs.ReadBlob(ctx, j.repo, j.blob.digest)
			if err != nil {
				return nil, err
			}
			return &countingReader{rc: rc, r: r, t: t}, nil
		}, mountFrom)
		if err == nil {
			r.mu.Lock()
			r.rec.Progress.BlobsDone++
			if mounted {
				r.rec.Progress.BlobsMounted++
			}
			r.rec.Progress.BytesDone += j.blob.size - t.Done
			t.Done = j.blob.size
			r.mu.Unlock()
			return nil
		}
		// Take back what this attempt counted; the next one sends it again.
		r.mu.Lock()
		r.rec.Progress.BytesDone -= t.Done
		t.Done = 0
		r.mu.Unlock()
		if !retryable(err) || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(time.Duration(attempt) * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("push %s to %s (re-run the promotion to resume: it pushes only what is missing): %w", j.blob.digest, j.repo, err)
}

// retryable tells a connection failure (worth another try) from a refusal.
func retryable(err error) bool {
	var e *regclient.Error
	if !errors.As(err, &e) {
		return false
	}
	return errors.Is(e.Err, regclient.ErrUnreachable) || e.Status >= 500
}

type countingReader struct {
	rc io.ReadCloser
	r  *run
	t  *Transfer
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if n > 0 {
		c.r.mu.Lock()
		c.t.Done += int64(n)
		c.r.rec.Progress.BytesDone += int64(n)
		c.r.mu.Unlock()
	}
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }

// pushManifests stores the repository's missing manifests by digest,
// byte for byte, children before the indexes that list them.
func (r *run) pushManifests(ctx context.Context, rc *repoContent) error {
	for _, m := range r.work[rc.name].manifests {
		if _, err := r.client.PutManifest(ctx, rc.name, m.digest.String(), m.mediaType, m.payload); err != nil {
			return fmt.Errorf("push manifest %s@%s: %w", rc.name, m.digest, err)
		}
		r.mu.Lock()
		r.rec.Progress.ManifestsDone++
		r.mu.Unlock()
	}
	return nil
}

// pushTags points the tags at their manifests, last.
func (r *run) pushTags(ctx context.Context, rc *repoContent) error {
	for _, t := range r.work[rc.name].tags {
		m := rc.byDigest[t.digest]
		if m == nil {
			return fmt.Errorf("tag %s:%s: manifest %s not loaded", rc.name, t.tag, t.digest)
		}
		if _, err := r.client.PutManifest(ctx, rc.name, t.tag, m.mediaType, m.payload); err != nil {
			return fmt.Errorf("tag %s:%s: %w", rc.name, t.tag, err)
		}
		r.mu.Lock()
		r.rec.Progress.TagsDone++
		r.mu.Unlock()
	}
	return nil
}

// indexReferrers makes the referrers findable on a target without the
// referrers API: the fallback tag sha256-<subject hex> names an index of
// them, merged with what the target listed there before.
func (r *run) indexReferrers(ctx context.Context, rc *repoContent) error {
	subjects := subjectsOf(rc)
	if len(subjects) == 0 {
		return nil
	}
	if _, supported, err := r.client.Referrers(ctx, rc.name, subjects[0]); err != nil {
		return err
	} else if supported {
		return nil
	}
	for _, s := range subjects {
		if err := updateFallback(ctx, r.client, rc, s); err != nil {
			return err
		}
	}
	return nil
}

func subjectsOf(rc *repoContent) []digest.Digest {
	var out []digest.Digest
	for _, ref := range rc.referrers {
		if len(out) == 0 || out[len(out)-1] != ref.Subject {
			out = append(out, ref.Subject)
		}
	}
	return out
}

func updateFallback(ctx context.Context, c *regclient.Client, rc *repoContent, subject digest.Digest) error {
	tag := regclient.FallbackTag(subject)
	idx := regclient.Index{SchemaVersion: 2, MediaType: regclient.MediaTypeOCIIndex}
	_, payload, err := c.GetManifest(ctx, rc.name, tag)
	switch {
	case errors.Is(err, regclient.ErrNotFound):
	case err != nil:
		return err
	default:
		if json.Unmarshal(payload, &idx) != nil {
			idx = regclient.Index{SchemaVersion: 2, MediaType: regclient.MediaTypeOCIIndex}
		}
	}
	changed := false
	for _, ref := range rc.referrers {
		if ref.Subject != subject {
			continue
		}
		if slices.ContainsFunc(idx.Manifests, func(d regclient.Descriptor) bool { return d.Digest == ref.Digest }) {
			continue
		}
		m := rc.byDigest[ref.Digest]
		idx.Manifests = append(idx.Manifests, regclient.Descriptor{MediaType: m.mediaType, Digest: m.digest, Size: int64(len(m.payload)),
			ArtifactType: m.artifactType, Annotations: m.annotations})
		changed = true
	}
	if !changed {
		return nil
	}
	sort.Slice(idx.Manifests, func(i, j int) bool { return idx.Manifests[i].Digest < idx.Manifests[j].Digest })
	data, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if _, err := c.PutManifest(ctx, rc.name, tag, regclient.MediaTypeOCIIndex, data); err != nil {
		return fmt.Errorf("fallback tag %s:%s: %w", rc.name, tag, err)
	}
	return nil
}
