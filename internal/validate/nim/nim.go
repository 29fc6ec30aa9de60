// Package nim reads NVIDIA NIM's model manifest (model_manifest.yaml, as
// NIM containers ship it at /opt/nim/etc/default/model_manifest.yaml) and
// selects the profiles a workload requires: by profile id, by tags such as
// gpu=H100, or all of them. The manifest's workspace uses custom YAML
// tags (!workspace, !name); they are read as plain YAML and otherwise
// ignored: the gate needs each profile's id, model, release, tags and
// container. See docs/validation.md.
package nim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrManifest marks a manifest that cannot be read or a selection it
// cannot satisfy; the message names the file (and line).
var ErrManifest = errors.New("NIM model manifest")

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrManifest, fmt.Sprintf(format, args...))
}

// Profile is one profile of a manifest.
type Profile struct {
	// ID is the profile's id, a 64-hex hash.
	ID      string `yaml:"id"`
	Model   string `yaml:"model"`
	Release string `yaml:"release"`
	// ContainerURL is the NIM image the profile belongs to, when the
	// manifest names it.
	ContainerURL string            `yaml:"container_url"`
	Tags         map[string]string `yaml:"tags"`
	// Files counts the workspace's files (every !name).
	Files int `yaml:"-"`
	// Line is the profile's line in the manifest.
	Line int `yaml:"-"`
}

// Manifest is a parsed model manifest.
type Manifest struct {
	File     string
	Profiles []Profile
}

// IsManifest tells whether a profiles file is a NIM model manifest rather
// than the gate's own list ({id, image, gpu}): one of its profiles carries
// a key only NIM's format has.
func IsManifest(data []byte) bool {
	var doc struct {
		Profiles []map[string]yaml.Node `yaml:"profiles"`
	}
	if yaml.Unmarshal(data, &doc) != nil {
		return false
	}
	for _, p := range doc.Profiles {
		for _, k := range []string{"tags", "model", "release", "workspace", "container_url"} {
			if _, ok := p[k]; ok {
				return true
			}
		}
	}
	return false
}

// Parse reads a manifest. An unparsable one names the file and line; one
// without profiles, a profile without an id, or an id twice is refused.
func Parse(file string, data []byte) (*Manifest, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, bad("%s: empty", file)
		}
		return nil, bad("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, bad("%s:%d: want a mapping with profiles:", file, root.Line)
	}
	var list *yaml.Node
	top := root.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "profiles" {
			list = top.Content[i+1]
		}
	}
	if list == nil || list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		return nil, bad("%s: lists no profiles (want a top-level profiles: list)", file)
	}
	m := &Manifest{File: file}
	seen := map[string]int{}
	for _, n := range list.Content {
		var p Profile
		if err := n.Decode(&p); err != nil {
			return nil, bad("%s:%d: %s", file, n.Line, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		p.Line = n.Line
		p.ID = strings.ToLower(strings.TrimSpace(p.ID))
		if p.ID == "" {
			return nil, bad("%s:%d: a profile without its id", file, n.Line)
		}
		if l, dup := seen[p.ID]; dup {
			return nil, bad("%s:%d: profile %s again (first at line %d)", file, n.Line, p.ID, l)
		}
		seen[p.ID] = n.Line
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "workspace" {
				p.Files = countNames(n.Content[i+1])
			}
		}
		m.Profiles = append(m.Profiles, p)
	}
	return m, nil
}

// countNames counts the !name scalars of a workspace.
func countNames(n *yaml.Node) int {
	c := 0
	if n.Kind == yaml.ScalarNode && n.Tag == "!name" {
		c++
	}
	for _, k := range n.Content {
		c += countNames(k)
	}
	return c
}

// Selection says which profiles are required: those whose id is among
// IDs (a full id or a prefix of at least 8 hex digits matching one
// profile), and those carrying every tag of Tags ("gpu=H100"; values
// compare without regard to case). An empty selection requires every
// profile of the manifest.
type Selection struct {
	IDs  []string
	Tags []string
}

// Empty tells whether the selection requires every profile.
func (s Selection) Empty() bool { return len(s.IDs) == 0 && len(s.Tags) == 0 }

// Check reports a malformed selection: an id that is not hex or shorter
// than 8 digits, a tag without key=value.
func (s Selection) Check() error {
	for _, id := range s.IDs {
		if len(id) < 8 || len(id) > 64 || strings.Trim(strings.ToLower(id), "0123456789abcdef") != "" {
			return bad("profile id %q: want the profile's 64-hex id (or its first 8 digits or more)", id)
		}
	}
	for _, t := range s.Tags {
		if k, v, ok := strings.Cut(t, "="); !ok || strings.TrimSpace(k) == "" || strings.TrimSpace(v) == "" {
			return bad("profile tag %q: want key=value, such as gpu=H100", t)
		}
	}
	return nil
}

// Select returns the profiles of the manifests the selection requires.
// Every id asked for must be in one manifest (exactly one profile); a
// tag selection must match at least one profile; a manifest of which
// nothing is selected is refused too (why give it?).
func Select(ms []*Manifest, s Selection) ([]Profile, []*Manifest, error) {
	if err := s.Check(); err != nil {
		return nil, nil, err
	}
	var out []Profile
	var from []*Manifest
	if s.Empty() {
		for _, m := range ms {
			for _, p := range m.Profiles {
				out, from = append(out, p), append(from, m)
			}
		}
		return out, from, nil
	}
	picked := map[*Manifest]map[string]bool{}
	for _, m := range ms {
		picked[m] = map[string]bool{}
	}
	for _, id := range s.IDs {
		id = strings.ToLower(id)
		var hits []string
		for _, m := range ms {
			for _, p := range m.Profiles {
				if strings.HasPrefix(p.ID, id) {
					hits = append(hits, p.ID)
					picked[m][p.ID] = true
				}
			}
		}
		switch {
		case len(hits) == 0:
			return nil, nil, bad("profile %s is in no manifest given (%s); it lists %s", id, files(ms), idList(ms))
		case len(hits) > 1 && len(id) < 64:
			return nil, nil, bad("profile id %s is ambiguous: %s", id, strings.Join(hits, ", "))
		}
	}
	if len(s.Tags) > 0 {
		n := 0
		for _, m := range ms {
			for _, p := range m.Profiles {
				if hasTags(p, s.Tags) {
					picked[m][p.ID] = true
					n++
				}
			}
		}
		if n == 0 {
			return nil, nil, bad("no profile of %s has the tags %s", files(ms), strings.Join(s.Tags, ", "))
		}
	}
	for _, m := range ms {
		if len(picked[m]) == 0 {
			return nil, nil, bad("%s: the selection (profile ids %v, tags %v) picks none of its profiles", m.File, s.IDs, s.Tags)
		}
		for _, p := range m.Profiles {
			if picked[m][p.ID] {
				out, from = append(out, p), append(from, m)
			}
		}
	}
	return out, from, nil
}

func hasTags(p Profile, tags []string) bool {
	for _, t := range tags {
		k, v, _ := strings.Cut(t, "=")
		if !strings.EqualFold(strings.TrimSpace(p.Tags[strings.TrimSpace(k)]), strings.TrimSpace(v)) {
			return false
		}
	}
	return true
}

func files(ms []*Manifest) string {
	var f []string
	for _, m := range ms {
		f = append(f, m.File)
	}
	return strings.Join(f, ", ")
}

// idList names a manifest's profiles for an error: id (gpu, precision, tp).
func idList(ms []*Manifest) string {
	var out []string
	for _, m := range ms {
		for _, p := range m.Profiles {
			var t []string
			for _, k := range []string{"gpu", "precision", "tp", "llm_engine"} {
				if v := p.Tags[k]; v != "" {
					t = append(t, k+"="+v)
				}
			}
			out = append(out, p.ID[:min(12, len(p.ID))]+" ("+strings.Join(t, " ")+")")
		}
	}
	sort.Strings(out)
	if len(out) > 8 {
		out = append(out[:8], fmt.Sprintf("and %d more", len(out)-8))
	}
	return strings.Join(out, ", ")
}
