package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestBlobPullOverHTTP1 pulls a layer of several MiB over HTTP/1.1
// keep-alive, the path where the blob handler gathers TLS records into
// large writes (internal/coalesce), and over HTTP/2, where it does not. Both
// bodies must be whole, and the HTTP/1.1 connection must carry the next
// pull: a record left in the gathering buffer would stall it.
func TestBlobPullOverHTTP1(t *testing.T) {
	ts := startServer(t)
	img, err := random.Image(3<<20+4321, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref := ts.ref(t, "library/big:1")
	if err := remote.Write(ref, img, remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	want, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ts.CAPEM())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, h2 := range []bool{false, true} {
		var dials atomic.Int64
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2: h2,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		}
		for i := range 3 {
			l, err := remote.Layer(ref.Context().Digest(want.String()), remote.WithTransport(tr), remote.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			rc, err := l.Compressed()
			if err != nil {
				t.Fatalf("HTTP/2 %v, pull %d: %v", h2, i, err)
			}
			h := sha256.New()
			_, err = io.Copy(h, rc)
			rc.Close()
			if err != nil {
				t.Fatalf("HTTP/2 %v, pull %d: %v", h2, i, err)
			}
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.String() {
				t.Fatalf("HTTP/2 %v, pull %d: body digest %s, want %s", h2, i, got, want)
			}
		}
		tr.CloseIdleConnections()
		// The token request and the pulls share the keep-alive
		// connection; one more is allowed for a token fetched in parallel.
		t.Logf("HTTP/2 %v: %d connections", h2, dials.Load())
		if n := dials.Load(); n > 2 {
			t.Fatalf("HTTP/2 %v: %d connections for 3 pulls: a response did not end cleanly", h2, n)
		}
	}
}
