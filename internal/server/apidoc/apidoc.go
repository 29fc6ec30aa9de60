// Package apidoc serves the OpenAPI 3 document of the appliance's HTTP
// API at GET /api/v1/openapi.json, embedded in the binary.
//
// The document is generated, not written: the route table and the Go
// types of every request and answer live in internal/server's
// TestOpenAPIDocument, which writes openapi.json with -update and
// otherwise fails when the embedded document differs from what the
// routes and types say, or when a route the server registers is missing
// from it or from docs/api.md.
package apidoc

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

//go:embed openapi.json
var document []byte

// Document is a copy of the embedded OpenAPI document.
func Document() []byte { return append([]byte(nil), document...) }

// Path is where the document is served.
const Path = "/api/v1/openapi.json"

// Register serves the document on g, the /api/v1 group, to anyone: it
// names routes and types, never data. It fails when the embedded document
// is not JSON.
func Register(g *echo.Group) error {
	if !json.Valid(document) {
		return fmt.Errorf("apidoc: the embedded %s is not valid JSON", Path)
	}
	g.GET("/openapi.json", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/json", document)
	})
	return nil
}
