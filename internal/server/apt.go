package server

import (
	"net"
	"path/filepath"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/server/aptapi"
)

// newAptAPI gives the apt repository's routes (internal/server/aptapi)
// what they need of the server.
func (s *Server) newAptAPI() (*aptapi.API, error) {
	return aptapi.New(aptapi.Deps{
		Repos:    s.apt,
		Registry: s.reg,
		CAPEM:    s.pki.CAPEM,
		HTTPPort: func() string {
			if s.httpLn == nil {
				return ""
			}
			_, port, _ := net.SplitHostPort(s.httpLn.Addr().String())
			return port
		},
		UploadDir:        filepath.Join(s.cfg.DataDir, aptDir),
		Principal:        principal,
		Bind:             bind,
		Note:             func(c echo.Context, target string, kv ...string) { auditNote(c, target, kv...) },
		RequireDeveloper: s.requireDeveloper,
	})
}
