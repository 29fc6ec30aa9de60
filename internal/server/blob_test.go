package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// TestBlobPullOverHTTP1 pulls a layer of several MiB over HTTP/1.1
// keep-alive, the path where the blob handler gathers TLS records into
// large writes (internal/coalesce), and over HTTP/2 (see also TestBlobPullOverHTTP2). Both
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

// TestBlobPullOverHTTP2 pulls, over one HTTP/2 connection to the real
// server (whose frames internal/coalesce gathers into large TLS writes),
// a large layer and its manifest many times at once, checks every body
// byte for byte and the protocol, cancels one download half-way, and
// pulls again on the same connection.
func TestBlobPullOverHTTP2(t *testing.T) {
	ts := startServer(t)
	img, err := random.Image(8<<20+777, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref := ts.ref(t, "library/h2:1")
	if err := remote.Write(ref, img, remote.WithTransport(ts.client.Transport), remote.WithAuth(&authn.Basic{Username: "admin", Password: ts.admin})); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	layer, _ := layers[0].Digest()
	mdigest, _ := img.Digest()
	var tok tokenResponse
	if got := ts.call(t, "GET", "/service/token?service=appliance&scope=repository:library/h2:pull", "", "", nil, &tok); got != 200 {
		t.Fatalf("anonymous token = %d", got)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ts.CAPEM())
	var dials atomic.Int64
	var protos http.Protocols
	protos.SetHTTP2(true)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		Protocols:       &protos,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	get := func(ctx context.Context, path, accept string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := hc.Do(req)
		if err == nil && (resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK) {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: HTTP/%d %s, want HTTP/2 200", path, resp.ProtoMajor, resp.Status)
		}
		return resp, err
	}
	pull := func(ctx context.Context, path, accept, want string) error {
		resp, err := get(ctx, path, accept)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		h := sha256.New()
		if _, err := io.Copy(h, resp.Body); err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("GET %s: body digest %s, want %s", path, got, want)
		}
		return nil
	}
	blobPath := "/v2/library/h2/blobs/" + layer.String()
	manifestPath := "/v2/library/h2/manifests/1"
	mt := string(types.DockerManifestSchema2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pull(ctx, manifestPath, mt, mdigest.String()); err != nil {
		t.Fatal(err) // the connection is up
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := range 12 {
		g.Go(func() error {
			if i%2 == 0 {
				return pull(gctx, blobPath, "", layer.String())
			}
			for range 10 {
				if err := pull(gctx, manifestPath, mt, mdigest.String()); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	cctx, ccancel := context.WithCancel(ctx)
	resp, err := get(cctx, blobPath, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	ccancel()
	resp.Body.Close()
	if err := pull(ctx, blobPath, "", layer.String()); err != nil {
		t.Fatalf("after a cancelled download: %v", err)
	}
	if err := pull(ctx, manifestPath, mt, mdigest.String()); err != nil {
		t.Fatalf("after a cancelled download: %v", err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections, want every stream on one", n)
	}
}
