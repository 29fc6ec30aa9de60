package coalesce

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordingConn stands in for a socket: it keeps every write it is given.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	fail   error
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return 0, r.fail
	}
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recordingConn) all() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Join(r.writes, nil)
}

func (r *recordingConn) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writes)
}

func TestPassesThroughUntilCorked(t *testing.T) {
	rc := &recordingConn{}
	c := NewConn(rc)
	for range 3 {
		if _, err := c.Write([]byte("abc")); err != nil {
			t.Fatal(err)
		}
	}
	if rc.count() != 3 {
		t.Fatalf("an uncorked conn made %d writes of 3, want each passed through", rc.count())
	}
}

func TestCorkGathersInOrderAndUncorkFlushes(t *testing.T) {
	rc := &recordingConn{}
	c := NewConn(rc)
	if !c.Cork() {
		t.Fatal("Cork on a fresh conn returned false")
	}
	if c.Cork() {
		t.Fatal("a second Cork returned true: two callers would both uncork")
	}
	var want bytes.Buffer
	// 16 KiB records, as crypto/tls writes them, plus odd sizes and one
	// write larger than the buffer.
	sizes := []int{16413, 16413, 7, 16413, BufferSize + 5, 16413, 1, 300}
	for i, n := range sizes {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		want.Write(p)
		if k, err := c.Write(p); err != nil || k != n {
			t.Fatalf("write %d: %d, %v", i, k, err)
		}
	}
	if got := rc.all(); !bytes.Equal(got, want.Bytes()[:len(got)]) {
		t.Fatal("bytes written out while corked are not a prefix of what was written")
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rc.all(), want.Bytes()) {
		t.Fatal("after Uncork the socket did not receive exactly the bytes written, in order")
	}
	if rc.count() > 4 {
		t.Fatalf("%d writes reached the socket for %d written: not gathered", rc.count(), len(sizes))
	}
	before := rc.count()
	if _, err := c.Write([]byte("x")); err != nil || rc.count() != before+1 {
		t.Fatalf("after Uncork a write did not pass straight through (err %v)", err)
	}
}

func TestGatheredWriteErrorSurfaces(t *testing.T) {
	rc := &recordingConn{}
	c := NewConn(rc)
	c.Cork()
	if _, err := c.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	broken := errors.New("connection reset by peer")
	rc.mu.Lock()
	rc.fail = broken
	rc.mu.Unlock()
	if err := c.Uncork(); !errors.Is(err, broken) {
		t.Fatalf("Uncork = %v, want the failed write's error", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, broken) {
		t.Fatalf("a write after a lost gathered write = %v, want the same error", err)
	}
}

// TestCloseUnblocksAStuckWrite: a write gathered into a full buffer may
// block on a peer that reads nothing; Close must still end it.
func TestCloseUnblocksAStuckWrite(t *testing.T) {
	a, b := net.Pipe() // unbuffered: a write blocks until b reads
	defer b.Close()
	c := NewConn(a)
	c.Cork()
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, BufferSize+bufferSlack+1)) // larger than the buffer: written through
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the stuck write returned no error after Close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock a write stuck on the peer")
	}
}

// TestCorkedTLSResponse serves a large body over real TLS and HTTP/1.1
// keep-alive from a handler that corks, as the registry's blob handler
// does, and checks the body, the number of socket writes, and that the
// connection carries the next request.
func TestCorkedTLSResponse(t *testing.T) {
	body := make([]byte, 8<<20+12345)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var socketWrites atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := FromContext(r.Context())
			if c == nil || !c.Cork() {
				http.Error(w, "no coalesce.Conn under this request", http.StatusInternalServerError)
				return
			}
			defer func() {
				_ = http.NewResponseController(w).Flush()
				_ = c.Uncork()
			}()
			for p := body; len(p) > 0; {
				n := min(len(p), 1<<20)
				if _, err := w.Write(p[:n]); err != nil {
					return
				}
				p = p[n:]
			}
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*tls.Conn).NetConn().(*Conn); ok {
				return WithConn(ctx, cc)
			}
			return ctx
		},
	}
	counting := countingListener{Listener: ln, writes: &socketWrites}
	go func() { _ = srv.ServeTLS(Listener{Listener: counting}, "", "") }()
	defer srv.Close()

	var dials atomic.Int64
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	want := sha256.Sum256(body)
	for i := range 2 {
		before := socketWrites.Load()
		resp, err := client.Get("https://" + ln.Addr().String() + "/blob")
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
			t.Fatalf("request %d: status %d, HTTP/%d, %v", i, resp.StatusCode, resp.ProtoMajor, err)
		}
		if n != int64(len(body)) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("request %d: got %d bytes with another digest, want the %d written", i, n, len(body))
		}
		// Ungathered, crypto/tls makes one write per 16 KiB record: 530
		// for this body. Gathered, about one per 256 KiB.
		if w := socketWrites.Load() - before; w > int64(len(body)/BufferSize)+8 {
			t.Fatalf("request %d: %d socket writes for %d bytes, the records were not gathered", i, w, len(body))
		}
	}
	if dials.Load() != 1 {
		t.Fatalf("%d connections for two requests: the first response did not end cleanly for keep-alive", dials.Load())
	}
}

type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, writes: l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestClientGathersEachWrite: a client's TLSConn sends a large Write, and a
// ReadFrom, in few socket writes, and the server decrypts every byte in
// order.
func TestClientGathersEachWrite(t *testing.T) {
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		received <- b
	}()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var socketWrites atomic.Int64
	c := Client(countingConn{Conn: raw, writes: &socketWrites}, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := c.HandshakeContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 4<<20+7)
	second := make([]byte, 3<<20+5)
	_, _ = rand.Read(first)
	_, _ = rand.Read(second)
	before := socketWrites.Load()
	if n, err := c.Write(first); err != nil || n != len(first) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n, err := c.ReadFrom(bytes.NewReader(second)); err != nil || n != int64(len(second)) {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	// 7 MiB in 16 KiB records would be about 450 writes.
	if w := socketWrites.Load() - before; w > int64((len(first)+len(second))/BufferSize)+12 {
		t.Fatalf("%d socket writes for %d bytes: the records were not gathered", w, len(first)+len(second))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := <-received
	if !bytes.Equal(got, append(first, second...)) {
		t.Fatalf("the server received %d bytes that differ from the %d sent", len(got), len(first)+len(second))
	}
}
