package tarstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// TestHashingReader reads inputs of awkward sizes through a HashingReader in reads
// of awkward sizes, from sources that return little per read, and checks
// the bytes, the count and the sha256.
func TestHashingReader(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{7}))
	for _, size := range []int{0, 1, 4095, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 12345, (hashAhead + 5) * chunkSize} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		want := sha256.Sum256(data)
		sources := map[string]func() io.Reader{
			"whole":    func() io.Reader { return bytes.NewReader(data) },
			"halves":   func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
			"data+EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
		}
		for name, src := range sources {
			a := NewHashingReader(src(), chunkSize)
			var got bytes.Buffer
			buf := make([]byte, 1+rng.IntN(70000))
			for {
				n, err := a.Read(buf[:1+rng.IntN(len(buf))])
				got.Write(buf[:n])
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("size %d, %s: %v", size, name, err)
				}
			}
			sum, n := a.Sum()
			if !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("size %d, %s: read %d bytes that differ from the %d of the input", size, name, got.Len(), size)
			}
			if sum != hex.EncodeToString(want[:]) || n != int64(size) {
				t.Fatalf("size %d, %s: sum %s over %d bytes, want %x over %d", size, name, sum, n, want, size)
			}
		}
	}
}

// TestHashingReaderError: a failing source yields its data, then its error,
// and the error stays.
func TestHashingReaderError(t *testing.T) {
	boom := errors.New("media read error")
	data := bytes.Repeat([]byte("x"), chunkSize+100)
	a := NewHashingReader(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)), chunkSize)
	got, err := io.ReadAll(a)
	if !errors.Is(err, boom) || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want %d bytes then %v", len(got), err, len(data), boom)
	}
	if _, err := a.Read(make([]byte, 10)); !errors.Is(err, boom) {
		t.Fatalf("a read after the error = %v, want it again", err)
	}
	want := sha256.Sum256(data)
	if sum, _ := a.Sum(); sum != hex.EncodeToString(want[:]) {
		t.Fatal("sum does not cover exactly the bytes read before the error")
	}
}

// TestHashingReaderStopsEarly: an import that gives up early must not wait for
// the rest of a long input, and must not leave the reader running.
func TestHashingReaderStopsEarly(t *testing.T) {
	src := &countingReader{r: io.LimitReader(zeros{}, 1<<40)}
	a := NewHashingReader(src, chunkSize)
	if _, err := io.ReadFull(a, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	_, n := a.Sum()
	if read := src.n.Load(); read > int64(readAhead+hashAhead+3)*chunkSize || n > read {
		t.Fatalf("read %d bytes of the source (%d counted) after the import stopped at 100: the read-ahead is not bounded", read, n)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// chunkSize is the importer's: the blob writers' buffer.
const chunkSize = 1 << 20
