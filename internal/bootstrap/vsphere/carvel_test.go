package vsphere_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere"
)

const metadataYAML = `apiVersion: data.packaging.carvel.dev/v1alpha1
kind: PackageMetadata
metadata:
  name: harbor.tanzu.vmware.com
spec:
  displayName: Harbor
  shortDescription: An OCI registry, for the Supervisor
  providerName: VMware
`

// packageYAML has what a real Package has around its imgpkgBundle: a
// comment, a values schema, a plain image fetch, templates and a deploy.
const packageYAML = `# The Harbor package for the Supervisor.
apiVersion: data.packaging.carvel.dev/v1alpha1
kind: Package
metadata:
  name: harbor.tanzu.vmware.com.2.9.1+vmware.1
spec:
  refName: harbor.tanzu.vmware.com
  version: 2.9.1+vmware.1
  releaseNotes: "harbor 2.9.1: https://github.com/goharbor/harbor/releases/tag/v2.9.1"
  valuesSchema:
    openAPIv3:
      type: object
      properties:
        hostname: {type: string, default: harbor.example}
  template:
    spec:
      fetch:
      - imgpkgBundle:
          image: projects.registry.vmware.com/tkg/packages/harbor@sha256:0123456789abcdef # upstream
      - imgpkgBundle:
          image: projects.registry.vmware.com/tkg/packages/harbor-extras:v1
      - image:
          url: projects.registry.vmware.com/tkg/plain:v1
      template:
      - ytt:
          paths: [config/]
      - kbld:
          paths: ["-", .imgpkg/images.yml]
      deploy:
      - kapp: {}
`

const imagesLockYAML = `apiVersion: imgpkg.carvel.dev/v1alpha1
kind: ImagesLock
images:
- image: projects.registry.vmware.com/tkg/harbor-core@sha256:feed
`

// dataValuesYAML is a ytt file: valid YAML, not a Carvel object.
const dataValuesYAML = `#@data/values
---
hostname: harbor.example
`

// packageVersion makes a second version of the Package.
func packageVersion(v string) string {
	return strings.NewReplacer("2.9.1+vmware.1", v).Replace(packageYAML)
}

type tarFile struct {
	name string
	body string
	typ  byte // tar.TypeReg when zero
}

// makeLayer writes files as a tar, gzip-compressed if gz.
func makeLayer(t testing.TB, gz bool, files ...tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, f := range files {
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: f.name, Typeflag: typ, Mode: 0o644}
		switch typ {
		case tar.TypeReg:
			hdr.Size = int64(len(f.body))
		case tar.TypeSymlink:
			hdr.Linkname = f.body
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := io.WriteString(tw, f.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// harborLayer is a bundle layer as imgpkg makes one: config and .imgpkg.
func harborLayer(t testing.TB) []byte {
	t.Helper()
	return makeLayer(t, true,
		tarFile{name: "config/", typ: tar.TypeDir},
		tarFile{name: "config/package.yml", body: metadataYAML + "---\n" + packageYAML},
		tarFile{name: "config/values.yml", body: dataValuesYAML},
		tarFile{name: ".imgpkg/images.yml", body: imagesLockYAML},
		tarFile{name: "README.md", body: "not YAML"},
	)
}

func TestFindPackages(t *testing.T) {
	t.Parallel()
	harbor := vsphere.Package{
		Name:    "harbor.tanzu.vmware.com.2.9.1+vmware.1",
		RefName: "harbor.tanzu.vmware.com",
		Version: "2.9.1+vmware.1",
		Images: []string{
			"projects.registry.vmware.com/tkg/packages/harbor@sha256:0123456789abcdef",
			"projects.registry.vmware.com/tkg/packages/harbor-extras:v1",
		},
		DisplayName:      "Harbor",
		ShortDescription: "An OCI registry, for the Supervisor",
		Source:           "config/package.yml",
		MetadataSource:   "config/package.yml",
	}
	for _, tc := range []struct {
		name  string
		layer []byte
		want  []vsphere.Package
	}{
		{"imgpkg layer, tar.gz, multi-document file", harborLayer(t), []vsphere.Package{harbor}},
		{"plain tar, metadata in a file of its own, ./ names",
			makeLayer(t, false,
				tarFile{name: "./config/metadata.yaml", body: metadataYAML},
				tarFile{name: "./config/package.yaml", body: "---\n" + packageYAML + "...\n"},
				tarFile{name: "./config/link.yml", body: "package.yaml", typ: tar.TypeSymlink},
			),
			[]vsphere.Package{with2(harbor, func(p *vsphere.Package) {
				p.Source, p.MetadataSource = "config/package.yaml", "config/metadata.yaml"
			})}},
		{"two versions sharing metadata, sorted by name",
			makeLayer(t, true,
				tarFile{name: "b.yml", body: packageVersion("3.0.0")},
				tarFile{name: "a.yml", body: packageYAML + "---\n" + metadataYAML},
			),
			[]vsphere.Package{
				with2(harbor, func(p *vsphere.Package) { p.Source, p.MetadataSource = "a.yml", "a.yml" }),
				with2(harbor, func(p *vsphere.Package) {
					p.Name, p.Version, p.Source, p.MetadataSource = "harbor.tanzu.vmware.com.3.0.0", "3.0.0", "b.yml", "a.yml"
				}),
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := vsphere.FindPackages(bytes.NewReader(tc.layer))
			if err != nil {
				t.Fatalf("FindPackages: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("FindPackages found %d packages, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				if !samePackage(got[i], tc.want[i]) {
					t.Errorf("package %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// samePackage compares the exported fields.
func samePackage(a, b vsphere.Package) bool {
	return a.Name == b.Name && a.RefName == b.RefName && a.Version == b.Version &&
		reflect.DeepEqual(a.Images, b.Images) && a.DisplayName == b.DisplayName &&
		a.ShortDescription == b.ShortDescription && a.Source == b.Source && a.MetadataSource == b.MetadataSource
}

func with2(p vsphere.Package, f func(*vsphere.Package)) vsphere.Package {
	p.Images = append([]string(nil), p.Images...)
	f(&p)
	return p
}

func TestFindPackagesRefuses(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("key: value\n", vsphere.MaxYAMLFile/11+1)
	for _, tc := range []struct {
		name     string
		layer    []byte
		want     error // nil: any error
		mentions string
	}{
		{"no Package", makeLayer(t, true,
			tarFile{name: ".imgpkg/images.yml", body: imagesLockYAML},
			tarFile{name: "config/values.yml", body: dataValuesYAML}),
			vsphere.ErrNoPackage, "2 YAML files"},
		{"only the metadata", makeLayer(t, true, tarFile{name: "m.yml", body: metadataYAML}),
			vsphere.ErrNoPackage, ""},
		{"Package in a file that is not YAML", makeLayer(t, true, tarFile{name: "package.json", body: packageYAML}),
			vsphere.ErrNoPackage, "0 YAML files"},
		{"broken YAML", makeLayer(t, false, tarFile{name: "p.yml", body: "kind: [unclosed\n"}),
			vsphere.ErrNoPackage, "did not parse"},
		{"empty tar", makeLayer(t, true), vsphere.ErrNoPackage, ""},
		{"Package without its metadata", makeLayer(t, true, tarFile{name: "p.yml", body: packageYAML}),
			vsphere.ErrNoPackageMetadata, "harbor.tanzu.vmware.com"},
		{"YAML file over the limit", makeLayer(t, true,
			tarFile{name: "config/package.yml", body: metadataYAML + "---\n" + packageYAML},
			tarFile{name: "config/huge.yml", body: big}),
			vsphere.ErrTooLarge, "config/huge.yml"},
		{"climbing out", makeLayer(t, true, tarFile{name: "../../etc/package.yml", body: packageYAML}),
			vsphere.ErrUnsafePath, "../../etc/package.yml"},
		{"absolute name", makeLayer(t, false, tarFile{name: "/config/package.yml", body: packageYAML}),
			vsphere.ErrUnsafePath, ""},
		{"the same Package twice", makeLayer(t, true,
			tarFile{name: "a.yml", body: metadataYAML + "---\n" + packageYAML},
			tarFile{name: "b.yml", body: packageYAML}),
			nil, "twice"},
		{"not a tar", []byte("this is not a tar file, not even close, and it is long enough to need a header........................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................"),
			nil, "read bundle layer"},
		{"truncated gzip", harborLayer(t)[:40], nil, "read bundle layer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pkgs, err := vsphere.FindPackages(bytes.NewReader(tc.layer))
			if err == nil {
				t.Fatalf("FindPackages = %+v, want an error", pkgs)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("FindPackages = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.mentions) {
				t.Fatalf("error %q does not mention %q", err, tc.mentions)
			}
		})
	}
}

func TestWithImage(t *testing.T) {
	t.Parallel()
	pkgs, err := vsphere.FindPackages(bytes.NewReader(harborLayer(t)))
	if err != nil {
		t.Fatal(err)
	}
	const ref = "appliance.dc.example/supervisor/harbor@sha256:fedcba9876543210"
	out, err := pkgs[0].WithImage(ref)
	if err != nil {
		t.Fatalf("WithImage: %v", err)
	}

	docs := decodeAll(t, out)
	if len(docs) != 2 || docs[0]["kind"] != "PackageMetadata" || docs[1]["kind"] != "Package" {
		t.Fatalf("WithImage gave %d documents, want the PackageMetadata then the Package:\n%s", len(docs), out)
	}
	// Everything but the two imgpkgBundle images is as it was.
	wantMeta := decodeAll(t, []byte(metadataYAML))[0]
	wantPkg := decodeAll(t, []byte(packageYAML))[0]
	fetch := wantPkg["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["fetch"].([]any)
	fetch[0].(map[string]any)["imgpkgBundle"].(map[string]any)["image"] = ref
	fetch[1].(map[string]any)["imgpkgBundle"].(map[string]any)["image"] = ref
	if !reflect.DeepEqual(docs[0], wantMeta) {
		t.Errorf("PackageMetadata changed:\n got %v\nwant %v", docs[0], wantMeta)
	}
	if !reflect.DeepEqual(docs[1], wantPkg) {
		t.Errorf("Package:\n got %v\nwant %v", docs[1], wantPkg)
	}
	for _, keep := range []string{"# The Harbor package for the Supervisor.", "# upstream", "{type: string, default: harbor.example}"} {
		if !strings.Contains(string(out), keep) {
			t.Errorf("WithImage lost %q:\n%s", keep, out)
		}
	}
	if strings.Contains(string(out), "projects.registry.vmware.com/tkg/packages") {
		t.Errorf("an old imgpkgBundle image is left:\n%s", out)
	}

	// WithImage works on a copy: the Package still has its own images.
	again, err := pkgs[0].WithImage("harbor.dc.example/supervisor/harbor:v1")
	if err != nil || strings.Contains(string(again), ref) {
		t.Fatalf("a second WithImage = %v, or kept the first image:\n%s", err, again)
	}
}

func TestWithImageRefuses(t *testing.T) {
	t.Parallel()
	pkgs, err := vsphere.FindPackages(bytes.NewReader(harborLayer(t)))
	if err != nil {
		t.Fatal(err)
	}
	noBundle := strings.NewReplacer(
		"imgpkgBundle:\n          image: projects.registry.vmware.com/tkg/packages/harbor@sha256:0123456789abcdef # upstream", "git: {url: x}",
		"imgpkgBundle:\n          image: projects.registry.vmware.com/tkg/packages/harbor-extras:v1", "git: {url: y}",
	).Replace(packageYAML)
	plain, err := vsphere.FindPackages(bytes.NewReader(makeLayer(t, false, tarFile{name: "p.yml", body: metadataYAML + "---\n" + noBundle})))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		pkg      vsphere.Package
		ref      string
		mentions string
	}{
		{"empty reference", pkgs[0], "", "empty"},
		{"reference with a space", pkgs[0], "harbor.example/a b", "whitespace"},
		{"reference without registry", pkgs[0], "harbor", "no registry"},
		{"reference with a newline", pkgs[0], "harbor.example/x\nkind: Secret", "whitespace"},
		{"Package without imgpkgBundle", plain[0], "harbor.example/x:v1", "imgpkgBundle"},
		{"Package not from FindPackages", vsphere.Package{Name: "x"}, "harbor.example/x:v1", "FindPackages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := tc.pkg.WithImage(tc.ref)
			if err == nil || !strings.Contains(err.Error(), tc.mentions) {
				t.Fatalf("WithImage(%q) = %q, %v; want an error mentioning %q", tc.ref, out, err, tc.mentions)
			}
		})
	}
}

func decodeAll(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("decode %s: %v", data, err)
		}
		docs = append(docs, doc)
	}
}

// FuzzFindPackages feeds FindPackages what crosses the gap: it must not
// panic, and what it finds must re-point.
func FuzzFindPackages(f *testing.F) {
	f.Add(harborLayer(f))
	f.Add(makeLayer(f, false, tarFile{name: "p.yml", body: metadataYAML + "---\n" + packageYAML}))
	f.Add(makeLayer(f, false, tarFile{name: "p.yml", body: "a: &a [*a, *a]\nb: *a\n"}))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, layer []byte) {
		pkgs, err := vsphere.FindPackages(bytes.NewReader(layer))
		if err != nil {
			if len(pkgs) != 0 {
				t.Fatalf("packages with an error: %v", err)
			}
			return
		}
		if len(pkgs) == 0 {
			t.Fatal("no packages and no error")
		}
		for _, p := range pkgs {
			if _, err := p.WithImage("registry.example/x:v1"); err != nil && len(p.Images) > 0 {
				t.Fatalf("WithImage of %q with images %v: %v", p.Name, p.Images, err)
			}
		}
	})
}
