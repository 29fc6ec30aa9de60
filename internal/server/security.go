package server

import (
	"crypto/tls"
	"net/http"

	"github.com/labstack/echo/v4"
)

// The transport's hardening (docs/architecture.md, Security).

// maxHeaderBytes bounds a request's header block on both listeners: the
// request line and headers over HTTP/1.1, the header list over HTTP/2.
// The largest header a client sends here is a bearer token, a few KiB.
const maxHeaderBytes = 64 << 10

// hstsValue asks browsers to reach this host over HTTPS only, for a year.
// No includeSubDomains: the appliance speaks for its own name only.
const hstsValue = "max-age=31536000"

// tlsConfig is the HTTPS listener's: TLS 1.2 or later. TLS 1.2 offers
// ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only (no RSA key
// exchange, no CBC, no SHA-1 MACs); TLS 1.3's suites are fixed by Go and
// all AEAD. Key exchange: the hybrid post-quantum X25519MLKEM768 first
// (Go's default choice, kept), then X25519 and P-256.
func tlsConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		CipherSuites: []uint16{
			// HTTP/2 requires one of the AES-128-GCM suites.
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			// For an RSA server certificate.
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
	}
}

// hsts sets Strict-Transport-Security on every answer of the HTTPS
// listener: the API, the token service, /v2/ (registry clients ignore it,
// and it does no harm), /files/, /apt/, and the console to come. The
// plain listener never sends it (RFC 6797 §7.2: it would mean nothing
// there, and anyone on the path could forge or strip it).
func hsts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", hstsValue)
		next.ServeHTTP(w, r)
	})
}

// streamedRoutes take bodies of any size, streamed and bounded by what
// they verify: archives to import, packages to publish; and a validation
// request, which carries its input files and bounds itself
// (validationapi.MaxBody). /v2/ uploads never reach echo.
var streamedRoutes = map[string]bool{
	http.MethodPost + " /api/v1/imports":                        true,
	http.MethodPost + " /api/v1/apt/repos/:repo/:dist/packages": true,
	http.MethodPost + " /api/v1/validation":                     true,
}

// limitBodies bounds the request body of every other route, on both
// listeners, to maxAPIBodyLen: reading past it fails with an
// *http.MaxBytesError (413), inside the handler, so that an API write
// refused for its size is audited like any other.
func limitBodies(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if r := c.Request(); !streamedRoutes[r.Method+" "+c.Path()] {
			r.Body = http.MaxBytesReader(c.Response(), r.Body, maxAPIBodyLen)
		}
		return next(c)
	}
}
