package evidence

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/validate"
)

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

func TestEvidenceVerifiesAndAnEditFails(t *testing.T) {
	t.Parallel()
	s, keys := testSigner(t)
	_, other := testSigner(t)
	res := &validate.Result{Appliance: "https://registry.enclave:8443", OK: true, Gates: []validate.GateResult{{Gate: validate.GateImages, Status: validate.StatusOK}},
		Checked: []validate.Checked{{Gate: validate.GateImages, What: "x", Digest: "sha256:aa"}}}
	ev, err := Make(res, s, time.Unix(1_800_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Verify(ev.JSON, ev.Signature, keys); err != nil {
		t.Fatalf("VerifyEvidence: %v", err)
	}
	if _, _, err := Verify(ev.JSON, ev.Signature, nil); err != nil {
		t.Fatalf("VerifyEvidence with the key it names: %v", err)
	}
	if err := VerifyDocument(ev.HTML, ev.HTMLSignature, keys); err != nil {
		t.Fatalf("html: %v", err)
	}
	if !bytes.Contains(ev.HTML, []byte("sha256:aa")) {
		t.Error("the page lacks the digest checked")
	}
	for i := range []int{0, len(ev.JSON) / 2, len(ev.JSON) - 2} {
		edited := bytes.Clone(ev.JSON)
		edited[i] ^= 1
		if _, _, err := Verify(edited, ev.Signature, keys); !errors.Is(err, ErrInvalid) {
			t.Errorf("one byte edited at %d: %v, want ErrInvalid", i, err)
		}
	}
	if _, _, err := Verify(ev.JSON, ev.Signature, other); !errors.Is(err, ErrInvalid) {
		t.Errorf("another key: %v", err)
	}
	page := bytes.Clone(ev.HTML)
	page[len(page)/2] ^= 1
	if err := VerifyDocument(page, ev.HTMLSignature, keys); !errors.Is(err, ErrInvalid) {
		t.Errorf("edited page: %v", err)
	}
}

// TestPageEscapes: what a finding says (it may quote an input file)
// cannot close the page's elements.
func TestPageEscapes(t *testing.T) {
	t.Parallel()
	s, _ := testSigner(t)
	res := &validate.Result{Gates: []validate.GateResult{{Gate: validate.GateImages, Status: validate.StatusFailed,
		Findings: []validate.Finding{{Severity: validate.SeverityError, What: "</script><script>alert(1)</script>", Problem: "<b>x</b>"}}}}}
	ev, err := Make(res, s, time.Unix(1_800_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(ev.HTML, []byte("</script>")) != 1 || bytes.Contains(ev.HTML, []byte("<b>x</b>")) {
		t.Errorf("the page carries markup from a finding:\n%s", ev.HTML)
	}
}
