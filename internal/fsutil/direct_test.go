package fsutil

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(b)
	return b
}

// A file written through DirectWriter holds exactly the bytes written,
// whatever the mix of write sizes and a length off the block size.
func TestDirectWriter(t *testing.T) {
	data := randomBytes(3*DirectBufferSize + 5001)
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewDirectWriter(f)
	for i, rest := 0, data; len(rest) > 0; i++ {
		k := min([]int{DirectBufferSize, 17, 2 * DirectBufferSize, 4096}[i%4], len(rest))
		if n, err := w.Write(rest[:k]); err != nil || n != k {
			t.Fatalf("write %d: %d, %v", k, n, err)
		}
		rest = rest[k:]
	}
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Error("a write after Finish was accepted")
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("file has %d bytes, differing from the %d written", len(got), len(data))
	}
}

// A direct write the file system refuses (EINVAL; here provoked with a
// misaligned buffer, which every O_DIRECT file system refuses) turns
// O_DIRECT off and is written the ordinary way: nothing is lost.
func TestDirectWriterFallsBack(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewDirectWriter(f)
	if !w.Direct() {
		t.Skip("the file system under the test's temporary folder does not take O_DIRECT")
	}
	defer w.Release()
	raw := randomBytes(2*directAlign + 1)
	if err := w.writeOut(raw[1:]); err != nil { // misaligned in memory
		t.Fatalf("the refused direct write was not retried the ordinary way: %v", err)
	}
	if w.Direct() {
		t.Error("still direct after a refused direct write")
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, raw[1:]) {
		t.Fatalf("file has %d bytes, want the %d written", len(got), len(raw)-1)
	}
}
