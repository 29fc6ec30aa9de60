package validate

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestVisibleLeavesOutOtherProjects: a reader who may pull from library/
// only reads nothing naming vendor/ (findings, digests, drift,
// staleness) and no import history; the full result is unchanged.
func TestVisibleLeavesOutOtherProjects(t *testing.T) {
	t.Parallel()
	full := &Result{
		Gates: []GateResult{{Gate: GateImages, Status: StatusWarning, Summary: "2 references", Findings: []Finding{
			{Severity: SeverityWarning, What: "h/vendor/x:1", Repository: "vendor/x", Digest: "sha256:vv"},
			{Severity: SeverityInfo, What: "nginx:1", Local: "h/library/nginx:1", Repository: "library/nginx"},
		}}, {Gate: GateApt, Status: StatusOK, Findings: []Finding{{Severity: SeverityInfo, What: "gpu-tools"}}}},
		Checked: []Checked{{Gate: GateImages, What: "h/vendor/x:1", Digest: "sha256:vv", Repository: "vendor/x"}, {Gate: GateApt, What: "package a", Digest: "sha256:aa"}},
		Drift: &Drift{Missing: 1, Different: 1, Differences: []Difference{
			{Kind: DriftMissing, Artifact: "image", Name: "vendor/x:2", Expected: "sha256:v2"},
			{Kind: DriftDifferent, Artifact: "file", Name: "llama.tar"},
		}},
		Staleness: []Stale{{Artifact: "vendor/x:1", Kind: "image"}, {Artifact: "driver.run", Kind: "file"}},
		Imports:   []ImportRef{{ImportRecord: ImportRecord{ID: "1", Source: "vendor.tar"}}},
	}
	before, _ := json.Marshal(full)
	v := full.Visible(func(repo string) bool { return strings.HasPrefix(repo, "library/") })
	got, _ := json.Marshal(v)
	if strings.Contains(string(got), "vendor") || strings.Contains(string(got), "sha256:v") {
		t.Errorf("the view names the other project:\n%s", got)
	}
	if len(v.Gates[0].Findings) != 1 || len(v.Gates[1].Findings) != 1 || len(v.Checked) != 1 || v.Drift.Missing != 0 || v.Drift.Different != 1 ||
		len(v.Staleness) != 1 || len(v.Imports) != 0 || v.Withheld != 5 || v.Gates[0].Status != StatusWarning {
		t.Errorf("view: %s", got)
	}
	if after, _ := json.Marshal(full); string(after) != string(before) {
		t.Error("Visible changed the result it was given")
	}
}

func TestImageMatches(t *testing.T) {
	t.Parallel()
	d1, d2 := "@sha256:"+strings.Repeat("1", 64), "@sha256:"+strings.Repeat("2", 64)
	for _, tc := range []struct {
		want, have string
		ok         bool
	}{
		{"", "anything", true},
		{"nvcr.io/nim/a" + d1, "nvcr.io/nim/a" + d1, true},
		{"nvcr.io/nim/a" + d1, "nvcr.io/nim/a" + d2, false},
		{"nvcr.io/nim/a" + d1, "nvcr.io/nim/a:1.0.0", false}, // a digest asked, none named
		{"nvcr.io/nim/a:1.0.0", "nvcr.io/nim/a" + d1, true},  // container_url against the file's digest
		{"nvcr.io/nim/a:1.0.0", "nvcr.io/nim/a:1.0.0" + d1, true},
		{"nvcr.io/nim/a:1.0.0", "nvcr.io/nim/a:1.1.0", false},
		{"nvcr.io/nim/a:1.0.0", "nvcr.io/nim/b" + d1, false},
	} {
		if got := imageMatches(tc.want, tc.have); got != tc.ok {
			t.Errorf("imageMatches(%q, %q) = %v", tc.want, tc.have, got)
		}
	}
}
