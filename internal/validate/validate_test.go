package validate

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/bundle"
)

func TestBadInputNamesFileAndLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   Input
		want string
	}{
		{"yaml", Input{Kind: InputManifests, Name: "deploy.yaml", Data: []byte("kind: Pod\nspec:\n\tcontainers: []\n")}, "deploy.yaml: line 3"},
		{"json", Input{Kind: InputPods, Name: "pods.json", Data: []byte("{\"items\": [\n  {\"spec\": }\n]}")}, "pods.json: line 2"},
		{"image list", Input{Kind: InputImages, Name: "images.txt", Data: []byte("nginx:1.25\n\nNOT A REF!\n")}, "images.txt:3"},
		{"profile key", Input{Kind: InputProfiles, Name: "p.yaml", Data: []byte("profiles:\n  - id: abc\n    imge: x\n")}, "p.yaml:2"},
		{"cloud-init", Input{Kind: InputCloudInit, Name: "user-data", Data: []byte("#cloud-config\nruncmd: [ls]\n")}, "user-data: the cloud-config installs no packages"},
		{"kind", Input{Kind: "helm", Name: "x"}, `unknown input kind "helm"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseInputs([]Input{tc.in})
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseInputs = %v, want ErrBadInput naming %q", err, tc.want)
			}
		})
	}
}

func TestCompareNamesMissingAndChanged(t *testing.T) {
	t.Parallel()
	held := &bundle.Receipt{
		Tags:  []bundle.ReceiptTag{{Repository: "nvidia/app", Tag: "1.0", Digest: "sha256:aa"}, {Repository: "nvidia/app", Tag: "old", Digest: "sha256:cc"}},
		Files: []bundle.ReceiptFile{{Name: "llama.tar", Digest: "sha256:f1"}},
	}
	inv := &bundle.Inventory{Artifacts: []bundle.Artifact{
		{Kind: bundle.KindImage, Destination: "nvidia/app:1.0", Digest: "sha256:bb"},   // changed
		{Kind: bundle.KindImage, Destination: "nvidia/extra:2.0", Digest: "sha256:dd"}, // not held
		{Kind: bundle.KindFile, Destination: "llama.tar", Digest: "sha256:f1"},         // same
	}}
	d := Compare(inv, held)
	if d.Missing != 1 || d.Different != 1 || d.Extra != 1 {
		t.Fatalf("drift %+v", d)
	}
	names := map[string]string{}
	for _, x := range d.Differences {
		names[x.Kind] = x.Name
	}
	if names[DriftMissing] != "nvidia/extra:2.0" || names[DriftDifferent] != "nvidia/app:1.0" || names[DriftExtra] != "nvidia/app:old" {
		t.Errorf("differences %+v", d.Differences)
	}
}

func testSigner(t *testing.T) (*bundle.Signer, []bundle.TrustedKey) {
	t.Helper()
	dir := t.TempDir()
	if err := bundle.GenerateKey(filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")); err != nil {
		t.Fatal(err)
	}
	s, err := bundle.LoadSigner(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := bundle.LoadTrustedKeys([]string{filepath.Join(dir, "k.pub")})
	if err != nil {
		t.Fatal(err)
	}
	return s, keys
}

func TestAgainstMustBeSignedAndTrusted(t *testing.T) {
	t.Parallel()
	s, keys := testSigner(t)
	_, other := testSigner(t)
	inv := &bundle.Inventory{SchemaVersion: 1, Name: "b", Created: time.Unix(1_700_000_000, 0).UTC()}
	data, err := inv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(data)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := s.PublicKey()
	v := &Validator{o: Options{Trust: keys}}
	if _, err := v.checkAgainst(t.Context(), &Against{Name: "inv", Inventory: data, Signature: sig, SignerKey: pub}); err != nil {
		t.Fatalf("signed and trusted: %v", err)
	}
	for name, a := range map[string]*Against{
		"unsigned":  {Name: "inv", Inventory: data},
		"edited":    {Name: "inv", Inventory: append(bytes.Clone(data), ' '), Signature: sig, SignerKey: pub},
		"garbage":   {Name: "inv", Inventory: []byte("{not json"), Signature: sig},
		"untrusted": {Name: "inv", Inventory: data, Signature: sig, SignerKey: pub},
		"empty":     {Name: "inv"},
	} {
		v := &Validator{o: Options{Trust: keys}}
		if name == "untrusted" {
			v.o.Trust = other
		}
		if _, err := v.checkAgainst(t.Context(), a); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: %v, want ErrBadInput", name, err)
		}
	}
}

type oneBlob map[string][]byte

func (m oneBlob) Open(d string) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m[d])), nil
}

// TestLoadAgainst reads the three forms --against takes: a bundle, an
// inventory.json with its .sig beside it, a receipt; and refuses others.
func TestLoadAgainst(t *testing.T) {
	t.Parallel()
	s, keys := testSigner(t)
	dir := t.TempDir()
	file := []byte("weights")
	d := sha256Hex(file)
	inv := &bundle.Inventory{SchemaVersion: 1, Name: "b", Created: time.Unix(1_700_000_000, 0).UTC(),
		Artifacts: []bundle.Artifact{{Kind: bundle.KindFile, Destination: "w.tar", Digest: d, Size: int64(len(file))}},
		Blobs:     []bundle.Blob{{Digest: d, Size: int64(len(file))}}}
	var buf bytes.Buffer
	if err := bundle.WriteArchive(&buf, inv, []byte(`{"schemaVersion":2,"manifests":[]}`), s, oneBlob{d: file}); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "b.tar")
	if err := os.WriteFile(tarPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	invData, _ := inv.Marshal()
	sig, _ := s.Sign(invData)
	invPath := filepath.Join(dir, "inventory.json")
	_ = os.WriteFile(invPath, invData, 0o600)
	_ = os.WriteFile(invPath+".sig", sig, 0o600)
	rc, _ := bundle.SignReceipt(&bundle.Receipt{Appliance: "a"}, s)
	rcPath := filepath.Join(dir, "enclave.receipt")
	_ = os.WriteFile(rcPath, rc, 0o600)
	v := &Validator{o: Options{Trust: keys, ReceiptKeys: keys}}
	for _, p := range []string{tarPath, invPath, rcPath} {
		a, err := LoadAgainst(p)
		if err != nil {
			t.Fatalf("LoadAgainst(%s): %v", p, err)
		}
		ag, err := v.checkAgainst(t.Context(), a)
		if err != nil {
			t.Fatalf("checkAgainst(%s): %v", p, err)
		}
		if p != rcPath && (ag.inv == nil || ag.inv.Name != "b") {
			t.Errorf("%s: %+v", p, ag.info)
		}
	}
	junk := filepath.Join(dir, "junk")
	_ = os.WriteFile(junk, []byte("hello"), 0o600)
	brokenJSON := filepath.Join(dir, "broken.json")
	_ = os.WriteFile(brokenJSON, []byte("{\n\"a\": ,\n}"), 0o600)
	for _, p := range []string{junk, brokenJSON, filepath.Join(dir, "absent")} {
		if _, err := LoadAgainst(p); !errors.Is(err, ErrBadInput) {
			t.Errorf("LoadAgainst(%s) = %v, want ErrBadInput", p, err)
		}
	}
	if _, err := LoadAgainst(brokenJSON); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("broken JSON names no line: %v", err)
	}
}
