package server

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
	"github.com/appliance-dev/appliance/internal/server/validationapi"
	"github.com/appliance-dev/appliance/internal/validate"
)

// APIError is the body of every error the JSON API returns.
type APIError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// PromotionFailure is the answer to a refused promotion: the error, and
// the record (with every problem found).
type PromotionFailure struct {
	APIError
	Promotion *promote.Promotion `json:"promotion,omitempty"`
}

// Sentinel errors of the API layer.
var (
	errUnauthenticated = errors.New("authentication required")
	errForbidden       = errors.New("permission denied")
	errBadRequest      = errors.New("bad request")
	errNotFound        = errors.New("not found")
)

// statusOf is the one place where errors become HTTP statuses.
func statusOf(err error) (int, string) {
	if status, code, ok := importStatus(err); ok {
		return status, code
	}
	if status, code, ok := supervisorStatus(err); ok {
		return status, code
	}
	if status, code, ok := lifecycleStatus(err); ok {
		return status, code
	}
	if status, code, ok := maintenanceStatus(err); ok {
		return status, code
	}
	switch {
	case errors.Is(err, bundle.ErrBadPart), errors.Is(err, bundle.ErrBadSignature), errors.Is(err, bundle.ErrUntrusted):
		return http.StatusUnprocessableEntity, "IMPORT_REFUSED"
	case errors.Is(err, validate.ErrBadInput):
		return http.StatusBadRequest, "BAD_INPUT"
	case errors.Is(err, validationapi.ErrBusy):
		return http.StatusConflict, "BUSY"
	case errors.Is(err, validationapi.ErrBody):
		return http.StatusBadRequest, "BAD_REQUEST"
	case errors.Is(err, validationapi.ErrNoneYet):
		return http.StatusNotFound, "NOT_FOUND"
	case errors.Is(err, aptrepo.ErrConflict):
		return http.StatusConflict, "CONFLICT"
	case errors.Is(err, aptrepo.ErrNotDeb), errors.Is(err, aptrepo.ErrBadControl), errors.Is(err, aptrepo.ErrTooLarge):
		return http.StatusUnprocessableEntity, "PACKAGE_REFUSED"
	case errors.Is(err, aptrepo.ErrInvalid):
		return http.StatusBadRequest, "BAD_REQUEST"
	case errors.Is(err, aptrepo.ErrNotFound):
		return http.StatusNotFound, "NOT_FOUND"
	case errors.Is(err, aptrepo.ErrNotAvailable):
		return http.StatusGone, "GONE"
	}
	var he *echo.HTTPError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, "TOO_LARGE"
	case errors.As(err, &he):
		return he.Code, http.StatusText(he.Code)
	case errors.Is(err, opsapi.ErrNotFound):
		return http.StatusNotFound, "NOT_FOUND"
	case errors.Is(err, opsapi.ErrBadRequest):
		return http.StatusBadRequest, "BAD_REQUEST"
	case errors.Is(err, auth.ErrTooManyLogins):
		return http.StatusTooManyRequests, "TOO_MANY_REQUESTS"
	case errors.Is(err, errUnauthenticated), errors.Is(err, auth.ErrBadCredentials):
		return http.StatusUnauthorized, "UNAUTHORIZED"
	case errors.Is(err, errForbidden):
		return http.StatusForbidden, "FORBIDDEN"
	case errors.Is(err, errNotFound), errors.Is(err, auth.ErrUserNotFound):
		return http.StatusNotFound, "NOT_FOUND"
	case errors.Is(err, auth.ErrUserExists), errors.Is(err, auth.ErrLastAdmin), errors.Is(err, auth.ErrProjectConfigured):
		return http.StatusConflict, "CONFLICT"
	case errors.Is(err, errBadRequest), errors.Is(err, auth.ErrInvalidUsername), errors.Is(err, auth.ErrWeakPassword),
		errors.Is(err, auth.ErrInvalidRole), errors.Is(err, auth.ErrInvalidProject):
		return http.StatusBadRequest, "BAD_REQUEST"
	}
	return http.StatusInternalServerError, "INTERNAL"
}

// errorHandler renders API errors as JSON and logs server faults.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, code := statusOf(err)
		var body APIError
		body.Error.Code = code
		body.Error.Message = err.Error()
		var he *echo.HTTPError
		if errors.As(err, &he) {
			if m, ok := he.Message.(string); ok {
				body.Error.Message = m
			}
		}
		switch {
		case status == http.StatusBadGateway:
			// Another registry failed or refused: its words are the news.
			log.Warn("api request failed at a remote registry", "method", c.Request().Method, "path", c.Path(), "error", err)
		case status >= 500:
			log.Error("api request failed", "method", c.Request().Method, "path", c.Path(), "error", err)
			body.Error.Message = "internal error; see the appliance's log"
		}
		if status == http.StatusUnauthorized {
			c.Response().Header().Set("WWW-Authenticate", `Basic realm="appliance"`)
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(status)
			return
		}
		var pe *opsapi.PromotionError
		if errors.As(err, &pe) && pe.Promotion != nil && (status < 500 || status == http.StatusBadGateway) {
			_ = c.JSON(status, PromotionFailure{APIError: body, Promotion: pe.Promotion})
			return
		}
		_ = c.JSON(status, body)
	}
}

// lifecycleStatus maps the lifecycle's errors; used by statusOf.
func lifecycleStatus(err error) (int, string, bool) {
	var (
		refused   *promote.RefusedError
		targetErr *regclient.Error
	)
	switch {
	case errors.As(err, &refused):
		return http.StatusUnprocessableEntity, "PROMOTION_REFUSED", true
	case errors.As(err, &targetErr):
		// The other registry failed (or refused): not the appliance's fault.
		return http.StatusBadGateway, "REMOTE_REGISTRY_ERROR", true
	case errors.Is(err, bootstrap.ErrInvalid), errors.Is(err, promote.ErrInvalid):
		return http.StatusBadRequest, "BAD_REQUEST", true
	case errors.Is(err, promote.ErrBusy), errors.Is(err, bootstrap.ErrBadTransition), errors.Is(err, bootstrap.ErrStandby):
		return http.StatusConflict, "CONFLICT", true
	case errors.Is(err, promote.ErrNotFound):
		return http.StatusNotFound, "NOT_FOUND", true
	}
	return 0, "", false
}

// supervisorStatus maps the hand-over's errors; used by statusOf.
func supervisorStatus(err error) (int, string, bool) {
	var ve *vsphere.Error
	switch {
	case errors.Is(err, vsphere.ErrInvalidConfig), errors.Is(err, vsphere.ErrNoPackage), errors.Is(err, vsphere.ErrNoPackageMetadata):
		return http.StatusBadRequest, "BAD_REQUEST", true
	case errors.Is(err, bootstrap.ErrNotPromoted):
		return http.StatusConflict, "NOT_PROMOTED", true
	case errors.Is(err, vsphere.ErrVersionInUse):
		return http.StatusConflict, "CONFLICT", true
	case errors.As(err, &ve), errors.Is(err, vsphere.ErrLoginRefused), errors.Is(err, vsphere.ErrUnreachable),
		errors.Is(err, vsphere.ErrUntrusted), errors.Is(err, vsphere.ErrForbidden), errors.Is(err, vsphere.ErrNotFound):
		// vCenter failed or refused: its words reach the caller (502).
		return http.StatusBadGateway, "VCENTER_ERROR", true
	}
	return 0, "", false
}

// maintenanceStatus maps fsck's and gc's errors; used by statusOf.
func maintenanceStatus(err error) (int, string, bool) {
	if errors.Is(err, maintenance.ErrBusy) || errors.Is(err, registry.ErrBusy) {
		return http.StatusConflict, "BUSY", true
	}
	return 0, "", false
}
