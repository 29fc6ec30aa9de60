// Package httpmetrics is the appliance's Prometheus metrics: requests,
// latency and bytes by route (the route template echo matched, or a
// /v2/ route without its repository, so that label values stay few),
// storage, read-only mode, the lifecycle's mode and the standby's lag.
// They live on a registry of their own, served by Handler.
package httpmetrics

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/bootstrap"
)

// Moder is the lifecycle's mode (bootstrap.Lifecycle).
type Moder interface{ Mode() bootstrap.Mode }

// Syncer is a standby's sync state (bootstrap.Follower).
type Syncer interface {
	Lag() (time.Duration, bool)
	Status() bootstrap.SyncStatus
}

// EchoRoute is the route template e matched for r ("other" for none).
func EchoRoute(e *echo.Echo, r *http.Request) string {
	c := e.NewContext(r, nil)
	e.Router().Find(r.Method, r.URL.Path, c)
	if p := c.Path(); p != "" {
		return p
	}
	return "other"
}

// Metrics are the appliance's Prometheus metrics, on a registry of their own
// (no package globals).
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
}

// New registers the metrics: storageUsed and readOnly are read on each
// scrape, extra are the other parts' collectors.
func New(storageUsed func() (int64, error), readOnly func() bool, extra ...prometheus.Collector) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "appliance_http_requests_total",
			Help: "HTTP requests served, by route, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "appliance_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "appliance_http_response_bytes_total",
			Help: "Bytes of response bodies served, by route.",
		}, []string{"route"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.bytes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "appliance_storage_used_bytes",
			Help: "Bytes stored by the registry (refreshed at most every 30s).",
		}, func() float64 {
			n, err := storageUsed()
			if err != nil {
				return -1
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "appliance_read_only",
			Help: "1 while the registry refuses pushes and deletes.",
		}, func() float64 {
			if readOnly() {
				return 1
			}
			return 0
		}),
	)
	m.reg.MustRegister(extra...)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Instrument wraps h, labelling requests with route(r) and writing an
// access log line at debug level.
func (m *Metrics) Instrument(log *slog.Logger, route func(*http.Request) string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &recorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rw, r)
		rt := route(r)
		elapsed := time.Since(start)
		m.requests.WithLabelValues(rt, r.Method, strconv.Itoa(rw.status)).Inc()
		m.latency.WithLabelValues(rt, r.Method).Observe(elapsed.Seconds())
		if rw.written > 0 {
			m.bytes.WithLabelValues(rt).Add(float64(rw.written))
		}
		if log.Enabled(r.Context(), slog.LevelDebug) {
			log.LogAttrs(r.Context(), slog.LevelDebug, "request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("route", rt),
				slog.Int("status", rw.status), slog.Int64("bytes", rw.written),
				slog.Duration("duration", elapsed), slog.String("remote", r.RemoteAddr))
		}
	})
}

// RegistryRoute names a /v2/ request's route without its repository, so
// that label values stay few.
func RegistryRoute(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		return "v2_base"
	case p == "/v2/_catalog":
		return "v2_catalog"
	case strings.HasSuffix(p, "/tags/list"):
		return "v2_tags"
	case strings.Contains(p, "/manifests/"):
		return "v2_manifest"
	case strings.Contains(p, "/blobs/uploads"):
		return "v2_blob_upload"
	case strings.Contains(p, "/blobs/"):
		return "v2_blob"
	case strings.Contains(p, "/referrers/"):
		return "v2_referrers"
	}
	return "v2_other"
}

// recorder captures the status and body size. It keeps io.ReaderFrom (so
// blob bodies can still use sendfile on plain connections), http.Flusher
// and http.Hijacker working through the wrapper.
type recorder struct {
	http.ResponseWriter
	status      int
	written     int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.written += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.wroteHeader = true
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(src)
		r.written += n
		return n, err
	}
	n, err := io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	r.written += n
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := r.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("hijack not supported")
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Lifecycle is the mode and the standby's lag, as metrics.
func Lifecycle(life Moder, f Syncer) []prometheus.Collector {
	modes := prometheus.NewDesc("appliance_mode", "1 for the lifecycle mode the appliance is in (bootstrap, standby, active), 0 for the others.", []string{"mode"}, nil)
	return []prometheus.Collector{
		collectorFunc{desc: modes, collect: func(ch chan<- prometheus.Metric) {
			cur := life.Mode()
			for _, m := range bootstrap.Modes {
				v := 0.0
				if m == cur {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(modes, prometheus.GaugeValue, v, string(m))
			}
		}},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "appliance_standby_lag_seconds",
			Help: "Seconds since the standby's last clean sync with its primary (since it became a standby, before the first); 0 when not a standby.",
		}, func() float64 {
			lag, _ := f.Lag()
			return lag.Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "appliance_standby_last_sync_timestamp_seconds",
			Help: "Unix time of the standby's last clean sync with its primary; 0 before the first.",
		}, func() float64 {
			t := f.Status().LastCleanSync
			if t.IsZero() {
				return 0
			}
			return float64(t.Unix())
		}),
	}
}

// collectorFunc is a collector of one metric family computed on scrape.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
