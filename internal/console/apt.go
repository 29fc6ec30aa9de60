package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// The apt pages: the repositories and their distributions from
// GET /api/v1/apt/repos, a search across them, the cloud-init snippet
// /apt/cloud-init.yaml serves, and for one distribution its packages and
// its publishes. (/apt/ itself is the repository, so the pages live at
// /apt-repos.)

// aptView is the apt page's data.
type aptView struct {
	Repos     []map[string]any
	Query     string
	Found     []map[string]any
	Searched  bool
	CloudInit string
	Problems  []string
}

func (c *Console) aptPage(e echo.Context) error {
	var d aptView
	if err := c.get(e, "/api/v1/apt/repos", &d.Repos); err != nil {
		d.Problems = append(d.Problems, problem("The apt repositories", err))
	}
	if q := strings.TrimSpace(e.QueryParam("q")); q != "" {
		d.Query, d.Searched = q, true
		if err := c.get(e, "/api/v1/apt/search?q="+url.QueryEscape(q), &d.Found); err != nil {
			d.Problems = append(d.Problems, problem("The search", err))
		}
	}
	var snippet []byte
	if err := c.get(e, "/apt/cloud-init.yaml", &snippet); err != nil {
		d.Problems = append(d.Problems, problem("The cloud-init snippet", err))
	}
	d.CloudInit = string(snippet)
	return c.render(e, http.StatusOK, "apt", view{Title: "Apt repositories", Nav: "apt", Data: d})
}

// aptDistView is one distribution's page.
type aptDistView struct {
	Repo, Dist string
	Packages   []map[string]any
	History    []map[string]any
	CloudInit  string
}

func (c *Console) aptDistPage(e echo.Context) error {
	repo, dist := e.Param("repo"), e.Param("dist")
	d := aptDistView{Repo: repo, Dist: dist}
	base := "/api/v1/apt/repos/" + pathEscape(repo) + "/" + pathEscape(dist)
	if err := c.get(e, base+"/packages", &d.Packages); err != nil {
		return c.message(e, statusOf(err), "Apt "+repo+" "+dist, problem("Distribution "+dist+" of apt repository "+repo, err))
	}
	if err := c.get(e, base+"/history", &d.History); err != nil {
		return c.message(e, statusOf(err), "Apt "+repo+" "+dist, problem("The publish history", err))
	}
	var snippet []byte
	q := url.Values{"repo": {repo}, "dist": {dist}}
	if err := c.get(e, "/apt/cloud-init.yaml?"+q.Encode(), &snippet); err == nil {
		d.CloudInit = string(snippet)
	}
	return c.render(e, http.StatusOK, "aptdist", view{Title: "Apt " + repo + " " + dist, Nav: "apt", Data: d})
}
