package importer

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"sync"
)

// asyncHash hashes everything read through it on a goroutine of its own, so
// the sha256 of the whole input (for the history) does not slow the
// import's own pass, which already hashes every blob to verify it. At most
// hashAhead chunks wait for the hasher.
type asyncHash struct {
	r    io.Reader
	n    int64
	ch   chan []byte
	done chan struct{}
	h    hash.Hash
	pool sync.Pool
}

const hashAhead = 8

func newAsyncHash(r io.Reader) *asyncHash {
	a := &asyncHash{r: r, ch: make(chan []byte, hashAhead), done: make(chan struct{}), h: sha256.New()}
	go func() {
		defer close(a.done)
		for b := range a.ch {
			a.h.Write(b)
			a.pool.Put(&b)
		}
	}()
	return a
}

func (a *asyncHash) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		var buf []byte
		if v, ok := a.pool.Get().(*[]byte); ok && cap(*v) >= n {
			buf = (*v)[:n]
		} else {
			buf = make([]byte, n, max(n, 1<<20))
		}
		copy(buf, p[:n])
		a.ch <- buf
		a.n += int64(n)
	}
	return n, err
}

// sum stops the hasher and returns the hex sha256 of what was read. It must
// be called exactly once, after the last Read.
func (a *asyncHash) sum() string {
	close(a.ch)
	<-a.done
	return hex.EncodeToString(a.h.Sum(nil))
}
