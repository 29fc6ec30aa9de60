package regclient_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// The tests here run against Debian's docker-registry (distribution 2.8)
// over TLS with htpasswd (Basic) authentication.

const (
	regUser     = "promoter"
	regPassword = "Pr0moter-pw-never-shown"
)

type realRegistry struct {
	*testkit.DockerRegistry
	ca *testCA
}

func startRealRegistry(t *testing.T) *realRegistry {
	t.Helper()
	testkit.Need(t, "docker-registry")
	dir := t.TempDir()
	ca := newCA(t, "registry CA")
	certFile, keyFile := ca.loopbackLeaf(t).writeFiles(t, dir)
	reg := testkit.StartDockerRegistry(t, testkit.DockerRegistryOptions{
		CertFile: certFile, KeyFile: keyFile, RootCAs: ca.Pool(),
		Htpasswd: htpasswd(t, dir, map[string]string{regUser: regPassword, "reader": "reader-pw"}),
	})
	return &realRegistry{DockerRegistry: reg, ca: ca}
}

func (r *realRegistry) client(t *testing.T, user, password string) *regclient.Client {
	t.Helper()
	return newClient(t, regclient.Options{URL: "https://" + r.Host, CAPEM: r.ca.PEM, Username: user, Password: password})
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushImage pushes a config and a layer to repo and returns an OCI image
// manifest naming them.
func pushImage(t *testing.T, c *regclient.Client, repo string) []byte {
	t.Helper()
	ctx := ctxFor(t)
	config := fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"created":"%x"}`, randomBytes(t, 8))
	layer := randomBytes(t, 300<<10)
	for _, b := range [][]byte{config, layer} {
		if _, err := c.PushBlob(ctx, repo, digest.FromBytes(b), int64(len(b)), opener(b, nil), ""); err != nil {
			t.Fatalf("PushBlob: %v", err)
		}
	}
	m, err := json.MarshalIndent(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.FromBytes(config), "size": len(config)},
		"layers":        []map[string]any{{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest.FromBytes(layer), "size": len(layer)}},
	}, "", "   ") // unusual indentation: the bytes must survive as they are
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDockerRegistry(t *testing.T) {
	t.Parallel()
	reg := startRealRegistry(t)

	t.Run("login", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, user, pw string
			want           error
			wantMsg        string
		}{
			{"right credentials", regUser, regPassword, nil, ""},
			{"wrong password", regUser, "not-the-password-77", regclient.ErrUnauthorized, "the registry refused user " + regUser},
			{"unknown user", "nobody", "nobody-pw-77", regclient.ErrUnauthorized, "user nobody"},
			{"no credentials", "", "", regclient.ErrUnauthorized, "asks for credentials"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				err := reg.client(t, tc.user, tc.pw).Login(ctxFor(t))
				if tc.want == nil {
					if err != nil {
						t.Fatalf("Login: %v", err)
					}
					return
				}
				asError(t, err, tc.want)
				mustContain(t, err.Error(), "log in", reg.Host, tc.wantMsg)
				if tc.pw != "" && strings.Contains(err.Error(), tc.pw) {
					t.Errorf("the error shows the password: %v", err)
				}
			})
		}
	})

	t.Run("system roots do not trust it", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, regclient.Options{URL: "https://" + reg.Host, Username: regUser, Password: regPassword})
		err := c.Login(ctxFor(t))
		asError(t, err, regclient.ErrTLS)
		mustContain(t, err.Error(), "give the registry's CA")
	})

	t.Run("check push", func(t *testing.T) {
		t.Parallel()
		c := reg.client(t, regUser, regPassword)
		if err := c.CheckPush(ctxFor(t), "checked/only"); err != nil {
			t.Fatalf("CheckPush: %v", err)
		}
		err := reg.client(t, regUser, "wrong-pw-77").CheckPush(ctxFor(t), "checked/only")
		asError(t, err, regclient.ErrUnauthorized)
		mustContain(t, err.Error(), "check push rights on", reg.Host+"/checked/only")
		tags, err := c.Tags(ctxFor(t), "checked/only")
		if err != nil || len(tags) != 0 {
			t.Errorf("after CheckPush the repository has tags %v (%v)", tags, err)
		}
	})

	t.Run("blobs", func(t *testing.T) {
		t.Parallel()
		c := reg.client(t, regUser, regPassword)
		ctx := ctxFor(t)
		data := randomBytes(t, 2<<20+17)
		d := digest.FromBytes(data)
		if ok, err := c.HeadBlob(ctx, "blobs/a", d); err != nil || ok {
			t.Fatalf("HeadBlob before the push = %v, %v; want false", ok, err)
		}
		var opened atomic.Int32
		mounted, err := c.PushBlob(ctx, "blobs/a", d, int64(len(data)), opener(data, &opened), "")
		if err != nil || mounted || opened.Load() != 1 {
			t.Fatalf("PushBlob = %v, %v (opened %d); want sent once", mounted, err, opened.Load())
		}
		if ok, err := c.HeadBlob(ctx, "blobs/a", d); err != nil || !ok {
			t.Fatalf("HeadBlob after the push = %v, %v; want true", ok, err)
		}
		body, size, err := c.OpenBlob(ctx, "blobs/a", d)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(body)
		_ = body.Close()
		if err != nil || !bytes.Equal(got, data) || size != int64(len(data)) {
			t.Fatalf("OpenBlob read %d bytes (size %d), %v; want the %d pushed", len(got), size, err, len(data))
		}

		// mount from the repository that holds it: nothing is sent
		opened.Store(0)
		mounted, err = c.PushBlob(ctx, "blobs/b", d, int64(len(data)), opener(data, &opened), "blobs/a")
		if err != nil || !mounted || opened.Load() != 0 {
			t.Fatalf("PushBlob with mountFrom = %v, %v (opened %d); want mounted, not opened", mounted, err, opened.Load())
		}
		if ok, err := c.HeadBlob(ctx, "blobs/b", d); err != nil || !ok {
			t.Fatalf("HeadBlob of the mounted blob = %v, %v", ok, err)
		}

		// mount from a repository without it: uploaded instead
		other := randomBytes(t, 1000)
		mounted, err = c.PushBlob(ctx, "blobs/c", digest.FromBytes(other), int64(len(other)), opener(other, &opened), "blobs/a")
		if err != nil || mounted || opened.Load() != 1 {
			t.Fatalf("PushBlob with a mount that cannot happen = %v, %v (opened %d); want uploaded", mounted, err, opened.Load())
		}

		// content that does not match its digest is refused and not stored
		wrong := digest.FromString("something else")
		_, err = c.PushBlob(ctx, "blobs/a", wrong, int64(len(other)), opener(other, nil), "")
		e := asError(t, err, regclient.ErrDigestMismatch)
		if e.Code != "DIGEST_INVALID" {
			t.Errorf("Code = %q, want DIGEST_INVALID", e.Code)
		}
		if ok, _ := c.HeadBlob(ctx, "blobs/a", wrong); ok {
			t.Error("the refused blob is stored")
		}
		_, _, err = c.OpenBlob(ctx, "blobs/a", wrong)
		asError(t, err, regclient.ErrNotFound)

		// wrong credentials
		_, err = reg.client(t, regUser, "wrong-pw-77").HeadBlob(ctx, "blobs/a", d)
		asError(t, err, regclient.ErrUnauthorized)
	})

	t.Run("manifests", func(t *testing.T) {
		t.Parallel()
		c := reg.client(t, regUser, regPassword)
		ctx := ctxFor(t)
		const mt = "application/vnd.oci.image.manifest.v1+json"
		m := pushImage(t, c, "team/app")
		want := digest.FromBytes(m)
		res, err := c.PutManifest(ctx, "team/app", "v1.0", mt, m)
		if err != nil {
			t.Fatalf("PutManifest: %v", err)
		}
		if res.Digest != want {
			t.Errorf("PutManifest digest %s, want %s", res.Digest, want)
		}
		for _, ref := range []string{"v1.0", want.String()} {
			desc, ok, err := c.HeadManifest(ctx, "team/app", ref)
			if err != nil || !ok {
				t.Fatalf("HeadManifest(%s) = %v, %v", ref, ok, err)
			}
			if desc.Digest != want || desc.MediaType != mt || desc.Size != int64(len(m)) {
				t.Errorf("HeadManifest(%s) = %+v, want %s %s %d", ref, desc, want, mt, len(m))
			}
			desc, got, err := c.GetManifest(ctx, "team/app", ref)
			if err != nil {
				t.Fatalf("GetManifest(%s): %v", ref, err)
			}
			if !bytes.Equal(got, m) {
				t.Errorf("GetManifest(%s) is not byte-identical:\n%s\nwant\n%s", ref, got, m)
			}
			if desc.Digest != want || desc.MediaType != mt || desc.Size != int64(len(m)) {
				t.Errorf("GetManifest(%s) = %+v", ref, desc)
			}
		}
		// by digest again, and a second tag for the same bytes
		if _, err := c.PutManifest(ctx, "team/app", want.String(), mt, m); err != nil {
			t.Fatalf("PutManifest by digest: %v", err)
		}
		if _, err := c.PutManifest(ctx, "team/app", "latest", mt, m); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := c.HeadManifest(ctx, "team/app", "v9"); ok || err != nil {
			t.Errorf("HeadManifest of a missing tag = %v, %v; want false, nil", ok, err)
		}
		_, _, err = c.GetManifest(ctx, "team/app", "v9")
		asError(t, err, regclient.ErrNotFound)
		mustContain(t, err.Error(), "read manifest", reg.Host+"/team/app:v9", "MANIFEST_UNKNOWN")

		// a manifest naming blobs the repository does not hold
		var doc map[string]any
		if err := json.Unmarshal(m, &doc); err != nil {
			t.Fatal(err)
		}
		doc["layers"] = []map[string]any{{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest.FromString("absent"), "size": 6}}
		bad, _ := json.Marshal(doc)
		_, err = c.PutManifest(ctx, "team/app", "broken", mt, bad)
		e := asError(t, err, regclient.ErrProtocol)
		if e.Code != "MANIFEST_BLOB_UNKNOWN" {
			t.Errorf("Code = %q, want MANIFEST_BLOB_UNKNOWN", e.Code)
		}

		tags, err := c.Tags(ctx, "team/app")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"latest", "v1.0"}; !slices.Equal(tags, want) {
			t.Errorf("Tags = %v, want %v", tags, want)
		}
		if tags, err := c.Tags(ctx, "team/never-pushed"); err != nil || tags != nil {
			t.Errorf("Tags of an unknown repository = %v, %v; want none", tags, err)
		}

		list, supported, err := c.Referrers(ctx, "team/app", want)
		if err != nil || supported || list != nil {
			t.Errorf("Referrers on distribution 2.8 = %v, %v, %v; want unsupported", list, supported, err)
		}
		if _, _, err := c.GetManifest(ctx, "team/app", regclient.FallbackTag(want)); !errors.Is(err, regclient.ErrNotFound) {
			t.Errorf("fallback tag before any referrer: %v, want not found", err)
		}
	})

	t.Run("catalog", func(t *testing.T) {
		t.Parallel()
		c := reg.client(t, regUser, regPassword)
		ctx := ctxFor(t)
		if err := c.CheckPush(ctx, "cat/checked"); err != nil {
			t.Fatal(err)
		}
		for _, repo := range []string{"cat/one", "cat/two/nested"} {
			if _, err := c.PutManifest(ctx, repo, "v1", "application/vnd.oci.image.manifest.v1+json", pushImage(t, c, repo)); err != nil {
				t.Fatal(err)
			}
		}
		repos, err := c.Catalog(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"cat/one", "cat/two/nested"} {
			if !slices.Contains(repos, want) {
				t.Errorf("Catalog = %v, missing %s", repos, want)
			}
		}
		if slices.Contains(repos, "cat/checked") {
			t.Errorf("Catalog lists %q, where CheckPush only tried an upload", "cat/checked")
		}
		_, err = reg.client(t, "", "").Catalog(ctx)
		asError(t, err, regclient.ErrUnauthorized)
	})

	t.Run("not Harbor", func(t *testing.T) {
		t.Parallel()
		info, err := reg.client(t, regUser, regPassword).Harbor(ctxFor(t))
		if info != nil || err != nil {
			t.Errorf("Harbor() on docker-registry = %+v, %v; want nil, nil", info, err)
		}
	})
}

// TestDockerRegistryAnonymous: a registry without authentication over
// plain HTTP, as tests and labs run one.
func TestDockerRegistryAnonymous(t *testing.T) {
	t.Parallel()
	reg := testkit.StartDockerRegistry(t, testkit.DockerRegistryOptions{})
	c := newClient(t, regclient.Options{URL: "http://" + reg.Host})
	ctx := ctxFor(t)
	if err := c.Login(ctx); err != nil {
		t.Fatalf("Login: %v", err)
	}
	if err := c.CheckPush(ctx, "open/repo"); err != nil {
		t.Fatalf("CheckPush: %v", err)
	}
	m := pushImage(t, c, "open/repo")
	if _, err := c.PutManifest(ctx, "open/repo", "v1", "application/vnd.oci.image.manifest.v1+json", m); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.GetManifest(ctx, "open/repo", "v1"); err != nil || !bytes.Equal(got, m) {
		t.Fatalf("GetManifest = %v; identical: %v", err, bytes.Equal(got, m))
	}
	// https on a plain-HTTP registry
	tlsClient := newClient(t, regclient.Options{URL: "https://" + reg.Host})
	err := tlsClient.Login(ctx)
	asError(t, err, regclient.ErrTLS)
	mustContain(t, err.Error(), "does not speak TLS")
}
