package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// The admin actions besides the visibility toggle: add a user, start an
// import from a path on the appliance (and the lifecycle's and the
// validation's in lifecycle.go). Each posts a form that checkCSRF let
// through to the JSON API route the CLI uses, as the signed-in user; the
// API authorizes, validates and records it, and its refusal is shown in
// words with nothing changed.

// act sends the action to the API as the session's user.
func (c *Console) act(e echo.Context, method, path string, in, out any) error {
	_, err := c.call(e.Request().Context(), e.Request(), sessionOf(e).user, method, path, in, out)
	return err
}

// refused shows an action the API refused: what was not done, the API's
// words and status. The API changes nothing when it refuses.
func (c *Console) refused(e echo.Context, what string, err error) error {
	msg := err.Error()
	var ae *apiError
	if errors.As(err, &ae) {
		msg = fmt.Sprintf("%s (%d %s)", ae.Message, ae.Status, http.StatusText(ae.Status))
	}
	return c.render(e, statusOf(err), "message", view{Title: "Nothing changed", Problem: what + ": " + msg, Data: formPage(e.Request().URL.Path)})
}

// formPage is the page an action's form is on, for the way back.
func formPage(action string) string {
	switch action {
	case "/imports/start":
		return "/imports"
	case "/lifecycle/standby", "/lifecycle/activate":
		return "/lifecycle"
	case "/validation/run":
		return "/validation"
	case "/users":
		return "/users"
	}
	return ""
}

func queryEscape(s string) string { return url.QueryEscape(s) }

func (c *Console) usersPage(e echo.Context) error {
	var users []map[string]any
	err := c.get(e, "/api/v1/users", &users)
	v := view{Title: "Users", Nav: "users", Data: users, Problem: problem("The user list", err)}
	if name := e.QueryParam("added"); name != "" {
		v.Notice = "User " + name + " was added with the role " + e.QueryParam("role") + "."
	}
	return c.render(e, http.StatusOK, "users", v)
}

// addUser is the "add a user" form: POST /api/v1/users.
func (c *Console) addUser(e echo.Context) error {
	name := strings.TrimSpace(e.FormValue("name"))
	if e.FormValue("password") != e.FormValue("password2") {
		return c.message(e, http.StatusBadRequest, "Nothing changed", "User "+name+" was not added: the two passwords differ.")
	}
	req := map[string]any{"name": name, "password": e.FormValue("password"), "role": e.FormValue("role")}
	if p := fields(e.FormValue("projects")); len(p) > 0 {
		req["projects"] = p
	}
	var u struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if err := c.act(e, http.MethodPost, "/api/v1/users", req, &u); err != nil {
		return c.refused(e, "User "+name+" was not added", err)
	}
	return e.Redirect(http.StatusSeeOther, "/users?"+url.Values{"added": {u.Name}, "role": {u.Role}}.Encode())
}

// startImport is the "import from a path on the appliance" form:
// POST /api/v1/imports with the JSON body naming the path.
func (c *Console) startImport(e echo.Context) error {
	path := strings.TrimSpace(e.FormValue("path"))
	req := map[string]any{"path": path, "to_repo": strings.TrimSpace(e.FormValue("to_repo")),
		"keep_names": e.FormValue("keep_names") != "", "allow_unsigned": e.FormValue("allow_unsigned") != ""}
	var rec struct {
		ID string `json:"id"`
	}
	err := c.act(e, http.MethodPost, "/api/v1/imports", req, &rec)
	if err == nil {
		return e.Redirect(http.StatusSeeOther, "/imports/"+pathEscape(rec.ID)+"?started=1")
	}
	// A refused import keeps its record, which says what was refused.
	var ae *apiError
	if errors.As(err, &ae) {
		var failure struct {
			Record *struct {
				ID string `json:"id"`
			} `json:"record"`
		}
		if json.Unmarshal(ae.Body, &failure) == nil && failure.Record != nil && failure.Record.ID != "" {
			return e.Redirect(http.StatusSeeOther, "/imports/"+pathEscape(failure.Record.ID)+"?started=1")
		}
	}
	return c.refused(e, "Nothing was imported from "+path, err)
}
