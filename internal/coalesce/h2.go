package coalesce

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 over TLS
//
// An HTTP/2 server writes one DATA frame at a time, each no larger than
// the client's SETTINGS_MAX_FRAME_SIZE (16 KiB for curl and most clients),
// straight through to crypto/tls: two TLS records (16,384 bytes and the
// 9-byte rest of the frame) and two write(2) per frame. That was most of
// the CPU an HTTP/2 blob download cost, and why one HTTP/2 stream ran at
// half the HTTP/1.1 rate.
//
// H2Conn sits between the HTTP/2 server and crypto/tls. It keeps the
// frames in a buffer and hands them to TLS in pieces of about BufferSize,
// which TLS encrypts into full records and the Conn under it sends in
// write(2)s of 64 KiB, as it sends HTTP/1.1 responses (responseWriteOut:
// 64 KiB write-outs served one HTTP/2 stream 18% faster than 256 KiB
// ones, at less CPU). It writes out what it holds whenever the server's
// write scheduler has nothing more to send: that is the moment the HTTP/2
// server itself flushes its own (4 KiB) buffer, so a small response, a
// response stalled by flow control, a SETTINGS or PING acknowledgement
// goes out at once, as it did before, and a stream the client does not
// read never holds another's bytes back.

// h2GatherSize is how many bytes of frames an H2Conn gathers before it
// writes them out: the frames of one BufferSize write from a handler (16
// DATA frames of 16 KiB and their 9-byte headers) fit, and the TLS records
// they become fit the Conn's buffer (bufferSlack).
const h2GatherSize = BufferSize + 8<<10

// closeFlushTimeout bounds how long Close waits to write out frames it
// still holds.
const closeFlushTimeout = time.Second

// H2Conn is the TLS connection an HTTP/2 server writes to, gathering the
// server's frames (see ConfigureHTTP2). Until its write scheduler is in
// use, it passes writes straight through.
type H2Conn struct {
	*tls.Conn
	under *Conn // the Conn under the TLS layer, or nil

	mu          sync.Mutex // held while bytes are added or written out
	gather      bool
	buf         *[]byte // nil when nothing is held
	flushQueued bool    // a goroutine will write out buf
	err         error   // the first failed write out; every later write returns it
	closed      atomic.Bool
}

// NewH2Conn wraps tc. When tc runs over a Conn (a server that accepted
// with Listener), the records of each write out are sent in few write(2)s.
func NewH2Conn(tc *tls.Conn) *H2Conn {
	under, _ := tc.NetConn().(*Conn)
	return &H2Conn{Conn: tc, under: under}
}

// Write adds p to what the connection holds, writing that out first when
// p would overflow it. Writes before the scheduler is in use, and writes
// of at least h2GatherSize, go straight to TLS (after what is held).
func (c *H2Conn) Write(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.gather {
		return c.Conn.Write(p)
	}
	if c.buf != nil && len(*c.buf)+len(p) > h2GatherSize {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= h2GatherSize {
		if err := c.writeOutLocked(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if c.buf == nil {
		c.buf = buffers.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// flushLocked writes out what the connection holds and returns the buffer
// to the pool, so an idle connection holds no memory.
func (c *H2Conn) flushLocked() error {
	if c.buf == nil {
		return c.err
	}
	b := *c.buf
	err := c.err
	if len(b) > 0 && err == nil {
		err = c.writeOutLocked(b)
	}
	*c.buf = b[:0]
	buffers.Put(c.buf)
	c.buf = nil
	return err
}

// writeOutLocked hands p to TLS, with the Conn underneath corked so that
// the records leave together, 64 KiB at a time.
func (c *H2Conn) writeOutLocked(p []byte) error {
	corked := c.under != nil && c.under.cork(responseWriteOut)
	_, err := c.Conn.Write(p)
	if corked {
		if uerr := c.under.Uncork(); err == nil {
			err = uerr
		}
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	return err
}

// idle is called by the scheduler, on the server's serve goroutine, when
// it has no frame to write: no frame is being written then. What the
// connection holds is written out by another goroutine, so the serve loop
// never waits on the socket (it did not before either: the HTTP/2 server
// writes large frames from a goroutine of their own).
func (c *H2Conn) idle() {
	// A goroutine holding mu is writing out, and every frame written before
	// this moment is already in what it writes: frames written after it
	// took the lock are followed by another idle moment.
	if !c.mu.TryLock() {
		return
	}
	start := c.buf != nil && len(*c.buf) > 0 && !c.flushQueued && c.err == nil
	if start {
		c.flushQueued = true
	}
	c.mu.Unlock()
	if start {
		go c.flushQueuedWrites()
	}
}

func (c *H2Conn) flushQueuedWrites() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushQueued = false
	_ = c.flushLocked() // the error is kept for the next Write
}

// Close writes out what the connection still holds (the HTTP/2 server
// closes right after its last frames, a GOAWAY among them), then closes.
// It waits at most closeFlushTimeout, for a write under way or for a peer
// that does not read; closing then unblocks them.
func (c *H2Conn) Close() error {
	c.closed.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.buf != nil && len(*c.buf) > 0 && c.err == nil {
			_ = c.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		}
		_ = c.flushLocked()
	}()
	t := time.NewTimer(closeFlushTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	return c.Conn.Close()
}

// scheduler wraps the HTTP/2 server's write scheduler for this
// connection, and starts gathering: from now on the connection learns
// when the server runs out of frames to write.
//
//nolint:staticcheck // x/net's HTTP/2 server and its write scheduler hook: see ConfigureHTTP2
func (c *H2Conn) scheduler(ws http2.WriteScheduler) http2.WriteScheduler {
	c.mu.Lock()
	c.gather = true
	c.mu.Unlock()
	return idleScheduler{WriteScheduler: ws, conn: c}
}

//nolint:staticcheck // x/net's HTTP/2 server and its write scheduler hook: see ConfigureHTTP2
type idleScheduler struct {
	http2.WriteScheduler
	conn *H2Conn
}

//nolint:staticcheck // x/net's HTTP/2 server and its write scheduler hook: see ConfigureHTTP2
func (s idleScheduler) Pop() (http2.FrameWriteRequest, bool) {
	wr, ok := s.WriteScheduler.Pop()
	if !ok {
		s.conn.idle()
	}
	return wr, ok
}

// ConfigureHTTP2 makes srv serve HTTP/2 over TLS with conf (nil: the
// defaults, which take srv.HTTP2's settings), its frames gathered into
// large TLS writes by an H2Conn per connection. Call it before srv
// serves; srv.TLSConfig gains the "h2" protocol.
//
// Each connection is served by a copy of conf whose write scheduler tells
// the connection when the server is idle; the copies share conf's record
// of open connections, so srv.Shutdown still ends them gracefully. The
// scheduler is x/net's random one (streams picked in no set order,
// control frames first): the server's default round-robin scheduler is
// not exported.
//
// x/net marks its HTTP/2 server deprecated in favour of net/http's own
// (the same code, bundled), which offers no such hook; from Go 1.27 x/net
// wraps net/http's server. Should NewWriteScheduler not be consulted
// then, the connection is never told to gather and passes every write
// through: correct, and slower, which TestHTTP2LargeBodyInLargeWrites
// reports.
//
//nolint:staticcheck // x/net's HTTP/2 server and its write scheduler hook: see ConfigureHTTP2
func ConfigureHTTP2(srv *http.Server, conf *http2.Server) error {
	if conf == nil {
		conf = &http2.Server{}
	}
	if err := http2.ConfigureServer(srv, conf); err != nil {
		return err
	}
	srv.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		c := NewH2Conn(tc)
		perConn := *conf
		perConn.NewWriteScheduler = func() http2.WriteScheduler {
			return c.scheduler(http2.NewRandomWriteScheduler())
		}
		// net/http hands its per-connection context (ConnContext's) down
		// through this method of the handler, as x/net's own hook reads it.
		var ctx context.Context
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		perConn.ServeConn(c, &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs})
	}
	return nil
}
