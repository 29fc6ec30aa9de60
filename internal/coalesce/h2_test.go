package coalesce

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// h2Server is a real HTTPS server, as internal/server builds it: TLS over
// Conns (through a listener that counts the socket writes), HTTP/2 set up
// by ConfigureHTTP2. It serves /blob/N (N random bytes, fixed per size,
// written 256 KiB at a time as the registry's blob handler writes) and
// /small (a few hundred bytes, as a manifest). Its client speaks HTTP/2
// only, over one connection.
type h2Server struct {
	url     string
	srv     *http.Server
	client  *http.Client
	writes  atomic.Int64 // socket writes
	bytes   atomic.Int64 // bytes in those writes
	accepts atomic.Int64
	ended   chan error // each /blob handler's last write error (nil when it finished)
	served  chan []int // the sizes of each /served handler's writes
	bodies  sync.Map   // size -> []byte
}

func newH2Server(t *testing.T) *h2Server {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h2Server{ended: make(chan error, 64), served: make(chan []int, 64)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blob/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		body := s.body(n)
		w.Header().Set("Content-Length", strconv.Itoa(n))
		var werr error
		for p := body; len(p) > 0 && werr == nil; {
			k := min(len(p), BufferSize)
			_, werr = w.Write(p[:k])
			p = p[k:]
		}
		s.ended <- werr
	})
	mux.HandleFunc("GET /served/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		cw := &countingWriter{ResponseWriter: w}
		ServeContent(cw, r, "", time.Time{}, bytes.NewReader(s.body(n)))
		s.served <- cw.sizes
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = fmt.Fprintf(w, "%x", h.Sum(nil))
	})
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("m"), 700))
	})
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	if err := ConfigureHTTP2(srv, nil); err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	counting := &h2CountingListener{Listener: ln, s: s}
	go func() { _ = srv.ServeTLS(Listener{Listener: counting}, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	var protos http.Protocols
	protos.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Protocols: &protos}
	t.Cleanup(tr.CloseIdleConnections)
	s.client = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	s.url = "https://" + ln.Addr().String()
	return s
}

func (s *h2Server) body(n int) []byte {
	if b, ok := s.bodies.Load(n); ok {
		return b.([]byte)
	}
	b := make([]byte, n)
	_, _ = rand.Read(b)
	got, _ := s.bodies.LoadOrStore(n, b)
	return got.([]byte)
}

type h2CountingListener struct {
	net.Listener
	s *h2Server
}

func (l *h2CountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.accepts.Add(1)
	return h2CountingConn{Conn: c, s: l.s}, nil
}

type h2CountingConn struct {
	net.Conn
	s *h2Server
}

func (c h2CountingConn) Write(p []byte) (int, error) {
	c.s.writes.Add(1)
	c.s.bytes.Add(int64(len(p)))
	return c.Conn.Write(p)
}

// get fetches path over HTTP/2 and checks that the body is the n bytes
// the server holds for it.
func (s *h2Server) get(ctx context.Context, path string, want []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+path, nil)
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP/%d %s, want HTTP/2 200", path, resp.ProtoMajor, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("%s: after %d bytes: %w", path, n, err)
	}
	if sum := sha256.Sum256(want); n != int64(len(want)) || !bytes.Equal(h.Sum(nil), sum[:]) {
		return fmt.Errorf("%s: %d bytes with another digest, want the %d written", path, n, len(want))
	}
	return nil
}

// TestHTTP2LargeBodyInLargeWrites pulls a large body over HTTP/2 and
// checks it byte for byte, and that the socket saw few large writes (two
// per 16 KiB DATA frame, ungathered: about 4,000 for this body).
func TestHTTP2LargeBodyInLargeWrites(t *testing.T) {
	s := newH2Server(t)
	const n = 32<<20 + 4321
	if err := s.get(context.Background(), "/small", s.smallBody()); err != nil {
		t.Fatal(err) // the connection is up, its SETTINGS exchanged
	}
	w0, b0 := s.writes.Load(), s.bytes.Load()
	if err := s.get(context.Background(), "/blob/"+strconv.Itoa(n), s.body(n)); err != nil {
		t.Fatal(err)
	}
	if err := <-s.ended; err != nil {
		t.Fatalf("the handler's write failed: %v", err)
	}
	writes, sent := s.writes.Load()-w0, s.bytes.Load()-b0
	if sent < n {
		t.Fatalf("the socket saw %d bytes for a %d-byte body", sent, n)
	}
	// Ungathered: two writes per 16 KiB frame, about 8 KiB each. Gathered:
	// 64 KiB write-outs, and a shorter one at each idle moment.
	if avg := sent / max(writes, 1); avg < 32<<10 {
		t.Fatalf("%d socket writes of %d bytes on average for the body: the frames were not gathered", writes, avg)
	}
	if s.accepts.Load() != 1 {
		t.Fatalf("%d connections, want one", s.accepts.Load())
	}
}

// TestHTTP2ServeContentInLargeWrites serves a large body through
// ServeContent, as the blob, file and apt handlers do: http.ServeContent
// alone would write it 32 KiB at a time, and each of those writes would
// leave in its own write(2). A range of it is served whole too.
func TestHTTP2ServeContentInLargeWrites(t *testing.T) {
	s := newH2Server(t)
	const n = 32<<20 + 4321
	body := s.body(n)
	if err := s.get(context.Background(), "/small", s.smallBody()); err != nil {
		t.Fatal(err)
	}
	w0, b0 := s.writes.Load(), s.bytes.Load()
	if err := s.get(context.Background(), "/served/"+strconv.Itoa(n), body); err != nil {
		t.Fatal(err)
	}
	writes, sent := s.writes.Load()-w0, s.bytes.Load()-b0
	if sent < n {
		t.Fatalf("the socket saw %d bytes for a %d-byte body", sent, n)
	}
	if avg := sent / max(writes, 1); avg < 32<<10 {
		t.Fatalf("%d socket writes of %d bytes on average for the body: the frames were not gathered", writes, avg)
	}
	// Every write the handler made but the last was BufferSize.
	sizes := <-s.served
	if len(sizes) == 0 {
		t.Fatal("the handler wrote nothing")
	}
	for i, k := range sizes[:len(sizes)-1] {
		if k != BufferSize {
			t.Fatalf("write %d of %d of the body was %d bytes, want %d: it reached the connection in small pieces", i+1, len(sizes), k, BufferSize)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, s.url+"/served/"+strconv.Itoa(n), nil)
	req.Header.Set("Range", "bytes=1000000-9999999")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, body[1000000:10000000]) {
		t.Fatalf("range: %s with %d bytes, want 206 with bytes 1000000-9999999", resp.Status, len(got))
	}
}

// countingWriter records the size of every write a handler makes through
// it (and, like http.ResponseWriter, has no ReadFrom of its own).
type countingWriter struct {
	http.ResponseWriter
	sizes []int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	return w.ResponseWriter.Write(p)
}

func (s *h2Server) smallBody() []byte { return bytes.Repeat([]byte("m"), 700) }

// TestHTTP2ManyStreamsOneConnection runs many large and small streams at
// once over one connection; each body must arrive whole and exact.
func TestHTTP2ManyStreamsOneConnection(t *testing.T) {
	s := newH2Server(t)
	if err := s.get(context.Background(), "/small", s.smallBody()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	for i := range 24 {
		g.Go(func() error {
			if i%3 == 0 {
				for range 20 {
					if err := s.get(gctx, "/small", s.smallBody()); err != nil {
						return err
					}
				}
				return nil
			}
			size := 1<<20 + i*7919 // each a different size, with odd tails
			return s.get(gctx, "/blob/"+strconv.Itoa(size), s.body(size))
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if s.accepts.Load() != 1 {
		t.Fatalf("%d connections, want every stream on one", s.accepts.Load())
	}
}

// TestHTTP2CancelledStream cancels a large download half-way; its handler
// must end (its write fails), and the connection must serve the next
// requests, large and small, exactly.
func TestHTTP2CancelledStream(t *testing.T) {
	s := newH2Server(t)
	const n = 64 << 20
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/blob/"+strconv.Itoa(n), nil)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 3<<20); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	select {
	case err := <-s.ended:
		if err == nil {
			t.Fatal("the handler of the cancelled stream wrote its whole body")
		}
	case <-time.After(30 * time.Second): // a bound on a hang, not a speed
		t.Fatal("the handler of a cancelled stream did not end")
	}
	if err := s.get(context.Background(), "/small", s.smallBody()); err != nil {
		t.Fatal(err)
	}
	if err := s.get(context.Background(), "/blob/"+strconv.Itoa(5<<20+3), s.body(5<<20+3)); err != nil {
		t.Fatal(err)
	}
	if s.accepts.Load() != 1 {
		t.Fatalf("%d connections: the cancelled stream took its connection down", s.accepts.Load())
	}
}

// TestHTTP2SmallResponseBesideAStalledStream: a stream whose client reads
// nothing fills its flow-control window and stops; what the connection
// gathered must still go out, so that a small response on the same
// connection arrives (it would wait for ever behind gathered frames that
// nothing flushes).
func TestHTTP2SmallResponseBesideAStalledStream(t *testing.T) {
	s := newH2Server(t)
	req, _ := http.NewRequest(http.MethodGet, s.url+"/blob/"+strconv.Itoa(64<<20), nil)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()                                                  // not read until the end
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a bound on a hang
	defer cancel()
	for range 10 {
		if err := s.get(ctx, "/small", s.smallBody()); err != nil {
			t.Fatalf("a small response beside a stalled stream: %v", err)
		}
	}
	if s.accepts.Load() != 1 {
		t.Fatalf("%d connections, want the small requests on the stalled stream's", s.accepts.Load())
	}
	// The stalled stream resumes and ends exact.
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(s.body(64 << 20)); !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatal("the stalled stream's body differs once read")
	}
}

// recordingTLS is a TLS server and client over a socket pair: the test
// writes through an H2Conn on the server side and reads on the client.
func recordingTLS(t *testing.T) (*H2Conn, *tls.Conn) {
	t.Helper()
	cert, pool := selfSigned(t)
	a, b := net.Pipe()
	srv := tls.Server(NewConn(a), &tls.Config{Certificates: []tls.Certificate{cert}})
	cli := tls.Client(b, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return NewH2Conn(srv), cli
}

// TestH2ConnPassesThroughWithoutScheduler: until its scheduler is in use
// (a server that never asks for one), an H2Conn holds nothing back.
func TestH2ConnPassesThroughWithoutScheduler(t *testing.T) {
	c, cli := recordingTLS(t)
	go func() { _, _ = c.Write([]byte("hello")) }()
	buf := make([]byte, 5)
	_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound on a hang
	if _, err := io.ReadFull(cli, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v: the write was held back", buf, err)
	}
}

// TestH2ConnIdleFlushesAndCloseFlushes: once gathering, a write waits for
// the scheduler's idle moment, or for Close; a failed write-out is
// returned by the next Write.
func TestH2ConnIdleFlushesAndCloseFlushes(t *testing.T) {
	c, cli := recordingTLS(t)
	c.scheduler(nil)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(cli); got <- b }()
	if _, err := c.Write([]byte("frame-1;")); err != nil {
		t.Fatal(err)
	}
	c.idle()
	if _, err := c.Write([]byte("frame-2;")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "frame-1;frame-2;" {
			t.Fatalf("the peer read %q", b)
		}
	case <-time.After(30 * time.Second): // a bound on a hang
		t.Fatal("the peer never received the gathered writes")
	}
	if _, err := c.Write([]byte("late")); err == nil {
		t.Fatal("a write after Close succeeded")
	}
}

// TestHTTP2GracefulShutdown: Shutdown ends an idle HTTP/2 connection
// served through ConfigureHTTP2 (each connection's copy of the server
// shares the record of open connections), and waits for a running stream.
func TestHTTP2GracefulShutdown(t *testing.T) {
	s := newH2Server(t)
	if err := s.get(context.Background(), "/small", s.smallBody()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, s.url+"/blob/"+strconv.Itoa(8<<20), nil)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a bound on a hang
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(ctx) }()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("the stream running at Shutdown: %v", err)
	}
	resp.Body.Close()
	if sum := sha256.Sum256(s.body(8 << 20)); !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatal("the stream running at Shutdown ended with another body")
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v, want the HTTP/2 connection ended gracefully", err)
	}
}

// TestHTTP2Upload sends a body many times the flow-control windows over
// HTTP/2: the server's WINDOW_UPDATE frames are gathered too, and must go
// out at the scheduler's idle moments, or the upload stalls.
func TestHTTP2Upload(t *testing.T) {
	s := newH2Server(t)
	body := s.body(24<<20 + 17)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a bound on a stall
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/upload", bytes.NewReader(body))
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: HTTP/%d %s, %v", resp.ProtoMajor, resp.Status, err)
	}
	if want := fmt.Sprintf("%x", sha256.Sum256(body)); string(got) != want {
		t.Fatalf("the server hashed the upload to %s, want %s", got, want)
	}
}
