package regclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// Harbor's REST API (/api/v2.0, Basic credentials; robot accounts too).
// See docs/promotion.md for what the appliance asks of it.

// HarborInfo is what GET /api/v2.0/systeminfo tells.
type HarborInfo struct {
	Version string `json:"harbor_version"`
	// ReadOnly is Harbor's read-only mode: pushes are refused.
	ReadOnly bool `json:"read_only"`
	// ProjectCreationRestriction is "everyone" or "adminonly".
	ProjectCreationRestriction string `json:"project_creation_restriction"`
	ExternalURL                string `json:"external_url"`
	RegistryURL                string `json:"registry_url"`
}

// harborProjectRE is Harbor's own rule for project names
// (src/pkg/project/manager.go): lower case only, single separators.
var harborProjectRE = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

// ValidHarborProject tells whether Harbor accepts name as a project.
func ValidHarborProject(name string) bool {
	return len(name) >= 1 && len(name) <= 255 && harborProjectRE.MatchString(name)
}

// Harbor tells whether the registry is Harbor (GET /api/v2.0/ping answers
// "Pong") and, if so, what its systeminfo says. It returns nil, nil for
// any other registry.
func (c *Client) Harbor(ctx context.Context) (*HarborInfo, error) {
	r := request{op: "detect Harbor at", target: c.Host(), method: http.MethodGet, path: "/api/v2.0/ping", noAuth: true}
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	drain(resp)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(strings.Trim(string(body), `"`)) != "Pong" {
		return nil, nil
	}
	var info HarborInfo
	if err := c.harborJSON(ctx, "read Harbor system info", c.Host(), http.MethodGet, "/api/v2.0/systeminfo", nil, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// HarborProject is a Harbor project as the appliance needs it.
type HarborProject struct {
	Name   string
	Public bool
}

// HarborGetProject reads a project; found is false when it does not exist.
func (c *Client) HarborGetProject(ctx context.Context, name string) (p HarborProject, found bool, err error) {
	var body struct {
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	// A name of digits would be read as a project id without the header.
	err = c.harborCall(ctx, "read Harbor project", name, http.MethodGet, "/api/v2.0/projects/"+url.PathEscape(name),
		http.Header{"X-Is-Resource-Name": {"true"}}, nil, &body)
	if errors.Is(err, ErrNotFound) {
		return HarborProject{}, false, nil
	}
	// Harbor answers 403 to a robot asking about a project it has no role in.
	if err != nil {
		return HarborProject{}, false, err
	}
	// metadata.public is the string "true" or "false".
	return HarborProject{Name: body.Name, Public: body.Metadata["public"] == "true"}, true, nil
}

// HarborCreateProject creates a project with the given visibility. A
// project that exists already is not an error (created is false).
func (c *Client) HarborCreateProject(ctx context.Context, name string, public bool) (created bool, err error) {
	if !ValidHarborProject(name) {
		return false, &Error{Op: "create Harbor project", Target: name, Err: fmt.Errorf("%w: Harbor project names are lower-case letters, digits and single . _ - separators", ErrDenied)}
	}
	pub := "false"
	if public {
		pub = "true"
	}
	in := map[string]any{"project_name": name, "metadata": map[string]string{"public": pub}}
	err = c.harborJSON(ctx, "create Harbor project", name, http.MethodPost, "/api/v2.0/projects", in, nil)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusConflict {
		return false, nil
	}
	return err == nil, err
}

// HarborUser is the account the credentials belong to.
type HarborUser struct {
	Username string `json:"username"`
	SysAdmin bool   `json:"sysadmin_flag"`
	// Robot is set for robot accounts, which Harbor does not describe here.
	Robot bool `json:"-"`
}

// HarborCurrentUser tells who the credentials are. Robot accounts are
// reported as such (Harbor refuses them this call).
func (c *Client) HarborCurrentUser(ctx context.Context) (HarborUser, error) {
	if strings.HasPrefix(c.username, "robot$") || strings.HasPrefix(c.username, "robot_") {
		return HarborUser{Username: c.username, Robot: true}, nil
	}
	var u HarborUser
	err := c.harborJSON(ctx, "read Harbor account", c.username, http.MethodGet, "/api/v2.0/users/current", nil, &u)
	var e *Error
	if errors.As(err, &e) && e.Code == "PRECONDITION" {
		return HarborUser{Username: c.username, Robot: true}, nil
	}
	return u, err
}

// HarborRepositories lists the repositories of a project
// ("project/repo…" names), following Harbor's pages.
func (c *Client) HarborRepositories(ctx context.Context, project string) ([]string, error) {
	var out []string
	for page := 1; page < 10000; page++ {
		var body []struct {
			Name string `json:"name"`
		}
		q := url.Values{"page": {fmt.Sprint(page)}, "page_size": {"100"}}
		err := c.harborJSON(ctx, "list Harbor repositories of", project, http.MethodGet,
			"/api/v2.0/projects/"+url.PathEscape(project)+"/repositories?"+q.Encode(), nil, &body)
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		for _, r := range body {
			out = append(out, r.Name)
		}
		if len(body) < 100 {
			break
		}
	}
	return out, nil
}

// HarborArtifact is one artifact of a repository, with its tags.
type HarborArtifact struct {
	Digest string `json:"digest"`
	Tags   []struct {
		Name string `json:"name"`
	} `json:"tags"`
}

// HarborArtifacts lists repo's artifacts with their tags (repo is
// "project/name…"; nested names are escaped twice, as Harbor wants).
func (c *Client) HarborArtifacts(ctx context.Context, repo string) ([]HarborArtifact, error) {
	project, name, ok := strings.Cut(repo, "/")
	if !ok {
		return nil, &Error{Op: "list Harbor artifacts of", Target: repo, Err: fmt.Errorf("%w: want project/repository", ErrNotFound)}
	}
	var out []HarborArtifact
	for page := 1; page < 10000; page++ {
		var body []HarborArtifact
		q := url.Values{"page": {fmt.Sprint(page)}, "page_size": {"100"}, "with_tag": {"true"}}
		p := "/api/v2.0/projects/" + url.PathEscape(project) + "/repositories/" + url.PathEscape(url.PathEscape(name)) + "/artifacts?" + q.Encode()
		if err := c.harborJSON(ctx, "list Harbor artifacts of", repo, http.MethodGet, p, nil, &body); err != nil {
			return nil, err
		}
		out = append(out, body...)
		if len(body) < 100 {
			break
		}
	}
	return out, nil
}

// harborJSON calls Harbor's REST API with Basic credentials.
func (c *Client) harborJSON(ctx context.Context, op, target, method, path string, in, out any) error {
	return c.harborCall(ctx, op, target, method, path, nil, in, out)
}

func (c *Client) harborCall(ctx context.Context, op, target, method, path string, extra http.Header, in, out any) error {
	r := request{op: op, target: target, method: method, path: path, basic: true,
		header: http.Header{"Accept": {"application/json"}}}
	for k, v := range extra {
		r.header[k] = v
	}
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return &Error{Op: op, Target: target, Err: err}
		}
		r.body, r.size = bytes.NewReader(data), int64(len(data))
		r.header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return statusError(op, target, resp)
	}
	defer drain(resp)
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return &Error{Op: op, Target: target, Err: fmt.Errorf("%w: %w", ErrProtocol, err)}
	}
	return nil
}
