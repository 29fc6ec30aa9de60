package importer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"sync/atomic"
)

// asyncHash hashes everything read through it on a goroutine of its own, so
// the sha256 of the whole input (for the history) does not slow the
// import's own pass, which already hashes every blob to verify it.
//
// It reads its source a whole chunk at a time and shares
// each chunk (chunkSize bytes), read-only, between the hasher and its own reader: no byte is
// copied for the hasher, and the hand-off happens once per chunk rather
// than once per read (an HTTPS body yields one 16 KiB TLS record per read).
// At most hashAhead chunks wait for the hasher.
type asyncHash struct {
	r    io.Reader
	n    int64
	cur  *hashChunk // being served to Read
	off  int
	err  error // from r, returned once cur is drained
	ch   chan *hashChunk
	free chan *hashChunk
	done chan struct{}
	h    hash.Hash
}

// hashChunk is a buffer shared by the reader and the hasher; it goes back
// to the free list when both are done with it.
type hashChunk struct {
	b    []byte
	refs atomic.Int32
}

// hashAhead is how many chunks (of chunkSize, as the blob writers use) may
// wait for the hasher.
const hashAhead = 8

func newAsyncHash(r io.Reader) *asyncHash {
	a := &asyncHash{
		r:    r,
		ch:   make(chan *hashChunk, hashAhead),
		free: make(chan *hashChunk, hashAhead+2),
		done: make(chan struct{}),
		h:    sha256.New(),
	}
	go func() {
		defer close(a.done)
		for c := range a.ch {
			a.h.Write(c.b)
			a.release(c)
		}
	}()
	return a
}

func (a *asyncHash) Read(p []byte) (int, error) {
	if a.cur == nil {
		if a.err != nil {
			return 0, a.err
		}
		a.fill()
		if a.cur == nil {
			return 0, a.err
		}
	}
	n := copy(p, a.cur.b[a.off:])
	a.off += n
	if a.off == len(a.cur.b) {
		a.release(a.cur)
		a.cur = nil
	}
	return n, nil
}

// fill reads the next chunk and hands it to the hasher. At the end of the
// input, or on an error, the chunk holds what was read and a.err is set.
func (a *asyncHash) fill() {
	var c *hashChunk
	select {
	case c = <-a.free:
	default:
		c = &hashChunk{b: make([]byte, chunkSize)}
	}
	n, err := io.ReadFull(a.r, c.b[:chunkSize])
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		a.err = io.EOF
	case err != nil:
		a.err = err
	}
	if n == 0 {
		c.refs.Store(1)
		a.release(c)
		return
	}
	c.b = c.b[:n]
	c.refs.Store(2)
	a.n += int64(n)
	a.ch <- c
	a.cur, a.off = c, 0
}

func (a *asyncHash) release(c *hashChunk) {
	if c.refs.Add(-1) == 0 {
		c.b = c.b[:cap(c.b)]
		select {
		case a.free <- c:
		default:
		}
	}
}

// sum stops the hasher and returns the hex sha256 of what was read. It must
// be called exactly once, after the last Read.
func (a *asyncHash) sum() string {
	if a.cur != nil {
		a.release(a.cur)
		a.cur = nil
	}
	close(a.ch)
	<-a.done
	return hex.EncodeToString(a.h.Sum(nil))
}
