package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/auth"
)

const tokenPath = "/service/token"

type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// handleToken is the token endpoint of the Docker token protocol (GET with
// Basic credentials or none) and its OAuth2 variant (POST with
// grant_type=password). Anonymous callers get a token for what anonymous
// callers may do; wrong credentials get 401, never a lesser token.
func (s *Server) handleToken(c echo.Context) error {
	r := c.Request()
	var (
		p      auth.Principal
		err    error
		scopes []string
	)
	switch r.Method {
	case http.MethodGet:
		if h := r.Header.Get("Authorization"); h != "" && !strings.HasPrefix(strings.ToLower(h), "basic ") {
			return tokenError(c, http.StatusUnauthorized, "UNAUTHORIZED", "the token endpoint accepts Basic credentials only")
		}
		p, err = s.login(r, r.Header.Get("Authorization"))
		scopes = r.URL.Query()["scope"]
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
				return tokenError(c, http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("form body larger than %d bytes", tooLarge.Limit))
			}
			return tokenError(c, http.StatusBadRequest, "invalid_request", "malformed form body")
		}
		switch r.PostForm.Get("grant_type") {
		case "password":
			var u auth.User
			u, err = s.verifyPassword(r, r.PostForm.Get("username"), r.PostForm.Get("password"))
			p = auth.Principal{Name: u.Name, Role: u.Role}
		default:
			return tokenError(c, http.StatusBadRequest, "unsupported_grant_type", "only grant_type=password is supported")
		}
		scopes = r.PostForm["scope"]
	}
	if err != nil && setRetryAfter(c.Response().Header(), err) {
		s.log.Warn("login refused: too many failures", "remote", clientAddr(r), "error", err)
		s.auditToken(c, scopes, err)
		return tokenError(c, http.StatusTooManyRequests, "TOOMANYREQUESTS", err.Error())
	}
	if err != nil {
		c.Response().Header().Set("WWW-Authenticate", `Basic realm="appliance"`)
		s.log.Info("token refused", "remote", c.RealIP(), "error", err)
		s.auditToken(c, scopes, err)
		return tokenError(c, http.StatusUnauthorized, "UNAUTHORIZED", "authentication failed: invalid username or password")
	}
	if svc := c.QueryParam("service"); svc != "" && svc != auth.Service {
		return tokenError(c, http.StatusBadRequest, "invalid_request", "unknown service "+svc)
	}
	var want []auth.Access
	for _, sc := range scopes {
		for _, one := range strings.Fields(sc) {
			acc, err := auth.ParseScope(one)
			if err != nil {
				return tokenError(c, http.StatusBadRequest, "invalid_scope", err.Error())
			}
			want = append(want, acc...)
		}
	}
	subject := p.Name
	if p.Anonymous {
		subject = ""
	}
	tok, issued, err := s.tokens.Issue(subject, s.authz.Grant(p, want))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tokenResponse{
		Token: tok, AccessToken: tok,
		ExpiresIn: int(s.tokens.TTL() / time.Second),
		IssuedAt:  issued.Format(time.RFC3339),
	})
}

func tokenError(c echo.Context, status int, code, msg string) error {
	return c.JSON(status, map[string]any{
		"errors":            []map[string]string{{"code": code, "message": msg}},
		"error":             code,
		"error_description": msg,
	})
}
