package server

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/audit"
	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/filestore"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/server/apidoc"
	"github.com/appliance-dev/appliance/internal/server/aptapi"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
	"github.com/appliance-dev/appliance/internal/server/replicaapi"
	"github.com/appliance-dev/appliance/internal/server/validationapi"
)

// The OpenAPI document (internal/server/apidoc/openapi.json) is generated
// from the table below and the Go types of each request and answer:
//
//	go test ./internal/server -run TestOpenAPIDocument -update
//
// Without -update the test fails when the embedded document differs from
// what the table and the types say, when the server registers a route the
// table lacks (or the table names one the server does not register), and
// when docs/api.md does not document a route.

var update = flag.Bool("update", false, "rewrite internal/server/apidoc/openapi.json")

// apiOp is one documented route.
type apiOp struct {
	method, path string // as registered on echo (":name", "*")
	who, summary string
	in           any    // the JSON body's type; nil for none
	inType       string // a body other than JSON ("application/x-tar", …)
	status       int    // the success status (200 if zero)
	out          any    // the JSON answer's type; nil for none
	outType      string // an answer other than JSON
}

type (
	filesAnswer struct {
		Files []filestore.Entry `json:"files"`
	}
	healthAnswer struct {
		Status   string `json:"status"`
		ReadOnly bool   `json:"read_only,omitempty"`
		Error    string `json:"error,omitempty"`
	}
)

const (
	anyone = "anyone"
	admin  = "admin"
	wide   = "any appliance-wide user"
	dev    = "developer, admin"
)

var apiOps = []apiOp{
	{method: "GET", path: "/api/v1/openapi.json", who: anyone, summary: "this document", outType: "application/json"},
	{method: "GET", path: "/api/v1/system", who: anyone, summary: "version, mode, names, CA fingerprint, storage", out: SystemInfo{}},
	{method: "GET", path: "/api/v1/whoami", who: anyone, summary: "the caller", out: WhoAmI{}},
	{method: "GET", path: "/api/v1/system/read-only", who: anyone, summary: "the read-only mode", out: registry.Mode{}},
	{method: "PUT", path: "/api/v1/system/read-only", who: admin, summary: "set the read-only mode (refused on a standby)", in: ReadOnlyRequest{}, out: registry.Mode{}},
	{method: "GET", path: "/api/v1/users", who: admin, summary: "the users", out: []auth.User{}},
	{method: "POST", path: "/api/v1/users", who: admin, summary: "add a user", in: UserRequest{}, status: 201, out: auth.User{}},
	{method: "GET", path: "/api/v1/users/:name", who: "admin, or the user", summary: "one user", out: auth.User{}},
	{method: "PATCH", path: "/api/v1/users/:name", who: "admin, or the user (password only)", summary: "change a user", in: UserRequest{}, out: auth.User{}},
	{method: "DELETE", path: "/api/v1/users/:name", who: admin, summary: "remove a user", status: 204},
	{method: "POST", path: "/api/v1/imports", who: dev + " (a path on the appliance's disk: admin)",
		summary: "import an archive streamed in the body (?to_repo, keep_names, source, allow_unsigned), or with a JSON body a path on the appliance's disk",
		in:      ImportPathRequest{}, status: 201, out: history.Record{}},
	{method: "GET", path: "/api/v1/imports", who: wide, summary: "the import history, newest first", out: []history.Record{}},
	{method: "GET", path: "/api/v1/imports/:id", who: wide, summary: "one import", out: history.Record{}},
	{method: "GET", path: "/api/v1/receipt", who: wide, summary: "the signed receipt of what the appliance holds", out: bundle.SignedReceipt{}},
	{method: "GET", path: "/api/v1/files", who: anyone, summary: "the file store's entries", out: filesAnswer{}},
	{method: "GET", path: "/api/v1/apt/repos", who: anyone, summary: "apt repositories and their distributions", out: []aptrepo.RepoInfo{}},
	{method: "GET", path: "/api/v1/apt/search", who: anyone, summary: "packages matching ?q= across repositories", out: []aptrepo.Package{}},
	{method: "GET", path: "/api/v1/apt/repos/:repo/:dist/packages", who: anyone, summary: "a distribution's packages", out: []aptrepo.Package{}},
	{method: "GET", path: "/api/v1/apt/repos/:repo/:dist/history", who: anyone, summary: "a distribution's publishes, newest first", out: []aptrepo.Publish{}},
	{method: "POST", path: "/api/v1/apt/repos/:repo/:dist/packages", who: dev, summary: "publish .deb files (multipart, one \"file\" part each; ?component=)",
		inType: "multipart/form-data", status: 201, out: aptrepo.Publish{}},
	{method: "DELETE", path: "/api/v1/apt/repos/:repo/:dist/packages/:name", who: dev, summary: "remove a package (?version=)", out: aptrepo.Publish{}},
	{method: "POST", path: "/api/v1/apt/repos/:repo/:dist/rollback", who: dev, summary: "return to an earlier publish", in: aptapi.RollbackRequest{}, out: aptrepo.Publish{}},
	{method: "GET", path: "/api/v1/audit", who: admin, summary: "the audit trail, newest first (?since, until, actor, action, target, outcome, limit)", out: AuditAnswer{}},
	{method: "GET", path: "/api/v1/audit/verify", who: admin, summary: "the check of the audit trail's hash chain", out: audit.Report{}},
	{method: "POST", path: "/api/v1/validation", who: admin, summary: "run the validation gate", in: validationapi.Request{}, out: validationapi.Answer{}},
	{method: "GET", path: "/api/v1/validation", who: "any user", summary: "the last validation result", out: validationapi.Answer{}},
	{method: "GET", path: "/api/v1/projects", who: anyone + " (private projects only for those who may pull them)", summary: "the projects", out: []auth.Project{}},
	{method: "GET", path: "/api/v1/projects/:name", who: anyone + " (as above)", summary: "one project", out: auth.Project{}},
	{method: "PUT", path: "/api/v1/projects/:name", who: admin, summary: "make a project public or private", in: ProjectRequest{}, out: auth.Project{}},
	{method: "GET", path: "/api/v1/status", who: anyone, summary: "the lifecycle's status", out: opsapi.Status{}},
	{method: "GET", path: "/api/v1/replication", who: anyone, summary: "the replica role: the writer and the state in force", out: replicaapi.Replication{}},
	{method: "POST", path: "/api/v1/promotions", who: admin, summary: "promote into a target registry (a dry run answers the plan)", in: opsapi.PromoteRequest{}, status: 202, out: promote.Promotion{}},
	{method: "GET", path: "/api/v1/promotions", who: wide, summary: "promotions, newest first", out: []promote.Promotion{}},
	{method: "GET", path: "/api/v1/promotions/:id", who: wide, summary: "one promotion (latest for the newest)", out: promote.Promotion{}},
	{method: "POST", path: "/api/v1/promotions/:id/cancel", who: admin, summary: "stop the running promotion", out: promote.Promotion{}},
	{method: "GET", path: "/api/v1/parity", who: wide, summary: "the newest parity report", out: promote.Parity{}},
	{method: "POST", path: "/api/v1/standby", who: admin, summary: "become the read-only standby of a primary", in: opsapi.StandbyRequest{}, out: opsapi.StandbyAnswer{}},
	{method: "POST", path: "/api/v1/standby/sync", who: admin, summary: "sync with the primary now", out: opsapi.StandbyAnswer{}},
	{method: "GET", path: "/api/v1/standby", who: anyone, summary: "the standby's last sync", out: bootstrap.SyncStatus{}},
	{method: "POST", path: "/api/v1/activate", who: admin, summary: "a standby becomes active", in: opsapi.ActivateRequest{}, out: bootstrap.State{}},
	{method: "GET", path: "/api/v1/supervisor", who: "any user", summary: "what was registered with a Supervisor", out: bootstrap.SupervisorState{}},
	{method: "POST", path: "/api/v1/supervisor/registry", who: admin, summary: "register the appliance with a Supervisor", in: opsapi.SupervisorRegistryRequest{}, out: bootstrap.SupervisorState{}},
	{method: "POST", path: "/api/v1/supervisor/services", who: admin, summary: "register Supervisor Services", in: opsapi.SupervisorServiceRequest{}, out: bootstrap.SupervisorState{}},
	{method: "POST", path: "/api/v1/supervisor/repoint", who: admin, summary: "re-point the Supervisor at Harbor", in: opsapi.SupervisorRepointRequest{}, out: bootstrap.SupervisorState{}},
	{method: "POST", path: "/api/v1/fsck", who: admin, summary: "check (and repair) the storage", in: opsapi.FsckRequest{}, out: maintenance.FsckReport{}},
	{method: "POST", path: "/api/v1/gc", who: admin, summary: "collect garbage", in: opsapi.GCRequest{}, out: maintenance.GCReport{}},

	{method: "GET", path: "/service/token", who: anyone, summary: "Docker token protocol (?service=appliance&scope=…, Basic credentials or none)", out: tokenResponse{}},
	{method: "POST", path: "/service/token", who: anyone, summary: "Docker token protocol, grant_type=password", inType: "application/x-www-form-urlencoded", out: tokenResponse{}},
	{method: "GET", path: "/ca.crt", who: anyone, summary: "the CA certificate (PEM)", outType: "application/x-pem-file"},
	{method: "GET", path: "/healthz", who: anyone, summary: "200 while the process serves", out: healthAnswer{}},
	{method: "HEAD", path: "/healthz", who: anyone, summary: "as GET, without a body"},
	{method: "GET", path: "/readyz", who: anyone, summary: "200 when the data directory is writable and storage readable, else 503", out: healthAnswer{}},
	{method: "HEAD", path: "/readyz", who: anyone, summary: "as GET, without a body"},
	{method: "GET", path: "/metrics", who: anyone, summary: "Prometheus metrics", outType: "text/plain"},
	{method: "GET", path: "/files", who: anyone, summary: "the file store's list (as /files/)", outType: "application/json"},
	{method: "GET", path: "/files/*", who: anyone, summary: "a file (Range, ETag, Digest), NAME.sha256, SHA256SUMS, or the list at /files/", outType: "application/octet-stream"},
	{method: "HEAD", path: "/files/*", who: anyone, summary: "as GET, without a body"},
	{method: "GET", path: "/apt/key.gpg", who: anyone, summary: "the apt signing key (binary)", outType: "application/pgp-keys"},
	{method: "GET", path: "/apt/key.asc", who: anyone, summary: "the apt signing key (armored)", outType: "application/pgp-keys"},
	{method: "GET", path: "/apt/cloud-init.yaml", who: anyone, summary: "a #cloud-config with the apt sources and the CA (?repo, dist)", outType: "text/cloud-config"},
	{method: "GET", path: "/apt/:sources", who: anyone, summary: "REPO.sources: a deb822 sources file with the key inline; other names: the tree", outType: "text/plain"},
	{method: "GET", path: "/apt/*", who: anyone, summary: "the signed apt tree (dists/, pool/)", outType: "application/octet-stream"},
	{method: "HEAD", path: "/apt/*", who: anyone, summary: "as GET, without a body"},
}

// oaPath is an echo path in OpenAPI's form: ":name" → "{name}", "*" → "{path}".
func oaPath(p string) string {
	p = regexp.MustCompile(`:([a-z_]+)`).ReplaceAllString(p, "{$1}")
	return strings.ReplaceAll(p, "*", "{path}")
}

func pathParams(p string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`\{([a-z_]+)\}`).FindAllStringSubmatch(oaPath(p), -1) {
		out = append(out, m[1])
	}
	return out
}

// schemas turns Go types into JSON Schema components.
type schemas map[string]any

var timeType = reflect.TypeFor[time.Time]()

func (s schemas) of(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.Pointer:
		return s.of(t.Elem())
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return map[string]any{"type": "string", "format": "byte"}
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		return map[string]any{"type": "array", "items": s.of(t.Elem())}
	case t.Kind() == reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": s.of(t.Elem())}
	case t.Kind() == reflect.Struct:
		name := t.Name()
		if name == "" {
			return s.object(t)
		}
		name = t.PkgPath()[strings.LastIndex(t.PkgPath(), "/")+1:] + "." + name
		if _, ok := s[name]; !ok {
			s[name] = nil // a placeholder against recursion
			s[name] = s.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	case t.Kind() == reflect.String:
		return map[string]any{"type": "string"}
	case t.Kind() == reflect.Bool:
		return map[string]any{"type": "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return map[string]any{"type": "integer"}
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{} // any JSON (interfaces, json.RawMessage)
}

func (s schemas) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	s.fields(t, props, &required)
	o := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		sort.Strings(required)
		o["required"] = required
	}
	return o
}

func (s schemas) fields(t reflect.Type, props map[string]any, required *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				s.fields(ft, props, required)
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		props[name] = s.of(f.Type)
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") && f.Type.Kind() != reflect.Pointer {
			*required = append(*required, name)
		}
	}
}

// document is the OpenAPI document the table and the types say.
func document(t *testing.T) []byte {
	t.Helper()
	comp := schemas{}
	paths := map[string]map[string]any{}
	for _, op := range apiOps {
		o := map[string]any{
			"summary":     op.summary,
			"description": "Who: " + op.who + ". See docs/api.md.",
			"operationId": strings.ToLower(op.method) + regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(oaPath(op.path), "_"),
		}
		if strings.HasPrefix(op.path, "/api/v1/") {
			o["tags"] = []string{strings.Split(op.path, "/")[3]}
		} else {
			o["tags"] = []string{"outside /api/v1"}
		}
		var params []any
		for _, p := range pathParams(op.path) {
			params = append(params, map[string]any{"name": p, "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		if params != nil {
			o["parameters"] = params
		}
		switch {
		case op.in != nil:
			o["requestBody"] = map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": comp.of(reflect.TypeOf(op.in))}}}
		case op.inType != "":
			o["requestBody"] = map[string]any{"content": map[string]any{op.inType: map[string]any{}}}
		}
		status := op.status
		if status == 0 {
			status = http.StatusOK
		}
		ok := map[string]any{"description": http.StatusText(status)}
		switch {
		case op.out != nil:
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": comp.of(reflect.TypeOf(op.out))}}
		case op.outType != "":
			ok["content"] = map[string]any{op.outType: map[string]any{}}
		}
		responses := map[string]any{strconv.Itoa(status): ok}
		if strings.HasPrefix(op.path, "/api/v1/") {
			responses["default"] = map[string]any{"description": "an error (docs/api.md lists each status and code)",
				"content": map[string]any{"application/json": map[string]any{"schema": comp.of(reflect.TypeFor[APIError]())}}}
		}
		o["responses"] = responses
		p := oaPath(op.path)
		if paths[p] == nil {
			paths[p] = map[string]any{}
		}
		paths[p][strings.ToLower(op.method)] = o
	}
	doc := map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "appliance", "version": "v1",
			"description": "The appliance's HTTP API: /api/v1 (JSON, HTTP Basic credentials or none) and the routes beside it. /v2/ is the OCI Distribution API. docs/api.md says who may call what."},
		"servers":    []any{map[string]any{"url": "/"}},
		"security":   []any{map[string]any{}, map[string]any{"basic": []any{}}},
		"paths":      paths,
		"components": map[string]any{"schemas": comp, "securitySchemes": map[string]any{"basic": map[string]any{"type": "http", "scheme": "basic"}}},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestOpenAPIDocument: the served document is the generated one; every
// route the server registers (both listeners) is in it and in
// docs/api.md, every route in it is registered, and every page and
// action of the console is in docs/console.md.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	want := document(t)
	const file = "apidoc/openapi.json"
	if *update {
		if err := os.WriteFile(file, want, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := apidoc.Document(); !bytes.Equal(got, want) && !*update {
		t.Errorf("%s is not what the route table and the types say: run go test ./internal/server -run TestOpenAPIDocument -update", file)
	}

	ts := startServer(t)
	var served map[string]any
	if code := ts.call(t, http.MethodGet, apidoc.Path, "", "", nil, &served); code != http.StatusOK || served["openapi"] != "3.0.3" {
		t.Fatalf("GET %s = %d %v", apidoc.Path, code, served["openapi"])
	}
	documented := map[string]bool{}
	for _, op := range apiOps {
		documented[op.method+" "+op.path] = true
	}
	apiMD := readDoc(t, "../../docs/api.md")
	consoleMD := readDoc(t, "../../docs/console.md")
	registered := map[string]bool{}
	for listener, routes := range ts.mounted {
		for _, r := range routes {
			key := r.Method + " " + r.Path
			if registered[key] {
				continue // on both listeners
			}
			switch {
			case r.Method == "echo_route_not_found", strings.Contains(r.Name, "httpHandler.func"), strings.HasSuffix(r.Name, "notFound-fm"):
				continue // 404s and the plain listener's redirect
			case strings.Contains(r.Name, "/internal/console."):
				if !consoleDocumented(consoleMD, r.Method, r.Path) {
					t.Errorf("console route %s is not in docs/console.md", key)
				}
				continue
			}
			registered[key] = true
			if !documented[key] {
				t.Errorf("route %s (%s listener) is not in the OpenAPI document's table (openapi_test.go)", key, listener)
			}
			if !strings.Contains(apiMD, "`"+r.Method+" "+oaPath(r.Path)+"`") && !strings.Contains(apiMD, "`"+r.Method+" "+oaPath(r.Path)+"?") {
				t.Errorf("route %s is not in docs/api.md (as `%s %s`)", key, r.Method, oaPath(r.Path))
			}
		}
	}
	for key := range documented {
		if !registered[key] {
			t.Errorf("the OpenAPI table names %s, which the server does not register", key)
		}
	}
}

// consoleDocumented tells whether docs/console.md names a console route:
// a page as `/path` (":name" written NAME, "*" any upper-case word), an
// action as `POST /path`.
func consoleDocumented(md, method, path string) bool {
	re := regexp.QuoteMeta(path)
	re = regexp.MustCompile(`:[a-z_]+|\\\*`).ReplaceAllString(re, `[A-Z]+`)
	if method != http.MethodGet {
		re = method + " " + re
	}
	return regexp.MustCompile("`" + re + "`").MatchString(md)
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
