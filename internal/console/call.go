package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// The console's data comes from the JSON API and /v2/, called in-process
// as the signed-in user (Deps.Handler, Deps.AsUser): what a page shows is
// what the API answers that user, its refusals included.

// apiError is an answer of the API other than 2xx: its status and message.
type apiError struct {
	Status  int
	Code    string
	Message string
	Body    []byte // the whole answer (a refused import's record is in it)
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

// recorder is the in-process response: status, headers, body.
type recorder struct {
	status int
	header http.Header
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

// maxAnswer bounds what one in-process answer may hold (a tags list of
// thousands of tags is well under it).
const maxAnswer = 32 << 20

// call sends method path (with an optional JSON body) to the appliance as
// user, on behalf of the browser's request orig (its address counts for
// the audit trail), and decodes a 2xx JSON answer into out.
func (c *Console) call(ctx context.Context, orig *http.Request, user, method, path string, in, out any, hdr ...string) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	// Never sent on a network: Handler serves it in this process.
	req, err := http.NewRequestWithContext(c.deps.AsUser(ctx, user), method, "https://"+orig.Host+path, body) //nolint:gosec // G704: in-process only, see above
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.RemoteAddr, req.Host = orig.RemoteAddr, orig.Host
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := &recorder{header: http.Header{}}
	c.deps.Handler.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.body.Len() > maxAnswer {
		return nil, fmt.Errorf("%s %s: answer over %d bytes", method, path, maxAnswer)
	}
	if rec.status < 200 || rec.status > 299 {
		return rec.header, errorOf(rec.status, rec.body.Bytes())
	}
	if out != nil && method != http.MethodHead {
		if raw, ok := out.(*[]byte); ok {
			*raw = rec.body.Bytes()
		} else if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return rec.header, fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return rec.header, nil
}

// errorOf reads the API's error body, or /v2/'s.
func errorOf(status int, body []byte) *apiError {
	e := &apiError{Status: status, Message: http.StatusText(status), Body: body}
	var api struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &api) == nil {
		switch {
		case api.Error.Message != "":
			e.Code, e.Message = api.Error.Code, api.Error.Message
		case len(api.Errors) > 0:
			e.Code, e.Message = api.Errors[0].Code, api.Errors[0].Message
		}
	}
	return e
}
