package nim

import (
	"errors"
	"os"
	"strings"
	"testing"
)

const (
	h100fp8  = "8835c31752fbc67ef658b20a9f78e056914fdef0660206d82f252d62fd96064d"
	h100fp16 = "e3a5f1c0d0a5ed1a6cf9b1e1a8d4b1c2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8"
	a100     = "19031a45cf096b683c4d66fff2a072c0e164a24f19728a58771ebfc4c9ade44f"
	vllm     = "3bb4e8fe78e5037b05dd618cebb1053347325ad6a1e709e0eb18bb8558362ac5"
)

func fixture(t *testing.T) *Manifest {
	t.Helper()
	data, err := os.ReadFile("testdata/model_manifest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !IsManifest(data) {
		t.Fatal("the fixture is not recognised as a NIM manifest")
	}
	m, err := Parse("model_manifest.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestParseReadsNIMsManifest: the custom tags (!workspace, !name) do not
// stop the parser; every profile comes with its id, model, release, tags,
// container, the files of its workspace and its line.
func TestParseReadsNIMsManifest(t *testing.T) {
	t.Parallel()
	m := fixture(t)
	if len(m.Profiles) != 4 {
		t.Fatalf("%d profiles, want 4", len(m.Profiles))
	}
	p := m.Profiles[0]
	if p.ID != h100fp8 || p.Model != "meta/llama3-8b-instruct" || p.Release != "1.0.0" || p.ContainerURL != "nvcr.io/nim/meta/llama3-8b-instruct:1.0.0" ||
		p.Tags["gpu"] != "H100" || p.Tags["precision"] != "fp8" || p.Tags["tp"] != "1" || p.Files != 10 || p.Line != 5 {
		t.Errorf("first profile: %+v", p)
	}
	if m.Profiles[3].ID != vllm || m.Profiles[3].Files != 6 || m.Profiles[3].Tags["gpu"] != "" {
		t.Errorf("the generic vLLM profile: %+v", m.Profiles[3])
	}
	if IsManifest([]byte("profiles:\n  - id: 8835c317\n    image: nvcr.io/nim/x@sha256:" + strings.Repeat("1", 64) + "\n")) {
		t.Error("the gate's own list is taken for a NIM manifest")
	}
}

func TestSelect(t *testing.T) {
	t.Parallel()
	m := fixture(t)
	ids := func(ps []Profile) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.ID[:8])
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		name string
		sel  Selection
		want string
	}{
		{"nothing selected: every profile", Selection{}, "8835c317,e3a5f1c0,19031a45,3bb4e8fe"},
		{"by full id", Selection{IDs: []string{a100}}, "19031a45"},
		{"by id prefix, upper case", Selection{IDs: []string{"8835C317"}}, "8835c317"},
		{"by tag", Selection{Tags: []string{"gpu=h100"}}, "8835c317,e3a5f1c0"},
		{"by two tags", Selection{Tags: []string{"gpu=H100", "precision=fp16"}}, "e3a5f1c0"},
		{"ids and tags: both", Selection{IDs: []string{vllm}, Tags: []string{"gpu=A100"}}, "19031a45,3bb4e8fe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, from, err := Select([]*Manifest{m}, tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if ids(got) != tc.want || len(from) != len(got) {
				t.Errorf("Select(%+v) = %s, want %s", tc.sel, ids(got), tc.want)
			}
		})
	}
}

// TestRefused: bad manifests and selections are errors naming the
// problem (and the file and line), never an empty list of requirements.
func TestRefused(t *testing.T) {
	t.Parallel()
	m := fixture(t)
	other := &Manifest{File: "mistral.yaml", Profiles: []Profile{{ID: strings.Repeat("ab", 32), Tags: map[string]string{"gpu": "L40S"}}}}
	for _, tc := range []struct {
		name string
		data string // parsed when set
		ms   []*Manifest
		sel  Selection
		want string
	}{
		{name: "unparsable", data: "profiles:\n- id: 8835c317\n  model: meta/x\n  release: @1.0.0\n", want: "m.yaml: line 4: found character that cannot start any token"},
		{name: "tab", data: "profiles:\n- id: 8835c317\n\tmodel: x\n", want: "m.yaml: line 2: found a tab character"},
		{name: "no profiles key", data: "models:\n- id: 8835c317\n", want: "m.yaml: lists no profiles"},
		{name: "empty list", data: "profiles: []\n", want: "m.yaml: lists no profiles"},
		{name: "empty file", data: "\n", want: "m.yaml: empty"},
		{name: "a list at the top", data: "- id: x\n", want: "m.yaml:1: want a mapping"},
		{name: "profile without id", data: "profiles:\n- model: meta/x\n  tags: {gpu: H100}\n", want: "m.yaml:2: a profile without its id"},
		{name: "id twice", data: "profiles:\n- id: aaaa\n  model: x\n- id: AAAA\n  model: x\n", want: "m.yaml:4: profile aaaa again (first at line 2)"},
		{name: "tags not a map", data: "profiles:\n- id: aaaa\n  tags: [gpu]\n", want: "m.yaml:2:"},
		{name: "unknown id", ms: []*Manifest{m}, sel: Selection{IDs: []string{strings.Repeat("f", 64)}}, want: "profile " + strings.Repeat("f", 64) + " is in no manifest given (model_manifest.yaml); it lists 19031a45cf09 (gpu=A100"},
		{name: "short id", ms: []*Manifest{m}, sel: Selection{IDs: []string{"8835"}}, want: `profile id "8835": want the profile's 64-hex id`},
		{name: "ambiguous prefix", ms: []*Manifest{m, {File: "copy.yaml", Profiles: []Profile{{ID: h100fp8[:60] + "0000"}}}}, sel: Selection{IDs: []string{h100fp8[:8]}}, want: "is ambiguous"},
		{name: "tag matching nothing", ms: []*Manifest{m}, sel: Selection{Tags: []string{"gpu=H200"}}, want: "no profile of model_manifest.yaml has the tags gpu=H200"},
		{name: "tag without value", ms: []*Manifest{m}, sel: Selection{Tags: []string{"gpu"}}, want: `profile tag "gpu": want key=value`},
		{name: "a manifest nothing is selected of", ms: []*Manifest{m, other}, sel: Selection{Tags: []string{"gpu=H100"}}, want: "mistral.yaml: the selection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var err error
			if tc.data != "" {
				_, err = Parse("m.yaml", []byte(tc.data))
			} else {
				var got []Profile
				got, _, err = Select(tc.ms, tc.sel)
				if err == nil {
					t.Fatalf("Select = %d profiles, want an error", len(got))
				}
			}
			if !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrManifest naming %q", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	data, _ := os.ReadFile("testdata/model_manifest.yaml")
	f.Add(data)
	f.Add([]byte("profiles:\n- id: x\n  workspace: !workspace {components: [{src: {files: [!name a]}}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse("f.yaml", data)
		if err == nil && len(m.Profiles) == 0 {
			t.Fatal("a manifest without profiles parsed")
		}
		_ = IsManifest(data)
	})
}
