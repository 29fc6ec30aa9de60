// Command registry is the registry benchmark of issue 2. In one run, on one
// machine, it starts the appliance (the built binary, as a subprocess) and
// Debian's docker-registry (distribution 2.8, as a subprocess), both over
// TLS on free loopback ports in temporary folders, pushes the same image to
// both (one incompressible random layer blob and a small OCI manifest), and
// then measures, for each registry:
//
//   - blob pull throughput: the whole layer fetched by 1 client and by 8
//     concurrent clients (aggregate MiB/s, median of -blob-rounds rounds,
//     the registries alternating round by round);
//   - manifest GETs per second and latency percentiles at -conns concurrent
//     keep-alive HTTPS/1.1 connections, as fast as they go, for -duration
//     after -warmup; then the same at a fixed -paced-rate, latency counted
//     from when each request was due;
//   - the registry process's resident memory (VmRSS sampled from
//     /proc/PID/status, and VmHWM at the end) and the CPU time it used.
//
// The appliance is pulled from as clients do it: an anonymous pull token
// from its token endpoint on every request (and, for comparison, once more
// without any Authorization header). docker-registry runs without auth.
// A minimal in-memory HTTPS server, measured with the same client, shows
// the ceiling of the client and the machine (-reference).
//
// The machine's other processes are watched through /proc/stat: each
// measurement waits for a quiet machine (-quiet-wait), is repeated when
// other work disturbed it (-retries), and the report flags any figure that
// stayed disturbed.
//
// It prints a Markdown report with the ratios appliance/docker-registry and
// whether each goal of the issue is met. It is a benchmark, not a test: it
// asserts nothing and exits 0 whenever the measurement itself succeeded.
// Traffic goes only to 127.0.0.1; every loop is bounded in count and time,
// and the whole run by -timeout.
//
// bench/registry.sh builds the appliance and runs this; a quick smoke run:
//
//	go run ./bench/registry -blob-mib 16 -duration 2s -warmup 500ms -blob-rounds 1
//
// With -profile DIR and -appliance built from ./bench/applianceprof, a CPU
// profile of the appliance is written for every phase.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/appliance-dev/appliance/bench/internal/benchkit"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Goals of issue 2.
const (
	goalBlobRatio     = 1.0
	goalManifestRatio = 3.0
	goalP99           = 10 * time.Millisecond
	goalRSSMiB        = 150
)

const (
	repo        = "bench/image"
	tag         = "v1"
	mtManifest  = "application/vnd.oci.image.manifest.v1+json"
	mtConfig    = "application/vnd.oci.image.config.v1+json"
	mtLayer     = "application/vnd.oci.image.layer.v1.tar"
	manifestAcc = mtManifest + ", application/vnd.oci.image.index.v1+json, " +
		"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
	// disturbedCores is how much CPU other processes may use during a
	// phase before the report flags its figures.
	disturbedCores = 0.2
)

type options struct {
	appliance      string
	dockerRegistry string
	blobMiB        int
	blobClients    []int
	blobRounds     int
	conns          int
	warmup         time.Duration
	duration       time.Duration
	maxRequests    int
	manifestRef    string
	anonManifest   bool
	pacedRate      int
	drQuiet        bool
	sampleEvery    time.Duration
	quietWait      time.Duration
	retries        int
	timeout        time.Duration
	out            string
	jsonOut        string
	profileDir     string
	keep           bool
	reference      bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-static" {
		serveStatic(os.Args[2:])
		return
	}
	var o options
	var clients string
	flag.StringVar(&o.appliance, "appliance", "", "appliance binary (default: build ./cmd/appliance into the temp folder)")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary")
	flag.IntVar(&o.blobMiB, "blob-mib", 256, "size of the layer blob in MiB")
	flag.StringVar(&clients, "blob-clients", "1,8", "comma-separated numbers of concurrent blob clients")
	flag.IntVar(&o.blobRounds, "blob-rounds", 5, "rounds per blob measurement (the median is reported)")
	flag.IntVar(&o.conns, "conns", 32, "concurrent keep-alive connections for manifest GETs")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "manifest warm-up before measuring")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "manifest measurement duration")
	flag.IntVar(&o.maxRequests, "max-requests", 2_000_000, "upper bound on measured manifest GETs per phase")
	flag.StringVar(&o.manifestRef, "manifest-ref", "tag", "fetch the manifest by \"tag\" or by \"digest\"")
	flag.BoolVar(&o.anonManifest, "appliance-no-auth-phase", true, "also measure appliance manifest GETs sent without any Authorization header")
	flag.IntVar(&o.pacedRate, "paced-rate", 500, "also measure manifest latency at this fixed rate of GETs per second over -conns connections (0: skip)")
	flag.BoolVar(&o.drQuiet, "docker-registry-quiet", true, "run docker-registry with log level warn and no access log")
	flag.DurationVar(&o.sampleEvery, "rss-every", 100*time.Millisecond, "RSS sampling interval")
	flag.DurationVar(&o.quietWait, "quiet-wait", time.Minute, "before each measurement, wait up to this long for other processes to leave the CPUs idle (0: do not wait)")
	flag.IntVar(&o.retries, "retries", 5, "how many times a blob round or manifest phase disturbed by other processes is repeated")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "hard limit for the whole run")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	flag.StringVar(&o.jsonOut, "json", "", "also write the raw figures as JSON to this file")
	flag.StringVar(&o.profileDir, "profile", "", "fetch CPU and heap profiles of the appliance into this folder; "+
		"needs -appliance built from ./bench/applianceprof (it serves pprof on --pprof-addr)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder")
	flag.BoolVar(&o.reference, "reference", true, "also measure manifest GETs from a minimal in-memory Go HTTPS server (what this client and machine can do at most)")
	flag.Parse()
	for _, s := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 64 {
			fatalf("-blob-clients: %q is not a number between 1 and 64", s)
		}
		o.blobClients = append(o.blobClients, n)
	}
	switch {
	case o.blobMiB < 1 || o.blobMiB > 4096:
		fatalf("-blob-mib must be between 1 and 4096")
	case o.conns < 1 || o.conns > 1024:
		fatalf("-conns must be between 1 and 1024")
	case o.blobRounds < 1 || o.blobRounds > 20:
		fatalf("-blob-rounds must be between 1 and 20")
	case o.duration <= 0 || o.duration > 10*time.Minute || o.warmup < 0 || o.warmup > time.Minute:
		fatalf("-duration must be in (0, 10m] and -warmup in [0, 1m]")
	case o.manifestRef != "tag" && o.manifestRef != "digest":
		fatalf("-manifest-ref must be tag or digest")
	case o.maxRequests < o.conns:
		fatalf("-max-requests must be at least -conns")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/registry: "+format+"\n", args...)
	os.Exit(1)
}

// target is one registry under test.
type target struct {
	name     string
	base     *url.URL
	pool     *x509.CertPool
	proc     *benchkit.Process
	sampler  *sampler // RSS of proc, from the start on
	user     string   // push credentials ("" when the registry needs none)
	password string
	res      *result
	prof     *profiler // nil unless -profile
}

// result holds one registry's figures.
type result struct {
	Name          string                    `json:"name"`
	Version       string                    `json:"version"`
	Blob          map[int]blobResult        `json:"blob"` // by number of clients
	Manifest      *manifestResult           `json:"manifest"`
	ManifestNoHdr *manifestResult           `json:"manifest_no_authorization_header,omitempty"`
	ManifestPaced *manifestResult           `json:"manifest_paced,omitempty"`
	RSSIdleMiB    float64                   `json:"rss_idle_mib"`
	RSSMaxMiB     float64                   `json:"rss_max_sampled_mib"`
	HWMMiB        float64                   `json:"vmhwm_mib"`
	PhaseRSSMiB   map[string]float64        `json:"rss_max_by_phase_mib"`
	PhaseCPU      map[string]phaseCPUResult `json:"cpu_by_phase"`
}

type blobResult struct {
	Clients    int       `json:"clients"`
	Rounds     []float64 `json:"rounds_mib_s"`
	MedianMiB  float64   `json:"median_mib_s"`
	Discarded  int       `json:"discarded_rounds"` // disturbed by other processes, repeated
	OtherCores float64   `json:"other_cores_max"`  // over the kept rounds
}

type manifestResult struct {
	Conns      int           `json:"conns"`
	Rate       int           `json:"paced_rate,omitempty"` // 0: as fast as the connections go
	Auth       string        `json:"auth"`
	Requests   int           `json:"requests"`
	Errors     int           `json:"errors"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	PerSecond  float64       `json:"per_second"`
	P50        time.Duration `json:"p50_ns"`
	P90        time.Duration `json:"p90_ns"`
	P99        time.Duration `json:"p99_ns"`
	P999       time.Duration `json:"p999_ns"`
	Max        time.Duration `json:"max_ns"`
	CPUPerReq  time.Duration `json:"server_cpu_per_request_ns"`
	ServerCPU  float64       `json:"server_cpu_cores"`
	FirstError string        `json:"first_error,omitempty"`

	warmupRequests int // for CPU per request: the phase's CPU covers them too
}

type phaseCPUResult struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	Cores      float64 `json:"cores"`
	// ClientCores is the benchmark process itself; OtherCores is every
	// other process on the machine (other work disturbs the figures).
	ClientCores float64 `json:"client_cores"`
	OtherCores  float64 `json:"other_cores"`
}

func run(ctx context.Context, o options) error {
	tmp, err := os.MkdirTemp("", "bench-registry-")
	if err != nil {
		return err
	}
	if o.keep {
		benchkit.Logf("temporary folder: %s (kept)", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if o.appliance == "" {
		o.appliance = filepath.Join(tmp, "appliance")
		benchkit.Logf("building the appliance into %s", o.appliance)
		if err := goBuild(ctx, o.appliance, "github.com/appliance-dev/appliance/cmd/appliance"); err != nil {
			return err
		}
	}
	if _, err := os.Stat(o.dockerRegistry); err != nil {
		return fmt.Errorf("docker-registry: %w (install Debian's docker-registry package)", err)
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}

	// The image: one random (incompressible) layer, a config, a manifest.
	benchkit.Logf("generating a %d MiB random layer", o.blobMiB)
	img := makeImage(o.blobMiB)

	app, err := startAppliance(ctx, o, filepath.Join(tmp, "appliance-data"))
	if err != nil {
		return err
	}
	defer app.proc.Stop()
	dr, err := startDockerRegistry(ctx, o, filepath.Join(tmp, "docker-registry"))
	if err != nil {
		return err
	}
	defer dr.proc.Stop()
	targets := []*target{app, dr}
	all := slices.Clone(targets)
	var ref *target
	if o.reference {
		if ref, err = startStatic(ctx, filepath.Join(tmp, "static"), img); err != nil {
			return err
		}
		defer ref.proc.Stop()
		all = append(all, ref)
	}
	for _, t := range all {
		t.res = &result{Name: t.name, Blob: map[int]blobResult{}, PhaseRSSMiB: map[string]float64{}, PhaseCPU: map[string]phaseCPUResult{}}
		t.sampler = newSampler(t.proc.PID(), o.sampleEvery)
		go t.sampler.run(ctx)
	}
	app.res.Version = binaryVersion(o.appliance)
	dr.res.Version = commandVersion(ctx, o.dockerRegistry)
	time.Sleep(500 * time.Millisecond) // let the idle sample settle
	for _, t := range targets {
		t.res.RSSIdleMiB = mib(t.sampler.current())
	}

	for _, t := range targets {
		err := phase(t, "push", func() error {
			benchkit.Logf("%s: pushing the image", t.name)
			return push(ctx, t, img)
		})
		if err != nil {
			return fmt.Errorf("%s: push: %w", t.name, err)
		}
	}
	for _, t := range targets {
		if err := verify(ctx, t, img); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	if err := firstErr(targets); err != nil {
		return err
	}

	// Blob pulls: each client fetches the whole blob; the registries
	// alternate round by round so that drift affects both alike.
	for _, n := range o.blobClients {
		if err := blobBench(ctx, targets, img, n, o); err != nil {
			return err
		}
	}

	// Manifest GETs: as fast as -conns connections go (the goals), then
	// for the appliance without any Authorization header, then at a fixed
	// rate to see latency below saturation.
	for _, t := range targets {
		mr, err := manifestMeasure(ctx, t, img, o, "manifest", true, 0)
		if err != nil {
			return err
		}
		t.res.Manifest = mr
	}
	if o.anonManifest {
		mr, err := manifestMeasure(ctx, app, img, o, "manifest-no-auth-header", false, 0)
		if err != nil {
			return err
		}
		app.res.ManifestNoHdr = mr
	}
	if o.pacedRate > 0 {
		for _, t := range targets {
			mr, err := manifestMeasure(ctx, t, img, o, "manifest-paced", true, o.pacedRate)
			if err != nil {
				return err
			}
			t.res.ManifestPaced = mr
		}
	}
	if ref != nil {
		mr, err := manifestMeasure(ctx, ref, img, o, "manifest", true, 0)
		if err != nil {
			return err
		}
		ref.res.Manifest = mr
	}
	if app.prof != nil {
		if err := app.prof.heap(ctx); err != nil {
			benchkit.Logf("heap profile: %v", err)
		}
	}

	for _, t := range targets {
		t.res.RSSMaxMiB = mib(t.sampler.max())
		hwm, err := readStatus(t.proc.PID(), "VmHWM:")
		if err != nil {
			return fmt.Errorf("%s: VmHWM: %w", t.name, err)
		}
		t.res.HWMMiB = mib(hwm)
	}

	var refRes *result
	if ref != nil {
		refRes = ref.res
	}
	figures := map[string]any{"appliance": app.res, "docker_registry": dr.res, "reference": refRes}
	return benchkit.WriteReport(renderReport(o, app.res, dr.res, refRes), figures, o.out, o.jsonOut)
}

// phase runs f, recording the process's peak sampled RSS and its CPU time
// during f under name, and the CPU time of the benchmark itself and of the
// rest of the machine.
func phase(t *target, name string, f func() error) error {
	if t.prof != nil {
		if err := t.prof.start(name); err != nil {
			benchkit.Logf("profile %s: %v", name, err)
		}
		defer func() {
			if err := t.prof.stop(); err != nil {
				benchkit.Logf("profile %s: %v", name, err)
			}
		}()
	}
	t.sampler.resetPhaseMax()
	cpu0 := benchkit.CPUSeconds(t.proc.PID())
	self0 := benchkit.CPUSeconds(os.Getpid())
	busy0 := benchkit.MachineBusy()
	start := time.Now()
	err := f()
	elapsed := time.Since(start).Seconds()
	cpu1 := benchkit.CPUSeconds(t.proc.PID())
	self1 := benchkit.CPUSeconds(os.Getpid())
	busy1 := benchkit.MachineBusy()
	t.res.PhaseRSSMiB[name] = mib(t.sampler.phaseMax())
	server, self := cpu1-cpu0, self1-self0
	t.res.PhaseCPU[name] = phaseCPUResult{
		CPUSeconds:  server,
		Cores:       server / elapsed,
		ClientCores: self / elapsed,
		OtherCores:  max(0, busy1-busy0-server-self) / elapsed,
	}
	return err
}

// otherCores is the average number of cores the rest of the machine used
// since the window began.
func otherCores(w benchkit.CPUWindow) float64 {
	_, _, other, elapsed := w.End()
	return other / elapsed
}

// waitQuiet waits, at most maxWait, until the rest of the machine has used
// under disturbedCores/2 of a CPU for two seconds in a row, so that other
// work does not skew a measurement. It reports what it saw.
func waitQuiet(ctx context.Context, maxWait time.Duration) {
	deadline := time.Now().Add(maxWait)
	quiet := 0
	for i := 0; ; i++ {
		w := benchkit.BeginWindow(0)
		sleepCtx(ctx, time.Second)
		other := otherCores(w)
		if other < disturbedCores/2 {
			quiet++
		} else {
			quiet = 0
		}
		if quiet >= 2 || ctx.Err() != nil {
			return
		}
		if time.Now().After(deadline) {
			benchkit.Logf("machine still busy (%.2f cores used by other processes); measuring anyway", other)
			return
		}
		if i%10 == 0 {
			benchkit.Logf("waiting for the machine to be quiet (%.2f cores used by other processes)", other)
		}
	}
}

func firstErr(ts []*target) error {
	for _, t := range ts {
		if err := t.proc.Exited(); err != nil {
			return fmt.Errorf("%s exited: %w\n%s", t.name, err, t.proc.Tail())
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// The image

type image struct {
	layer, config, manifest []byte
	layerDigest             string
	configDigest            string
	manifestDigest          string
}

func makeImage(sizeMiB int) *image {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	layer := make([]byte, sizeMiB<<20)
	_, _ = mrand.NewChaCha8(seed).Read(layer) // incompressible
	img := &image{layer: layer, layerDigest: digest(layer)}
	img.config = []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%q]}}`, img.layerDigest))
	img.configDigest = digest(img.config)
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mtManifest,
		"config":        map[string]any{"mediaType": mtConfig, "digest": img.configDigest, "size": len(img.config)},
		"layers":        []any{map[string]any{"mediaType": mtLayer, "digest": img.layerDigest, "size": len(layer)}},
		"annotations":   map[string]string{"org.opencontainers.image.title": "appliance registry benchmark"},
	}
	img.manifest, _ = json.Marshal(m)
	img.manifestDigest = digest(img.manifest)
	return img
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ---------------------------------------------------------------------------
// Clients

// newTransport is an HTTP/1.1 keep-alive transport that trusts pool and
// keeps up to conns idle connections to the one host.
func newTransport(pool *x509.CertPool, conns int) *http.Transport {
	var protos http.Protocols
	protos.SetHTTP1(true)
	return &http.Transport{
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		Protocols:             &protos,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          2 * conns,
		MaxIdleConnsPerHost:   conns,
		MaxConnsPerHost:       conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableCompression:    true,
	}
}

// authorize does what registry clients do: GET /v2/, and on a Bearer
// challenge fetch a token for scope from the realm (with Basic credentials
// if user is set). It returns the Authorization header value to use, or ""
// when the registry asks for none.
func authorize(ctx context.Context, c *http.Client, base *url.URL, scope, user, password string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base.JoinPath("/v2/").String(), nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return "", nil
	case http.StatusUnauthorized:
	default:
		return "", fmt.Errorf("GET /v2/: %s", resp.Status)
	}
	scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	switch {
	case strings.EqualFold(scheme, "basic"):
		if user == "" {
			return "", errors.New("GET /v2/: Basic challenge and no credentials")
		}
		return "Basic " + basic(user, password), nil
	case !strings.EqualFold(scheme, "bearer") || params["realm"] == "":
		return "", fmt.Errorf("GET /v2/: unusable challenge %q", resp.Header.Get("WWW-Authenticate"))
	}
	realm, err := url.Parse(params["realm"])
	if err != nil || realm.Hostname() != "127.0.0.1" && realm.Hostname() != "localhost" {
		return "", fmt.Errorf("token realm %q is not on loopback", params["realm"])
	}
	q := realm.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err = c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint: %s: %s", resp.Status, body)
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", fmt.Errorf("token endpoint: %w", err)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	if tr.Token == "" {
		return "", errors.New("token endpoint: no token in the answer")
	}
	return "Bearer " + tr.Token, nil
}

func basic(user, password string) string {
	req, _ := http.NewRequest(http.MethodGet, "https://x/", nil)
	req.SetBasicAuth(user, password)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// parseChallenge splits `Bearer realm="...",service="...",scope="a:b:c,d"`.
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k] = v[1 : 1+end]
			rest = strings.TrimLeft(v[2+end:], ", ")
		} else {
			val, next, _ := strings.Cut(v, ",")
			params[k] = strings.TrimSpace(val)
			rest = strings.TrimSpace(next)
		}
	}
	return scheme, params
}

// push uploads the layer, the config and the manifest (monolithic uploads).
func push(ctx context.Context, t *target, img *image) error {
	c := &http.Client{Transport: newTransport(t.pool, 4), Timeout: 10 * time.Minute}
	defer c.CloseIdleConnections()
	authz, err := authorize(ctx, c, t.base, "repository:"+repo+":pull,push", t.user, t.password)
	if err != nil {
		return err
	}
	for _, b := range []struct {
		data []byte
		dgst string
	}{{img.layer, img.layerDigest}, {img.config, img.configDigest}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.base.JoinPath("/v2/", repo, "/blobs/uploads/").String(), nil)
		setAuth(req, authz)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("start upload: %s", resp.Status)
		}
		loc, err := t.base.Parse(resp.Header.Get("Location"))
		if err != nil || loc.Host != t.base.Host {
			return fmt.Errorf("upload location %q: not on the registry", resp.Header.Get("Location"))
		}
		q := loc.Query()
		q.Set("digest", b.dgst)
		loc.RawQuery = q.Encode()
		req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), bytes.NewReader(b.data))
		req.ContentLength = int64(len(b.data))
		req.Header.Set("Content-Type", "application/octet-stream")
		setAuth(req, authz)
		resp, err = c.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("upload %s: %s: %s", b.dgst, resp.Status, body)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, t.base.JoinPath("/v2/", repo, "/manifests/", tag).String(), bytes.NewReader(img.manifest))
	req.Header.Set("Content-Type", mtManifest)
	setAuth(req, authz)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("put manifest: %s: %s", resp.Status, body)
	}
	if d := resp.Header.Get("Docker-Content-Digest"); d != img.manifestDigest {
		return fmt.Errorf("put manifest: digest %q, want %q", d, img.manifestDigest)
	}
	return nil
}

func setAuth(req *http.Request, authz string) {
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
}

// pullToken is what an anonymous pulling client holds: a pull token for
// the appliance, nothing for docker-registry.
func pullToken(ctx context.Context, t *target, c *http.Client) (string, error) {
	return authorize(ctx, c, t.base, "repository:"+repo+":pull", "", "")
}

// verify pulls the manifest and the whole blob once, untimed, checking
// their digests (and warming the page cache for the timed pulls).
func verify(ctx context.Context, t *target, img *image) error {
	c := &http.Client{Transport: newTransport(t.pool, 2), Timeout: 5 * time.Minute}
	defer c.CloseIdleConnections()
	authz, err := pullToken(ctx, t, c)
	if err != nil {
		return err
	}
	body, err := get(ctx, c, t.base.JoinPath("/v2/", repo, "/manifests/", tag).String(), authz, manifestAcc)
	if err != nil {
		return err
	}
	if d := digest(body); d != img.manifestDigest {
		return fmt.Errorf("manifest digest %s, want %s", d, img.manifestDigest)
	}
	body, err = get(ctx, c, t.base.JoinPath("/v2/", repo, "/blobs/", img.layerDigest).String(), authz, "")
	if err != nil {
		return err
	}
	if d := digest(body); d != img.layerDigest {
		return fmt.Errorf("blob digest %s, want %s", d, img.layerDigest)
	}
	return nil
}

func get(ctx context.Context, c *http.Client, u, authz, accept string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	setAuth(req, authz)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<30))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return body, nil
}

// blobBench pulls the layer with n concurrent clients from every target,
// o.blobRounds rounds each, alternating between the targets round by round.
// A round that other processes disturbed is repeated, at most o.retries
// times per target; the median round is reported.
func blobBench(ctx context.Context, targets []*target, img *image, n int, o options) error {
	name := fmt.Sprintf("blob-%d", n)
	type state struct {
		c                             *http.Client
		u, authz                      string
		res                           blobResult
		server, client, other, elapse float64 // seconds, over all rounds
	}
	states := make([]*state, len(targets))
	for i, t := range targets {
		tr := newTransport(t.pool, n)
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Minute}
		authz, err := pullToken(ctx, t, c)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		states[i] = &state{c: c, authz: authz, u: t.base.JoinPath("/v2/", repo, "/blobs/", img.layerDigest).String(), res: blobResult{Clients: n}}
		t.sampler.resetPhaseMax()
		if t.prof != nil {
			if err := t.prof.start(name); err != nil {
				benchkit.Logf("profile %s: %v", name, err)
			} else {
				defer func() {
					if err := t.prof.stop(); err != nil {
						benchkit.Logf("profile %s: %v", name, err)
					}
				}()
			}
		}
	}
	want := int64(len(img.layer))
	for range o.blobRounds {
		for i, t := range targets {
			st := states[i]
			for {
				waitQuiet(ctx, o.quietWait)
				win := benchkit.BeginWindow(t.proc.PID())
				if err := pullConcurrently(ctx, st.c, st.u, st.authz, want, n); err != nil {
					return fmt.Errorf("%s: blob pull with %d clients: %w", t.name, n, err)
				}
				server, client, other, elapsed := win.End()
				st.server, st.client, st.other, st.elapse = st.server+server, st.client+client, st.other+other, st.elapse+elapsed
				mibs := float64(n) * float64(want) / (1 << 20) / elapsed
				otherCores := other / elapsed
				if otherCores > disturbedCores {
					if st.res.Discarded < o.retries {
						benchkit.Logf("%s: blob round with %d clients disturbed (%.2f cores of other work, %.0f MiB/s): repeating it", t.name, n, otherCores, mibs)
						st.res.Discarded++
						continue
					}
					benchkit.Logf("%s: blob round with %d clients disturbed (%.2f cores of other work, %.0f MiB/s): kept, retries used up", t.name, n, otherCores, mibs)
				}
				st.res.Rounds = append(st.res.Rounds, mibs)
				st.res.OtherCores = max(st.res.OtherCores, otherCores)
				break
			}
		}
	}
	for i, t := range targets {
		st := states[i]
		st.res.MedianMiB = benchkit.Median(st.res.Rounds)
		t.res.Blob[n] = st.res
		t.res.PhaseRSSMiB[name] = mib(t.sampler.phaseMax())
		t.res.PhaseCPU[name] = phaseCPUResult{CPUSeconds: st.server, Cores: st.server / st.elapse, ClientCores: st.client / st.elapse, OtherCores: st.other / st.elapse}
		benchkit.Logf("%s: blob pull, %d clients: %.0f MiB/s (rounds %s), %.3f ms of server CPU per MiB", t.name, n, st.res.MedianMiB, fmtFloats(st.res.Rounds),
			st.server*1000/(float64(n)*float64(want)/(1<<20)*float64(len(st.res.Rounds)+st.res.Discarded)))
	}
	return nil
}

// pullConcurrently has n clients pull the blob at u at the same time.
func pullConcurrently(ctx context.Context, c *http.Client, u, authz string, want int64, n int) error {
	errs := make(chan error, n)
	var ready, wg sync.WaitGroup
	startGate := make(chan struct{})
	ready.Add(n)
	for range n {
		wg.Go(func() {
			ready.Done()
			<-startGate
			errs <- pullBlob(ctx, c, u, authz, want)
		})
	}
	ready.Wait()
	close(startGate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func pullBlob(ctx context.Context, c *http.Client, u, authz string, want int64) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	setAuth(req, authz)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET blob: %s", resp.Status)
	}
	buf := make([]byte, 256<<10)
	var got int64
	for {
		k, err := resp.Body.Read(buf)
		got += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if got != want {
		return fmt.Errorf("GET blob: %d bytes, want %d", got, want)
	}
	return nil
}

// manifestMeasure runs one manifest phase on t, waiting for a quiet
// machine first, and completes the result with the server's CPU figures.
func manifestMeasure(ctx context.Context, t *target, img *image, o options, name string, withToken bool, rate int) (*manifestResult, error) {
	var mr *manifestResult
	for attempt := 0; ; attempt++ {
		waitQuiet(ctx, o.quietWait)
		err := phase(t, name, func() error {
			var err error
			mr, err = manifestPhase(ctx, t, img, o, withToken, rate)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", t.name, name, err)
		}
		other := t.res.PhaseCPU[name].OtherCores
		if other <= disturbedCores || attempt >= o.retries {
			break
		}
		benchkit.Logf("%s: %s disturbed (%.2f cores of other work, %.0f/s): repeating it", t.name, name, other, mr.PerSecond)
	}
	cpu := t.res.PhaseCPU[name]
	mr.ServerCPU = cpu.Cores
	mr.CPUPerReq = time.Duration(cpu.CPUSeconds / float64(mr.Requests+mr.warmupRequests) * 1e9)
	benchkit.Logf("%s: %s (%s): %.0f/s, p50 %s ms, p99 %s ms, errors %d, server CPU %.2f cores, %.0f µs per GET",
		t.name, name, mr.Auth, mr.PerSecond, ms(mr.P50), ms(mr.P99), mr.Errors, mr.ServerCPU, us(mr.CPUPerReq))
	return mr, nil
}

// manifestPhase keeps o.conns workers GETting the manifest over keep-alive
// connections: o.warmup unmeasured, then o.duration measured. Requests
// started during the measured window count; the window ends when the last
// of them finishes.
func manifestPhase(ctx context.Context, t *target, img *image, o options, withToken bool, rate int) (*manifestResult, error) {
	tr := newTransport(t.pool, o.conns)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	authz, label := "", "none"
	if withToken {
		var err error
		if authz, err = pullToken(ctx, t, c); err != nil {
			return nil, err
		}
		if authz != "" {
			label = "anonymous pull token"
		}
	} else {
		label = "no Authorization header"
	}
	ref := tag
	if o.manifestRef == "digest" {
		ref = img.manifestDigest
	}
	u := t.base.JoinPath("/v2/", repo, "/manifests/", ref).String()
	want := len(img.manifest)

	const (
		warming = iota
		measuring
		stopped
	)
	var state atomic.Int32
	var measureStart time.Time
	perWorker := o.maxRequests / o.conns
	type workerOut struct {
		lat      []time.Duration
		warm     int
		errs     int
		firstErr string
		lastEnd  time.Time
	}
	outs := make([]workerOut, o.conns)
	// With a rate, each worker sends on a fixed schedule and a request's
	// latency counts from when it was due, so a slow server is not excused
	// by the requests it delayed (no coordinated omission).
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(o.conns) / float64(rate) * 1e9)
	}
	phaseStart := time.Now()
	var wg sync.WaitGroup
	for i := range o.conns {
		wg.Go(func() {
			w := &outs[i]
			w.lat = make([]time.Duration, 0, 4096)
			buf := make([]byte, 0, want+512)
			next := phaseStart.Add(interval * time.Duration(i) / time.Duration(o.conns))
			for ctx.Err() == nil {
				var t0 time.Time
				if rate > 0 {
					if d := time.Until(next); d > 0 {
						sleepCtx(ctx, d)
					}
					t0, next = next, next.Add(interval)
				}
				st := state.Load()
				if st == stopped || len(w.lat) >= perWorker {
					return
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				req.Header.Set("Accept", manifestAcc)
				setAuth(req, authz)
				if rate == 0 {
					t0 = time.Now()
				}
				resp, err := c.Do(req)
				if err == nil {
					buf, err = readAllInto(buf[:0], resp.Body, want+512)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != http.StatusOK || len(buf) != want) {
						err = fmt.Errorf("GET manifest: %s, %d bytes", resp.Status, len(buf))
					}
				}
				t1 := time.Now()
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					if w.errs > 100 {
						return
					}
					continue
				}
				if st == measuring {
					w.lat = append(w.lat, t1.Sub(t0))
					w.lastEnd = t1
				} else {
					w.warm++
				}
			}
		})
	}
	sleepCtx(ctx, o.warmup)
	measureStart = time.Now()
	state.Store(measuring)
	sleepCtx(ctx, o.duration)
	state.Store(stopped)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	res := &manifestResult{Conns: o.conns, Auth: label, Rate: rate}
	var all []time.Duration
	var end time.Time
	for _, w := range outs {
		all = append(all, w.lat...)
		res.Errors += w.errs
		res.warmupRequests += w.warm
		if res.FirstError == "" {
			res.FirstError = w.firstErr
		}
		if w.lastEnd.After(end) {
			end = w.lastEnd
		}
	}
	res.Requests = len(all)
	if res.Requests == 0 {
		return nil, fmt.Errorf("no successful manifest GET (first error: %s)", res.FirstError)
	}
	res.Elapsed = end.Sub(measureStart)
	res.PerSecond = float64(res.Requests) / res.Elapsed.Seconds()
	slices.Sort(all)
	res.P50, res.P90, res.P99, res.P999 = pct(all, 50), pct(all, 90), pct(all, 99), pct(all, 99.9)
	res.Max = all[len(all)-1]
	return res, nil
}

func readAllInto(buf []byte, r io.Reader, limit int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= limit {
				return buf, fmt.Errorf("body longer than %d bytes", limit)
			}
			buf = slices.Grow(buf, 512)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p/100+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// ---------------------------------------------------------------------------
// Processes

func startAppliance(ctx context.Context, o options, dir string) (*target, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	var (
		args []string
		prof *profiler
	)
	if o.profileDir != "" {
		pprofAddr, err := benchkit.FreeAddr()
		if err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(o.profileDir)
		if err != nil {
			return nil, err
		}
		args = append(args, "--pprof-addr", pprofAddr, "--profile-dir", abs)
		prof = &profiler{base: "http://" + pprofAddr, dir: abs}
	}
	a, err := benchkit.StartAppliance(ctx, o.appliance, benchkit.ApplianceOptions{DataDir: filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "appliance.log"), Env: benchkit.CleanEnv("REGISTRY_"), Args: args, Ready: "/healthz"})
	if err != nil {
		return nil, err
	}
	return &target{
		name: "appliance", base: &url.URL{Scheme: "https", Host: a.HTTPSAddr}, pool: a.Roots, proc: a.Proc,
		user: "admin", password: a.Password, prof: prof,
	}, nil
}

func startDockerRegistry(ctx context.Context, o options, dir string) (*target, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := benchkit.SelfSigned()
	if err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	level := "info"
	if o.drQuiet {
		level = "warn"
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	benchkit.Logf("docker-registry: %s serve %s", o.dockerRegistry, filepath.Join(dir, "config.yml"))
	// The shape of Debian's /etc/docker/registry/config.yml, without auth
	// (docker-registry stands in for a registry that allows anonymous pull)
	// and with TLS, like the appliance.
	p, addr, err := benchkit.StartDockerRegistry(ctx, o.dockerRegistry, dir, benchkit.DockerRegistryOptions{
		Secret: hex.EncodeToString(secret), LogLevel: level, AccessLog: !o.drQuiet, LogService: "registry",
		CertFile: certPath, KeyFile: keyPath, RootCAs: pool,
	})
	if err != nil {
		return nil, err
	}
	return &target{name: "docker-registry", base: &url.URL{Scheme: "https", Host: addr}, pool: pool, proc: p}, nil
}

// startStatic runs this program as "serve-static": a minimal HTTPS server
// that answers GET /v2/ and the manifest from memory, the reference ceiling.
func startStatic(ctx context.Context, dir string, img *image) (*target, error) {
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := benchkit.SelfSigned()
	if err != nil {
		return nil, err
	}
	certPath, keyPath, manPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "manifest.json")
	for path, data := range map[string][]byte{certPath: certPEM, keyPath: keyPEM, manPath: img.manifest} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := benchkit.Start("reference", filepath.Join(dir, "static.log"), benchkit.CleanEnv("REGISTRY_"), exe, "serve-static", addr, certPath, keyPath, manPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	base := &url.URL{Scheme: "https", Host: addr}
	if err := benchkit.WaitHTTPS(ctx, p, pool, base.JoinPath("/v2/").String(), 30*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return &target{name: "reference", base: base, pool: pool, proc: p}, nil
}

// serveStatic is the reference server: serve-static ADDR CERT KEY MANIFEST.
func serveStatic(args []string) {
	if len(args) != 4 {
		fatalf("usage: serve-static ADDR CERT KEY MANIFEST")
	}
	host, _, err := net.SplitHostPort(args[0])
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fatalf("serve-static: %q is not a loopback address", args[0])
	}
	body, err := os.ReadFile(args[3])
	if err != nil {
		fatalf("serve-static: %v", err)
	}
	dgst := digest(body)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	})
	mux.HandleFunc("GET /v2/"+repo+"/manifests/{ref}", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", mtManifest)
		h.Set("Docker-Content-Digest", dgst)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		fatalf("serve-static: %v", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ServeTLS(ln, args[1], args[2]); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fatalf("serve-static: %v", err)
	}
}

func goBuild(ctx context.Context, out, pkg string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go build %s: the go tool is not on PATH: %w", pkg, err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

func binaryVersion(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return bi.Main.Path + " " + bi.Main.Version + ", built with " + bi.GoVersion
}

func commandVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	v := strings.TrimSpace(string(out))
	if err != nil || v == "" {
		v = "unknown"
	}
	if bi, err := buildinfo.ReadFile(bin); err == nil {
		v += ", built with " + bi.GoVersion
	}
	return v
}

// ---------------------------------------------------------------------------
// Memory and CPU of a process

type sampler struct {
	pid     int
	every   time.Duration
	mu      sync.Mutex
	cur     int64
	peak    int64
	phasePk int64
}

func newSampler(pid int, every time.Duration) *sampler {
	return &sampler{pid: pid, every: every}
}

// run samples VmRSS until ctx ends or the process is gone.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		v, err := readStatus(s.pid, "VmRSS:")
		if err != nil {
			return
		}
		s.mu.Lock()
		s.cur = v
		s.peak = max(s.peak, v)
		s.phasePk = max(s.phasePk, v)
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) current() int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.cur }
func (s *sampler) max() int64     { s.mu.Lock(); defer s.mu.Unlock(); return s.peak }
func (s *sampler) phaseMax() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.phasePk, s.cur)
}
func (s *sampler) resetPhaseMax() { s.mu.Lock(); defer s.mu.Unlock(); s.phasePk = s.cur }

// readStatus returns a "kB" field of /proc/PID/status in bytes.
func readStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// ---------------------------------------------------------------------------
// Profiles (only with -profile and the bench/applianceprof binary)

// profiler drives bench/applianceprof: a CPU profile per phase, written by
// the appliance process into the profile folder, and heap profiles at the end.
type profiler struct {
	base string // http://127.0.0.1:PORT
	dir  string
}

func (p *profiler) post(path string) error {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(p.base+path, "text/plain", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

func (p *profiler) start(name string) error {
	return p.post("/bench/cpu/start?name=" + url.QueryEscape(name))
}
func (p *profiler) stop() error { return p.post("/bench/cpu/stop") }

func (p *profiler) heap(ctx context.Context) error {
	for name, path := range map[string]string{
		"appliance-heap.pprof":   "/debug/pprof/heap",
		"appliance-allocs.pprof": "/debug/pprof/allocs",
	} {
		if err := fetchTo(ctx, p.base+path, filepath.Join(p.dir, name), time.Minute); err != nil {
			return err
		}
	}
	return nil
}

func fetchTo(ctx context.Context, u, path string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	benchkit.Logf("profile written: %s", path)
	return os.WriteFile(path, data, 0o644)
}

// ---------------------------------------------------------------------------
// Report

func renderReport(o options, a, d, ref *result) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Registry benchmark (issue 2)\n\n")
	w("- date: %s\n", time.Now().UTC().Format(time.RFC3339))
	w("- machine: %d CPUs (%s), %s RAM, kernel %s\n", runtime.NumCPU(), cpuModel(), memTotal(), kernel())
	w("- appliance: %s\n", a.Version)
	w("- docker-registry: %s\n", d.Version)
	w("- benchmark: %s; HTTPS/1.1 keep-alive on 127.0.0.1; blob %d MiB, %d rounds (median); manifest by %s, %d connections, %s warm-up + %s measured\n\n",
		runtime.Version(), o.blobMiB, o.blobRounds, o.manifestRef, o.conns, o.warmup, o.duration)

	w("| measurement | appliance | docker-registry | appliance / docker-registry | goal | met |\n")
	w("|---|---:|---:|---:|---|---|\n")
	met, total := 0, 0
	verdict := func(ok bool) string {
		total++
		if ok {
			met++
		}
		return benchkit.Verdict(ok)
	}
	for _, n := range o.blobClients {
		ab, db := a.Blob[n], d.Blob[n]
		r := ratio(ab.MedianMiB, db.MedianMiB)
		w("| blob pull, %d client%s (MiB/s%s) | %.0f | %.0f | %.2f× | ≥ %.1f× | %s |\n", n, plural(n), aggregate(n),
			ab.MedianMiB, db.MedianMiB, r, goalBlobRatio, verdict(r >= goalBlobRatio))
	}
	am, dm := a.Manifest, d.Manifest
	r := ratio(am.PerSecond, dm.PerSecond)
	w("| manifest GETs/s, %d connections | %.0f | %.0f | %.2f× | ≥ %.1f× | %s |\n", o.conns, am.PerSecond, dm.PerSecond, r, goalManifestRatio, verdict(r >= goalManifestRatio))
	w("| manifest latency p50 (ms) | %s | %s | %.2f× | | |\n", ms(am.P50), ms(dm.P50), ratio(float64(am.P50), float64(dm.P50)))
	w("| manifest latency p99 (ms) | %s | %s | %.2f× | appliance < %s | %s |\n", ms(am.P99), ms(dm.P99),
		ratio(float64(am.P99), float64(dm.P99)), ms(goalP99), verdict(am.P99 < goalP99))
	w("| manifest latency p99.9 / max (ms) | %s / %s | %s / %s | | | |\n", ms(am.P999), ms(am.Max), ms(dm.P999), ms(dm.Max))
	w("| server CPU per manifest GET (µs) | %.0f | %.0f | %.2f× | | |\n", us(am.CPUPerReq), us(dm.CPUPerReq), ratio(float64(am.CPUPerReq), float64(dm.CPUPerReq)))
	w("| server CPU during manifest load (cores of %d) | %.2f | %.2f | | | |\n", runtime.NumCPU(), am.ServerCPU, dm.ServerCPU)
	w("| manifest errors | %d | %d | | | |\n", am.Errors, dm.Errors)
	if ap, dp := a.ManifestPaced, d.ManifestPaced; ap != nil && dp != nil {
		w("| manifest latency p50 / p99 (ms) at a paced %d GETs/s | %s / %s | %s / %s | | | |\n", ap.Rate, ms(ap.P50), ms(ap.P99), ms(dp.P50), ms(dp.P99))
		w("| achieved rate when paced at %d GETs/s | %.0f | %.0f | | | |\n", ap.Rate, ap.PerSecond, dp.PerSecond)
	}
	w("| resident memory, peak VmHWM (MiB) | %.1f | %.1f | %.2f× | appliance < %d MiB | %s |\n", a.HWMMiB, d.HWMMiB, ratio(a.HWMMiB, d.HWMMiB), goalRSSMiB, verdict(a.HWMMiB < goalRSSMiB))
	w("| resident memory, idle / max sampled VmRSS (MiB) | %.1f / %.1f | %.1f / %.1f | | | |\n", a.RSSIdleMiB, a.RSSMaxMiB, d.RSSIdleMiB, d.RSSMaxMiB)
	w("\nGoals met: %d of %d.\n\n", met, total)

	w("The appliance's manifest GETs carry an anonymous pull token from its token endpoint, as pulling clients send them;\n")
	w("docker-registry runs without auth. ")
	if n := a.ManifestNoHdr; n != nil {
		w("Without any Authorization header (the appliance then authorizes the anonymous pull directly) the appliance serves %.0f manifest GETs/s (%.2f× docker-registry), p50 %s ms, p99 %s ms, %.0f µs server CPU each.\n",
			n.PerSecond, ratio(n.PerSecond, dm.PerSecond), ms(n.P50), ms(n.P99), us(n.CPUPerReq))
	}
	if ref != nil && ref.Manifest != nil {
		m := ref.Manifest
		w("\nReference: a minimal Go HTTPS server answering the same manifest from memory, measured with the same client, serves %.0f GETs/s, p50 %s ms, p99 %s ms (server %.2f cores, client %.2f cores, %.0f µs server CPU per GET). That is the ceiling of this client on this machine.\n",
			m.PerSecond, ms(m.P50), ms(m.P99), m.ServerCPU, ref.PhaseCPU["manifest"].ClientCores, us(m.CPUPerReq))
	}
	w("\nPeak sampled VmRSS by phase (MiB):\n\n| phase | appliance | docker-registry |\n|---|---:|---:|\n")
	phases := []string{"push"}
	for _, n := range o.blobClients {
		phases = append(phases, fmt.Sprintf("blob-%d", n))
	}
	phases = append(phases, "manifest")
	if a.ManifestNoHdr != nil {
		phases = append(phases, "manifest-no-auth-header")
	}
	if a.ManifestPaced != nil {
		phases = append(phases, "manifest-paced")
	}
	for _, p := range phases {
		dv := "–"
		if v, ok := d.PhaseRSSMiB[p]; ok {
			dv = fmt.Sprintf("%.1f", v)
		}
		w("| %s | %.1f | %s |\n", p, a.PhaseRSSMiB[p], dv)
	}
	w("\nCPU by phase, in cores busy on average: the registry under test, the benchmark client, and all other processes\n")
	w("(the machine has %d; other work skews the figures; blob phases include repeated rounds, manifest phases only the kept attempt):\n\n", runtime.NumCPU())
	w("| phase | appliance: server / client / other | docker-registry: server / client / other |\n|---|---:|---:|\n")
	cpuCell := func(v phaseCPUResult) string {
		return fmt.Sprintf("%.2f / %.2f / %.2f", v.Cores, v.ClientCores, v.OtherCores)
	}
	for _, p := range phases {
		dv := "–"
		if v, ok := d.PhaseCPU[p]; ok {
			dv = cpuCell(v)
		}
		w("| %s | %s | %s |\n", p, cpuCell(a.PhaseCPU[p]), dv)
	}
	var disturbed []string
	for _, res := range []*result{a, d} {
		for _, n := range o.blobClients {
			if v := res.Blob[n].OtherCores; v > disturbedCores {
				disturbed = append(disturbed, fmt.Sprintf("%s blob-%d (%.2f cores)", res.Name, n, v))
			}
		}
		for _, p := range phases {
			if v, ok := res.PhaseCPU[p]; ok && strings.HasPrefix(p, "manifest") && v.OtherCores > disturbedCores {
				disturbed = append(disturbed, fmt.Sprintf("%s %s (%.2f cores)", res.Name, p, v.OtherCores))
			}
		}
	}
	if ref != nil {
		if v, ok := ref.PhaseCPU["manifest"]; ok && v.OtherCores > disturbedCores {
			disturbed = append(disturbed, fmt.Sprintf("reference manifest (%.2f cores)", v.OtherCores))
		}
	}
	if len(disturbed) > 0 {
		w("\n**Disturbed:** other processes used more than %.2f cores during: %s. Those figures are not reliable; run again on a quiet machine.\n",
			disturbedCores, strings.Join(disturbed, ", "))
	} else {
		w("\nNo measured phase was disturbed by other processes (each had under %.2f cores of other work).\n", disturbedCores)
	}
	for _, res := range []*result{a, d} {
		for _, n := range o.blobClients {
			br := res.Blob[n]
			w("\n%s blob rounds, %d client%s (MiB/s): %s", res.Name, n, plural(n), fmtFloats(br.Rounds))
			if br.Discarded > 0 {
				w(" (%d disturbed round%s repeated)", br.Discarded, plural(br.Discarded))
			}
		}
	}
	w("\n")
	for _, m := range []*manifestResult{am, dm, a.ManifestNoHdr, a.ManifestPaced, d.ManifestPaced} {
		if m != nil && m.FirstError != "" {
			w("\nfirst manifest error (%s): %s\n", m.Auth, m.FirstError)
		}
	}
	return b.String()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func aggregate(n int) string {
	if n == 1 {
		return ""
	}
	return ", aggregate"
}

func ms(d time.Duration) string  { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }
func us(d time.Duration) float64 { return float64(d) / 1e3 }

func fmtFloats(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strings.Join(s, ", ")
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return "unknown"
}

func kernel() string {
	data, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(data))
}
