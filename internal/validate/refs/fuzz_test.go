package refs

import "testing"

// FuzzExtractImages: whatever a manifest holds, extraction returns
// references or an error naming the file, never a panic.
func FuzzExtractImages(f *testing.F) {
	f.Add([]byte(manifests))
	f.Add([]byte(`{"items": [{"spec": {"containers": [{"image": "nvcr.io/a/b:1"}]}}]}`))
	f.Add([]byte("a: &x {image: nginx}\nb: *x\n"))
	f.Add([]byte("- [name, 1.0]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		refs, err := ExtractImages("f.yaml", data)
		if err != nil {
			return
		}
		for _, r := range refs {
			if r.File != "f.yaml" || r.Ref == "" {
				t.Fatalf("ref %+v", r)
			}
		}
		m := NewMapper("h:1", nil, nil)
		if _, _, err := m.Rewrite("f.yaml", data); err != nil {
			t.Fatalf("Rewrite fails where ExtractImages did not: %v", err)
		}
	})
}
