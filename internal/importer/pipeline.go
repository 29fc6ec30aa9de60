package importer

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/importer/tarstream"
	"github.com/appliance-dev/appliance/internal/registry"
)

// Blob writes run on goroutines of their own, fed in 1 MiB chunks, so that
// reading the input (from the network or the medium) overlaps hashing,
// writing and fsync of the blobs before it. At most maxInFlight blobs are
// being written, and at most chunksAhead chunks wait for each writer.
const (
	chunkSize   = 1 << 20
	chunksAhead = 8
	maxInFlight = 2
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

type pendingWrite struct {
	entry string
	done  chan error
}

// chanReader reads the chunks a writer is fed; if the feeding stopped on
// an error, it ends with io.ErrUnexpectedEOF so nothing is committed.
type chanReader struct {
	ch      chan *[]byte
	cur     *[]byte
	off     int
	n       int
	aborted *atomic.Bool
	sizes   chan int
}

// chunk returns the unread bytes of the current chunk, taking the next
// one when it is used up: io.EOF after the last, io.ErrUnexpectedEOF when
// the feeding was aborted.
func (c *chanReader) chunk() ([]byte, error) {
	for c.cur == nil || c.off == c.n {
		if c.cur != nil {
			chunkPool.Put(c.cur)
			c.cur = nil
		}
		b, ok := <-c.ch
		if !ok {
			if c.aborted.Load() {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, io.EOF
		}
		c.cur, c.off, c.n = b, 0, <-c.sizes
	}
	return (*c.cur)[c.off:c.n], nil
}

func (c *chanReader) Read(p []byte) (int, error) {
	b, err := c.chunk()
	if err != nil {
		return 0, err
	}
	k := copy(p, b)
	c.off += k
	return k, nil
}

// WriteTo hands each chunk to w whole, so io.Copy into the registry's blob
// writer neither copies the bytes again into a 32 KiB buffer nor writes
// them to the file 32 KiB at a time: one write(2) per 1 MiB chunk.
func (c *chanReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		b, err := c.chunk()
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		k, err := w.Write(b)
		c.off += k
		total += int64(k)
		if err != nil {
			return total, err
		}
	}
}

// writeAsync starts writing entry e as blob want into staging and returns
// once its bytes have been handed over; the result is collected by wait.
func (s *session) writeAsync(e *tarstream.Entry, want digest.Digest) error {
	if err := s.wait(maxInFlight - 1); err != nil {
		return err
	}
	ch := make(chan *[]byte, chunksAhead)
	sizes := make(chan int, chunksAhead)
	var aborted atomic.Bool
	p := &pendingWrite{entry: e.Name, done: make(chan error, 1)}
	s.pending = append(s.pending, p)
	go func() {
		cr := &chanReader{ch: ch, sizes: sizes, aborted: &aborted}
		_, err := s.store.WriteBlob(s.ctx, s.staging, registry.Descriptor{Digest: want, Size: e.Size}, cr)
		for b := range ch { // unblock the feeder if the write stopped early
			<-sizes
			chunkPool.Put(b)
		}
		p.done <- err
	}()
	// io.ReadFull reports io.ErrUnexpectedEOF both at the end of an entry
	// shorter than a chunk and for a truncated archive: count the bytes.
	var (
		feedErr error
		total   int64
	)
	for {
		buf := chunkPool.Get().(*[]byte)
		n, err := io.ReadFull(e.R, *buf)
		total += int64(n)
		if n > 0 {
			ch <- buf
			sizes <- n
		} else {
			chunkPool.Put(buf)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				feedErr = truncated(err)
			} else if total != e.Size {
				feedErr = ErrTruncated
			}
			break
		}
	}
	if feedErr != nil {
		aborted.Store(true)
	}
	close(ch)
	if feedErr != nil {
		_ = s.wait(0)
		return s.fail("read", e.Name, feedErr)
	}
	return nil
}

// wait collects finished writes until at most limit are in flight,
// returning the first failure (naming its entry).
func (s *session) wait(limit int) error {
	var first error
	for len(s.pending) > limit {
		p := s.pending[0]
		s.pending = s.pending[1:]
		if err := <-p.done; err != nil && first == nil {
			first = s.fail("verify", p.entry, mapStoreErr(err))
		}
	}
	return first
}
