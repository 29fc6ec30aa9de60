// Package console is the appliance's web console: server-rendered pages
// at / on the HTTPS port (overview, projects and repositories, imports,
// apt, files, consume, promotion and drift, validation, users), every
// asset embedded, and the admin actions behind a login (visibility,
// standby and activate, an import from a path, a validation run, a new
// user). Sessions
// live on the server (random ids in Secure, HttpOnly, SameSite=Strict
// cookies that expire); every form carries a CSRF token. The console holds
// no model of its own: each page is what the JSON API and /v2/ answer the
// signed-in user, called in-process, so the API's authorization, input
// checks and audit trail hold for the console as for the CLI.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

//go:embed templates/*.html static/*
var assets embed.FS

// DefaultSessionTTL is how long a console session lasts after sign-in.
const DefaultSessionTTL = 8 * time.Hour

// Deps is what the console needs from the server.
type Deps struct {
	// Handler is the appliance's HTTPS handler (/api/v1 and /v2/),
	// called in-process.
	Handler http.Handler
	// AsUser marks a request's context as made by the signed-in user
	// name; Handler then treats it as that user's.
	AsUser func(ctx context.Context, name string) context.Context
	// Login is the server's password check, with its login rate limit.
	Login func(r *http.Request, name, password string) error
	// Record writes an entry of the console's own in the audit trail
	// (sign-in, sign-out, a refused form); actions done through the API
	// are recorded by it. Details come as key, value pairs.
	Record func(r *http.Request, actor, action string, status int, reason string, details ...string)
	// SessionTTL is how long a session lasts (DefaultSessionTTL if zero).
	SessionTTL time.Duration
	// MaxSessions bounds the store (10,000 if zero).
	MaxSessions int
	Log         *slog.Logger
}

// Console serves the pages.
type Console struct {
	deps     Deps
	sessions *sessions
	pages    map[string]*template.Template
	static   http.Handler
}

// Cookie names.
const (
	sessionCookie = "appliance_session"
	loginCookie   = "appliance_login"
	csrfField     = "csrf"
)

// New checks deps and parses the templates.
func New(deps Deps) (*Console, error) {
	if deps.Handler == nil || deps.AsUser == nil || deps.Login == nil || deps.Record == nil {
		return nil, errors.New("new console: Handler, AsUser, Login and Record are required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.SessionTTL <= 0 {
		deps.SessionTTL = DefaultSessionTTL
	}
	if deps.MaxSessions <= 0 {
		deps.MaxSessions = 10000
	}
	c := &Console{deps: deps, sessions: newSessions(deps.SessionTTL, deps.MaxSessions), pages: map[string]*template.Template{}}
	for _, name := range []string{"login", "message", "overview", "projects", "project", "repository", "imports", "import", "consume", "files", "apt", "aptdist", "lifecycle", "validation", "users"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("new console: template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, fmt.Errorf("new console: %w", err)
	}
	c.static = http.StripPrefix("/static/", http.FileServer(http.FS(static)))
	return c, nil
}

// Mount registers the pages on e. /api/, /v2/, /files/ and /apt/ keep
// their own routes; any other unknown path is the console's "no such page".
func (c *Console) Mount(e *echo.Echo) {
	e.GET("/static/*", echo.WrapHandler(c.static))
	e.GET("/login", c.loginPage)
	e.POST("/login", c.loginPost)
	e.POST("/logout", c.logout, c.signedIn, c.checkCSRF)
	e.GET("/", c.overview, c.signedIn)
	e.GET("/projects", c.projects, c.signedIn)
	e.GET("/projects/:name", c.project, c.signedIn)
	e.POST("/projects/:name/visibility", c.setVisibility, c.signedIn, c.checkCSRF)
	e.GET("/repositories/*", c.repository, c.signedIn)
	e.GET("/imports", c.imports, c.signedIn)
	e.GET("/imports/:id", c.importPage, c.signedIn)
	e.POST("/imports/start", c.startImport, c.signedIn, c.checkCSRF)
	e.GET("/apt-repos", c.aptPage, c.signedIn)
	e.GET("/apt-repos/:repo/:dist", c.aptDistPage, c.signedIn)
	e.GET("/lifecycle", c.lifecyclePage, c.signedIn)
	e.POST("/lifecycle/standby", c.standby, c.signedIn, c.checkCSRF)
	e.POST("/lifecycle/activate", c.activate, c.signedIn, c.checkCSRF)
	e.GET("/validation", c.validationPage, c.signedIn)
	e.POST("/validation/run", c.runValidation, c.signedIn, c.checkCSRF)
	e.GET("/users", c.usersPage, c.signedIn)
	e.POST("/users", c.addUser, c.signedIn, c.checkCSRF)
	e.GET("/consume", c.consume, c.signedIn)
	e.GET("/files-store", c.filesPage, c.signedIn)
	e.Any("/*", c.notFound)
}

// view is what every page's template gets.
type view struct {
	Title, Nav string
	User, Role string
	CSRF       string
	Notice     string // a success to report
	Problem    string // what went wrong, in words
	Data       any
}

const sessionKey = "console.session"

func sessionOf(c echo.Context) *session {
	s, _ := c.Get(sessionKey).(*session)
	return s
}

// render writes page with status; a template failure is logged and
// answered with a plain message (never a stack trace).
func (c *Console) render(e echo.Context, status int, page string, v view) error {
	if s := sessionOf(e); s != nil {
		v.User, v.CSRF = s.user, s.csrf
		if v.Role == "" {
			var who struct {
				Role string `json:"role"`
			}
			if _, err := c.call(e.Request().Context(), e.Request(), s.user, http.MethodGet, "/api/v1/whoami", nil, &who); err == nil {
				v.Role = who.Role
			}
		}
	}
	t, ok := c.pages[page]
	if !ok {
		t = c.pages["message"]
	}
	h := e.Response().Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	e.Response().WriteHeader(status)
	if err := t.Execute(e.Response(), v); err != nil {
		c.deps.Log.Error("console page failed", "page", page, "error", err)
		_, _ = e.Response().Write([]byte("<p>This page could not be shown; the appliance's log says why.</p>"))
	}
	return nil
}

// message is a page that only says something.
func (c *Console) message(e echo.Context, status int, title, problem string) error {
	return c.render(e, status, "message", view{Title: title, Problem: problem})
}

func (c *Console) notFound(e echo.Context) error {
	p := e.Request().URL.Path
	for _, prefix := range []string{"/api/", "/v2/", "/files/", "/apt/"} {
		if len(p) >= len(prefix) && p[:len(prefix)] == prefix {
			return echo.ErrNotFound
		}
	}
	if s := c.sessions.get(cookieValue(e, sessionCookie)); s != nil {
		e.Set(sessionKey, s)
	}
	return c.message(e, http.StatusNotFound, "No such page", fmt.Sprintf("There is no page at %s. Use the links above.", p))
}

func cookieValue(e echo.Context, name string) string {
	ck, err := e.Cookie(name)
	if err != nil {
		return ""
	}
	return ck.Value
}

func (c *Console) setCookie(e echo.Context, name, value string, ttl time.Duration) {
	ck := &http.Cookie{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode}
	if ttl > 0 {
		ck.Expires, ck.MaxAge = time.Now().Add(ttl), int(ttl/time.Second)
	} else {
		ck.MaxAge = -1
	}
	e.SetCookie(ck)
}

// signedIn lets a request with a live session through, and sends any
// other to the sign-in page, saying why when a session cookie was sent.
func (c *Console) signedIn(next echo.HandlerFunc) echo.HandlerFunc {
	return func(e echo.Context) error {
		id := cookieValue(e, sessionCookie)
		s := c.sessions.get(id)
		if s == nil {
			if e.Request().Method != http.MethodGet {
				return c.message(e, http.StatusUnauthorized, "Signed out",
					"Your session has expired or ended, so nothing was changed. Sign in again and repeat the action.")
			}
			to := "/login"
			if id != "" {
				to += "?expired=1"
			}
			return e.Redirect(http.StatusSeeOther, to)
		}
		e.Set(sessionKey, s)
		return next(e)
	}
}

// checkCSRF refuses a form without the session's token: nothing is done.
func (c *Console) checkCSRF(next echo.HandlerFunc) echo.HandlerFunc {
	return func(e echo.Context) error {
		s := sessionOf(e)
		if !sameToken(e.FormValue(csrfField), s.csrf) {
			c.deps.Record(e.Request(), s.user, "console.form", http.StatusForbidden, "form without the session's CSRF token: "+e.Request().URL.Path)
			return c.message(e, http.StatusForbidden, "Form refused",
				"This form did not carry this session's security token (it may come from another site or an old page), so nothing was changed. Reload the page and try again.")
		}
		return next(e)
	}
}
