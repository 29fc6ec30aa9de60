package audit_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/audit"
)

// TestRegistryMiddleware: which /v2/ requests make an entry, and what it says.
func TestRegistryMiddleware(t *testing.T) {
	t.Parallel()
	l := open(t, t.TempDir())
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusAccepted
		switch r.Header.Get("X-Test-Status") {
		case "201":
			status = http.StatusCreated
		case "401":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
			return
		case "500":
			status = http.StatusInternalServerError
		}
		if d := r.Header.Get("X-Test-Digest"); d != "" {
			w.Header().Set("Docker-Content-Digest", d)
		}
		w.WriteHeader(status)
	})
	h := audit.Registry(l, next, audit.RegistryOptions{
		Who: func(r *http.Request) (string, map[string]string) { return r.Header.Get("X-Test-User"), nil },
		TagDigest: func(_ context.Context, repo, tag string) (string, bool) {
			return "sha256:old", repo == "lib/app" && tag == "1.0"
		},
	})
	for _, tc := range []struct {
		method, path, status, digest string
		action, target               string // "" when no entry is wanted
		outcome                      audit.Outcome
		details                      map[string]string
	}{
		{"GET", "/v2/lib/app/manifests/1.0", "", "", "", "", "", nil},
		{"HEAD", "/v2/lib/app/blobs/sha256:aa", "", "", "", "", "", nil},
		{"POST", "/v2/lib/app/blobs/uploads/", "", "", "", "", "", nil},
		{"PATCH", "/v2/lib/app/blobs/uploads/u1", "", "", "", "", "", nil},
		{"DELETE", "/v2/lib/app/blobs/uploads/u1", "", "", "", "", "", nil},
		{"PUT", "/v2/lib/app/blobs/uploads/u1?digest=sha256:aa", "201", "sha256:aa", audit.ActionPushBlob, "lib/app@sha256:aa", audit.OK, nil},
		{"POST", "/v2/lib/app/blobs/uploads/?mount=sha256:bb&from=other/x", "201", "sha256:bb", audit.ActionPushBlob, "lib/app@sha256:bb", audit.OK, map[string]string{"mounted_from": "other/x"}},
		{"POST", "/v2/lib/app/blobs/uploads/", "401", "", audit.ActionPushBlob, "lib/app", audit.Refused, map[string]string{"step": "start"}},
		{"PATCH", "/v2/lib/app/blobs/uploads/u2", "500", "", audit.ActionPushBlob, "lib/app", audit.Failed, map[string]string{"step": "chunk"}},
		{"PUT", "/v2/lib/app/manifests/1.0", "201", "sha256:cc", audit.ActionTag, "lib/app:1.0@sha256:cc", audit.OK, map[string]string{"previous": "sha256:old"}},
		{"PUT", "/v2/lib/app/manifests/2.0", "201", "sha256:cc", audit.ActionTag, "lib/app:2.0@sha256:cc", audit.OK, nil},
		{"PUT", "/v2/lib/app/manifests/sha256:dd", "201", "sha256:dd", audit.ActionPushManifest, "lib/app@sha256:dd", audit.OK, nil},
		{"PUT", "/v2/a/manifests/b/manifests/t", "201", "sha256:ee", audit.ActionTag, "a/manifests/b:t@sha256:ee", audit.OK, nil},
		{"DELETE", "/v2/lib/app/manifests/sha256:dd", "", "", audit.ActionDelete, "lib/app@sha256:dd", audit.OK, map[string]string{"kind": "manifest"}},
		{"DELETE", "/v2/lib/app/manifests/1.0", "", "", audit.ActionDelete, "lib/app:1.0", audit.OK, map[string]string{"kind": "tag"}},
		{"DELETE", "/v2/lib/app/blobs/sha256:ff", "", "", audit.ActionDelete, "lib/app@sha256:ff", audit.OK, map[string]string{"kind": "blob"}},
		{"POST", "/v2/", "401", "", audit.ActionRegistry, "/v2/", audit.Refused, nil},
	} {
		before := l.Head().Seq
		r := httptest.NewRequest(tc.method, tc.path, nil)
		r.RemoteAddr = "192.0.2.1:4321"
		r.Header.Set("X-Test-User", "dev")
		r.Header.Set("X-Test-Status", tc.status)
		r.Header.Set("X-Test-Digest", tc.digest)
		h.ServeHTTP(httptest.NewRecorder(), r)
		name := tc.method + " " + tc.path + " " + tc.status
		if tc.action == "" {
			if l.Head().Seq != before {
				t.Errorf("%s made an entry", name)
			}
			continue
		}
		got, _, err := l.Query(t.Context(), audit.Filter{Limit: 1})
		if err != nil || l.Head().Seq != before+1 {
			t.Fatalf("%s: no entry (%v)", name, err)
		}
		e := got[0]
		if e.Action != tc.action || e.Target != tc.target || e.Outcome != tc.outcome || e.Actor != "dev" || e.Remote != "192.0.2.1" || e.Details["method"] != tc.method {
			t.Errorf("%s: entry %+v, want %s %s %s", name, e, tc.action, tc.target, tc.outcome)
		}
		for k, v := range tc.details {
			if e.Details[k] != v {
				t.Errorf("%s: details[%s] = %q, want %q", name, k, e.Details[k], v)
			}
		}
		if tc.status == "401" && e.Reason != "UNAUTHORIZED: authentication required" {
			t.Errorf("%s: reason %q", name, e.Reason)
		}
		if tc.details["previous"] == "" && e.Details["previous"] != "" {
			t.Errorf("%s: previous %q for a new tag", name, e.Details["previous"])
		}
	}
}

func TestRemoteAddr(t *testing.T) {
	t.Parallel()
	trusted, err := audit.ParseTrusted([]string{"10.0.0.0/8", "192.0.2.9"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.ParseTrusted([]string{"proxy"}); err == nil {
		t.Fatal("ParseTrusted took a name")
	}
	for _, tc := range []struct {
		peer, xff string
		trusted   bool
		want      string
	}{
		{"203.0.113.5:1", "198.51.100.1", false, "203.0.113.5"},
		{"10.1.2.3:1", "198.51.100.1", false, "10.1.2.3"},
		{"10.1.2.3:1", "198.51.100.1", true, "198.51.100.1"},
		{"10.1.2.3:1", "198.51.100.1, 198.51.100.2, 10.0.0.7", true, "198.51.100.2"},
		{"10.1.2.3:1", "10.0.0.8, 192.0.2.9", true, "10.0.0.8"},
		{"10.1.2.3:1", "not-an-address", true, "10.1.2.3"},
		{"10.1.2.3:1", "", true, "10.1.2.3"},
		{"203.0.113.5:1", "198.51.100.1", true, "203.0.113.5"},
		{"[2001:db8::1]:443", "", true, "2001:db8::1"},
	} {
		r := httptest.NewRequest("PUT", "/", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		tr := trusted
		if !tc.trusted {
			tr = nil
		}
		if got := audit.RemoteAddr(r, tr); got != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q, trusted %v: %q, want %q", tc.peer, tc.xff, tc.trusted, got, tc.want)
		}
	}
}

func TestParseFilterAndClaimed(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	f, err := audit.ParseFilter(url.Values{"since": {"24h"}, "until": {"2026-11-02T11:00:00Z"}, "action": {"registry."}, "outcome": {"refused"}}, now)
	if err != nil || !f.Since.Equal(now.Add(-24*time.Hour)) || f.Until.Hour() != 11 || f.Action != "registry." || f.Limit != audit.DefaultLimit {
		t.Fatalf("ParseFilter = %+v, %v", f, err)
	}
	for _, q := range []url.Values{{"since": {"yesterday"}}, {"limit": {"0"}}, {"limit": {"10001"}}, {"outcome": {"maybe"}}} {
		if _, err := audit.ParseFilter(q, now); !errors.Is(err, audit.ErrInvalid) {
			t.Errorf("ParseFilter(%v) = %v, want ErrInvalid", q, err)
		}
	}
	if d := audit.Claimed("Basic " + base64.StdEncoding.EncodeToString([]byte("admin:secret"))); d["user"] != "admin" || strings.Contains(fmt.Sprint(d), "secret") {
		t.Fatalf("Claimed = %v", d)
	}
	if got := audit.RedactURL("https://u:pw@harbor.example"); strings.Contains(got, "pw") {
		t.Fatalf("RedactURL = %q", got)
	}
}
