package refs

import (
	"bytes"
	"testing"

	"github.com/appliance-dev/appliance/internal/bundle"
)

const manifests = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: docker.io/library/busybox:1.36
      containers:
        - name: web
          image: nginx:1.25
---
apiVersion: nvidia.com/v1
kind: ClusterPolicy
spec:
  driver:
    repository: nvcr.io/nvidia
    image: driver
    version: "550.127.05"
  toolkit:
    repository: nvcr.io/nvidia/k8s
    image: container-toolkit
    version: sha256:1111111111111111111111111111111111111111111111111111111111111111
---
apiVersion: apps.nvidia.com/v1alpha1
kind: NIMService
spec:
  image:
    repository: nvcr.io/nim/meta/llama3-8b-instruct
    tag: "1.0.0"
---
kind: NIMCache
spec:
  source:
    ngc:
      modelPuller: nvcr.io/nim/meta/llama3-8b-instruct:1.0.3
---
# Helm values
image:
  registry: docker.io
  repository: bitnami
  tag: "1.25"
`

func TestExtractImages(t *testing.T) {
	t.Parallel()
	refs, err := ExtractImages("app.yaml", []byte(manifests))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"docker.io/library/busybox:1.36":   9,
		"nginx:1.25":                       12,
		"nvcr.io/nvidia/driver:550.127.05": 19,
		"nvcr.io/nvidia/k8s/container-toolkit@sha256:1111111111111111111111111111111111111111111111111111111111111111": 23,
		"nvcr.io/nim/meta/llama3-8b-instruct:1.0.0": 30,
		"nvcr.io/nim/meta/llama3-8b-instruct:1.0.3": 37,
		"docker.io/bitnami:1.25":                    42,
	}
	got := map[string]int{}
	for _, r := range refs {
		got[r.Ref] = r.Line
	}
	for ref, line := range want {
		if got[ref] != line {
			t.Errorf("%s: line %d, want %d (all: %v)", ref, got[ref], line, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("found %v, want %v", got, want)
	}
	pods := `{"items": [
  {"spec": {"containers": [{"name": "a", "image": "nvcr.io/nvidia/gpu-operator:v24.9.0"}]},
   "status": {"containerStatuses": [{"image": "nvcr.io/nvidia/gpu-operator:v24.9.0", "imageID": "x"}]}}
]}`
	refs, err = ExtractImages("pods.json", []byte(pods))
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 2 || refs[0].Ref != "nvcr.io/nvidia/gpu-operator:v24.9.0" || refs[0].Line != 2 {
		t.Errorf("pods: %+v", refs)
	}
}

func TestMapperAndRewrite(t *testing.T) {
	t.Parallel()
	inv := &bundle.Inventory{Artifacts: []bundle.Artifact{{Kind: bundle.KindImage, Source: "nvcr.io/nvidia/gpu-operator:v24.9.0@sha256:aaaa", Destination: "gpu/operator:v24.9.0"}}}
	m := NewMapper("registry.enclave:8443", []string{"registry.enclave"}, inv)
	for ref, want := range map[string]string{
		"nginx:1.25":                          "registry.enclave:8443/library/nginx:1.25",
		"nvcr.io/nvidia/gpu-operator:v24.9.0": "registry.enclave:8443/gpu/operator:v24.9.0",
		"nvcr.io/nvidia/driver:550":           "registry.enclave:8443/nvidia/driver:550",
		"quay.io/a/b@sha256:1111111111111111111111111111111111111111111111111111111111111111": "registry.enclave:8443/a/b@sha256:1111111111111111111111111111111111111111111111111111111111111111",
		"registry.enclave:8443/library/x:1":                                                   "registry.enclave:8443/library/x:1",
	} {
		got, err := m.Map(ref)
		if err != nil || got != want {
			t.Errorf("Map(%s) = %s, %v; want %s", ref, got, err, want)
		}
	}
	out, done, err := m.Rewrite("app.yaml", []byte(manifests))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"image: registry.enclave:8443/library/busybox:1.36", "image: registry.enclave:8443/library/nginx:1.25", "# nothing"} {
		if want == "# nothing" {
			continue
		}
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("rewritten lacks %q:\n%s", want, out)
		}
	}
	if bytes.Contains(out, []byte("image: nginx")) {
		t.Errorf("nginx left unreplaced:\n%s", out)
	}
	for _, want := range []string{"repository: registry.enclave:8443/nvidia\n", "repository: registry.enclave:8443/nvidia/k8s\n",
		"repository: registry.enclave:8443/nim/meta/llama3-8b-instruct\n", "modelPuller: registry.enclave:8443/nim/meta/llama3-8b-instruct:1.0.3"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("rewritten lacks %q:\n%s", want, out)
		}
	}
	byHand := 0
	for _, f := range done {
		if f.ByHand {
			byHand++
		}
	}
	// Helm's registry + repository + tag is named for a change by hand.
	if byHand != 1 {
		t.Errorf("want 1 reference named for a change by hand: %+v", done)
	}
	if again, err := ExtractImages("app.yaml", out); err != nil || len(again) != 7 {
		t.Errorf("the rewritten manifests: %v %+v", err, again)
	} else {
		for _, r := range again {
			if m.Outside(r.Ref) && r.Ref != "docker.io/bitnami:1.25" {
				t.Errorf("still outside after rewrite: %s (line %d)", r.Ref, r.Line)
			}
		}
	}
}
