// Package refs finds the image references of Kubernetes manifests
// (Deployments, DaemonSets, Pods, Helm-rendered YAML, the GPU Operator's
// ClusterPolicy, NIM operator resources, kubectl get pods -o json dumps),
// each with its file and line, and maps references to outside registries
// onto the appliance's (Mapper), rewriting manifests so (appliance
// rewrite). It names the file and line of what it cannot parse.
package refs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"go.yaml.in/yaml/v3"

	"github.com/appliance-dev/appliance/internal/bundle"
)

// ErrSyntax marks YAML or JSON that does not parse; the message names
// the file and line.
var ErrSyntax = errors.New("unparsable YAML or JSON")

// ImageRef is one image reference found in an input, with where it is.
type ImageRef struct {
	Ref  string `json:"ref"`
	File string `json:"file"`
	Line int    `json:"line"`
	// comp is set for a reference composed of several keys.
	comp *composed
}

// composed is where the repository of a composed reference is written:
// its line and value, and the image name a ClusterPolicy appends to it.
type composed struct {
	repoLine int
	repo     string
	image    string
}

// Where is file:line.
func (i ImageRef) Where() string {
	if i.Line == 0 {
		return i.File
	}
	return fmt.Sprintf("%s:%d", i.File, i.Line)
}

// Docs decodes every document of a YAML (or JSON) file, naming the
// file and line of a syntax error.
func Docs(file string, data []byte) ([]*yaml.Node, error) {
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		// JSON (a pods dump): YAML would accept some broken JSON.
		if jerr := JSONLine(data); jerr != "" {
			return nil, fmt.Errorf("%w: %s: %s", ErrSyntax, file, jerr)
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for i := 0; i < 100000; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %s", ErrSyntax, file, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		docs = append(docs, &n)
	}
	return nil, fmt.Errorf("%w: %s: more than 100000 documents", ErrSyntax, file)
}

// JSONLine names the line of a JSON syntax error ("" when it parses).
func JSONLine(data []byte) string {
	var v any
	err := json.Unmarshal(data, &v)
	if err == nil {
		return ""
	}
	var se *json.SyntaxError
	off := int64(-1)
	if errors.As(err, &se) {
		off = se.Offset
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		off = te.Offset
	}
	if off < 0 {
		return err.Error()
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return fmt.Sprintf("line %d: %v", bytes.Count(data[:off], []byte("\n"))+1, err)
}

// ExtractImages finds every image reference of Kubernetes manifests
// (Deployments, DaemonSets, Pods, Helm-rendered YAML, multi-document), the
// GPU Operator's ClusterPolicy (repository, image, version), NIM operator
// resources (image: {repository, tag}) and `kubectl get pods -o json`
// dumps, each with its line.
func ExtractImages(file string, data []byte) ([]ImageRef, error) {
	docs, err := Docs(file, data)
	if err != nil {
		return nil, err
	}
	var out []ImageRef
	seen := map[string]bool{}
	add := func(ref string, line int, comp *composed) {
		ref = strings.TrimSpace(ref)
		if ref == "" || seen[fmt.Sprint(ref, line)] {
			return
		}
		if _, err := name.ParseReference(ref); err != nil {
			return
		}
		seen[fmt.Sprint(ref, line)] = true
		out = append(out, ImageRef{Ref: ref, File: file, Line: line, comp: comp})
	}
	for _, d := range docs {
		walkImages(d, "", add)
	}
	return out, nil
}

// walkImages visits a YAML tree: a string under the key "image" (or a
// NIMCache's "modelPuller") is a reference; a map with [registry,]
// repository and tag, or the ClusterPolicy's repository, image and
// version, makes one.
func walkImages(n *yaml.Node, key string, add func(string, int, *composed)) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			walkImages(c, key, add)
		}
	case yaml.AliasNode:
		// Aliases repeat what their anchor already gave.
	case yaml.ScalarNode:
		if (key == "image" || key == "modelPuller") && n.Tag == "!!str" && n.Value != "" {
			add(n.Value, n.Line, nil)
		}
	case yaml.MappingNode:
		fields := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			fields[n.Content[i].Value] = n.Content[i+1]
		}
		scalar := func(k string) (string, bool) {
			v, ok := fields[k]
			if !ok || v.Kind != yaml.ScalarNode || v.Value == "" {
				return "", false
			}
			return v.Value, true
		}
		repo, hasRepo := scalar("repository")
		if img, ok := scalar("image"); ok && hasRepo {
			// ClusterPolicy: repository nvcr.io/nvidia, image gpu-operator, version v24.9.0 (or sha256:…).
			ref := strings.TrimSuffix(repo, "/") + "/" + img
			if ver, ok := scalar("version"); ok {
				ref += versionSuffix(ver)
			}
			add(ref, fields["image"].Line, &composed{repoLine: fields["repository"].Line, repo: repo, image: img})
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value != "image" {
					walkImages(n.Content[i+1], n.Content[i].Value, add)
				}
			}
			return
		}
		if tag, ok := scalar("tag"); ok && hasRepo && (strings.Contains(repo, "/") || key == "image") {
			// NIMService spec.image, Helm values: [registry +] repository + tag.
			var comp *composed
			if reg, ok := scalar("registry"); ok {
				repo = strings.TrimSuffix(reg, "/") + "/" + repo
			} else {
				comp = &composed{repoLine: fields["repository"].Line, repo: repo}
			}
			add(repo+versionSuffix(tag), fields["repository"].Line, comp)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkImages(n.Content[i+1], n.Content[i].Value, add)
		}
	}
}

func versionSuffix(v string) string {
	if strings.HasPrefix(v, "sha256:") {
		return "@" + v
	}
	return ":" + v
}

// Mapper turns outside references into the appliance's: by the signed
// inventory's source → destination when it lists the image, else as
// bundles land by default (the source's path and tag without its registry
// host; docker.io's official images under library/).
type Mapper struct {
	// Host is the appliance's registry host (name:port).
	Host string
	// Local are the host names (with port) that already mean the appliance.
	Local    map[string]bool
	bySource map[string]string // source repo[:tag] or repo@digest → destination repo[:tag]
}

// NewMapper builds a mapper for host, with the inventory's artifacts (nil
// for none).
func NewMapper(host string, names []string, inv *bundle.Inventory) *Mapper {
	m := &Mapper{Host: host, Local: map[string]bool{host: true}, bySource: map[string]string{}}
	_, port, _ := strings.Cut(host, ":")
	for _, n := range names {
		m.Local[n] = true
		if port != "" {
			m.Local[n+":"+port] = true
		}
	}
	if inv != nil {
		for _, a := range inv.Artifacts {
			if a.Kind != bundle.KindImage && a.Kind != bundle.KindBundle {
				continue
			}
			src := a.Source
			if i := strings.Index(src, "@"); i >= 0 {
				m.bySource[src[i+1:]] = a.Destination
				src = src[:i]
			}
			if r, err := name.ParseReference(src); err == nil {
				m.bySource[r.Name()] = a.Destination
			}
		}
	}
	return m
}

// Outside tells whether ref names another registry than the appliance.
func (m *Mapper) Outside(ref string) bool {
	r, err := name.ParseReference(ref)
	if err != nil {
		return false
	}
	return !m.Local[r.Context().RegistryStr()]
}

// Map returns the appliance's reference for ref (ref itself when it
// already names the appliance).
func (m *Mapper) Map(ref string) (string, error) {
	tagPart, digest, _ := strings.Cut(ref, "@")
	r, err := name.ParseReference(tagPart)
	if err != nil {
		return "", fmt.Errorf("%q is not an image reference: %w", ref, err)
	}
	if m.Local[r.Context().RegistryStr()] {
		return ref, nil
	}
	dest := ""
	if digest != "" {
		dest = m.bySource[digest]
	}
	if dest == "" {
		dest = m.bySource[r.Name()]
	}
	if dest == "" {
		dest = r.Context().RepositoryStr()
		if t, ok := r.(name.Tag); ok && (strings.Contains(tagPart[strings.LastIndex(tagPart, "/")+1:], ":") || digest == "") {
			dest += ":" + t.TagStr()
		}
	} else if digest != "" {
		// The destination's tag is not the digest's: keep only the repository.
		dest, _, _ = strings.Cut(dest, "@")
		if i := strings.LastIndex(dest, ":"); i > strings.LastIndex(dest, "/") {
			dest = dest[:i]
		}
	}
	out := m.Host + "/" + dest
	if digest != "" {
		out += "@" + digest
	}
	return out, nil
}

// Replacement is one reference Rewrite replaced, or could not.
type Replacement struct {
	Ref, Where, Local string
	// ByHand: composed of several keys that could not be rewritten where
	// they are (a Helm registry key, another name or tag); Note says what
	// to do.
	ByHand bool
	Note   string
}

// Rewrite returns data with every outside image reference ExtractImages
// finds replaced by the appliance's, and what it replaced. Only the
// reference text on its own line changes; comments and layout stay.
func (m *Mapper) Rewrite(file string, data []byte) ([]byte, []Replacement, error) {
	refs, err := ExtractImages(file, data)
	if err != nil {
		return nil, nil, err
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	var done []Replacement
	for _, ir := range refs {
		if !m.Outside(ir.Ref) || ir.Line < 1 || ir.Line > len(lines) {
			continue
		}
		local, err := m.Map(ir.Ref)
		if err != nil {
			continue
		}
		line := lines[ir.Line-1]
		if c := ir.comp; c != nil && c.repoLine >= 1 && c.repoLine <= len(lines) {
			if repo, ok := composedRepo(ir.Ref, local, c.image); ok && bytes.Contains(lines[c.repoLine-1], []byte(c.repo)) {
				lines[c.repoLine-1] = bytes.Replace(lines[c.repoLine-1], []byte(c.repo), []byte(repo), 1)
				done = append(done, Replacement{Ref: ir.Ref, Where: ir.Where(), Local: local, Note: "its repository key rewritten"})
				continue
			}
		}
		if bytes.Contains(line, []byte(ir.Ref)) {
			lines[ir.Line-1] = bytes.Replace(line, []byte(ir.Ref), []byte(local), 1)
			done = append(done, Replacement{Ref: ir.Ref, Where: ir.Where(), Local: local})
		} else {
			// Composed (ClusterPolicy, repository + tag): the parts are rewritten where they are.
			done = append(done, Replacement{Ref: ir.Ref, Where: ir.Where(), Local: local, ByHand: true,
				Note: "composed from several keys: set the repository keys to " + m.Host + " by hand"})
		}
	}
	return bytes.Join(lines, nil), done, nil
}

// composedRepo is the repository key that makes local from a composed
// reference: local without its tag or digest (and, for a ClusterPolicy,
// without the image name the policy appends). Only when the tag or
// digest is unchanged, which the other keys hold.
func composedRepo(ref, local, image string) (string, bool) {
	suffix := func(r string) (string, string) {
		if i := strings.Index(r, "@"); i >= 0 {
			return r[:i], r[i:]
		}
		if i := strings.LastIndex(r, ":"); i > strings.LastIndex(r, "/") {
			return r[:i], r[i:]
		}
		return r, ""
	}
	_, want := suffix(ref)
	repo, got := suffix(local)
	if want != got {
		return "", false
	}
	if image != "" {
		if !strings.HasSuffix(repo, "/"+image) {
			return "", false
		}
		repo = strings.TrimSuffix(repo, "/"+image)
	}
	return repo, true
}
