package coalesce

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPull pulls a 64 MiB body over TLS on loopback, client and
// server in this process: over HTTP/2 from a server set up by
// ConfigureHTTP2 ("h2-gathered") and from net/http's own HTTP/2 server
// ("h2-net-http", what the appliance ran before), and over HTTP/1.1 from a
// handler that corks ("h1-corked"). The client is the same Go transport
// in each HTTP/2 case, so the difference in cpu-ms/GiB (this process's
// user and system time) is the server's.
//
//	go test -run '^$' -bench Pull -count 6 ./internal/coalesce
func BenchmarkPull(b *testing.B) {
	body := make([]byte, 64<<20)
	_, _ = rand.Read(body)
	for _, mode := range []string{"h2-gathered", "h2-net-http", "h1-corked"} {
		b.Run(mode, func(b *testing.B) {
			url, client, stop := benchServer(b, mode, body)
			defer stop()
			b.SetBytes(int64(len(body)))
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != int64(len(body)) || resp.ProtoMajor != map[bool]int{true: 2, false: 1}[mode != "h1-corked"] {
					b.Fatalf("%d bytes over HTTP/%d: %v", n, resp.ProtoMajor, err)
				}
			}
			b.StopTimer()
			gib := float64(b.N) * float64(len(body)) / (1 << 30)
			b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/gib, "cpu-ms/GiB")
		})
	}
}

func benchServer(b *testing.B, mode string, body []byte) (string, *http.Client, func()) {
	cert, pool := selfSigned(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			if c := FromContext(r.Context()); c != nil && r.ProtoMajor == 1 && c.Cork() {
				defer func() { _ = http.NewResponseController(w).Flush(); _ = c.Uncork() }()
			}
			for p := body; len(p) > 0; {
				k := min(len(p), BufferSize) // as the registry's blob handler writes
				if _, err := w.Write(p[:k]); err != nil {
					return
				}
				p = p[k:]
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
	if mode == "h2-gathered" {
		if err := ConfigureHTTP2(srv, nil); err != nil {
			b.Fatal(err)
		}
	}
	go func() { _ = srv.ServeTLS(Listener{Listener: ln}, "", "") }()
	var protos http.Protocols
	if mode == "h1-corked" {
		protos.SetHTTP1(true)
	} else {
		protos.SetHTTP2(true)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Protocols: &protos}
	return "https://" + ln.Addr().String() + "/", &http.Client{Transport: tr, Timeout: time.Minute}, func() {
		tr.CloseIdleConnections()
		_ = srv.Close()
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
