package regclient_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/appliance-dev/appliance/internal/regclient"
)

// fakeHarbor is a contract fake of the documented Harbor v2.0 REST API
// (https://github.com/goharbor/harbor/blob/main/api/v2.0/swagger.yaml), the
// endpoints regclient calls, with Harbor's quirks: ping answers Pong,
// metadata.public is the string "true" or "false", a project path segment
// of digits is an ID unless X-Is-Resource-Name is true, /users/current
// answers 412 PRECONDITION to a robot account, pages are page/page_size,
// and repository names in a path are escaped twice. A real Harbor is used
// in the e2e tests (test/e2e).
type fakeHarbor struct {
	srv *httptest.Server

	users      map[string]string // name -> password
	admins     map[string]bool
	robots     map[string]bool // robot accounts with a custom prefix
	adminOnly  bool            // project_creation_restriction
	readOnly   bool
	repos      map[string][]string // project -> repository names ("project/…")
	artifacts  map[string][]map[string]any
	pingAnswer string

	mu       sync.Mutex
	projects []fakeProject
	created  []map[string]any // bodies of POST /projects, as decoded JSON
	requests []fakeHarborRequest
}

type fakeProject struct {
	id     int
	name   string
	public string
}

type fakeHarborRequest struct {
	method, path, rawPath, query string
	user                         string // "" without Basic credentials
	resourceName                 string // X-Is-Resource-Name
}

func newFakeHarbor(t *testing.T, configure func(*fakeHarbor)) *fakeHarbor {
	t.Helper()
	h := &fakeHarbor{
		users:      map[string]string{"admin": "Harbor12345", "dev": "dev-pw", "ci-bot": "bot-pw", "robot$promote": "robot-pw"},
		admins:     map[string]bool{"admin": true},
		robots:     map[string]bool{"ci-bot": true, "robot$promote": true},
		repos:      map[string][]string{},
		artifacts:  map[string][]map[string]any{},
		pingAnswer: "Pong",
		projects:   []fakeProject{{1, "library", "true"}, {2, "nvidia", "false"}, {2024, "legacy", "false"}, {7, "2024", "true"}},
	}
	if configure != nil {
		configure(h)
	}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *fakeHarbor) client(t *testing.T, user string) *regclient.Client {
	t.Helper()
	o := regclient.Options{URL: h.srv.URL, CAPEM: serverPEM(h.srv)}
	if user != "" {
		o.Username, o.Password = user, h.users[user]
	}
	return newClient(t, o)
}

func (h *fakeHarbor) requestLog() []fakeHarborRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.requests)
}

func harborError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// page cuts items by Harbor's page and page_size (default 1 and 10).
func page[T any](w http.ResponseWriter, r *http.Request, items []T) []T {
	p, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || p < 1 {
		p = 1
	}
	size, err := strconv.Atoi(r.URL.Query().Get("page_size"))
	if err != nil || size < 1 {
		size = 10
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(items)))
	start := min((p-1)*size, len(items))
	return items[start:min(start+size, len(items))]
}

var (
	harborProjectPath   = regexp.MustCompile(`^/api/v2\.0/projects/([^/]+)$`)
	harborReposPath     = regexp.MustCompile(`^/api/v2\.0/projects/([^/]+)/repositories$`)
	harborArtifactsPath = regexp.MustCompile(`^/api/v2\.0/projects/([^/]+)/repositories/([^/]+)/artifacts$`)
)

func (h *fakeHarbor) serve(w http.ResponseWriter, r *http.Request) {
	user, pw, hasCreds := r.BasicAuth()
	h.mu.Lock()
	h.requests = append(h.requests, fakeHarborRequest{method: r.Method, path: r.URL.Path, rawPath: r.URL.EscapedPath(), query: r.URL.RawQuery,
		user: user, resourceName: r.Header.Get("X-Is-Resource-Name")})
	h.mu.Unlock()

	if r.URL.Path == "/api/v2.0/ping" {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(h.pingAnswer))
		return
	}
	if hasCreds && (h.users[user] == "" || h.users[user] != pw) {
		harborError(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
		return
	}
	if !hasCreds {
		user = ""
	}
	p := r.URL.Path // decoded once, as Harbor's router splits it
	switch {
	case p == "/api/v2.0/systeminfo" && r.Method == http.MethodGet:
		restriction := "everyone"
		if h.adminOnly {
			restriction = "adminonly"
		}
		writeJSON(w, map[string]any{"harbor_version": "v2.13.1-abcdef", "read_only": h.readOnly, "project_creation_restriction": restriction,
			"external_url": h.srv.URL, "registry_url": h.srv.Listener.Addr().String(), "with_notary": false})
	case p == "/api/v2.0/projects" && r.Method == http.MethodPost:
		h.createProject(w, r, user)
	case harborProjectPath.MatchString(p) && r.Method == http.MethodGet:
		pr, ok := h.project(harborProjectPath.FindStringSubmatch(p)[1], r.Header.Get("X-Is-Resource-Name") == "true")
		if !ok {
			harborError(w, http.StatusNotFound, "NOT_FOUND", "project not found")
			return
		}
		if pr.public != "true" && user == "" {
			harborError(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
			return
		}
		if pr.public != "true" && !h.admins[user] && user != "dev" {
			harborError(w, http.StatusForbidden, "FORBIDDEN", "forbidden")
			return
		}
		writeJSON(w, map[string]any{"project_id": pr.id, "name": pr.name, "metadata": map[string]string{"public": pr.public}})
	case p == "/api/v2.0/users/current" && r.Method == http.MethodGet:
		switch {
		case user == "":
			harborError(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
		case h.robots[user]:
			harborError(w, http.StatusPreconditionFailed, "PRECONDITION", "get current user not available for security context: robot")
		default:
			writeJSON(w, map[string]any{"user_id": 3, "username": user, "sysadmin_flag": h.admins[user]})
		}
	case harborReposPath.MatchString(p) && r.Method == http.MethodGet:
		project := harborReposPath.FindStringSubmatch(p)[1]
		if _, ok := h.project(project, true); !ok {
			harborError(w, http.StatusNotFound, "NOT_FOUND", "project "+project+" not found")
			return
		}
		var out []map[string]any
		for _, name := range page(w, r, h.repos[project]) {
			out = append(out, map[string]any{"name": name, "artifact_count": 1})
		}
		if out == nil {
			out = []map[string]any{}
		}
		writeJSON(w, out)
	case harborArtifactsPath.MatchString(p) && r.Method == http.MethodGet:
		m := harborArtifactsPath.FindStringSubmatch(p)
		name, err := url.PathUnescape(m[2]) // Harbor unescapes the second level itself
		arts, ok := h.artifacts[m[1]+"/"+name]
		if err != nil || !ok {
			harborError(w, http.StatusNotFound, "NOT_FOUND", "repository "+m[1]+"/"+m[2]+" not found")
			return
		}
		if r.URL.Query().Get("with_tag") != "true" {
			arts = slices.Clone(arts)
			for i := range arts {
				arts[i] = map[string]any{"digest": arts[i]["digest"]}
			}
		}
		writeJSON(w, page(w, r, arts))
	default:
		harborError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint "+r.Method+" "+p)
	}
}

func (h *fakeHarbor) project(nameOrID string, isName bool) (fakeProject, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id, err := strconv.Atoi(nameOrID)
	byID := err == nil && !isName
	for _, p := range h.projects {
		if (byID && p.id == id) || (!byID && p.name == nameOrID) {
			return p, true
		}
	}
	return fakeProject{}, false
}

func (h *fakeHarbor) createProject(w http.ResponseWriter, r *http.Request, user string) {
	if user == "" {
		harborError(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
		return
	}
	if h.readOnly {
		harborError(w, http.StatusForbidden, "DENIED", "The system is in read only mode. Any modification is prohibited.")
		return
	}
	if h.adminOnly && !h.admins[user] {
		harborError(w, http.StatusForbidden, "FORBIDDEN", "Only system admin can create project")
		return
	}
	var raw map[string]any
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		harborError(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	h.mu.Lock()
	h.created = append(h.created, raw)
	h.mu.Unlock()
	// Harbor's ProjectReq: metadata is a map of strings; a JSON bool fails.
	name, _ := raw["project_name"].(string)
	meta, _ := raw["metadata"].(map[string]any)
	public, isString := meta["public"].(string)
	if meta["public"] != nil && !isString {
		harborError(w, http.StatusUnprocessableEntity, "UNPROCESSABLE_ENTITY", fmt.Sprintf("metadata.public in body must be of type string: %T", meta["public"]))
		return
	}
	if !regclient.ValidHarborProject(name) {
		harborError(w, http.StatusBadRequest, "BAD_REQUEST", "project name is not in lower case or contains illegal characters")
		return
	}
	if _, ok := h.project(name, true); ok {
		harborError(w, http.StatusConflict, "CONFLICT", "The project named "+name+" already exists")
		return
	}
	if public == "" {
		public = "false"
	}
	h.mu.Lock()
	id := 100 + len(h.projects)
	h.projects = append(h.projects, fakeProject{id, name, public})
	h.mu.Unlock()
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/projects/%d", id))
	w.WriteHeader(http.StatusCreated)
}

func TestHarborDetect(t *testing.T) {
	t.Parallel()
	h := newFakeHarbor(t, func(h *fakeHarbor) { h.readOnly = true; h.adminOnly = true })
	info, err := h.client(t, "admin").Harbor(ctxFor(t))
	if err != nil || info == nil {
		t.Fatalf("Harbor() = %v, %v", info, err)
	}
	want := regclient.HarborInfo{Version: "v2.13.1-abcdef", ReadOnly: true, ProjectCreationRestriction: "adminonly", ExternalURL: h.srv.URL, RegistryURL: h.srv.Listener.Addr().String()}
	if *info != want {
		t.Errorf("Harbor() = %+v, want %+v", *info, want)
	}
	for _, r := range h.requestLog() {
		if r.path == "/api/v2.0/ping" && r.user != "" {
			t.Error("ping was sent with credentials")
		}
		if r.path == "/api/v2.0/systeminfo" && r.user != "admin" {
			t.Errorf("systeminfo was sent as %q, want admin", r.user)
		}
	}

	for _, tc := range []struct {
		name, ping string
		harbor     bool
	}{
		{"quoted Pong", `"Pong"`, true},
		{"Pong with newline", "Pong\n", true},
		{"other answer", "<html>welcome</html>", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newFakeHarbor(t, func(h *fakeHarbor) { h.pingAnswer = tc.ping })
			info, err := h.client(t, "").Harbor(ctxFor(t))
			if err != nil || (info != nil) != tc.harbor {
				t.Errorf("Harbor() = %+v, %v; want Harbor: %v", info, err, tc.harbor)
			}
		})
	}
	t.Run("not Harbor", func(t *testing.T) {
		t.Parallel()
		_, c := openRegistry(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
		if info, err := c.Harbor(ctxFor(t)); info != nil || err != nil {
			t.Errorf("Harbor() on a plain registry = %+v, %v; want nil, nil", info, err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		h := newFakeHarbor(t, nil)
		c := newClient(t, regclient.Options{URL: h.srv.URL, CAPEM: serverPEM(h.srv), Username: "admin", Password: "wrong-pw-123"})
		_, err := c.Harbor(ctxFor(t))
		asError(t, err, regclient.ErrUnauthorized)
		mustContain(t, err.Error(), "read Harbor system info")
		if strings.Contains(err.Error(), "wrong-pw-123") {
			t.Errorf("the error shows the password: %v", err)
		}
	})
}

func TestHarborGetProject(t *testing.T) {
	t.Parallel()
	h := newFakeHarbor(t, nil)
	for _, tc := range []struct {
		name, user, project string
		want                regclient.HarborProject
		found               bool
		wantErr             error
		bug                 string
	}{
		{"public", "admin", "library", regclient.HarborProject{Name: "library", Public: true}, true, nil, ""},
		{"private", "admin", "nvidia", regclient.HarborProject{Name: "nvidia", Public: false}, true, nil, ""},
		{"missing", "admin", "absent", regclient.HarborProject{}, false, nil, ""},
		{"private, anonymous", "", "nvidia", regclient.HarborProject{}, false, regclient.ErrUnauthorized, ""},
		{"robot without a role", "robot$promote", "nvidia", regclient.HarborProject{}, false, regclient.ErrDenied, ""},
		{"name of digits", "admin", "2024", regclient.HarborProject{Name: "2024", Public: true}, true, nil,
			`HarborGetProject("2024") sends GET /api/v2.0/projects/2024 without "X-Is-Resource-Name: true", so Harbor reads 2024 as a project ID and answers with another project (here "legacy", ID 2024) or 404; ValidHarborProject accepts such names`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, found, err := h.client(t, tc.user).HarborGetProject(ctxFor(t), tc.project)
			if tc.wantErr != nil {
				asError(t, err, tc.wantErr)
				mustContain(t, err.Error(), "read Harbor project", tc.project)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (p != tc.want || found != tc.found) && tc.bug != "" {
				t.Fatalf("regression: %s: got %+v", tc.bug, p)
			}
			if p != tc.want || found != tc.found {
				t.Errorf("HarborGetProject(%q) = %+v, %v; want %+v, %v", tc.project, p, found, tc.want, tc.found)
			}
		})
	}
}

func TestHarborCreateProject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, user, project string
		public              bool
		configure           func(*fakeHarbor)
		wantCreated         bool
		wantErr             error
		wantSent            bool // the request reached Harbor
	}{
		{"public", "admin", "nvidia-public", true, nil, true, nil, true},
		{"private", "admin", "vendor.tools", false, nil, true, nil, true},
		{"exists already", "admin", "nvidia", false, nil, false, nil, true},
		{"admin only", "dev", "mine", false, func(h *fakeHarbor) { h.adminOnly = true }, false, regclient.ErrDenied, true},
		{"read-only Harbor", "admin", "mine", false, func(h *fakeHarbor) { h.readOnly = true }, false, regclient.ErrReadOnly, true},
		{"anonymous", "", "mine", false, nil, false, regclient.ErrUnauthorized, true},
		{"upper case", "admin", "Nvidia", false, nil, false, regclient.ErrDenied, false},
		{"double separator", "admin", "a--b", false, nil, false, regclient.ErrDenied, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newFakeHarbor(t, tc.configure)
			created, err := h.client(t, tc.user).HarborCreateProject(ctxFor(t), tc.project, tc.public)
			sent := slices.ContainsFunc(h.requestLog(), func(r fakeHarborRequest) bool { return r.method == http.MethodPost })
			if sent != tc.wantSent {
				t.Errorf("request sent: %v, want %v", sent, tc.wantSent)
			}
			if tc.wantErr != nil {
				asError(t, err, tc.wantErr)
				mustContain(t, err.Error(), "create Harbor project", tc.project)
				return
			}
			if err != nil || created != tc.wantCreated {
				t.Fatalf("HarborCreateProject = %v, %v; want %v", created, err, tc.wantCreated)
			}
			if !tc.wantCreated {
				return
			}
			h.mu.Lock()
			body := h.created[len(h.created)-1]
			h.mu.Unlock()
			meta, _ := body["metadata"].(map[string]any)
			want := strconv.FormatBool(tc.public)
			if got, ok := meta["public"].(string); !ok || got != want || body["project_name"] != tc.project {
				t.Errorf("Harbor got %v, want project_name %q and metadata.public the string %q", body, tc.project, want)
			}
			p, found, err := h.client(t, "admin").HarborGetProject(ctxFor(t), tc.project)
			if err != nil || !found || p.Public != tc.public {
				t.Errorf("after creation HarborGetProject = %+v, %v, %v", p, found, err)
			}
		})
	}
}

func TestHarborCurrentUser(t *testing.T) {
	t.Parallel()
	h := newFakeHarbor(t, nil)
	for _, tc := range []struct {
		user     string
		want     regclient.HarborUser
		wantCall bool
		wantErr  error
	}{
		{"admin", regclient.HarborUser{Username: "admin", SysAdmin: true}, true, nil},
		{"dev", regclient.HarborUser{Username: "dev"}, true, nil},
		{"robot$promote", regclient.HarborUser{Username: "robot$promote", Robot: true}, false, nil},
		{"ci-bot", regclient.HarborUser{Username: "ci-bot", Robot: true}, true, nil}, // a robot of a custom prefix: PRECONDITION
		{"", regclient.HarborUser{}, true, regclient.ErrUnauthorized},
	} {
		t.Run(tc.user, func(t *testing.T) {
			t.Parallel()
			c := h.client(t, tc.user)
			before := len(h.requestLog())
			u, err := c.HarborCurrentUser(ctxFor(t))
			if called := len(h.requestLog()) > before; called != tc.wantCall {
				t.Errorf("called Harbor: %v, want %v", called, tc.wantCall)
			}
			if tc.wantErr != nil {
				asError(t, err, tc.wantErr)
				return
			}
			if err != nil || u != tc.want {
				t.Errorf("HarborCurrentUser = %+v, %v; want %+v", u, err, tc.want)
			}
		})
	}
}

func TestHarborRepositories(t *testing.T) {
	t.Parallel()
	repos := func(p string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s/team/app%03d", p, i)
		}
		return out
	}
	h := newFakeHarbor(t, func(h *fakeHarbor) {
		h.projects = append(h.projects, fakeProject{10, "big", "false"}, fakeProject{11, "round", "false"}, fakeProject{12, "empty", "false"})
		h.repos["big"] = repos("big", 250)
		h.repos["round"] = repos("round", 100)
	})
	for _, tc := range []struct {
		project string
		want    []string
		pages   int
	}{
		{"big", repos("big", 250), 3},
		{"round", repos("round", 100), 2},
		{"empty", nil, 1},
		{"absent", nil, 1},
	} {
		t.Run(tc.project, func(t *testing.T) {
			t.Parallel()
			got, err := h.client(t, "admin").HarborRepositories(ctxFor(t), tc.project)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("HarborRepositories(%q) = %d names, want %d", tc.project, len(got), len(tc.want))
			}
			pages := 0
			for _, r := range h.requestLog() {
				if r.path == "/api/v2.0/projects/"+tc.project+"/repositories" {
					pages++
					if q, _ := url.ParseQuery(r.query); q.Get("page_size") != "100" || r.user != "admin" {
						t.Errorf("asked %q as %q", r.query, r.user)
					}
				}
			}
			if pages != tc.pages {
				t.Errorf("%d pages asked, want %d", pages, tc.pages)
			}
		})
	}
}

func TestHarborArtifacts(t *testing.T) {
	t.Parallel()
	arts := make([]map[string]any, 150)
	for i := range arts {
		arts[i] = map[string]any{"digest": fmt.Sprintf("sha256:%064x", i), "tags": []map[string]string{{"name": fmt.Sprintf("v%d", i)}}}
	}
	arts[149]["tags"] = nil // Harbor sends null for an untagged artifact
	h := newFakeHarbor(t, func(h *fakeHarbor) {
		h.artifacts["nvidia/team/tools/app"] = arts
		h.artifacts["nvidia/flat"] = arts[:2]
	})
	c := h.client(t, "admin")
	got, err := c.HarborArtifacts(ctxFor(t), "nvidia/team/tools/app")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 150 || got[0].Digest != arts[0]["digest"] || len(got[0].Tags) != 1 || got[0].Tags[0].Name != "v0" || len(got[149].Tags) != 0 {
		t.Errorf("HarborArtifacts = %d artifacts, first %+v", len(got), got[:min(1, len(got))])
	}
	pages := 0
	for _, r := range h.requestLog() {
		if strings.Contains(r.path, "/artifacts") {
			pages++
			if r.rawPath != "/api/v2.0/projects/nvidia/repositories/team%252Ftools%252Fapp/artifacts" {
				t.Errorf("asked for %q: the repository name must be escaped twice", r.rawPath)
			}
			if q, _ := url.ParseQuery(r.query); q.Get("with_tag") != "true" {
				t.Errorf("asked without with_tag=true: %q", r.query)
			}
		}
	}
	if pages != 2 {
		t.Errorf("%d pages asked, want 2", pages)
	}
	if got, err := c.HarborArtifacts(ctxFor(t), "nvidia/flat"); err != nil || len(got) != 2 {
		t.Errorf("HarborArtifacts(nvidia/flat) = %d, %v", len(got), err)
	}
	_, err = c.HarborArtifacts(ctxFor(t), "nvidia/absent")
	asError(t, err, regclient.ErrNotFound)
	mustContain(t, err.Error(), "list Harbor artifacts of", "nvidia/absent")
	_, err = c.HarborArtifacts(ctxFor(t), "noproject")
	asError(t, err, regclient.ErrNotFound)
	mustContain(t, err.Error(), "want project/repository")
}

func TestValidHarborProject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"nvidia", true},
		{"a-b", true},
		{"a.b_c-d", true},
		{"vendor2", true},
		{"2024", true},
		{"a", true},
		{strings.Repeat("a", 255), true},
		{"Nvidia", false},
		{"a__b", false},
		{"a--b", false},
		{"a..b", false},
		{"-ab", false},
		{"ab-", false},
		{"a/b", false},
		{"a b", false},
		{"", false},
		{strings.Repeat("a", 256), false},
	} {
		if got := regclient.ValidHarborProject(tc.name); got != tc.want {
			t.Errorf("ValidHarborProject(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
