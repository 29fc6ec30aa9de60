package vsphere

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Limits on what FindPackages reads.
const (
	// MaxYAMLFile is the largest YAML file of a bundle layer FindPackages
	// reads; a bigger one is refused with ErrTooLarge.
	MaxYAMLFile = 4 << 20
	// MaxYAMLTotal bounds all the YAML of one layer together.
	MaxYAMLTotal = 64 << 20
	// MaxLayer bounds the (decompressed) tar stream of one layer.
	MaxLayer = 1 << 30
)

// carvelAPIVersion is the apiVersion of Package and PackageMetadata.
const carvelAPIVersion = "data.packaging.carvel.dev/v1alpha1"

// Package is a Carvel Package and its PackageMetadata, found in a bundle
// layer. The zero value is not useful; FindPackages makes them.
type Package struct {
	// Name is the Package's metadata.name, e.g. "harbor.tanzu.vmware.com.2.9.1".
	Name string
	// RefName is spec.refName: the PackageMetadata's name, which vCenter
	// uses as the Supervisor Service id.
	RefName string
	// Version is spec.version, which vCenter uses as the service version.
	Version string
	// Images are the spec.template.spec.fetch[].imgpkgBundle.image
	// references, in order.
	Images []string
	// DisplayName and ShortDescription come from the PackageMetadata.
	DisplayName      string
	ShortDescription string
	// Source and MetadataSource are the tar entries that held the Package
	// and its PackageMetadata.
	Source         string
	MetadataSource string

	pkgDoc  []byte // the Package document, re-encoded from its yaml.Node
	metaDoc []byte // the PackageMetadata document, likewise
}

// k8sObject is what every document is first read as.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
}

type carvelPackage struct {
	Spec struct {
		RefName  string `yaml:"refName"`
		Version  string `yaml:"version"`
		Template struct {
			Spec struct {
				Fetch []struct {
					ImgpkgBundle *struct {
						Image string `yaml:"image"`
					} `yaml:"imgpkgBundle"`
				} `yaml:"fetch"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type carvelMetadata struct {
	Spec struct {
		DisplayName      string `yaml:"displayName"`
		ShortDescription string `yaml:"shortDescription"`
	} `yaml:"spec"`
}

// metadataDoc is a PackageMetadata found in a layer.
type metadataDoc struct {
	name, source            string
	displayName, shortDescr string
	doc                     []byte
}

// FindPackages reads one layer of an imgpkg bundle (a tar, gzip-compressed
// or not) and returns every Carvel Package in its YAML files (.yml, .yaml;
// multi-document files too), each paired with the PackageMetadata whose
// metadata.name is the Package's spec.refName, sorted by name.
//
// A layer without any Package gives ErrNoPackage; a Package without its
// metadata ErrNoPackageMetadata; a YAML file over MaxYAMLFile, or a layer
// over MaxYAMLTotal of YAML or MaxLayer in all, ErrTooLarge; an absolute
// entry name or one with "..", ErrUnsafePath. YAML files that do not parse
// are skipped (ErrNoPackage says how many there were), and so are other
// files, links and directories.
func FindPackages(layer io.Reader) ([]Package, error) {
	br := bufio.NewReader(layer)
	var r io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read bundle layer: gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	limited := &io.LimitedReader{R: r, N: MaxLayer + 1}
	tr := tar.NewReader(limited)

	var (
		pkgs      []Package
		metas     = map[string]metadataDoc{}
		yamlFiles int
		total     int64
		unparsed  []string
	)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if limited.N <= 0 {
			return nil, fmt.Errorf("read bundle layer: %w: it expands beyond %d bytes", ErrTooLarge, int64(MaxLayer))
		}
		if err != nil {
			return nil, fmt.Errorf("read bundle layer: %w", err)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return nil, fmt.Errorf("read bundle layer: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg || !isYAML(name) {
			continue
		}
		if hdr.Size > MaxYAMLFile {
			return nil, fmt.Errorf("read bundle layer: %w: %s holds %d bytes of YAML, the limit is %d",
				ErrTooLarge, name, hdr.Size, MaxYAMLFile)
		}
		if total += hdr.Size; total > MaxYAMLTotal {
			return nil, fmt.Errorf("read bundle layer: %w: more than %d bytes of YAML", ErrTooLarge, MaxYAMLTotal)
		}
		data, err := io.ReadAll(io.LimitReader(tr, MaxYAMLFile+1))
		if err != nil {
			return nil, fmt.Errorf("read bundle layer: %s: %w", name, err)
		}
		yamlFiles++
		filePkgs, fileMetas, err := parseCarvel(name, data)
		if err != nil {
			unparsed = append(unparsed, fmt.Sprintf("%s: %v", name, err))
		}
		pkgs = append(pkgs, filePkgs...)
		for _, m := range fileMetas {
			if prev, dup := metas[m.name]; dup {
				return nil, fmt.Errorf("read bundle layer: PackageMetadata %q twice, in %s and %s", m.name, prev.source, m.source)
			}
			metas[m.name] = m
		}
	}
	if limited.N <= 0 {
		return nil, fmt.Errorf("read bundle layer: %w: it expands beyond %d bytes", ErrTooLarge, int64(MaxLayer))
	}

	if len(pkgs) == 0 {
		msg := fmt.Sprintf("%d YAML files read", yamlFiles)
		if len(unparsed) > 0 {
			msg += fmt.Sprintf(", %d did not parse (%s)", len(unparsed), strings.Join(unparsed, "; "))
		}
		return nil, fmt.Errorf("%w: %s", ErrNoPackage, msg)
	}
	slices.SortFunc(pkgs, func(a, b Package) int { return strings.Compare(a.Name, b.Name) })
	for i := range pkgs {
		p := &pkgs[i]
		if i > 0 && pkgs[i-1].Name == p.Name {
			return nil, fmt.Errorf("read bundle layer: Package %q twice, in %s and %s", p.Name, pkgs[i-1].Source, p.Source)
		}
		m, ok := metas[p.RefName]
		if !ok {
			return nil, fmt.Errorf("%w: Package %q (%s) has spec.refName %q, and no PackageMetadata has that name",
				ErrNoPackageMetadata, p.Name, p.Source, p.RefName)
		}
		p.DisplayName, p.ShortDescription, p.MetadataSource, p.metaDoc = m.displayName, m.shortDescr, m.source, m.doc
	}
	return pkgs, nil
}

// entryName cleans a tar entry name and refuses one that is absolute or
// climbs out with "..".
func entryName(name string) (string, error) {
	clean := path.Clean(strings.ReplaceAll(name, "\\", "/"))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%w: %q", ErrUnsafePath, name)
	}
	return clean, nil
}

func isYAML(name string) bool {
	ext := strings.ToLower(path.Ext(name))
	return ext == ".yml" || ext == ".yaml"
}

// parseCarvel reads every document of one YAML file and keeps the Carvel
// Packages and PackageMetadata among them. An error means the file stopped
// parsing; what was found before is still returned.
func parseCarvel(source string, data []byte) ([]Package, []metadataDoc, error) {
	var (
		pkgs  []Package
		metas []metadataDoc
	)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return pkgs, metas, nil
		}
		if err != nil {
			return pkgs, metas, err
		}
		if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
			continue
		}
		var obj k8sObject
		if err := doc.Decode(&obj); err != nil || obj.APIVersion != carvelAPIVersion {
			continue
		}
		switch obj.Kind {
		case "Package":
			var cp carvelPackage
			if err := doc.Decode(&cp); err != nil {
				return pkgs, metas, fmt.Errorf("the Package %q: %w", obj.Metadata.Name, err)
			}
			raw, err := encodeDoc(&doc)
			if err != nil {
				return pkgs, metas, fmt.Errorf("the Package %q: %w", obj.Metadata.Name, err)
			}
			p := Package{
				Name:    obj.Metadata.Name,
				RefName: cp.Spec.RefName,
				Version: cp.Spec.Version,
				Source:  source,
				pkgDoc:  raw,
			}
			for _, f := range cp.Spec.Template.Spec.Fetch {
				if f.ImgpkgBundle != nil {
					p.Images = append(p.Images, f.ImgpkgBundle.Image)
				}
			}
			pkgs = append(pkgs, p)
		case "PackageMetadata":
			var cm carvelMetadata
			if err := doc.Decode(&cm); err != nil {
				return pkgs, metas, fmt.Errorf("the PackageMetadata %q: %w", obj.Metadata.Name, err)
			}
			raw, err := encodeDoc(&doc)
			if err != nil {
				return pkgs, metas, fmt.Errorf("the PackageMetadata %q: %w", obj.Metadata.Name, err)
			}
			metas = append(metas, metadataDoc{
				name: obj.Metadata.Name, source: source,
				displayName: cm.Spec.DisplayName, shortDescr: cm.Spec.ShortDescription,
				doc: raw,
			})
		}
	}
}

// encodeDoc encodes one document node, keeping its comments and styles.
func encodeDoc(doc *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	enc.CompactSeqIndent() // "- " under its key, as Kubernetes YAML is written
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WithImage returns the PackageMetadata and the Package as one two-document
// YAML, with every spec.template.spec.fetch[].imgpkgBundle.image replaced by
// ref and everything else (fields, order, comments) kept. This is what
// vCenter wants, base64-encoded, as a Carvel Supervisor Service version.
func (p Package) WithImage(ref string) ([]byte, error) {
	if err := checkImageRef(ref); err != nil {
		return nil, fmt.Errorf("package %q: %w", p.Name, err)
	}
	if len(p.pkgDoc) == 0 || len(p.metaDoc) == 0 {
		return nil, fmt.Errorf("package %q: not read by FindPackages", p.Name)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(p.pkgDoc, &doc); err != nil {
		return nil, fmt.Errorf("package %q: %w", p.Name, err)
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("package %q: empty document", p.Name)
	}
	n := 0
	fetch := lookup(doc.Content[0], "spec", "template", "spec", "fetch")
	if fetch != nil && fetch.Kind == yaml.SequenceNode {
		for _, item := range fetch.Content {
			img := lookup(item, "imgpkgBundle", "image")
			if img == nil {
				continue
			}
			if img.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("package %q: imgpkgBundle.image is not a string", p.Name)
			}
			img.Value, img.Tag = ref, "!!str"
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("package %q: no spec.template.spec.fetch[].imgpkgBundle.image to re-point", p.Name)
	}
	pkg, err := encodeDoc(&doc)
	if err != nil {
		return nil, fmt.Errorf("package %q: %w", p.Name, err)
	}
	out := make([]byte, 0, len(p.metaDoc)+len(pkg)+4)
	out = append(out, p.metaDoc...)
	out = append(out, "---\n"...)
	return append(out, pkg...), nil
}

// lookup follows mapping keys from n, through aliases; nil if a key is
// missing or a node on the way is not a mapping.
func lookup(n *yaml.Node, keys ...string) *yaml.Node {
	for _, key := range keys {
		for n != nil && n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
				break
			}
		}
		n = next
	}
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// checkImageRef refuses what cannot be an image reference with a registry.
func checkImageRef(ref string) error {
	switch {
	case ref == "":
		return errors.New("empty image reference")
	case strings.ContainsAny(ref, " \t\r\n\"'"):
		return fmt.Errorf("image reference %q holds whitespace or quotes", ref)
	case !strings.Contains(ref, "/"):
		return fmt.Errorf("image reference %q names no registry", ref)
	}
	return nil
}

// imageHost is the registry part of an image reference: what comes before
// the first slash.
func imageHost(ref string) string {
	host, _, _ := strings.Cut(ref, "/")
	return host
}
