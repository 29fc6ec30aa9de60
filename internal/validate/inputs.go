package validate

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.yaml.in/yaml/v3"

	"github.com/appliance-dev/appliance/internal/validate/nim"
	"github.com/appliance-dev/appliance/internal/validate/refs"
)

// Profile is one NIM model profile a workload requires.
type Profile struct {
	ID    string `yaml:"id" json:"id"`
	Image string `yaml:"image" json:"image"`
	GPU   string `yaml:"gpu" json:"gpu,omitempty"`
	where string
	// about describes a profile of a NIM manifest (model, release, tags).
	about string
}

type parsedInputs struct {
	infos     []InputInfo
	images    []refs.ImageRef
	packages  []aptPackage
	profiles  []Profile
	manifests []*nim.Manifest // NIM model manifests given as --profiles
}

type aptPackage struct {
	name, version, where string
}

// parseInputs reads every input, naming the file and line of what it
// cannot parse.
func parseInputs(in []Input) (*parsedInputs, error) {
	p := &parsedInputs{infos: []InputInfo{}}
	for _, f := range in {
		sum := sha256.Sum256(f.Data)
		p.infos = append(p.infos, InputInfo{Kind: f.Kind, Name: f.Name, SHA256: "sha256:" + hex.EncodeToString(sum[:]), Bytes: len(f.Data)})
		var err error
		switch f.Kind {
		case InputImages:
			err = p.imageList(f)
		case InputManifests, InputPods:
			var found []refs.ImageRef
			if found, err = refs.ExtractImages(f.Name, f.Data); err != nil {
				err = fmt.Errorf("%w: %w", ErrBadInput, err)
			}
			p.images = append(p.images, found...)
		case InputCloudInit:
			err = p.cloudInit(f)
		case InputProfiles:
			err = p.profileList(f)
		default:
			return nil, badInput("unknown input kind %q for %s (want images, manifests, pods, cloud-init or profiles)", f.Kind, f.Name)
		}
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *parsedInputs) imageList(f Input) error {
	sc := bufio.NewScanner(bytes.NewReader(f.Data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "#"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		if _, err := name.ParseReference(line); err != nil {
			return badInput("%s:%d: %q is not an image reference: %v", f.Name, n, line, err)
		}
		p.images = append(p.images, refs.ImageRef{Ref: line, File: f.Name, Line: n})
	}
	if err := sc.Err(); err != nil {
		return badInput("%s: %v", f.Name, err)
	}
	return nil
}

// yamlDocs decodes every document of a YAML (or JSON) file, naming the
// file and line of a syntax error.
func yamlDocs(file string, data []byte) ([]*yaml.Node, error) {
	docs, err := refs.Docs(file, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	return docs, nil
}

func (p *parsedInputs) cloudInit(f Input) error {
	docs, err := yamlDocs(f.Name, f.Data)
	if err != nil {
		return err
	}
	if len(docs) == 0 || len(docs[0].Content) == 0 {
		return badInput("%s: empty cloud-init file", f.Name)
	}
	root := docs[0].Content[0]
	if root.Kind != yaml.MappingNode {
		return badInput("%s:%d: a cloud-config is a mapping", f.Name, root.Line)
	}
	found := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "packages" {
			continue
		}
		found = true
		list := root.Content[i+1]
		if list.Kind != yaml.SequenceNode {
			return badInput("%s:%d: packages: want a list", f.Name, list.Line)
		}
		for _, it := range list.Content {
			where := fmt.Sprintf("%s:%d", f.Name, it.Line)
			switch {
			case it.Kind == yaml.ScalarNode && it.Value != "":
				nm, ver, _ := strings.Cut(it.Value, "=")
				p.packages = append(p.packages, aptPackage{name: nm, version: ver, where: where})
			case it.Kind == yaml.SequenceNode && len(it.Content) == 2:
				p.packages = append(p.packages, aptPackage{name: it.Content[0].Value, version: it.Content[1].Value, where: where})
			default:
				return badInput("%s: a package is a name, name=version or [name, version]", where)
			}
		}
	}
	if !found {
		return badInput("%s: the cloud-config installs no packages (no packages: key)", f.Name)
	}
	return nil
}

func (p *parsedInputs) profileList(f Input) error {
	if nim.IsManifest(f.Data) {
		m, err := nim.Parse(f.Name, f.Data)
		if err != nil {
			return badInput("%v", err)
		}
		p.manifests = append(p.manifests, m)
		return nil
	}
	docs, err := yamlDocs(f.Name, f.Data)
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		return badInput("%s: empty profiles file", f.Name)
	}
	var doc struct {
		Profiles []yaml.Node `yaml:"profiles"`
	}
	root := docs[0]
	if len(root.Content) == 1 && root.Content[0].Kind == yaml.SequenceNode {
		doc.Profiles = nil
		for _, c := range root.Content[0].Content {
			doc.Profiles = append(doc.Profiles, *c)
		}
	} else if err := root.Decode(&doc); err != nil {
		return badInput("%s: %s", f.Name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Profiles) == 0 {
		return badInput("%s: lists no profiles (want profiles: [{id, image}])", f.Name)
	}
	for _, n := range doc.Profiles {
		var pr Profile
		if err := decodeStrict(&n, &pr); err != nil {
			return badInput("%s:%d: %v", f.Name, n.Line, err)
		}
		if pr.ID == "" {
			return badInput("%s:%d: a profile needs its id", f.Name, n.Line)
		}
		pr.where = fmt.Sprintf("%s:%d", f.Name, n.Line)
		p.profiles = append(p.profiles, pr)
	}
	return nil
}

// decodeStrict decodes a node, unknown keys being errors.
func decodeStrict(n *yaml.Node, v any) error {
	data, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

func parsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return v1.Platform{}, badInput("platform %q is not os/arch[/variant]", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
