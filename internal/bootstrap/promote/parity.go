package promote

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
)

// Parity is the proof that a target holds what the appliance holds: every
// repository, every tag with its digest, and every referrer, on both sides.
type Parity struct {
	Target       string       `json:"target"`
	Checked      time.Time    `json:"checked"`
	OK           bool         `json:"ok"`
	Differences  int          `json:"differences"`
	Repositories []RepoParity `json:"repositories"`
}

// RepoParity compares one repository.
type RepoParity struct {
	Repository string           `json:"repository"`
	Tags       []TagParity      `json:"tags"`
	Referrers  []ReferrerParity `json:"referrers,omitempty"`
	// OnlyOnTarget are tags the target holds and the appliance does not:
	// shown, not counted as differences (production may hold more).
	OnlyOnTarget []string `json:"only_on_target,omitempty"`
}

// Parity statuses.
const (
	ParitySame      = "same"
	ParityMissing   = "missing"   // not on the target
	ParityDifferent = "different" // the target names another digest
)

// TagParity is one tag on both sides.
type TagParity struct {
	Tag    string `json:"tag"`
	Source string `json:"source"`
	Target string `json:"target,omitempty"`
	Status string `json:"status"`
}

// ReferrerParity is one referrer on both sides.
type ReferrerParity struct {
	Subject      string `json:"subject"`
	Digest       string `json:"digest"`
	ArtifactType string `json:"artifact_type,omitempty"`
	Status       string `json:"status"`
}

// Summary names the first few differences.
func (p *Parity) Summary() string {
	var out []string
	for _, r := range p.Repositories {
		for _, t := range r.Tags {
			if t.Status != ParitySame {
				out = append(out, fmt.Sprintf("%s:%s %s", r.Repository, t.Tag, t.Status))
			}
		}
		for _, ref := range r.Referrers {
			if ref.Status != ParitySame {
				out = append(out, fmt.Sprintf("%s referrer %s of %s %s", r.Repository, short(ref.Digest), short(ref.Subject), ref.Status))
			}
		}
	}
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return strings.Join(out, "; ")
}

func short(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return d
}

// checkParity reads the target back: every tag of every repository by
// HEAD, and the referrers of every subject, through the referrers API or
// the fallback tag.
func checkParity(ctx context.Context, c *regclient.Client, repos []*repoContent, parallel int) (*Parity, error) {
	out := &Parity{Target: c.URL(), Checked: time.Now().UTC(), Repositories: make([]RepoParity, len(repos))}
	err := forEach(ctx, len(repos), max(parallel, 4), func(ctx context.Context, i int) error {
		rp, err := repoParity(ctx, c, repos[i])
		out.Repositories[i] = rp
		return err
	})
	if err != nil {
		return out, err
	}
	for _, r := range out.Repositories {
		for _, t := range r.Tags {
			if t.Status != ParitySame {
				out.Differences++
			}
		}
		for _, ref := range r.Referrers {
			if ref.Status != ParitySame {
				out.Differences++
			}
		}
	}
	out.OK = out.Differences == 0
	return out, nil
}

func repoParity(ctx context.Context, c *regclient.Client, rc *repoContent) (RepoParity, error) {
	rp := RepoParity{Repository: rc.name, Tags: []TagParity{}}
	targetTags, err := c.Tags(ctx, rc.name)
	if err != nil {
		return rp, err
	}
	mine := map[string]bool{}
	for _, t := range rc.tags {
		mine[t.tag] = true
		tp := TagParity{Tag: t.tag, Source: t.digest.String(), Status: ParityMissing}
		if slices.Contains(targetTags, t.tag) {
			desc, ok, err := c.HeadManifest(ctx, rc.name, t.tag)
			if err != nil {
				return rp, err
			}
			if ok {
				tp.Target = desc.Digest.String()
				tp.Status = ParityDifferent
				if desc.Digest == t.digest {
					tp.Status = ParitySame
				}
			}
		}
		rp.Tags = append(rp.Tags, tp)
	}
	for _, t := range targetTags {
		if !mine[t] && !regclient.IsFallbackTag(t) {
			rp.OnlyOnTarget = append(rp.OnlyOnTarget, t)
		}
	}
	slices.Sort(rp.OnlyOnTarget)
	listed := map[digest.Digest]map[digest.Digest]bool{}
	for _, ref := range rc.referrers {
		got, ok := listed[ref.Subject]
		if !ok {
			ds, err := c.ListReferrers(ctx, rc.name, ref.Subject)
			if err != nil {
				return rp, err
			}
			got = map[digest.Digest]bool{}
			for _, d := range ds {
				got[d.Digest] = true
			}
			listed[ref.Subject] = got
		}
		st := ParityMissing
		if got[ref.Digest] {
			st = ParitySame
		}
		rp.Referrers = append(rp.Referrers, ReferrerParity{Subject: ref.Subject.String(), Digest: ref.Digest.String(), ArtifactType: ref.ArtifactType, Status: st})
	}
	return rp, nil
}
