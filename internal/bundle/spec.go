package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Spec is what `appliance bundle create -f SPEC.yaml` reads. Whatever else
// it grows, these keys keep their meaning: images: [{ref, platforms}],
// bundles: [{ref}], files: [{path or url, kind}], apt: [...].
type Spec struct {
	// Name names the bundle in its inventory and the import history.
	Name string `yaml:"name"`
	// Images keep their repository path and tag without the source
	// registry's host unless they set a destination.
	Images  []ImageSpec        `yaml:"images"`
	Bundles []ImgpkgBundleSpec `yaml:"bundles"`
	Files   []FileSpec         `yaml:"files"`
	Apt     []AptSpec          `yaml:"apt"`
}

// Lifecycle is what every artifact records: its version and the event that
// should trigger a refresh ("driver or NVAIE version bump", "new model or
// GPU type").
type Lifecycle struct {
	Version string `yaml:"version"`
	Refresh string `yaml:"refresh"`
}

// ImageSpec is one image by reference (tag or digest).
type ImageSpec struct {
	Ref string `yaml:"ref"`
	// Platforms keeps only these platforms of an index ("linux/amd64");
	// empty keeps all.
	Platforms []string `yaml:"platforms"`
	// Destination is "project/repo[:tag]"; default: the source's path and tag.
	Destination string `yaml:"destination"`
	// Signatures, Attestations, SBOMs and Referrers carry cosign's
	// .sig/.att/.sbom tags and OCI referrers; all default to true.
	Signatures   *bool `yaml:"signatures"`
	Attestations *bool `yaml:"attestations"`
	SBOMs        *bool `yaml:"sboms"`
	Referrers    *bool `yaml:"referrers"`
	Lifecycle    `yaml:",inline"`
}

// ImgpkgBundleSpec is an imgpkg bundle, followed through .imgpkg/images.yml.
type ImgpkgBundleSpec struct {
	Ref         string `yaml:"ref"`
	Destination string `yaml:"destination"`
	Lifecycle   `yaml:",inline"`
}

// FileSpec is a file carried as is: a NIM model-profile cache, a driver,
// an ISO. Exactly one of Path and URL.
type FileSpec struct {
	Path string `yaml:"path"`
	URL  string `yaml:"url"`
	// Kind says what it is: nim-profile, driver, iso, file…
	Kind string `yaml:"kind"`
	// Name is where it lands in the file store; default: the base name.
	Name string `yaml:"name"`
	// SHA256, when given, must match what is fetched.
	SHA256 string `yaml:"sha256"`
	// Metadata is carried to the inventory: for a NIM profile, its
	// image digest, profile id and GPU.
	Metadata  map[string]string `yaml:"metadata"`
	Lifecycle `yaml:",inline"`
}

// AptSpec is apt content mirrored from an upstream archive.
type AptSpec struct {
	URL           string   `yaml:"url"`
	Distributions []string `yaml:"distributions"`
	Components    []string `yaml:"components"`
	Architectures []string `yaml:"architectures"`
	Packages      []string `yaml:"packages"`
	// Keyring verifies the upstream's signed Release.
	Keyring string `yaml:"keyring"`
	// Repo is the apt repository it lands in on the appliance.
	Repo      string `yaml:"repo"`
	Lifecycle `yaml:",inline"`
}

// ErrInvalidSpec marks a spec that failed validation.
var ErrInvalidSpec = errors.New("invalid bundle spec")

// ParseSpec reads a spec strictly (unknown keys are errors) and validates
// it, reporting every problem at once.
func ParseSpec(r io.Reader) (*Spec, error) {
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s Spec
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the spec is empty", ErrInvalidSpec)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	return &s, s.Validate()
}

// Validate reports every problem of the spec at once.
func (s *Spec) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if len(s.Images)+len(s.Bundles)+len(s.Files)+len(s.Apt) == 0 {
		bad("the spec lists nothing: give images, bundles, files or apt")
	}
	for i, im := range s.Images {
		if strings.TrimSpace(im.Ref) == "" {
			bad("images[%d].ref: required", i)
		}
		for _, p := range im.Platforms {
			if parts := strings.Split(p, "/"); len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
				bad("images[%d].platforms: %q is not os/arch[/variant]", i, p)
			}
		}
	}
	for i, b := range s.Bundles {
		if strings.TrimSpace(b.Ref) == "" {
			bad("bundles[%d].ref: required", i)
		}
	}
	names := map[string]int{}
	for i, f := range s.Files {
		switch {
		case f.Path == "" && f.URL == "":
			bad("files[%d]: give path or url", i)
		case f.Path != "" && f.URL != "":
			bad("files[%d]: give path or url, not both", i)
		case f.URL != "":
			if u, err := url.Parse(f.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad("files[%d].url %q: want an http(s) URL", i, f.URL)
			}
		}
		if f.Kind == "" {
			bad("files[%d].kind: required (nim-profile, driver, iso, file, ...)", i)
		}
		if f.SHA256 != "" && (len(f.SHA256) != 64 || strings.Trim(strings.ToLower(f.SHA256), "0123456789abcdef") != "") {
			bad("files[%d].sha256: %q is not 64 hex digits", i, f.SHA256)
		}
		if f.Kind == "nim-profile" {
			for _, k := range []string{"image", "profile", "gpu"} {
				if f.Metadata[k] == "" {
					bad("files[%d].metadata.%s: a nim-profile needs the NIM image digest, profile id and GPU", i, k)
				}
			}
		}
		name := f.Name
		if name == "" {
			name = baseName(f.Path + f.URL)
		}
		if j, dup := names[name]; dup {
			bad("files[%d]: lands as %q, like files[%d]; set name", i, name, j)
		}
		names[name] = i
	}
	for i, a := range s.Apt {
		if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("apt[%d].url %q: want an http(s) URL of the upstream archive", i, a.URL)
		}
		if len(a.Distributions) == 0 {
			bad("apt[%d].distributions: at least one", i)
		}
		if len(a.Packages) == 0 {
			bad("apt[%d].packages: at least one (dependencies are added)", i)
		}
		if a.Keyring == "" {
			bad("apt[%d].keyring: required, to verify the upstream's signed Release", i)
		}
		if a.Repo == "" {
			bad("apt[%d].repo: the appliance's apt repository it lands in", i)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n  %s", ErrInvalidSpec, strings.Join(errs, "\n  "))
}

func baseName(p string) string {
	p = strings.TrimRight(p, "/")
	if i := strings.LastIndex(p, "/"); i >= 0 {
		p = p[i+1:]
	}
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	return p
}
