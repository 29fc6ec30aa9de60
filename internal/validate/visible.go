package validate

import "strings"

// Visible returns the result as a caller who may pull only from the
// repositories mayPull accepts may read it: findings, digests checked,
// drift and staleness about any other repository are left out, and so is
// the import history, which spans every project. Withheld counts what was
// left out; the gates' outcomes and summaries (counts only) stay. The
// result itself is not changed.
func (r *Result) Visible(mayPull func(repo string) bool) *Result {
	out := *r
	hidden := func(repo string) bool {
		if repo != "" && !mayPull(repo) {
			out.Withheld++
			return true
		}
		return false
	}
	out.Gates = make([]GateResult, len(r.Gates))
	for i, g := range r.Gates {
		g.Findings = keep(g.Findings, func(f Finding) bool { return !hidden(f.Repository) })
		out.Gates[i] = g
	}
	out.Checked = keep(r.Checked, func(c Checked) bool { return !hidden(c.Repository) })
	if r.Drift != nil {
		d := *r.Drift
		d.Missing, d.Extra, d.Different, d.Differences = 0, 0, 0, []Difference{}
		for _, x := range r.Drift.Differences {
			if x.Artifact == "image" && hidden(repoOfTag(x.Name)) {
				continue
			}
			d.add(x)
		}
		out.Drift = &d
	}
	out.Staleness = keep(r.Staleness, func(s Stale) bool {
		return s.Kind != "image" && s.Kind != "bundle" || !hidden(repoOfTag(s.Artifact))
	})
	out.Withheld += len(r.Imports)
	out.Imports = nil
	return &out
}

func keep[T any](in []T, ok func(T) bool) []T {
	out := make([]T, 0, len(in))
	for _, x := range in {
		if ok(x) {
			out = append(out, x)
		}
	}
	return out
}

// repoOfTag is the repository of "repo:tag" or "repo@digest".
func repoOfTag(s string) string {
	if i := strings.Index(s, "@"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		s = s[:i]
	}
	if s == "" {
		return "?" // nothing to tell: never shown to a partial reader
	}
	return s
}
