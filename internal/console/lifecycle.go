package console

import (
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// The lifecycle pages. /lifecycle: the mode with its history and the
// admin's switches (standby, activate), the last promotion and its parity
// report, the standby's sync and drift from its primary, and the drift
// and staleness the last validation found. /validation: the last
// validation in full, and the form that runs one.

// lifecycleView is the promotion and drift page's data.
type lifecycleView struct {
	Status     map[string]any
	Promotion  map[string]any
	Parity     map[string]any
	Standby    map[string]any
	Validation map[string]any
	Problems   []string
}

func (c *Console) lifecyclePage(e echo.Context) error {
	var d lifecycleView
	if err := c.get(e, "/api/v1/status", &d.Status); err != nil {
		d.Problems = append(d.Problems, problem("The status", err))
	}
	// 404 is "none yet", which the page says in its own words.
	if err := c.get(e, "/api/v1/promotions/latest", &d.Promotion); err != nil && statusOf(err) != http.StatusNotFound {
		d.Problems = append(d.Problems, problem("The last promotion", err))
	}
	if err := c.get(e, "/api/v1/parity", &d.Parity); err != nil && statusOf(err) != http.StatusNotFound {
		d.Problems = append(d.Problems, problem("The parity report", err))
	}
	if err := c.get(e, "/api/v1/standby", &d.Standby); err != nil && statusOf(err) != http.StatusNotFound {
		d.Problems = append(d.Problems, problem("The standby's sync", err))
	}
	if err := c.get(e, "/api/v1/validation", &d.Validation); err != nil && statusOf(err) != http.StatusNotFound {
		d.Problems = append(d.Problems, problem("The last validation", err))
	}
	v := view{Title: "Promotion and drift", Nav: "lifecycle", Data: d}
	switch e.QueryParam("done") {
	case "standby":
		v.Notice = "The appliance is now a read-only standby of its primary."
		if msg := e.QueryParam("sync_error"); msg != "" {
			v.Notice += " Its first sync failed: " + msg
		}
	case "active":
		v.Notice = "The appliance is now active: it accepts pushes and imports."
	}
	return c.render(e, http.StatusOK, "lifecycle", v)
}

// standby is the "switch to standby" form: POST /api/v1/standby.
func (c *Console) standby(e echo.Context) error {
	req := map[string]any{"reason": strings.TrimSpace(e.FormValue("reason"))}
	for _, f := range []string{"primary", "primary_ca", "primary_username", "primary_password", "interval"} {
		if v := strings.TrimSpace(e.FormValue(f)); v != "" {
			req[f] = v
		}
	}
	if p := fields(e.FormValue("projects")); len(p) > 0 {
		req["projects"] = p
	}
	var ans struct {
		SyncError string `json:"sync_error"`
	}
	if err := c.act(e, http.MethodPost, "/api/v1/standby", req, &ans); err != nil {
		return c.refused(e, "The appliance did not become a standby", err)
	}
	to := "/lifecycle?done=standby"
	if ans.SyncError != "" {
		to += "&sync_error=" + queryEscape(ans.SyncError)
	}
	return e.Redirect(http.StatusSeeOther, to)
}

// activate is the "activate" form: POST /api/v1/activate.
func (c *Console) activate(e echo.Context) error {
	if err := c.act(e, http.MethodPost, "/api/v1/activate", map[string]string{"reason": strings.TrimSpace(e.FormValue("reason"))}, nil); err != nil {
		return c.refused(e, "The appliance was not activated", err)
	}
	return e.Redirect(http.StatusSeeOther, "/lifecycle?done=active")
}

func (c *Console) validationPage(e echo.Context) error {
	var d struct {
		Answer  map[string]any
		Problem string
	}
	if err := c.get(e, "/api/v1/validation", &d.Answer); err != nil && statusOf(err) != http.StatusNotFound {
		d.Problem = problem("The last validation", err)
	}
	v := view{Title: "Validation", Nav: "validation", Data: d, Problem: d.Problem}
	if e.QueryParam("done") != "" {
		v.Notice = "The validation ran; its result is below."
	}
	return c.render(e, http.StatusOK, "validation", v)
}

// runValidation is the "run validation" form: POST /api/v1/validation
// with the one input pasted (none: the gate checks what the appliance
// holds).
func (c *Console) runValidation(e echo.Context) error {
	req := map[string]any{}
	if data := e.FormValue("data"); strings.TrimSpace(data) != "" {
		name := strings.TrimSpace(e.FormValue("name"))
		if name == "" {
			name = "console-input"
		}
		req["inputs"] = []map[string]string{{"kind": e.FormValue("kind"), "name": name, "data": base64.StdEncoding.EncodeToString([]byte(data))}}
	}
	if p := fields(e.FormValue("platforms")); len(p) > 0 {
		req["platforms"] = p
	}
	if err := c.act(e, http.MethodPost, "/api/v1/validation", req, nil); err != nil {
		return c.refused(e, "The validation did not run", err)
	}
	return e.Redirect(http.StatusSeeOther, "/validation?done=1")
}

// fields splits a list typed with commas or spaces.
func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}
