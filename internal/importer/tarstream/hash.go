package tarstream

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// HashingReader reads its source ahead of the import, on a goroutine of its
// own, and hashes everything it reads on another, so neither receiving the
// input (for an upload: decrypting TLS) nor the sha256 of the whole input
// (for the history) runs on the import's own goroutine, which parses the
// archive and already hashes every blob to verify it.
//
// It reads a whole chunk (of the size NewHashingReader is given: the blob
// writers' buffer size) at a time and shares each chunk, read-only,
// between the hasher and Read: no byte is copied for the hasher, and the
// hand-offs happen once per chunk, not once per read of the source (an
// HTTPS body yields one 16 KiB TLS record per read). At most readAhead chunks wait for Read and hashAhead
// for the hasher.
type HashingReader struct {
	chunks chan *hashChunk // read, waiting for Read; closed by the reader
	hashq  chan *hashChunk // read, waiting for the hasher; closed by the reader
	free   chan *hashChunk
	stop   chan struct{}
	halt   sync.Once
	reader chan struct{} // closed when the reader goroutine is done
	hasher chan struct{} // closed when the hasher goroutine is done
	h      hash.Hash
	chunk  int

	// Set by the reader goroutine; read after chunks is closed or after
	// reader is.
	n   int64
	err error

	cur *hashChunk // being served to Read
	off int
}

// hashChunk is a buffer shared by Read and the hasher; it goes back to the
// free list when both are done with it.
type hashChunk struct {
	b    []byte
	refs atomic.Int32
}

const (
	readAhead = 4
	hashAhead = 8
)

// NewHashingReader starts reading r ahead, chunk bytes at a time. Sum must
// be called once, after the last Read.
func NewHashingReader(r io.Reader, chunk int) *HashingReader {
	a := &HashingReader{
		chunk:  chunk,
		chunks: make(chan *hashChunk, readAhead),
		hashq:  make(chan *hashChunk, hashAhead),
		free:   make(chan *hashChunk, readAhead+hashAhead+3),
		stop:   make(chan struct{}),
		reader: make(chan struct{}),
		hasher: make(chan struct{}),
		h:      sha256.New(),
	}
	go a.read(r)
	go func() {
		defer close(a.hasher)
		for c := range a.hashq {
			a.h.Write(c.b)
			a.release(c)
		}
	}()
	return a
}

// read fills chunks from r until its end, an error, or stop.
func (a *HashingReader) read(r io.Reader) {
	defer close(a.reader)
	defer close(a.hashq)
	defer close(a.chunks)
	for {
		var c *hashChunk
		select {
		case c = <-a.free:
		default:
			c = &hashChunk{b: make([]byte, a.chunk)}
		}
		n, err := io.ReadFull(r, c.b[:a.chunk])
		if n > 0 {
			c.b = c.b[:n]
			c.refs.Store(2)
			select {
			case a.hashq <- c:
				a.n += int64(n)
			case <-a.stop:
				return
			}
			select {
			case a.chunks <- c:
			case <-a.stop:
				return
			}
		}
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			a.err = io.EOF
			return
		case err != nil:
			a.err = err
			return
		}
	}
}

func (a *HashingReader) Read(p []byte) (int, error) {
	if a.cur == nil {
		c, ok := <-a.chunks
		if !ok {
			return 0, a.err
		}
		a.cur, a.off = c, 0
	}
	n := copy(p, a.cur.b[a.off:])
	a.off += n
	if a.off == len(a.cur.b) {
		a.release(a.cur)
		a.cur = nil
	}
	return n, nil
}

func (a *HashingReader) release(c *hashChunk) {
	if c.refs.Add(-1) == 0 {
		c.b = c.b[:cap(c.b)]
		select {
		case a.free <- c:
		default:
		}
	}
}

// Sum stops reading ahead and returns the hex sha256 and the length of
// what was read from the source: everything, when the import read to the
// end. It waits for a read of the source in progress to return. It must
// be called once, after the last Read.
func (a *HashingReader) Sum() (string, int64) {
	a.halt.Do(func() { close(a.stop) })
	<-a.reader
	<-a.hasher
	return hex.EncodeToString(a.h.Sum(nil)), a.n
}
