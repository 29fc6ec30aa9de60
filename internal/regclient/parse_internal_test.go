package regclient

import (
	"strings"
	"testing"
)

func TestParseChallenge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, header string
		want         challenge
	}{
		{"harbor", `Bearer realm="https://harbor.example/service/token",service="harbor-registry"`,
			challenge{scheme: "bearer", realm: "https://harbor.example/service/token", service: "harbor-registry"}},
		{"distribution htpasswd", `Basic realm="vendor"`, challenge{scheme: "basic", realm: "vendor"}},
		{"scheme only", "Basic", challenge{scheme: "basic"}},
		{"scheme upper case", `BEARER realm="r"`, challenge{scheme: "bearer", realm: "r"}},
		{"empty", "", challenge{}},
		{"unquoted values", `Bearer realm=https://h/token,service=reg`,
			challenge{scheme: "bearer", realm: "https://h/token", service: "reg"}},
		{"unquoted value with query", `Bearer realm=https://h/token?a=b,service=reg`,
			challenge{scheme: "bearer", realm: "https://h/token?a=b", service: "reg"}},
		{"extra params before and after", `Bearer error="insufficient_scope",realm="https://h/t",scope="repository:a/b:pull,push",service="s"`,
			challenge{scheme: "bearer", realm: "https://h/t", service: "s"}},
		{"comma inside a quoted value", `Bearer realm="https://h/t?x=1,2",service="s,t"`,
			challenge{scheme: "bearer", realm: "https://h/t?x=1,2", service: "s,t"}},
		{"spaces after commas", `Bearer realm="https://h/t",  service="s"`,
			challenge{scheme: "bearer", realm: "https://h/t", service: "s"}},
		{"leading spaces", `   Bearer realm="r"`, challenge{scheme: "bearer", realm: "r"}},
		{"parameter names in other case", `Bearer Realm="r",SERVICE="s"`, challenge{scheme: "bearer", realm: "r", service: "s"}},
		{"unterminated quote", `Bearer realm="https://h/t`, challenge{scheme: "bearer", realm: "https://h/t"}},
		{"empty quoted value", `Bearer realm="",service="s"`, challenge{scheme: "bearer", service: "s"}},
		{"parameter without value", `Bearer realm`, challenge{scheme: "bearer"}},
		{"param named like realm", `Bearer xrealm="bad",realm="good"`, challenge{scheme: "bearer", realm: "good"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := parseChallenge(tc.header); got != tc.want {
				t.Errorf("parseChallenge(%q) = %+v, want %+v", tc.header, got, tc.want)
			}
		})
	}
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer realm="https://h/service/token",service="harbor-registry"`)
	f.Add(`Basic realm=vendor`)
	f.Add(`Bearer realm="`)
	f.Add(`Bearer ,,,=,"=",`)
	f.Fuzz(func(t *testing.T, h string) {
		ch := parseChallenge(h) // must not panic or loop
		if ch.scheme != strings.ToLower(ch.scheme) {
			t.Fatalf("scheme %q is not lower case", ch.scheme)
		}
		if len(ch.realm) > len(h) || len(ch.service) > len(h) {
			t.Fatalf("parseChallenge(%q) = %+v: values longer than the header", h, ch)
		}
	})
}

func TestNextLink(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, header, want string
		bug                string // set when the case fails because of a known bug
	}{
		{"distribution", `</v2/a/tags/list?last=t999&n=1000>; rel="next"`, "/v2/a/tags/list?last=t999&n=1000", ""},
		{"absolute URL stays on the registry", `<https://elsewhere.example:5000/v2/a/tags/list?last=x&n=2>; rel="next"`, "/v2/a/tags/list?last=x&n=2", ""},
		{"no header", "", "", ""},
		{"last page names only prev", `</v2/a/tags/list?n=2>; rel="prev"`, "", ""},
		{"no angle brackets", `/v2/a/tags/list?n=2; rel="next"`, "", ""},
		{"brackets reversed", `>/v2/a/tags/list<; rel="next"`, "", ""},
		{"escaped repository name", `</v2/a%2Fb/tags/list?last=%3Ax>; rel="next"`, "/v2/a%2Fb/tags/list?last=%3Ax", ""},
		{"next after first", `</v2/a/tags/list?last=b>; rel="next", </v2/a/tags/list?last=z>; rel="last"`, "/v2/a/tags/list?last=b", ""},
		{"prev before next", `</v2/a/tags/list?n=2>; rel="prev", </v2/a/tags/list?last=d&n=2>; rel="next"`, "/v2/a/tags/list?last=d&n=2",
			`nextLink takes the first <...> of the header whatever its rel: with a Link header naming rel="prev" before rel="next" (RFC 5988 allows several links), Tags and Catalog follow the previous page and loop between two pages, collecting duplicates until the 10000-page bound`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := nextLink(tc.header)
			if got != tc.want && tc.bug != "" {
				t.Fatal("regression: " + tc.bug)
			}
			if got != tc.want {
				t.Errorf("nextLink(%q) = %q, want %q", tc.header, got, tc.want)
			}
		})
	}
}

func FuzzNextLink(f *testing.F) {
	f.Add(`</v2/a/tags/list?last=t999&n=1000>; rel="next"`)
	f.Add(`<https://h/x>; rel="next"`)
	f.Add(`<>; rel="next"`)
	f.Fuzz(func(t *testing.T, h string) {
		got := nextLink(h)
		if got != "" && !strings.HasPrefix(got, "/") {
			t.Fatalf("nextLink(%q) = %q: not a path on the registry", h, got)
		}
		if got != "" && !strings.Contains(h, `rel="next"`) {
			t.Fatalf("nextLink(%q) = %q without a next link", h, got)
		}
	})
}

func TestScopeKeyIgnoresOrder(t *testing.T) {
	t.Parallel()
	a := scopeKey([]string{pushScope("b"), pullScope("a")})
	b := scopeKey([]string{pullScope("a"), pushScope("b")})
	if a != b {
		t.Errorf("scopeKey depends on order: %q vs %q", a, b)
	}
	if a == scopeKey([]string{pullScope("a")}) {
		t.Errorf("scopeKey(%q) is the key of a single scope", a)
	}
	if got, want := pushScope("p/r"), "repository:p/r:pull,push"; got != want {
		t.Errorf("pushScope = %q, want %q", got, want)
	}
	if got, want := catalogScope(), "registry:catalog:*"; got != want {
		t.Errorf("catalogScope = %q, want %q", got, want)
	}
}
