// Package coalesce gathers the many small writes a TLS connection makes
// into few large ones, for the length of one large response.
//
// crypto/tls hands every 16 KiB record to the socket with its own write(2).
// Serving a blob of a few hundred megabytes on loopback, those system calls
// and the TCP segments they push cost most of the server's CPU. A Conn sits
// under the TLS layer: it passes writes straight through, except between
// Cork and Uncork, when it keeps records in a buffer and writes them in
// pieces of BufferSize (an HTTP/1.1 response through Gather: of 64 KiB).
// A handler corks its connection only while it writes one long body, and
// always uncorks (which flushes) before it returns, so nothing waits in
// the buffer once the handler is done.
//
// HTTP/2 multiplexes streams on one connection, so no handler may cork
// it: ConfigureHTTP2 instead puts an H2Conn between the HTTP/2 server and
// TLS, which gathers the server's frames and writes them out whenever the
// server's write scheduler runs out of frames (see h2.go).
//
// Clients that upload a large body use TLSConn, which gathers the records
// of each single write.
package coalesce

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// BufferSize is how many bytes a corked connection gathers before it
// writes them out.
const BufferSize = 256 << 10

// bufferSlack is how much more than BufferSize a buffer holds: the TLS
// records of a BufferSize write, or the HTTP/2 frames of one, and their
// headers and tags, so that they leave in one write(2), not in one of
// 256 KiB and one of a few hundred bytes.
const bufferSlack = 32 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, BufferSize+bufferSlack); return &b }}

// Conn is a net.Conn whose writes can be gathered. It is safe for the
// concurrent use net.Conn promises. Close is the embedded connection's: it
// takes no lock, so it still unblocks a write stuck on a dead peer, and
// whatever a corked connection still holds is dropped with it.
type Conn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	limit  int // while corked: the bytes gathered before they are written out
	buf    *[]byte
	err    error // the first error of a write that went out after its caller had returned
}

// NewConn wraps c. Until Cork is called, it behaves exactly like c.
func NewConn(c net.Conn) *Conn { return &Conn{Conn: c} }

// Write sends p, or, while the connection is corked, adds it to the
// buffer, writing the buffer out whenever it would overflow.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		return c.Conn.Write(p)
	}
	b := *c.buf
	if len(b)+len(p) > c.limit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		b = *c.buf
		if len(p) >= c.limit {
			return c.Conn.Write(p)
		}
	}
	*c.buf = append(b, p...)
	return len(p), nil
}

// Cork starts gathering writes. It returns false, and does nothing, when
// the connection is already corked: only the caller that corked it may
// uncork it.
func (c *Conn) Cork() bool { return c.cork(BufferSize + bufferSlack) }

// cork is Cork, writing out every limit bytes.
func (c *Conn) cork(limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		return false
	}
	c.corked = true
	c.buf = buffers.Get().(*[]byte)
	c.limit = min(limit, cap(*c.buf))
	return true
}

// Uncork writes out what was gathered and lets later writes through
// again. Its error is that of the last write, or of an earlier gathered
// write that failed.
func (c *Conn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.err
	}
	err := c.flushLocked()
	c.corked = false
	*c.buf = (*c.buf)[:0]
	buffers.Put(c.buf)
	c.buf = nil
	return err
}

func (c *Conn) flushLocked() error {
	b := *c.buf
	if len(b) == 0 {
		return c.err
	}
	*c.buf = b[:0]
	if _, err := c.Conn.Write(b); err != nil {
		c.err = err
	}
	return c.err
}

// Listener wraps every connection it accepts in a Conn.
type Listener struct{ net.Listener }

// Accept waits for the next connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c), nil
}

type ctxKey struct{}

// WithConn returns ctx carrying c, for FromContext. Servers call it from
// http.Server.ConnContext.
func WithConn(ctx context.Context, c *Conn) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the Conn a request arrived on, or nil when the
// server did not record one.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(ctxKey{}).(*Conn)
	return c
}

// responseWriteOut is how much of a response (HTTP/1.1 through Gather, or
// HTTP/2 frames an H2Conn gathered) a corked connection holds before it
// writes it out: smaller than BufferSize. One client reading one response
// is the slower side of the connection, and 64 KiB write-outs served it
// faster than 256 KiB ones in interleaved benchmark runs (bench/blobpull:
// 8–9% over HTTP/1.1 in two runs, 18% over HTTP/2), at the same server CPU
// or less and the same rate for 8 clients.
const responseWriteOut = 64 << 10

// Gather corks the connection under r for the body a handler is about to
// write to w, when the request arrived over HTTP/1.1 (which gives the
// response the connection to itself) on a server that records its Conns.
// Otherwise it does nothing: over HTTP/2 the connection's H2Conn gathers. The handler must call the returned function
// before it returns: it flushes HTTP's buffer, then uncorks.
func Gather(w http.ResponseWriter, r *http.Request) (release func()) {
	c := FromContext(r.Context())
	if c == nil || r.ProtoMajor != 1 || !c.cork(responseWriteOut) {
		return func() {}
	}
	return func() {
		_ = http.NewResponseController(w).Flush()
		_ = c.Uncork()
	}
}

// ServeContent is http.ServeContent for a large body: over HTTP/1.1 the
// connection is corked for it (Gather), and the body reaches the response
// writer in BufferSize pieces. http.ServeContent copies through io.Copy,
// 32 KiB at a time, and over HTTP/2 each of those writes is its own trip
// to the connection's serve loop, after which the server's write
// scheduler runs out of frames and the H2Conn writes out what it holds:
// one write(2) per 32 KiB, not per BufferSize.
func ServeContent(w http.ResponseWriter, r *http.Request, name string, modtime time.Time, content io.ReadSeeker) {
	defer Gather(w, r)()
	http.ServeContent(LargeWrites(w), r, name, modtime, content)
}

// LargeWrites returns w with a ReadFrom that copies in BufferSize pieces,
// for a handler that copies a large body with io.Copy (as
// http.ServeContent does). http.ResponseController still reaches w.
func LargeWrites(w http.ResponseWriter) http.ResponseWriter { return largeWrites{w} }

// copyBuffers holds the buffers ServeContent copies with: BufferSize, no
// larger, since one is out for every download in flight.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// largeWrites gives a response writer a ReadFrom that copies in
// BufferSize pieces (io.Copy prefers it to its own 32 KiB buffer).
type largeWrites struct{ http.ResponseWriter }

func (l largeWrites) ReadFrom(src io.Reader) (int64, error) {
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	// Neither side's own copy method may take over: an *os.File's WriteTo,
	// or the writer's ReadFrom, would copy 32 KiB at a time again.
	return io.CopyBuffer(writeOnly{l.ResponseWriter}, readOnly{src}, *buf)
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (l largeWrites) Unwrap() http.ResponseWriter { return l.ResponseWriter }

type readOnly struct{ r io.Reader }

func (o readOnly) Read(p []byte) (int, error) { return o.r.Read(p) }

// TLSConn is a client's TLS connection over a Conn, whose every write is
// gathered: a Write (or ReadFrom) of a megabyte reaches the socket in
// BufferSize pieces instead of one write(2) per 16 KiB record. It suits an
// HTTP/1.1 client uploading a large body, which owns its connection and
// whose transport writes from one goroutine.
type TLSConn struct {
	*tls.Conn
	under *Conn
}

// Client makes a TLS client connection over raw whose writes are gathered.
// The handshake happens on first use, or with HandshakeContext.
func Client(raw net.Conn, cfg *tls.Config) *TLSConn {
	under := NewConn(raw)
	return &TLSConn{Conn: tls.Client(under, cfg), under: under}
}

// Write encrypts p and sends its records in as few writes as fit.
func (c *TLSConn) Write(p []byte) (int, error) {
	if !c.under.Cork() {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p)
	if uerr := c.under.Uncork(); err == nil && uerr != nil {
		return n, uerr
	}
	return n, err
}

// ReadFrom copies r into the connection a megabyte at a time (io.Copy
// would hand TLS 32 KiB at a time).
func (c *TLSConn) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	return io.CopyBuffer(writeOnly{c}, r, buf)
}

type writeOnly struct{ w io.Writer }

func (o writeOnly) Write(p []byte) (int, error) { return o.w.Write(p) }

// Transport is an HTTP/1.1 client transport over TLSConns: each request
// owns its connection, and every write of a large body reaches the socket
// in BufferSize pieces. Over HTTP/2, or with one write(2) per 16 KiB
// record, a gigabyte upload costs both sides far more CPU. maxIdle bounds
// the idle connections kept per host.
func Transport(tlsCfg *tls.Config, maxIdle int) *http.Transport {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext: d.DialContext,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cfg := tlsCfg.Clone()
			if cfg.ServerName == "" {
				host, _, _ := net.SplitHostPort(addr)
				cfg.ServerName = host
			}
			cfg.NextProtos = []string{"http/1.1"}
			c := Client(raw, cfg)
			hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := c.HandshakeContext(hctx); err != nil {
				_ = raw.Close()
				return nil, err
			}
			return c, nil
		},
		WriteBufferSize:     256 << 10,
		MaxIdleConns:        maxIdle,
		MaxIdleConnsPerHost: maxIdle,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 30 * time.Second,
	}
}
