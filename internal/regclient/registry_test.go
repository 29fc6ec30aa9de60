package regclient_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
)

// openRegistry serves h behind a GET /v2/ that asks for no credentials.
func openRegistry(t *testing.T, h http.HandlerFunc) (*httptest.Server, *regclient.Client) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, newClient(t, regclient.Options{URL: srv.URL})
}

// pager serves names in pages of at most n (the client's n, at most
// max), with distribution's Link header, and records each page asked for.
type pager struct {
	names []string
	max   int
	key   string // "tags" or "repositories"
	link  func(next string) string

	mu    sync.Mutex
	asked []string
}

func (p *pager) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.asked = append(p.asked, r.URL.RequestURI())
	p.mu.Unlock()
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n <= 0 {
		http.Error(w, "want n", http.StatusBadRequest)
		return
	}
	n = min(n, p.max)
	last := r.URL.Query().Get("last")
	start := 0
	if last != "" {
		start, _ = slices.BinarySearch(p.names, last)
		if start < len(p.names) && p.names[start] == last {
			start++
		}
	}
	end := min(start+n, len(p.names))
	page := p.names[start:end]
	if end < len(p.names) {
		next := r.URL.Path + "?" + url.Values{"n": {strconv.Itoa(n)}, "last": {page[len(page)-1]}}.Encode()
		if p.link != nil {
			w.Header().Set("Link", p.link(next))
		} else {
			w.Header().Set("Link", "<"+next+`>; rel="next"`)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"name": "r", p.key: page})
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	return out
}

func TestTagsPagination(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, _ *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	t.Cleanup(func() { // after the parallel subtests
		if n := elsewhere.Load(); n != 0 {
			t.Errorf("the host of an absolute Link got %d requests", n)
		}
	})
	for _, tc := range []struct {
		name  string
		count int
		max   int
		link  func(string) string
		pages int
	}{
		{"one page", 3, 1000, nil, 1},
		{"exactly one full page", 1000, 1000, nil, 1},
		{"several pages", 2500, 1000, nil, 3},
		{"registry pages smaller than asked", 250, 100, nil, 3},
		{"absolute link to another host stays on the registry", 250, 100, func(next string) string { return "<" + other.URL + next + `>; rel="next"` }, 3},
		{"empty repository", 0, 1000, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := &pager{names: names("v", tc.count), max: tc.max, key: "tags", link: tc.link}
			_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v2/team/app/tags/list" {
					http.NotFound(w, r)
					return
				}
				p.serve(w, r)
			})
			got, err := c.Tags(ctxFor(t), "team/app")
			if err != nil {
				t.Fatalf("Tags: %v", err)
			}
			if !slices.Equal(got, p.names) {
				t.Errorf("Tags returned %d tags (first %v), want %d", len(got), got[:min(3, len(got))], len(p.names))
			}
			if len(p.asked) != tc.pages {
				t.Errorf("Tags asked for %d pages (%v), want %d", len(p.asked), p.asked, tc.pages)
			}
			if len(p.asked) > 0 && p.asked[0] != "/v2/team/app/tags/list?n=1000" {
				t.Errorf("first page asked as %q", p.asked[0])
			}
		})
	}
}

func TestTagsAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		status  int
		body    string
		want    error
		wantNil bool
	}{
		{"unknown repository", 404, `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`, nil, true},
		{"not JSON", 200, `<html>`, regclient.ErrProtocol, false},
		{"denied", 403, `{"errors":[{"code":"DENIED","message":"no"}]}`, regclient.ErrDenied, false},
		{"null tags", 200, `{"name":"r","tags":null}`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c := openRegistry(t, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			got, err := c.Tags(ctxFor(t), "r")
			if tc.want != nil {
				asError(t, err, tc.want)
				mustContain(t, err.Error(), "list tags of")
				return
			}
			if err != nil || (tc.wantNil && got != nil) {
				t.Fatalf("Tags = %v, %v; want none, nil", got, err)
			}
		})
	}
}

func TestCatalogPagination(t *testing.T) {
	t.Parallel()
	p := &pager{names: names("team/r", 2100), max: 1000, key: "repositories"}
	_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/_catalog" {
			http.NotFound(w, r)
			return
		}
		p.serve(w, r)
	})
	got, err := c.Catalog(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, p.names) || len(p.asked) != 3 {
		t.Errorf("Catalog returned %d repositories in %d pages, want %d in 3", len(got), len(p.asked), len(p.names))
	}
}

func TestCatalogRefused(t *testing.T) {
	t.Parallel()
	_, c := openRegistry(t, func(w http.ResponseWriter, _ *http.Request) {
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
	})
	_, err := c.Catalog(ctxFor(t))
	asError(t, err, regclient.ErrUnauthorized)
	mustContain(t, err.Error(), "list repositories of")
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	sig := regclient.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest.FromString("sig"), Size: 512,
		ArtifactType: "application/vnd.dev.cosign.artifact.sig.v1+json", Annotations: map[string]string{"dev.sigstore.cosign/bundle": "{}"}}
	sbom := regclient.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest.FromString("sbom"), Size: 700, ArtifactType: "application/spdx+json"}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []regclient.Descriptor{sig, sbom}})
	for _, tc := range []struct {
		name          string
		status        int
		body          string
		want          []regclient.Descriptor
		wantSupported bool
		wantErr       error
	}{
		{"list", 200, string(index), []regclient.Descriptor{sig, sbom}, true, nil},
		{"none", 200, `{"schemaVersion":2,"manifests":[]}`, []regclient.Descriptor{}, true, nil},
		{"not served (404)", 404, `404 page not found`, nil, false, nil},
		{"not served (405)", 405, ``, nil, false, nil},
		{"not served (400)", 400, `{"errors":[{"code":"NAME_INVALID"}]}`, nil, false, nil},
		{"denied", 403, `{"errors":[{"code":"DENIED","message":"no"}]}`, nil, false, regclient.ErrDenied},
		{"server error", 500, `boom`, nil, false, regclient.ErrProtocol},
		{"not JSON", 200, `<html>`, nil, false, regclient.ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v2/team/app/referrers/"+subject.String() || r.Header.Get("Accept") != "application/vnd.oci.image.index.v1+json" {
					http.Error(w, "unexpected "+r.URL.Path+" Accept: "+r.Header.Get("Accept"), http.StatusTeapot)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			list, supported, err := c.Referrers(ctxFor(t), "team/app", subject)
			if tc.wantErr != nil {
				asError(t, err, tc.wantErr)
				mustContain(t, err.Error(), "list referrers of", "team/app@"+subject.String())
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if supported != tc.wantSupported {
				t.Errorf("supported = %v, want %v", supported, tc.wantSupported)
			}
			if len(list) != len(tc.want) {
				t.Fatalf("Referrers = %+v, want %+v", list, tc.want)
			}
			for i := range list {
				w := tc.want[i]
				if list[i].Digest != w.Digest || list[i].MediaType != w.MediaType || list[i].Size != w.Size || list[i].ArtifactType != w.ArtifactType || len(list[i].Annotations) != len(w.Annotations) {
					t.Errorf("referrer %d = %+v, want %+v", i, list[i], w)
				}
			}
		})
	}
}

func TestManifestChecks(t *testing.T) {
	t.Parallel()
	const ociManifest = "application/vnd.oci.image.manifest.v1+json"
	payload := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	d := digest.FromBytes(payload)
	other := []byte(`{"schemaVersion":2,"layers":[]}`)

	t.Run("by digest, other bytes", func(t *testing.T) {
		t.Parallel()
		_, c := openRegistry(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", ociManifest)
			w.Header().Set("Docker-Content-Digest", d.String()) // lies
			_, _ = w.Write(other)
		})
		_, _, err := c.GetManifest(ctxFor(t), "r", d.String())
		asError(t, err, regclient.ErrDigestMismatch)
		mustContain(t, err.Error(), "read manifest", "r@"+d.String())
	})
	t.Run("too large", func(t *testing.T) {
		t.Parallel()
		_, c := openRegistry(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", ociManifest)
			_, _ = w.Write(bytes.Repeat([]byte(" "), regclient.MaxManifestSize+1))
		})
		_, _, err := c.GetManifest(ctxFor(t), "r", "latest")
		asError(t, err, regclient.ErrProtocol)
		mustContain(t, err.Error(), "manifest over")
	})
	t.Run("media type from the body when the header is generic", func(t *testing.T) {
		t.Parallel()
		_, c := openRegistry(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_, _ = w.Write(payload)
		})
		desc, got, err := c.GetManifest(ctxFor(t), "r", "latest")
		if err != nil {
			t.Fatal(err)
		}
		if desc.MediaType != ociManifest || desc.Digest != d || desc.Size != int64(len(payload)) || !bytes.Equal(got, payload) {
			t.Errorf("GetManifest = %+v", desc)
		}
	})
	t.Run("asks for every manifest type", func(t *testing.T) {
		t.Parallel()
		var accept atomic.Value
		_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) {
			accept.Store(r.Header.Get("Accept"))
			w.Header().Set("Content-Type", ociManifest)
			w.Header().Set("Docker-Content-Digest", d.String())
			_, _ = w.Write(payload)
		})
		if _, _, err := c.GetManifest(ctxFor(t), "r", "latest"); err != nil {
			t.Fatal(err)
		}
		for _, mt := range regclient.ManifestTypes {
			mustContain(t, accept.Load().(string), mt)
		}
	})
	t.Run("HEAD without a digest header", func(t *testing.T) {
		t.Parallel()
		var gets atomic.Int32
		_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet {
				gets.Add(1)
			}
			w.Header().Set("Content-Type", ociManifest)
			_, _ = w.Write(payload)
		})
		desc, ok, err := c.HeadManifest(ctxFor(t), "r", "latest")
		if err != nil || !ok || desc.Digest != d || desc.MediaType != ociManifest {
			t.Fatalf("HeadManifest(tag) = %+v, %v, %v; want digest %s", desc, ok, err, d)
		}
		if gets.Load() != 1 {
			t.Errorf("HeadManifest of a tag without Docker-Content-Digest made %d GETs, want 1", gets.Load())
		}
		desc, ok, err = c.HeadManifest(ctxFor(t), "r", d.String())
		if err != nil || !ok || desc.Digest != d || desc.Size != int64(len(payload)) {
			t.Fatalf("HeadManifest(digest) = %+v, %v, %v", desc, ok, err)
		}
		if gets.Load() != 1 {
			t.Error("HeadManifest of a digest made a GET")
		}
	})
	t.Run("HEAD of nothing", func(t *testing.T) {
		t.Parallel()
		_, c := openRegistry(t, func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNotFound)
		})
		if _, ok, err := c.HeadManifest(ctxFor(t), "r", "latest"); ok || err != nil {
			t.Errorf("HeadManifest = %v, %v; want false, nil", ok, err)
		}
		if ok, err := c.HeadBlob(ctxFor(t), "r", d); ok || err != nil {
			t.Errorf("HeadBlob = %v, %v; want false, nil", ok, err)
		}
		_, _, err := c.GetManifest(ctxFor(t), "r", "latest")
		asError(t, err, regclient.ErrNotFound)
		_, _, err = c.OpenBlob(ctxFor(t), "r", d)
		asError(t, err, regclient.ErrNotFound)
	})
	t.Run("HEAD refused", func(t *testing.T) {
		t.Parallel()
		_, c := openRegistry(t, func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		})
		_, _, err := c.HeadManifest(ctxFor(t), "r", "latest")
		asError(t, err, regclient.ErrDenied)
		_, err = c.HeadBlob(ctxFor(t), "r", d)
		asError(t, err, regclient.ErrDenied)
	})
	t.Run("put stored under another digest", func(t *testing.T) {
		t.Parallel()
		_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(other).String())
			w.WriteHeader(http.StatusCreated)
		})
		_, err := c.PutManifest(ctxFor(t), "r", "v1", ociManifest, payload)
		asError(t, err, regclient.ErrDigestMismatch)
		mustContain(t, err.Error(), "push manifest", digest.FromBytes(other).String())
	})
	t.Run("put with subject", func(t *testing.T) {
		t.Parallel()
		var gotType atomic.Value
		var gotBody atomic.Value
		_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			gotBody.Store(b)
			gotType.Store(r.Header.Get("Content-Type"))
			w.Header().Set("OCI-Subject", "sha256:"+strings.Repeat("a", 64))
			w.WriteHeader(http.StatusCreated)
		})
		res, err := c.PutManifest(ctxFor(t), "r", d.String(), ociManifest, payload)
		if err != nil {
			t.Fatal(err)
		}
		if res.Digest != d || res.Subject != "sha256:"+strings.Repeat("a", 64) {
			t.Errorf("PutManifest = %+v", res)
		}
		if !bytes.Equal(gotBody.Load().([]byte), payload) || gotType.Load() != ociManifest {
			t.Errorf("the registry got %q as %q", gotBody.Load(), gotType.Load())
		}
	})
	t.Run("blob digest refused", func(t *testing.T) {
		t.Parallel()
		_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				w.Header().Set("Location", "/v2/r/blobs/uploads/1")
				w.WriteHeader(http.StatusAccepted)
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
			ociError(w, http.StatusBadRequest, "SIZE_INVALID", "provided length did not match content length")
		})
		_, err := c.PushBlob(ctxFor(t), "r", d, 3, opener([]byte("abc"), nil), "")
		asError(t, err, regclient.ErrDigestMismatch)
	})
}

// TestRedirectDropsCredentials: a registry may send blob reads to a
// storage URL; the credentials stay with the registry.
func TestRedirectDropsCredentials(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "ca")
	l := ca.loopbackLeaf(t)
	blob := []byte("blob served by the storage")
	d := digest.FromBytes(blob)
	var storageAuth atomic.Value
	storageAuth.Store("unset")
	storage := startTLSOn(t, "127.0.0.2:0", l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageAuth.Store(r.Header.Get("Authorization"))
		_, _ = w.Write(blob)
	}))
	var registryAuth atomic.Value
	reg := startTLS(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		registryAuth.Store(r.Header.Get("Authorization"))
		if r.URL.Path == "/v2/" {
			return
		}
		http.Redirect(w, r, storage.URL+"/blobs/"+d.Encoded()+"?sig=abc", http.StatusTemporaryRedirect)
	}))
	c := newClient(t, regclient.Options{URL: reg.URL, CAPEM: ca.PEM, Username: "alice", Password: "pw"})
	body, size, err := c.OpenBlob(ctxFor(t), "r", d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	_ = body.Close()
	if err != nil || !bytes.Equal(got, blob) || size != int64(len(blob)) {
		t.Fatalf("OpenBlob read %q (size %d), %v", got, size, err)
	}
	if a, _ := registryAuth.Load().(string); !strings.HasPrefix(a, "Basic ") {
		t.Errorf("the registry got Authorization %q", a)
	}
	if a := storageAuth.Load(); a != "" {
		t.Errorf("the storage host got Authorization %q", a)
	}
}

func TestUserAgent(t *testing.T) {
	t.Parallel()
	var agents sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agents.Store(r.Header.Get("User-Agent"), true)
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, regclient.Options{URL: srv.URL, UserAgent: "appliance-promote"})
	_ = c.Login(ctxFor(t))
	if _, ok := agents.Load("appliance-promote"); !ok {
		t.Error("the User-Agent was not sent")
	}
	c2 := newClient(t, regclient.Options{URL: srv.URL})
	_ = c2.Login(ctxFor(t))
	if _, ok := agents.Load("appliance"); !ok {
		t.Error("the default User-Agent is not appliance")
	}
}
