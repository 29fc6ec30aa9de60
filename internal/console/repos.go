package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// The repository page: its tags from /v2/<repo>/tags/list, filtered by a
// search and paged, and for the tags of the page their manifests (digest,
// media type, size, platforms) and what refers to them (cosign's
// sha256-….sig/.att/.sbom tags and the OCI referrers API).

// pageSize is how many tags one page shows (each costs a manifest read).
const pageSize = 50

// maxTagPages bounds the tags walk (1,000 tags a request).
const maxTagPages = 100

// tagRow is one tag on the page.
type tagRow struct {
	Tag, Digest, MediaType string
	Size                   int64
	Platforms              []string
	Signed                 bool
	Attached               []string // .att, .sbom tags and referrers' artifact types
	Problem                string
	// ImportID and ImportSource name the newest import that set the tag
	// to this digest (shown to those who may read the import history).
	ImportID, ImportSource string
}

// repoView is the repository page's data.
type repoView struct {
	Name, Query    string
	Tags           []tagRow
	Total, Matched int
	Page, Pages    int
	PrevURL        string
	NextURL        string
}

const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

func (c *Console) repository(e echo.Context) error {
	name := strings.Trim(e.Param("*"), "/")
	if name == "" || strings.Contains(name, "..") {
		return c.message(e, http.StatusBadRequest, "Not a repository", "Give a repository name, such as library/app.")
	}
	tags, err := c.tags(e, name)
	if err != nil {
		status := statusOf(err)
		if status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound {
			// As the API does for a private project: nothing named.
			return c.message(e, http.StatusNotFound, "No such repository", fmt.Sprintf("There is no repository %q that you may see.", name))
		}
		return c.message(e, status, "Repository "+name, problem("Repository "+name, err))
	}
	q := strings.TrimSpace(e.QueryParam("q"))
	set := map[string]bool{}
	var plain []string
	for _, t := range tags {
		set[t] = true
		if !isReferrerTag(t) && (q == "" || strings.Contains(t, q)) {
			plain = append(plain, t)
		}
	}
	v := repoView{Name: name, Query: q, Total: len(tags), Matched: len(plain)}
	v.Pages = max(1, (len(plain)+pageSize-1)/pageSize)
	v.Page, _ = strconv.Atoi(e.QueryParam("page"))
	v.Page = min(max(v.Page, 1), v.Pages)
	link := func(p int) string {
		u := url.Values{"page": {strconv.Itoa(p)}}
		if q != "" {
			u.Set("q", q)
		}
		return "/repositories/" + name + "?" + u.Encode()
	}
	if v.Page > 1 {
		v.PrevURL = link(v.Page - 1)
	}
	if v.Page < v.Pages {
		v.NextURL = link(v.Page + 1)
	}
	from := (v.Page - 1) * pageSize
	brought := c.importsOf(e, name)
	for _, t := range plain[from:min(from+pageSize, len(plain))] {
		row := c.tagRow(e, name, t, set)
		if imp, ok := brought[t+"@"+row.Digest]; ok {
			row.ImportID, row.ImportSource = imp[0], imp[1]
		}
		v.Tags = append(v.Tags, row)
	}
	return c.render(e, http.StatusOK, "repository", view{Title: "Repository " + name, Nav: "projects", Data: v})
}

func isReferrerTag(t string) bool {
	return strings.HasPrefix(t, "sha256-") && (strings.HasSuffix(t, ".sig") || strings.HasSuffix(t, ".att") || strings.HasSuffix(t, ".sbom"))
}

// statusOf is the status the API answered, or 502 when the call itself failed.
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusBadGateway
}

// tags is every tag of repo.
func (c *Console) tags(e echo.Context, repo string) ([]string, error) {
	var all []string
	last := ""
	for range maxTagPages {
		var page struct {
			Tags []string `json:"tags"`
		}
		path := "/v2/" + repo + "/tags/list?n=1000"
		if last != "" {
			path += "&last=" + url.QueryEscape(last)
		}
		if err := c.get(e, path, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Tags...)
		if len(page.Tags) < 1000 {
			break
		}
		last = page.Tags[len(page.Tags)-1]
	}
	return all, nil
}

// manifest is the parts of an image manifest or index the page shows.
type manifest struct {
	MediaType string `json:"mediaType"`
	Config    struct {
		Size int64 `json:"size"`
	} `json:"config"`
	Layers []struct {
		Size int64 `json:"size"`
	} `json:"layers"`
	Manifests []struct {
		Size         int64  `json:"size"`
		ArtifactType string `json:"artifactType"`
		Platform     *struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
			Variant      string `json:"variant"`
		} `json:"platform"`
	} `json:"manifests"`
}

func (c *Console) tagRow(e echo.Context, repo, tag string, tags map[string]bool) tagRow {
	row := tagRow{Tag: tag}
	var raw []byte
	h, err := c.call(e.Request().Context(), e.Request(), sessionOf(e).user, http.MethodGet, "/v2/"+repo+"/manifests/"+url.PathEscape(tag), nil, &raw, "Accept", manifestAccept)
	if err != nil {
		row.Problem = problem("The manifest", err)
		return row
	}
	row.Digest = h.Get("Docker-Content-Digest")
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		row.Problem = "The manifest is not JSON: " + err.Error()
		return row
	}
	row.MediaType = m.MediaType
	if row.MediaType == "" {
		row.MediaType = h.Get("Content-Type")
	}
	row.Size = int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		row.Size += l.Size
	}
	for _, sub := range m.Manifests {
		row.Size += sub.Size
		if p := sub.Platform; p != nil && p.OS != "unknown" {
			s := p.OS + "/" + p.Architecture
			if p.Variant != "" {
				s += "/" + p.Variant
			}
			row.Platforms = append(row.Platforms, s)
		}
	}
	if hex, ok := strings.CutPrefix(row.Digest, "sha256:"); ok {
		row.Signed = tags["sha256-"+hex+".sig"]
		for _, suffix := range []string{".att", ".sbom"} {
			if tags["sha256-"+hex+suffix] {
				row.Attached = append(row.Attached, strings.TrimPrefix(suffix, "."))
			}
		}
	}
	var refs manifest
	if _, err := c.get2(e, "/v2/"+repo+"/referrers/"+row.Digest, &refs); err == nil {
		for _, r := range refs.Manifests {
			if strings.Contains(r.ArtifactType, "sig") {
				row.Signed = true
			}
			row.Attached = append(row.Attached, r.ArtifactType)
		}
	}
	return row
}

// importsOf maps "tag@digest" of repo to the newest import that applied
// it ([id, source]), from GET /api/v1/imports; empty for those the
// history is not shown to.
func (c *Console) importsOf(e echo.Context, repo string) map[string][2]string {
	var recs []struct {
		ID     string `json:"id"`
		Source string `json:"source"`
		Tags   []struct {
			Repository, Tag, Digest string
		} `json:"tags"`
	}
	out := map[string][2]string{}
	if err := c.get(e, "/api/v1/imports", &recs); err != nil {
		return out
	}
	for _, r := range recs { // newest first
		for _, t := range r.Tags {
			k := t.Tag + "@" + t.Digest
			if _, seen := out[k]; t.Repository == repo && !seen {
				out[k] = [2]string{r.ID, r.Source}
			}
		}
	}
	return out
}

// get2 is get that also returns the headers.
func (c *Console) get2(e echo.Context, path string, out any) (http.Header, error) {
	return c.call(e.Request().Context(), e.Request(), sessionOf(e).user, http.MethodGet, path, nil, out)
}

func pathEscape(s string) string { return url.PathEscape(s) }

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"bytes": func(v any) string {
		var n float64
		switch x := v.(type) {
		case int64:
			n = float64(x)
		case float64:
			n = x
		case int:
			n = float64(x)
		default:
			return fmt.Sprint(v)
		}
		units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
		i := 0
		for n >= 1024 && i < len(units)-1 {
			n /= 1024
			i++
		}
		if i == 0 {
			return fmt.Sprintf("%.0f B", n)
		}
		return fmt.Sprintf("%.1f %s", n, units[i])
	},
	"when": func(v any) string {
		s, _ := v.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || t.IsZero() {
			return s
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"short": func(v any) string {
		s := fmt.Sprint(v)
		if len(s) > 19 && strings.HasPrefix(s, "sha256:") {
			return s[:19] + "…"
		}
		return s
	},
	"path": pathEscape,
}
