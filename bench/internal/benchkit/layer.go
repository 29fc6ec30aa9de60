package benchkit

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	mrand "math/rand/v2"
	"time"
)

// Layer is a generated image layer: its digest and diff ID ("sha256:…")
// and its size in bytes.
type Layer struct {
	Digest, DiffID string
	Size           int64
}

// WriteLayer writes to w a real, incompressible layer of about size bytes:
// a .tar.gz holding one file of ChaCha8 random bytes, the gzip in stored
// blocks so that nothing on the way can compress it. The bytes depend only
// on key, so every run of a benchmark generates the same data.
func WriteLayer(w io.Writer, size int64, key ...uint64) (Layer, error) {
	var seed [32]byte
	for i, k := range key[:min(len(key), 4)] {
		binary.LittleEndian.PutUint64(seed[8*i:], k)
	}
	rnd := mrand.NewChaCha8(seed)
	// gzip stored blocks cost 5 bytes per 65535; the tar 512 + up to 1535.
	dataSize := size - size/65535*5 - 18 - 2048
	bw := bufio.NewWriterSize(w, 1<<20)
	dig := sha256.New()
	cw := &countWriter{w: io.MultiWriter(bw, dig)}
	gz, _ := gzip.NewWriterLevel(cw, gzip.NoCompression)
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(gz, diff))
	if err := tw.WriteHeader(&tar.Header{Name: "data", Mode: 0o644, Size: dataSize, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return Layer{}, err
	}
	buf := make([]byte, 1<<20)
	for left := dataSize; left > 0; {
		n := int(min(left, int64(len(buf))))
		_, _ = rnd.Read(buf[:n])
		if _, err := tw.Write(buf[:n]); err != nil {
			return Layer{}, err
		}
		left -= int64(n)
	}
	if err := tw.Close(); err != nil {
		return Layer{}, err
	}
	if err := gz.Close(); err != nil {
		return Layer{}, err
	}
	if err := bw.Flush(); err != nil {
		return Layer{}, err
	}
	return Layer{Digest: "sha256:" + hex.EncodeToString(dig.Sum(nil)), DiffID: "sha256:" + hex.EncodeToString(diff.Sum(nil)), Size: cw.n}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
