package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/audit"
	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/console"
)

// The web console (internal/console) is served at / on the HTTPS port.
// It reads and acts through the JSON API and /v2/, called in-process as
// the signed-in user: the context carries that user's name under a key
// only this package can set, so the API's authorization, validation and
// audit trail hold for the console exactly as for the CLI.

type consoleUserKey struct{}

// asConsoleUser marks ctx as a console request made by the signed-in user name.
func asConsoleUser(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, consoleUserKey{}, name)
}

// consolePrincipal is the principal of an in-process console request:
// the session's user, still present (a removed user's session is dead).
func (s *Server) consolePrincipal(r *http.Request) (auth.Principal, bool, error) {
	name, ok := r.Context().Value(consoleUserKey{}).(string)
	if !ok {
		return auth.Principal{}, false, nil
	}
	u, found := s.users.Get(name)
	if !found {
		return auth.Principal{}, true, fmt.Errorf("console session of %q: %w", name, auth.ErrBadCredentials)
	}
	return auth.Principal{Name: u.Name, Role: u.Role}, true, nil
}

// mountConsole registers the console's pages on e; handler is the whole
// HTTPS handler the console calls in-process.
func (s *Server) mountConsole(e *echo.Echo, handler http.Handler) error {
	c, err := console.New(console.Deps{
		Handler: handler,
		AsUser:  asConsoleUser,
		Login: func(r *http.Request, name, password string) error {
			_, err := s.verifyPassword(r, name, password)
			return err
		},
		Record: func(r *http.Request, actor, action string, status int, reason string, kv ...string) {
			d := map[string]string{}
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] != "" {
					d[kv[i]] = kv[i+1]
				}
			}
			s.record(r.Context(), audit.Entry{Actor: actor, Remote: s.remote(r), Action: action,
				Outcome: audit.OutcomeOf(status), Status: status, Reason: reason, Details: d})
		},
		Log: s.log,
	})
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	c.Mount(e)
	return nil
}
