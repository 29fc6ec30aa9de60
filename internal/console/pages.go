package console

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/config"
)

func (c *Console) loginPage(e echo.Context) error {
	v := view{Title: "Sign in"}
	if e.QueryParam("expired") != "" {
		v.Problem = "Your session has expired or ended. Sign in again."
	}
	return c.loginForm(e, http.StatusOK, v)
}

// loginForm shows the sign-in form with a fresh token, which the browser
// sends back both as a cookie and in the form (a forged cross-site post
// has neither the cookie nor can read it).
func (c *Console) loginForm(e echo.Context, status int, v view) error {
	tok, err := randomToken()
	if err != nil {
		return fmt.Errorf("console login: %w", err)
	}
	c.setCookie(e, loginCookie, tok, 30*time.Minute)
	v.CSRF = tok
	v.Title = "Sign in"
	return c.render(e, status, "login", v)
}

func (c *Console) loginPost(e echo.Context) error {
	r := e.Request()
	name := e.FormValue("username")
	if !sameToken(e.FormValue(csrfField), cookieValue(e, loginCookie)) {
		c.deps.Record(r, "anonymous", "console.login", http.StatusForbidden, "sign-in form without its CSRF token", "user", name)
		return c.loginForm(e, http.StatusForbidden, view{Problem: "This sign-in form was not sent from this page (its security token is missing or stale). Try again."})
	}
	err := c.deps.Login(r, name, e.FormValue("password"))
	if err != nil {
		var lo *auth.LoginLockout
		switch {
		case errors.As(err, &lo):
			e.Response().Header().Set("Retry-After", fmt.Sprint(lo.RetrySeconds()))
			c.deps.Record(r, "anonymous", "console.login", http.StatusTooManyRequests, err.Error(), "user", name)
			return c.loginForm(e, http.StatusTooManyRequests, view{Problem: "Too many failed sign-ins: " + err.Error() + "."})
		case errors.Is(err, auth.ErrBadCredentials):
			c.deps.Record(r, "anonymous", "console.login", http.StatusUnauthorized, "wrong user name or password", "user", name)
			return c.loginForm(e, http.StatusUnauthorized, view{Problem: "The user name or the password is wrong."})
		}
		return fmt.Errorf("console login: %w", err)
	}
	s, err := c.sessions.create(name)
	if err != nil {
		return fmt.Errorf("console login: %w", err)
	}
	c.setCookie(e, sessionCookie, s.id, c.deps.SessionTTL)
	c.setCookie(e, loginCookie, "", 0)
	c.deps.Record(r, name, "console.login", http.StatusOK, "")
	return e.Redirect(http.StatusSeeOther, "/")
}

func (c *Console) logout(e echo.Context) error {
	s := sessionOf(e)
	c.sessions.end(s.id)
	c.setCookie(e, sessionCookie, "", 0)
	c.deps.Record(e.Request(), s.user, "console.logout", http.StatusOK, "")
	return e.Redirect(http.StatusSeeOther, "/login")
}

// get reads path as the session's user into out.
func (c *Console) get(e echo.Context, path string, out any) error {
	_, err := c.call(e.Request().Context(), e.Request(), sessionOf(e).user, http.MethodGet, path, nil, out)
	return err
}

// problem says in words why the API refused; "" for no error.
func problem(what string, err error) string {
	if err == nil {
		return ""
	}
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusForbidden:
			return what + " is not shown to you: " + ae.Message
		case http.StatusNotFound:
			return what + ": not found."
		}
		return what + ": " + ae.Message
	}
	return what + ": " + err.Error()
}

func (c *Console) overview(e echo.Context) error {
	var d struct {
		Status     map[string]any
		Ready      map[string]any
		LastImport map[string]any
		Validation map[string]any
		Problems   []string
	}
	if err := c.get(e, "/api/v1/status", &d.Status); err != nil {
		d.Problems = append(d.Problems, problem("The status", err))
	}
	if err := c.get(e, "/readyz", &d.Ready); err != nil {
		d.Problems = append(d.Problems, problem("Readiness", err))
	}
	if err := c.get(e, "/api/v1/validation", &d.Validation); err != nil && statusOf(err) != http.StatusNotFound {
		d.Problems = append(d.Problems, problem("The last validation", err))
	}
	var recs []map[string]any
	if err := c.get(e, "/api/v1/imports", &recs); err != nil {
		d.Problems = append(d.Problems, problem("The import history", err))
	} else if len(recs) > 0 {
		d.LastImport = recs[0] // newest first
	}
	return c.render(e, http.StatusOK, "overview", view{Title: "Overview", Nav: "overview", Data: d})
}

// projectRow is a project with its repositories.
type projectRow struct {
	Name         string
	Public       bool
	Configured   bool
	Repositories []string
}

// projectRows is GET /api/v1/projects with the catalog's repositories.
func (c *Console) projectRows(e echo.Context) ([]projectRow, error) {
	var list []struct {
		Name       string `json:"name"`
		Public     bool   `json:"public"`
		Configured bool   `json:"configured"`
	}
	if err := c.get(e, "/api/v1/projects", &list); err != nil {
		return nil, err
	}
	repos, err := c.catalog(e)
	if err != nil {
		return nil, err
	}
	rows := make([]projectRow, 0, len(list))
	for _, p := range list {
		row := projectRow{Name: p.Name, Public: p.Public, Configured: p.Configured}
		for _, r := range repos {
			if auth.ProjectOf(r) == p.Name {
				row.Repositories = append(row.Repositories, r)
			}
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

// maxCatalogPages bounds the catalog walk (1,000 repositories a page).
const maxCatalogPages = 100

// catalog is every repository /v2/_catalog lists to the user.
func (c *Console) catalog(e echo.Context) ([]string, error) {
	var all []string
	last := ""
	for range maxCatalogPages {
		var page struct {
			Repositories []string `json:"repositories"`
		}
		path := "/v2/_catalog?n=1000"
		if last != "" {
			path += "&last=" + last
		}
		if err := c.get(e, path, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Repositories...)
		if len(page.Repositories) < 1000 {
			break
		}
		last = page.Repositories[len(page.Repositories)-1]
	}
	return all, nil
}

func (c *Console) projects(e echo.Context) error {
	rows, err := c.projectRows(e)
	v := view{Title: "Projects", Nav: "projects", Data: rows, Problem: problem("The projects", err)}
	switch e.QueryParam("done") {
	case "public":
		v.Notice = "Project " + e.QueryParam("project") + " is now public: anyone may pull from it."
	case "private":
		v.Notice = "Project " + e.QueryParam("project") + " is now private: only signed-in users allowed to may pull from it."
	}
	return c.render(e, http.StatusOK, "projects", v)
}

func (c *Console) project(e echo.Context) error {
	name := e.Param("name")
	if !config.ValidProjectName(name) {
		return c.message(e, http.StatusBadRequest, "Not a project name",
			fmt.Sprintf("%q is not a valid project name: use lower-case letters, digits and separators (. _ -).", name))
	}
	rows, err := c.projectRows(e)
	if err != nil {
		return c.message(e, http.StatusBadGateway, "Project "+name, problem("The projects", err))
	}
	for _, r := range rows {
		if r.Name == name {
			return c.render(e, http.StatusOK, "project", view{Title: "Project " + name, Nav: "projects", Data: r})
		}
	}
	return c.message(e, http.StatusNotFound, "No such project", fmt.Sprintf("There is no project %q that you may see.", name))
}

func (c *Console) setVisibility(e echo.Context) error {
	name := e.Param("name")
	vis := e.FormValue("visibility")
	if vis != "public" && vis != "private" {
		return c.message(e, http.StatusBadRequest, "Nothing changed", "Choose public or private.")
	}
	public := vis == "public"
	_, err := c.call(e.Request().Context(), e.Request(), sessionOf(e).user, http.MethodPut, "/api/v1/projects/"+pathEscape(name),
		map[string]bool{"public": public}, nil)
	if err != nil {
		return c.message(e, statusOf(err), "Nothing changed", "Project "+name+" was not changed: "+strings.TrimPrefix(problem("the appliance refused", err), "the appliance refused: "))
	}
	return e.Redirect(http.StatusSeeOther, "/projects?done="+vis+"&project="+pathEscape(name))
}

func (c *Console) imports(e echo.Context) error {
	var recs []map[string]any
	err := c.get(e, "/api/v1/imports", &recs) // newest first
	return c.render(e, http.StatusOK, "imports", view{Title: "Imports", Nav: "imports", Data: recs, Problem: problem("The import history", err)})
}

func (c *Console) importPage(e echo.Context) error {
	id := e.Param("id")
	var rec map[string]any
	if err := c.get(e, "/api/v1/imports/"+pathEscape(id), &rec); err != nil {
		return c.message(e, statusOf(err), "Import "+id, problem("Import "+id, err))
	}
	v := view{Title: "Import " + id, Nav: "imports", Data: rec}
	if e.QueryParam("started") != "" {
		if rec["outcome"] == "succeeded" {
			v.Notice = "Imported: every blob was verified before it became visible."
		} else {
			v.Notice = "The import was refused, and nothing it carried became visible: the reason is below."
		}
	}
	return c.render(e, http.StatusOK, "import", v)
}

// consumeView is the consume page's data: the address the browser used,
// the CA, the Supervisor's state.
type consumeView struct {
	Registry      string
	CAFingerprint string
	CAPEM         string
	Repositories  []string
	Supervisor    map[string]any
	Problems      []string
}

func (c *Console) consume(e echo.Context) error {
	d := consumeView{Registry: e.Request().Host}
	var st struct {
		CAFingerprint string `json:"ca_sha256"`
	}
	if err := c.get(e, "/api/v1/status", &st); err != nil {
		d.Problems = append(d.Problems, problem("The status", err))
	}
	d.CAFingerprint = st.CAFingerprint
	var pem []byte
	if err := c.get(e, "/ca.crt", &pem); err != nil {
		d.Problems = append(d.Problems, problem("The CA certificate", err))
	}
	d.CAPEM = string(pem)
	repos, err := c.catalog(e)
	if err != nil {
		d.Problems = append(d.Problems, problem("The repositories", err))
	}
	d.Repositories = repos[:min(len(repos), 20)]
	if err := c.get(e, "/api/v1/supervisor", &d.Supervisor); err != nil {
		d.Problems = append(d.Problems, problem("The Supervisor's registration", err))
	}
	return c.render(e, http.StatusOK, "consume", view{Title: "Consume", Nav: "consume", Data: d})
}

func (c *Console) filesPage(e echo.Context) error {
	var d struct {
		Files []map[string]any `json:"files"`
	}
	err := c.get(e, "/api/v1/files", &d)
	return c.render(e, http.StatusOK, "files", view{Title: "Files and model profiles", Nav: "files", Data: d.Files, Problem: problem("The file store", err)})
}
