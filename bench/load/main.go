// Command load is the load test of issue 11. It is a benchmark, not a
// timed test: it prints figures, and verdicts on the two things that must
// hold under load, zero failed pulls and every pulled digest verified.
//
// In a fresh appliance (benchkit.StartAppliance, HTTPS on loopback) it
// pushes one multi-layer image (8 random, incompressible layers of 4 to
// 16 MiB) into a public project, and then, for 60 s, runs 200 concurrent
// anonymous pullers of it while `appliance import` uploads the import
// benchmark's 2 GiB imgpkg tar over HTTPS. The pullers are Go clients in
// this process, each with its own connection, split evenly between
//
//   - HTTP/2 and HTTP/1.1 (containerd and crane speak HTTP/2 over TLS,
//     skopeo and podman HTTP/1.1), and
//   - the two ways real clients pull anonymously from the appliance:
//     token (crane, skopeo: GET /v2/, its 401 Bearer challenge, an
//     anonymous token from the realm, then every request with it) and
//     none (containerd: the first request carries no Authorization; a
//     public repository answers it 200, so no token is ever asked for).
//
// A pull is the manifest by tag (with Accept headers), then the config and
// every layer; the manifest's sha256 and Docker-Content-Digest and every
// blob's sha256 and size are checked. A pull has a time limit; no pull
// starts after the phase's end, and those under way run to their end.
// Before the load, the same import runs once alone, in another fresh
// appliance, so its time under load has its like to compare with.
//
// Everything is bounded: each pull (-pull-timeout), the number of pulls
// per puller (-max-pulls), the phase (-duration), the import
// (-import-timeout) and the whole run (-timeout). All traffic is to
// 127.0.0.1.
//
//	bench/load.sh           # 200 pullers, 60 s, 2 GiB import
//	bench/load.sh -quick    # 200 pullers, 10 s, 256 MiB import
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

const (
	pullProject = "load"
	pullRepo    = pullProject + "/multi"
	pullTag     = "v1"
	importRepo  = "bench/big"
)

type options struct {
	appliance, revision, work, out, jsonOut string
	keep, quick, alone                      bool
	seed                                    uint64
	pullers, maxPulls                       int
	duration, pullTimeout                   time.Duration
	protocols, auth                         string
	imageLayers, imageMinMiB, imageMaxMiB   int
	sizeMiB, layerMiB, layersPerImage       int
	importAfter, importTimeout, probeEvery  time.Duration
	quietWait, timeout                      time.Duration
	maxOther                                float64
}

func main() {
	var o options
	flag.StringVar(&o.appliance, "appliance", "", "appliance binary (go build -o … ./cmd/appliance); required")
	flag.StringVar(&o.revision, "revision", "", "the commit the appliance binary was built from, for the report")
	flag.IntVar(&o.pullers, "pullers", 200, "concurrent anonymous pullers")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long pulls are started")
	flag.DurationVar(&o.pullTimeout, "pull-timeout", 3*time.Minute, "longest a pull may take")
	flag.IntVar(&o.maxPulls, "max-pulls", 1000, "most pulls one puller makes")
	flag.StringVar(&o.protocols, "protocols", "h2,h1", "protocols of the pullers, shared evenly: h2 (HTTP/2), h1 (HTTP/1.1)")
	flag.StringVar(&o.auth, "auth", "token,none", "how the pullers authorise, shared evenly: token (GET /v2/, challenge, anonymous token: crane, skopeo), none (no Authorization: containerd)")
	flag.IntVar(&o.imageLayers, "image-layers", 8, "layers of the pulled image")
	flag.IntVar(&o.imageMinMiB, "image-min-mib", 4, "size of its smallest layer, MiB (the others evenly up to -image-max-mib)")
	flag.IntVar(&o.imageMaxMiB, "image-max-mib", 16, "size of its largest layer, MiB")
	flag.IntVar(&o.sizeMiB, "size-mib", 2048, "layer bytes of the imported imgpkg tar, MiB")
	flag.IntVar(&o.layerMiB, "layer-mib", 64, "size of each imported layer, MiB")
	flag.IntVar(&o.layersPerImage, "layers", 4, "layers per imported image")
	flag.DurationVar(&o.importAfter, "import-after", 5*time.Second, "when the import starts, after the pullers")
	flag.DurationVar(&o.importTimeout, "import-timeout", 10*time.Minute, "longest the import may take")
	flag.DurationVar(&o.probeEvery, "probe-every", 250*time.Millisecond, "one more client (HTTP/2, no Authorization, its own connection) GETs the manifest alone this often during the load, to see what a newcomer waits")
	flag.BoolVar(&o.alone, "alone", true, "run the import once alone first, in its own fresh appliance")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: 10 s of pulls, a 256 MiB import (32 MiB layers, 2 per image) after 2 s")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the random layer bytes")
	flag.StringVar(&o.work, "work", "", "folder for the data and the appliances (default: a new folder under $TMPDIR)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder")
	flag.Float64Var(&o.maxOther, "max-other", 0.3, "run the load again (at most twice, each time in a fresh appliance) when other processes used more than this many cores during it")
	flag.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "longest wait, before each phase, for the machine to be quiet")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	flag.StringVar(&o.jsonOut, "json", "", "also write the figures as JSON to this file")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	var probeBase, probeCA, probeDigest string
	var probeFor time.Duration
	flag.StringVar(&probeBase, "probe-child", "", "internal: run as the lone client of this registry URL")
	flag.StringVar(&probeCA, "probe-ca", "", "internal: the lone client's CA file")
	flag.StringVar(&probeDigest, "probe-digest", "", "internal: the manifest digest the lone client checks")
	flag.DurationVar(&probeFor, "probe-for", 10*time.Minute, "internal: the lone client's longest run")
	flag.Parse()
	if probeBase != "" {
		if err := probeChild(probeBase, probeCA, probeDigest, o.probeEvery, probeFor, o.pullTimeout); err != nil {
			fmt.Fprintln(os.Stderr, "bench/load -probe-child:", err)
			os.Exit(1)
		}
		return
	}
	if o.quick {
		o.duration, o.importAfter = 10*time.Second, 2*time.Second
		o.sizeMiB, o.layerMiB, o.layersPerImage = 256, 32, 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	err := run(ctx, o)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/load:", err)
		os.Exit(1)
	}
}

// group is one kind of puller.
type group struct {
	Name         string `json:"name"`
	HTTP2, Token bool
}

type report struct {
	Date    string            `json:"date"`
	Machine map[string]string `json:"machine"`
	Options map[string]any    `json:"options"`
	// The pulled image.
	ImageLayers []int64                  `json:"image_layer_bytes"`
	ImageBytes  int64                    `json:"image_blob_bytes"` // layers and config
	ImageDigest string                   `json:"image_digest"`
	Anonymous   benchkit.AnonymousAccess `json:"anonymous_access"`
	// The imported set.
	SetImages   int   `json:"import_images"`
	SetLayers   int   `json:"import_layers"`
	SetTarBytes int64 `json:"import_tar_bytes"`

	Alone  *importRun `json:"import_alone,omitempty"`
	Loaded *importRun `json:"import_under_load"`
	Load   *loadRun   `json:"load"`
	Goals  []goal     `json:"verdicts"`
	// Attempts is how many loads ran (the last is reported).
	Attempts int `json:"attempts"`
}

type goal struct {
	What string `json:"what"`
	Met  bool   `json:"met"`
	Why  string `json:"why"`
}

// importRun is one `appliance import` upload.
type importRun struct {
	Seconds      float64 `json:"seconds"`
	MBps         float64 `json:"mb_per_s"`
	StartS       float64 `json:"start_s,omitempty"` // into the load phase
	ApplianceCPU float64 `json:"appliance_cpu_s,omitempty"`
	CLICPU       float64 `json:"cli_cpu_s"`
	PeakRSS      float64 `json:"appliance_peak_vmrss_mib,omitempty"`
	HWM          float64 `json:"appliance_vmhwm_mib,omitempty"`
	Checked      string  `json:"checked"`
	OtherCores   float64 `json:"other_cores,omitempty"` // alone: CPU of other processes meanwhile (the check's included)
	start, end   time.Time
}

type loadRun struct {
	Pullers   int     `json:"pullers"`
	WindowS   float64 `json:"window_s"`
	LastEndS  float64 `json:"last_pull_end_s"` // since the start
	Completed int     `json:"pulls_completed"`
	Failed    int     `json:"pulls_failed"`
	Fallbacks int     `json:"pulls_challenged_then_token"`
	Digests   int     `json:"digests_verified"`
	// DigestsWant is what the completed pulls had to verify.
	DigestsWant int             `json:"digests_expected"`
	Mismatches  int             `json:"digest_mismatches"`
	Bytes       int64           `json:"bytes_verified"`
	MBps        float64         `json:"mb_per_s"`        // Bytes over LastEndS
	WindowMBps  float64         `json:"window_mb_per_s"` // bytes of blobs verified within the window, over it
	Groups      []groupFigures  `json:"groups"`
	All         groupFigures    `json:"all"`
	ByImport    []groupFigures  `json:"manifest_by_import"` // while the import ran, and not
	Timeline    []timelineEntry `json:"timeline"`
	Failures    map[string]int  `json:"failure_classes"`
	FirstErrors []string        `json:"first_errors"`

	// Probe: the lone manifest GETs, all of them and while the import ran.
	Probe       benchkit.Quantiles `json:"probe"`
	ProbeImport benchkit.Quantiles `json:"probe_while_importing"`
	ProbeFailed int                `json:"probe_failed"`
	ProbeErrors []string           `json:"probe_first_errors"`

	ApplianceCPU float64                `json:"appliance_cpu_s"`
	SelfCPU      float64                `json:"bench_cpu_s"`
	Kernel       benchkit.KernelTimes   `json:"kernel_s"`
	TopOthers    []benchkit.ProcessTime `json:"top_other_processes"`
	CLICPU       float64                `json:"import_cli_cpu_s"`
	ProberCPU    float64                `json:"prober_cpu_s"`
	OtherCPU     float64                `json:"other_cpu_s"`
	ElapsedS     float64                `json:"elapsed_s"`
	RSS0         float64                `json:"appliance_vmrss_before_mib"`
	PeakRSS      float64                `json:"appliance_peak_vmrss_mib"`
	HWM          float64                `json:"appliance_vmhwm_mib"`
	SelfHWM      float64                `json:"bench_vmhwm_mib"`
	LogLines     int                    `json:"appliance_log_warn_or_error_lines"`
	LogMessages  map[string]int         `json:"appliance_log_messages"` // level and message → lines
	LogSample    []string               `json:"appliance_log_sample"`
}

// groupFigures are the figures of a set of pulls.
type groupFigures struct {
	Name      string             `json:"name"`
	Pulls     int                `json:"pulls"`
	Failed    int                `json:"failed"`
	Bytes     int64              `json:"bytes_verified"`
	Manifest  benchkit.Quantiles `json:"manifest_get"`
	Pull      benchkit.Quantiles `json:"whole_pull"`
	Auth      benchkit.Quantiles `json:"auth"`
	Protocols []string           `json:"protocols"`
}

type timelineEntry struct {
	FromS, ToS float64
	MBps       float64
	Pulls      int // completed in the slot
	Manifest   benchkit.Quantiles
	Importing  bool
}

// bench is what every phase needs.
type bench struct {
	o      options
	work   string
	set    *benchkit.ImageSet // imported
	image  *benchkit.ImageSet // pulled
	groups []group
}

func run(ctx context.Context, o options) error {
	if o.appliance == "" {
		return errors.New("-appliance is required (go build -o /tmp/appliance ./cmd/appliance)")
	}
	var err error
	if o.appliance, err = filepath.Abs(o.appliance); err != nil {
		return err
	}
	switch {
	case o.pullers < 1 || o.maxPulls < 1:
		return errors.New("-pullers and -max-pulls must be at least 1")
	case o.imageLayers < 1 || o.imageMinMiB < 1 || o.imageMaxMiB < o.imageMinMiB:
		return errors.New("need -image-layers ≥ 1 and -image-max-mib ≥ -image-min-mib ≥ 1")
	}
	b := &bench{o: o}
	if b.groups, err = groups(o); err != nil {
		return err
	}
	work, cleanup, err := benchkit.WorkDir(o.work, "load-bench.", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	b.work = work
	benchkit.Logf("work folder %s", work)
	rep := &report{Date: time.Now().UTC().Format(time.RFC3339), Machine: benchkit.Machine(ctx, work, o.appliance, nil),
		Options: map[string]any{"revision": o.revision, "pullers": o.pullers, "duration": o.duration.String(), "pull_timeout": o.pullTimeout.String(),
			"max_pulls": o.maxPulls, "protocols": o.protocols, "auth": o.auth, "image_layers": o.imageLayers, "image_min_mib": o.imageMinMiB,
			"image_max_mib": o.imageMaxMiB, "size_mib": o.sizeMiB, "layer_mib": o.layerMiB, "layers_per_image": o.layersPerImage,
			"import_after": o.importAfter.String(), "import_timeout": o.importTimeout.String(), "seed": o.seed, "probe_every": o.probeEvery.String(), "max_other": o.maxOther}}
	if o.revision != "" {
		rep.Machine["appliance source"] = o.revision
	}

	// The data: the image the pullers pull, and the tar the import uploads.
	t0 := time.Now()
	if b.image, err = benchkit.WriteImage(ctx, filepath.Join(work, "image"), pullTag, layerSizes(o), o.seed); err != nil {
		return fmt.Errorf("generate the image: %w", err)
	}
	img := b.image.Images[0]
	rep.ImageBytes, rep.ImageDigest = b.image.BlobBytes(), img.ManifestDigest
	for _, l := range img.Layers {
		rep.ImageLayers = append(rep.ImageLayers, l.Size)
	}
	if b.set, err = benchkit.WriteImageSet(ctx, filepath.Join(work, "set"), benchkit.ImageSetOptions{SizeMiB: o.sizeMiB, LayerMiB: o.layerMiB,
		LayersPerImage: o.layersPerImage, Seed: o.seed, Repo: importRepo}); err != nil {
		return fmt.Errorf("generate the import: %w", err)
	}
	rep.SetImages, rep.SetLayers, rep.SetTarBytes = len(b.set.Images), b.set.LayerCount, b.set.TarSize
	benchkit.Logf("generated the image (%d layers, %.1f MiB) and the import (%d images, %.0f MiB tar) in %.0f s",
		len(img.Layers), benchkit.MiB(rep.ImageBytes), len(b.set.Images), benchkit.MiB(b.set.TarSize), time.Since(t0).Seconds())
	syscall.Sync()

	// The import alone, for comparison.
	for attempt := 1; o.alone; attempt++ {
		if rep.Alone, err = b.importAlone(ctx); err != nil {
			return fmt.Errorf("import alone: %w", err)
		}
		benchkit.Logf("import alone: %.2f s, %.0f MB/s", rep.Alone.Seconds, rep.Alone.MBps)
		if rep.Alone.OtherCores <= o.maxOther || attempt == 3 {
			break
		}
		benchkit.Logf("other processes used %.2f cores during it: again", rep.Alone.OtherCores)
	}

	// The appliance under load; again (at most twice) in a fresh one when
	// other processes took CPU meanwhile.
	for attempt := 1; ; attempt++ {
		rep.Attempts = attempt
		if err := b.underLoad(ctx, rep, fmt.Sprintf("appliance-%d", attempt)); err != nil {
			return err
		}
		other := rep.Load.OtherCPU / rep.Load.ElapsedS
		if other <= o.maxOther || attempt == 3 {
			break
		}
		benchkit.Logf("other processes used %.2f cores during the load: again, in a fresh appliance", other)
	}
	rep.Goals = goals(rep)
	return benchkit.WriteReport(render(rep, b), rep, o.out, o.jsonOut)
}

// underLoad starts a fresh appliance in work/name, probes how it answers
// anonymous clients, pulls once as each kind of puller, runs the load, and
// stops and removes the appliance (its log stays).
func (b *bench) underLoad(ctx context.Context, rep *report, name string) error {
	app, err := b.startAppliance(ctx, name)
	if err != nil {
		return err
	}
	defer func() { app.Proc.Stop(); _ = os.RemoveAll(filepath.Join(b.work, name)); syscall.Sync() }()
	probe := benchkit.NewPuller(&url.URL{Scheme: "https", Host: app.HTTPSAddr}, benchkit.PullOptions{Roots: app.Roots, HTTP2: true, Timeout: time.Minute})
	rep.Anonymous, err = probe.ProbeAnonymous(ctx, pullRepo, pullTag)
	probe.Close()
	if err != nil {
		return fmt.Errorf("probe anonymous access: %w", err)
	}
	benchkit.Logf("anonymous: GET /v2/ %d (%s), manifest without Authorization %d, token %d, manifest with it %d",
		rep.Anonymous.PingStatus, rep.Anonymous.Challenge, rep.Anonymous.ManifestStatus, rep.Anonymous.TokenStatus, rep.Anonymous.TokenManifestStatus)
	if err := b.preflight(ctx, app); err != nil {
		return err
	}
	rep.Load, rep.Loaded, err = b.load(ctx, app)
	return err
}

// groups are the kinds of pullers, protocol × authorisation.
func groups(o options) ([]group, error) {
	protos, err := benchkit.SplitList(o.protocols, "h2", "h1")
	if err != nil || len(protos) == 0 {
		return nil, fmt.Errorf("-protocols: want h2, h1 or both: %w", err)
	}
	auths, err := benchkit.SplitList(o.auth, "token", "none")
	if err != nil || len(auths) == 0 {
		return nil, fmt.Errorf("-auth: want token, none or both: %w", err)
	}
	var gs []group
	for _, p := range protos {
		for _, a := range auths {
			name := map[string]string{"h2": "HTTP/2", "h1": "HTTP/1.1"}[p] + ", " + map[string]string{"token": "token", "none": "no Authorization"}[a]
			gs = append(gs, group{Name: name, HTTP2: p == "h2", Token: a == "token"})
		}
	}
	return gs, nil
}

// layerSizes spreads the image's layers evenly from the smallest to the
// largest size.
func layerSizes(o options) []int64 {
	sizes := make([]int64, o.imageLayers)
	for i := range sizes {
		mib := float64(o.imageMinMiB)
		if o.imageLayers > 1 {
			mib += float64(o.imageMaxMiB-o.imageMinMiB) * float64(i) / float64(o.imageLayers-1)
		}
		sizes[i] = int64(mib * (1 << 20))
	}
	return sizes
}

// ---------------------------------------------------------------- appliance

// startAppliance starts a fresh appliance in work/name, makes the pull
// project public and pushes the image into it.
func (b *bench) startAppliance(ctx context.Context, name string) (*benchkit.Appliance, error) {
	dir := filepath.Join(b.work, name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	app, err := benchkit.StartAppliance(ctx, b.o.appliance, benchkit.ApplianceOptions{DataDir: dir, LogPath: filepath.Join(b.work, name+".log"),
		Env: benchkit.CleanEnv(), Args: []string{"--log-level", "warn"}, Ready: "/readyz"})
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd := app.Command(ctx, "project", "set", pullProject, "--public")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		app.Proc.Stop()
		return nil, fmt.Errorf("appliance project set %s --public: %w\n%s", pullProject, err, out.String())
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: app.Roots, MinVersion: tls.VersionTLS12}, Proxy: nil, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://x/", nil)
	req.SetBasicAuth("admin", app.Password)
	if err := benchkit.PushImage(ctx, &http.Client{Transport: tr, Timeout: 5 * time.Minute}, &url.URL{Scheme: "https", Host: app.HTTPSAddr},
		req.Header.Get("Authorization"), pullRepo, b.image, b.image.Images[0]); err != nil {
		app.Proc.Stop()
		return nil, err
	}
	return app, nil
}

// importAlone runs the import in a fresh appliance of its own, nothing
// else running, and removes that appliance.
func (b *bench) importAlone(ctx context.Context) (*importRun, error) {
	app, err := b.startAppliance(ctx, "alone")
	if err != nil {
		return nil, err
	}
	defer func() { app.Proc.Stop(); _ = os.RemoveAll(filepath.Join(b.work, "alone")); syscall.Sync() }()
	syscall.Sync()
	benchkit.WaitQuiet(ctx, b.o.quietWait)
	pid := app.Proc.PID()
	if err := benchkit.ResetPeak(pid); err != nil {
		benchkit.Logf("  reset VmHWM: %v", err)
	}
	s := benchkit.NewSampler(pid)
	win := benchkit.BeginWindow(pid)
	r, err := b.runImport(ctx, app)
	var other float64
	r.ApplianceCPU, _, other, _ = win.End()
	r.PeakRSS, _ = s.Stop()
	r.OtherCores = max(0, other-r.CLICPU) / r.Seconds
	hwm, _ := benchkit.ReadStatus(pid, "VmHWM")
	r.HWM = benchkit.MiB(hwm)
	return r, err
}

// runImport uploads the set's imgpkg tar with `appliance import` (the CLI
// streams it over HTTPS) and checks that every image landed.
func (b *bench) runImport(ctx context.Context, app *benchkit.Appliance) (*importRun, error) {
	r := &importRun{}
	ctx, cancel := context.WithTimeout(ctx, b.o.importTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := app.Command(ctx, "import", "--to-repo", importRepo, b.set.ImgpkgTar)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r.start = time.Now()
	err := cmd.Run()
	r.end = time.Now()
	r.Seconds = r.end.Sub(r.start).Seconds()
	r.MBps = float64(b.set.TarSize) / r.Seconds / 1e6
	if cmd.ProcessState != nil {
		r.CLICPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if err != nil {
		return r, fmt.Errorf("appliance import: %w\n%s%s\n%s", err, stdout.String(), stderr.String(), app.Proc.Tail())
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: app.Roots, MinVersion: tls.VersionTLS12}, Proxy: nil}
	defer tr.CloseIdleConnections()
	tags, blobs, err := benchkit.CheckImageSet(ctx, &http.Client{Transport: tr, Timeout: time.Minute}, &url.URL{Scheme: "https", Host: app.HTTPSAddr}, importRepo, b.set)
	if err != nil {
		return r, fmt.Errorf("check the import: %w", err)
	}
	r.Checked = fmt.Sprintf("anonymous HEAD: %d tags, %d blobs", tags, blobs)
	return r, nil
}

// ---------------------------------------------------------------- pulls

func (b *bench) puller(app *benchkit.Appliance, g group) *benchkit.Puller {
	return benchkit.NewPuller(&url.URL{Scheme: "https", Host: app.HTTPSAddr}, benchkit.PullOptions{Roots: app.Roots, HTTP2: g.HTTP2, Token: g.Token, Timeout: b.o.pullTimeout})
}

// preflight pulls once as each group, alone: a pull that fails without
// load is a setup error, not a figure.
func (b *bench) preflight(ctx context.Context, app *benchkit.Appliance) error {
	for _, g := range b.groups {
		p := b.puller(app, g)
		r := p.Pull(ctx, pullRepo, pullTag, b.image.Images[0].ManifestDigest)
		p.Close()
		if r.Err != nil {
			return fmt.Errorf("a single pull (%s) failed: %w\n%s", g.Name, r.Err, app.Proc.Tail())
		}
		benchkit.Logf("single pull, %s: %.0f ms, %d digests verified over %s", g.Name, float64(r.Total)/1e6, r.Digests, r.Proto)
	}
	return nil
}

// load runs the pullers for the window, with the import started
// -import-after into it, and waits for both.
func (b *bench) load(ctx context.Context, app *benchkit.Appliance) (*loadRun, *importRun, error) {
	o := b.o
	syscall.Sync()
	benchkit.WaitQuiet(ctx, o.quietWait)
	pid, self := app.Proc.PID(), os.Getpid()
	for _, p := range []int{pid, self} {
		if err := benchkit.ResetPeak(p); err != nil {
			benchkit.Logf("  reset VmHWM: %v", err)
		}
	}
	rss0, _ := benchkit.ReadStatus(pid, "VmRSS")
	pullers := make([]*benchkit.Puller, o.pullers)
	for i := range pullers {
		pullers[i] = b.puller(app, b.groups[i%len(b.groups)])
	}
	pulls := make([][]benchkit.Pull, o.pullers)
	want := b.image.Images[0].ManifestDigest

	benchkit.Logf("load: %d pullers for %s; the import starts after %s", o.pullers, o.duration, o.importAfter)
	sampler := benchkit.NewSampler(pid)
	win := benchkit.BeginWindow(pid)
	kernel0, procs0 := benchkit.ReadKernelTimes(), benchkit.ReadProcessTimes()
	start := time.Now()
	stopProber, err := startProber(ctx, app, o, want)
	if err != nil {
		return nil, nil, err
	}
	until := start.Add(o.duration)
	type imported struct {
		r   *importRun
		err error
	}
	importDone := make(chan imported, 1)
	go func() {
		select {
		case <-time.After(o.importAfter):
		case <-ctx.Done():
			importDone <- imported{&importRun{}, ctx.Err()}
			return
		}
		benchkit.Logf("  import starts")
		r, err := b.runImport(ctx, app)
		benchkit.Logf("  import done in %.1f s, and checked", r.Seconds)
		importDone <- imported{r, err}
	}()
	benchkit.Repeat(ctx, o.pullers, o.maxPulls, until, func(ctx context.Context, w, _ int) {
		pulls[w] = append(pulls[w], pullers[w].Pull(ctx, pullRepo, pullTag, want))
	})
	benchkit.Logf("  pulls done after %.1f s", time.Since(start).Seconds())
	probes, proberCPU, err := stopProber() // bounded by -pull-timeout
	if err != nil {
		return nil, nil, err
	}
	imp := <-importDone // bounded by -import-timeout
	appCPU, selfCPU, other, elapsed := win.End()
	kernel, procs := benchkit.ReadKernelTimes().Since(kernel0), benchkit.ReadProcessTimes()
	peak, _ := sampler.Stop()
	for _, p := range pullers {
		p.Close()
	}
	if imp.err != nil {
		return nil, imp.r, fmt.Errorf("import under load: %w", imp.err)
	}
	imp.r.StartS = imp.r.start.Sub(start).Seconds()
	imp.r.ApplianceCPU = 0 // shared with the pulls: see the load's figures

	l := summarize(b, pulls, start, until, imp.r)
	l.ApplianceCPU, l.SelfCPU, l.CLICPU, l.ProberCPU, l.ElapsedS = appCPU, selfCPU, imp.r.CLICPU, proberCPU, elapsed
	l.OtherCPU = max(0, other-imp.r.CLICPU-proberCPU)
	l.RSS0, l.PeakRSS = benchkit.MiB(rss0), peak
	hwm, _ := benchkit.ReadStatus(pid, "VmHWM")
	l.HWM = benchkit.MiB(hwm)
	shwm, _ := benchkit.ReadStatus(self, "VmHWM")
	l.SelfHWM = benchkit.MiB(shwm)
	l.Kernel, l.TopOthers = kernel, benchkit.TopCPU(procs0, procs, 8, pid, self)
	var all, during []time.Duration
	for _, p := range probes {
		if p.Err != "" {
			l.ProbeFailed++
			if len(l.ProbeErrors) < 10 {
				l.ProbeErrors = append(l.ProbeErrors, fmt.Sprintf("sent %.1f s in: %s", p.At.Sub(start).Seconds(), p.Err))
			}
			continue
		}
		all = append(all, p.Took)
		if !p.At.Before(imp.r.start) && p.At.Before(imp.r.end) {
			during = append(during, p.Took)
		}
	}
	l.Probe, l.ProbeImport = benchkit.QuantilesOf(all), benchkit.QuantilesOf(during)
	l.LogLines, l.LogMessages, l.LogSample = logWarnings(app.Proc.LogPath)
	benchkit.Logf("load: %d pulls, %d failed, %.0f MB/s; import %.1f s under load", l.Completed, l.Failed, l.MBps, imp.r.Seconds)
	return l, imp.r, nil
}

// startProber starts the lone client: this program again, as its own
// process (so that it waits neither in this process's Go scheduler, behind
// the pullers, nor for their CPU more than the kernel's fair share), running
// benchkit.ProbeManifest until stop is called. stop returns the GETs and
// the prober's CPU seconds.
func startProber(ctx context.Context, app *benchkit.Appliance, o options, want string) (stop func() ([]benchkit.Probe, float64, error), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-probe-child", "https://"+app.HTTPSAddr, "-probe-ca", app.CAFile, "-probe-digest", want,
		"-probe-every", o.probeEvery.String(), "-probe-for", (o.duration + o.pullTimeout + time.Minute).String(), "-pull-timeout", o.pullTimeout.String())
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() ([]benchkit.Probe, float64, error) {
		_ = in.Close() // the child's cue to stop
		err := cmd.Wait()
		cpu := 0.0
		if cmd.ProcessState != nil {
			cpu = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
		}
		if err != nil {
			return nil, cpu, fmt.Errorf("the lone client: %w\n%s", err, stderr.String())
		}
		var probes []benchkit.Probe
		if err := json.Unmarshal(stdout.Bytes(), &probes); err != nil {
			return nil, cpu, fmt.Errorf("the lone client: %w", err)
		}
		return probes, cpu, nil
	}, nil
}

// probeChild is the lone client's process: an HTTP/2 puller without
// Authorization that GETs the manifest every -probe-every until its
// standard input closes (or -probe-for has passed), then prints the GETs as
// JSON.
func probeChild(base, caFile, want string, every, lasting, timeout time.Duration) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no certificate", caFile)
	}
	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), lasting)
	defer cancel()
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	p := benchkit.NewPuller(u, benchkit.PullOptions{Roots: roots, HTTP2: true, Timeout: timeout})
	defer p.Close()
	probes := benchkit.ProbeManifest(ctx, p, pullRepo, pullTag, want, every, int(lasting/every)+1, stop)
	return json.NewEncoder(os.Stdout).Encode(probes)
}

// summarize turns the pulls into figures.
func summarize(b *bench, pulls [][]benchkit.Pull, start, until time.Time, imp *importRun) *loadRun {
	l := &loadRun{Pullers: len(pulls), WindowS: until.Sub(start).Seconds(), Failures: map[string]int{}}
	perPull := 1 + 1 + len(b.image.Images[0].Layers) // manifest, config, layers
	byGroup := make([][]benchkit.Pull, len(b.groups))
	var all []benchkit.Pull
	var windowBytes int64
	last := start
	for w, ps := range pulls {
		g := w % len(b.groups)
		byGroup[g] = append(byGroup[g], ps...)
		all = append(all, ps...)
		for _, p := range ps {
			end := p.Start.Add(p.Total)
			if end.After(last) {
				last = end
			}
			l.Digests += p.Digests
			l.Bytes += p.Bytes
			if p.Fallback {
				l.Fallbacks++
			}
			for _, br := range p.Blobs {
				if !br.End.After(until) {
					windowBytes += br.Size
				}
			}
			if p.Err == nil {
				l.Completed++
				l.DigestsWant += perPull
				continue
			}
			l.Failed++
			if errors.Is(p.Err, benchkit.ErrDigestMismatch) {
				l.Mismatches++
			}
			l.Failures[failureClass(p.Err)]++
			if len(l.FirstErrors) < 20 {
				l.FirstErrors = append(l.FirstErrors, fmt.Sprintf("%s, puller %d, started %.1f s in: %v", b.groups[g].Name, w, p.Start.Sub(start).Seconds(), p.Err))
			}
		}
	}
	l.LastEndS = last.Sub(start).Seconds()
	l.MBps = float64(l.Bytes) / l.LastEndS / 1e6
	l.WindowMBps = float64(windowBytes) / l.WindowS / 1e6
	for i, g := range b.groups {
		l.Groups = append(l.Groups, figures(g.Name, byGroup[i]))
	}
	l.All = figures("all", all)
	importing := func(p benchkit.Pull) bool { return !p.ManifestAt.Before(imp.start) && p.ManifestAt.Before(imp.end) }
	var during, after []benchkit.Pull
	for _, p := range all {
		if p.ManifestAt.IsZero() {
			continue
		}
		if importing(p) {
			during = append(during, p)
		} else {
			after = append(after, p)
		}
	}
	l.ByImport = []groupFigures{figures("manifest GET sent while the import ran", during), figures("manifest GET sent while it did not", after)}
	l.Timeline = timeline(all, start, last, imp)
	return l
}

func figures(name string, ps []benchkit.Pull) groupFigures {
	f := groupFigures{Name: name}
	var man, whole, auth []time.Duration
	for _, p := range ps {
		f.Pulls++
		f.Bytes += p.Bytes
		if p.Proto != "" && !slices.Contains(f.Protocols, p.Proto) {
			f.Protocols = append(f.Protocols, p.Proto)
		}
		if p.Auth > 0 {
			auth = append(auth, p.Auth)
		}
		if p.Err != nil {
			f.Failed++
			continue
		}
		man, whole = append(man, p.Manifest), append(whole, p.Total)
	}
	f.Manifest, f.Pull, f.Auth = benchkit.QuantilesOf(man), benchkit.QuantilesOf(whole), benchkit.QuantilesOf(auth)
	return f
}

// timeline cuts the phase into about a dozen slots: MB/s verified, pulls
// completed and manifest latency in each.
func timeline(ps []benchkit.Pull, start, last time.Time, imp *importRun) []timelineEntry {
	span := last.Sub(start)
	slot := max(time.Second, (span / 12).Round(time.Second))
	n := max(1, int(span/slot)) // the last slot takes the remainder
	out := make([]timelineEntry, n)
	man := make([][]time.Duration, n)
	idx := func(t time.Time) int { return min(n-1, max(0, int(t.Sub(start)/slot))) }
	for i := range out {
		from, to := start.Add(time.Duration(i)*slot), start.Add(time.Duration(i+1)*slot)
		if i == n-1 {
			to = last
		}
		out[i].FromS, out[i].ToS = from.Sub(start).Seconds(), to.Sub(start).Seconds()
		out[i].Importing = imp.start.Before(to) && imp.end.After(from)
	}
	verified := make([]int64, n)
	for _, p := range ps {
		for _, br := range p.Blobs {
			verified[idx(br.End)] += br.Size
		}
		if p.Err == nil {
			out[idx(p.Start.Add(p.Total))].Pulls++
			man[idx(p.ManifestAt)] = append(man[idx(p.ManifestAt)], p.Manifest)
		}
	}
	for i := range out {
		if d := out[i].ToS - out[i].FromS; d > 0 {
			out[i].MBps = float64(verified[i]) / d / 1e6
		}
		out[i].Manifest = benchkit.QuantilesOf(man[i])
	}
	return out
}

// failureClass names what kind of failure err is: a time-out, an HTTP
// status, a digest mismatch or a connection error, and at which step.
func failureClass(err error) string {
	var pe *benchkit.PullError
	if !errors.As(err, &pe) {
		return "other: " + err.Error()
	}
	step := pe.Step
	if strings.HasPrefix(step, "GET blob ") {
		step = "GET blob"
	}
	switch {
	case errors.Is(err, benchkit.ErrDigestMismatch):
		return "digest mismatch at " + step
	case pe.Timeout():
		return "time-out at " + step
	case pe.Status != 0:
		return fmt.Sprintf("HTTP %d at %s", pe.Status, step)
	}
	return "connection error at " + step
}

// logWarnings counts the appliance's log lines at WARN or ERROR, by level
// and message, and returns the first of each message.
func logWarnings(path string) (int, map[string]int, []string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, []string{err.Error()}
	}
	n := 0
	msgs := map[string]int{}
	var sample []string
	for _, line := range strings.Split(string(data), "\n") {
		_, rest, ok := strings.Cut(line, " level=")
		if !ok {
			continue
		}
		level, rest, _ := strings.Cut(rest, " ")
		if level != "WARN" && level != "ERROR" {
			continue
		}
		n++
		msg := rest
		if m, ok := strings.CutPrefix(rest, "msg="); ok {
			if strings.HasPrefix(m, `"`) {
				if end := strings.Index(m[1:], `"`); end >= 0 {
					m = m[1 : end+1]
				}
			} else {
				m, _, _ = strings.Cut(m, " ")
			}
			msg = m
		}
		key := level + " " + msg
		if msgs[key] == 0 && len(sample) < 10 {
			sample = append(sample, line)
		}
		msgs[key]++
	}
	return n, msgs, sample
}

// ---------------------------------------------------------------- report

func goals(rep *report) []goal {
	l := rep.Load
	return []goal{
		{What: "zero failed pulls", Met: l.Failed == 0 && l.Completed > 0 && l.ProbeFailed == 0,
			Why: fmt.Sprintf("%d pulls completed, %d failed; %d lone manifest GETs, %d failed", l.Completed, l.Failed, l.Probe.N+l.ProbeFailed, l.ProbeFailed)},
		{What: "every pulled digest verified", Met: l.Mismatches == 0 && l.Failed == 0 && l.Digests == l.DigestsWant && l.Completed > 0,
			Why: fmt.Sprintf("%d digests verified of %d in %d completed pulls (manifest, config, %d layers each), %d mismatches", l.Digests, l.DigestsWant, l.Completed, len(rep.ImageLayers), l.Mismatches)},
		{What: "the import under load succeeded and every image landed", Met: rep.Loaded != nil && rep.Loaded.Checked != "",
			Why: map[bool]string{true: rep.Loaded.Checked, false: "no import"}[rep.Loaded != nil]},
	}
}

func render(rep *report, b *bench) string {
	o, l := b.o, rep.Load
	var s strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&s, format, args...) }
	w("## Load test (issue 11), %s\n\n", rep.Date)
	s.WriteString(benchkit.MachineList(rep.Machine))
	mibs := make([]string, len(rep.ImageLayers))
	for i, n := range rep.ImageLayers {
		mibs[i] = fmt.Sprintf("%.1f", benchkit.MiB(n))
	}
	w("\n**Load:** %d concurrent anonymous pullers for %s (no pull starts later; those under way finish, each within %s), of `%s:%s` (%s; %d layers of %s MiB, random and incompressible, %.1f MiB of blobs with the config), public project `%s`; the pullers are split evenly over %d kinds (below), each with its own TLS connection kept between its pulls. %s after the first pull starts, `appliance import --to-repo %s` uploads the import benchmark's imgpkg tar (%d images × %d layers of %d MiB, %.0f MiB) over HTTPS.\n\n",
		o.pullers, o.duration, o.pullTimeout, pullRepo, pullTag, rep.ImageDigest, len(rep.ImageLayers), strings.Join(mibs, ", "), benchkit.MiB(rep.ImageBytes), pullProject,
		len(b.groups), o.importAfter, importRepo, rep.SetImages, o.layersPerImage, o.layerMiB, benchkit.MiB(rep.SetTarBytes))
	a := rep.Anonymous
	w("**Anonymous access, as the appliance answered it before the load:** `GET /v2/` without credentials → %d, `WWW-Authenticate: %s`; `GET /v2/%s/manifests/%s` without Authorization → %d; the anonymous token from the challenge's realm (scope `repository:%s:pull`) → %d, and the manifest with it → %d. So crane and skopeo (which ping `/v2/` and follow the challenge) pull with an anonymous token, and containerd (whose first request is the manifest) pulls without ever asking for one; the pullers do both.\n\n",
		a.PingStatus, a.Challenge, pullRepo, pullTag, a.ManifestStatus, pullRepo, a.TokenStatus, a.TokenManifestStatus)

	w("### Verdicts\n\n| verdict | met | measured |\n|---|---|---|\n")
	for _, g := range rep.Goals {
		w("| %s | %s | %s |\n", g.What, benchkit.Verdict(g.Met), g.Why)
	}

	w("\n### Pulls\n\n")
	w("%d pulls completed, **%d failed**; %d digests verified, %.0f MiB of blobs verified; **%.0f MB/s** aggregate (verified bytes over the %.1f s from the first pull's start to the last pull's end), %.0f MB/s within the %.0f s window (blobs verified before it closed). %d pulls answered a challenge with a token (none expected: the project is public).\n\n",
		l.Completed, l.Failed, l.Digests, benchkit.MiB(l.Bytes), l.MBps, l.LastEndS, l.WindowMBps, l.WindowS, l.Fallbacks)
	w("Latency in ms (nearest rank), completed pulls only. *manifest*: `GET /v2/%s/manifests/%s` from the request sent to the body read; *auth*: `GET /v2/` and the token GET (token pullers); *pull*: the whole pull, auth, manifest, config and %d layers one after the other, each hashed.\n\n", pullRepo, pullTag, len(rep.ImageLayers))
	w("| pullers | protocol seen | pulls | failed | MiB verified | manifest p50 | p90 | p99 | max | auth p50 | p90 | p99 | max | pull p50 | p90 | p99 | max |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range append(slices.Clone(l.Groups), l.All) {
		w("| %s | %s | %d | %d | %.0f |%s%s%s\n", f.Name, strings.Join(f.Protocols, ", "), f.Pulls, f.Failed, benchkit.MiB(f.Bytes), f.Manifest.Cells(), f.Auth.Cells(), f.Pull.Cells())
	}
	w("\nThe pullers' own latencies include their wait in this process's Go scheduler: %d goroutines reading, decrypting and hashing on %s cores, each running until its socket is drained or its 10 ms time slice ends, so a goroutine woken by an answer can wait a round of all the others. The *lone client* below, in a process of its own, shows what the appliance itself makes a request wait.\n", o.pullers, rep.Machine["nproc"])
	w("\nManifest GETs while the import ran (%.1f–%.1f s into the phase) and not:\n\n| manifest GETs | n | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n",
		rep.Loaded.StartS, rep.Loaded.StartS+rep.Loaded.Seconds)
	for _, f := range l.ByImport {
		w("| %s | %d |%s\n", f.Name, f.Manifest.N, f.Manifest.Cells())
	}
	w("| lone client, every %s, whole load | %d |%s\n", o.probeEvery, l.Probe.N, l.Probe.Cells())
	w("| lone client, while the import ran | %d |%s\n", l.ProbeImport.N, l.ProbeImport.Cells())
	w("\nThe pullers send their manifest GETs in waves (all 200 at the start, then as their pulls end); the *lone client* is one more HTTP/2 client without Authorization, in a process of its own and on its own connection, that GETs (and checks) the manifest alone, one GET at a time and at most every %s, from the start to the last pull's end: what a newcomer waits while the appliance is loaded, without waiting behind the pullers in their process. %d of its GETs failed.\n", o.probeEvery, l.ProbeFailed)
	for _, e := range l.ProbeErrors {
		w("- `%s`\n", e)
	}
	w("\nTimeline (MB/s of blobs verified, pulls completed, and the latency of the manifest GETs sent, in each slot):\n\n| s | import | MB/s | pulls completed | manifest GETs | p50 ms | p90 | p99 | max |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, t := range l.Timeline {
		w("| %.0f–%.0f | %s | %.0f | %d | %d |%s\n", t.FromS, t.ToS, map[bool]string{true: "running", false: ""}[t.Importing], t.MBps, t.Pulls, t.Manifest.N, t.Manifest.Cells())
	}
	if l.Failed > 0 {
		w("\n### Failures\n\n| kind | pulls |\n|---|---:|\n")
		keys := make([]string, 0, len(l.Failures))
		for k := range l.Failures {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			w("| %s | %d |\n", k, l.Failures[k])
		}
		w("\nThe first %d:\n\n", len(l.FirstErrors))
		for _, e := range l.FirstErrors {
			w("- `%s`\n", e)
		}
	}

	w("\n### The import\n\n| import | s | MB/s | ÷ alone | CLI CPU s | appliance CPU s | appliance peak VmRSS / VmHWM MiB | checked |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	if al := rep.Alone; al != nil {
		w("| alone (fresh appliance, nothing else running; other processes %.2f cores) | %.2f | %.0f | 1.00 | %.1f | %.1f | %.0f / %.0f | %s |\n", al.OtherCores, al.Seconds, al.MBps, al.CLICPU, al.ApplianceCPU, al.PeakRSS, al.HWM, al.Checked)
	}
	ld := rep.Loaded
	ratio := "–"
	if rep.Alone != nil {
		ratio = fmt.Sprintf("%.2f", ld.MBps/rep.Alone.MBps)
	}
	w("| under load (started %.1f s into the pulls) | %.2f | %.0f | %s | %.1f | (in the load's) | (in the load's) | %s |\n", ld.StartS, ld.Seconds, ld.MBps, ratio, ld.CLICPU, ld.Checked)
	w("\nMB/s = the tar's %d bytes over the command's wall time (`appliance import` streams the file over HTTPS, HTTP/2; the appliance verifies every digest and fsyncs before the tags appear).\n", rep.SetTarBytes)

	w("\n### Resources during the load (%.1f s: pulls and import)\n\n", l.ElapsedS)
	cores := func(v float64) string { return fmt.Sprintf("%.1f s (%.2f cores)", v, v/l.ElapsedS) }
	w("| process | CPU | peak memory |\n|---|---:|---:|\n")
	w("| appliance serve | %s | **%.0f MiB** VmHWM (reset when the load began), %.0f MiB peak VmRSS sampled every 50 ms; %.0f MiB VmRSS before |\n", cores(l.ApplianceCPU), l.HWM, l.PeakRSS, l.RSS0)
	w("| this benchmark (the %d pullers: TLS, sha256 of every byte) | %s | %.0f MiB VmHWM (an HTTP/2 client buffers up to its 4 MiB stream window per pull in memory) |\n", l.Pullers, cores(l.SelfCPU), l.SelfHWM)
	w("| appliance import (the CLI) | %s | – |\n", cores(l.CLICPU))
	w("| the lone client (its own process) | %s | – |\n", cores(l.ProberCPU))
	w("| everything else | %s | – |\n", cores(l.OtherCPU))
	if other := l.OtherCPU / l.ElapsedS; other > o.maxOther {
		w("\n**Other processes used %.2f cores during this load (above %.1f; %d attempts): the figures are disturbed.**\n", other, o.maxOther, rep.Attempts)
	} else if rep.Attempts > 1 {
		w("\n(The load ran %d times: other processes used more than %.1f cores during the earlier ones.)\n", rep.Attempts, o.maxOther)
	}
	w("\nOf the machine's time, %.1f s went to softirqs (loopback TCP's receive path, charged to whichever process it interrupted), %.1f s to interrupts, %.1f s to steal (the VM's host). The busiest other processes:", l.Kernel.SoftIRQ, l.Kernel.IRQ, l.Kernel.Steal)
	for _, p := range l.TopOthers {
		w(" %s %.1f s;", p.Name, p.CPU)
	}
	w("\n")
	w("\nThe machine has %s CPUs: the pullers and the appliance compete for them, so the figures are what two cores give to both; MB/s is bounded by CPU (TLS on both sides, sha256 in the pullers and the import), not by the disk (the pulled image stays in the page cache).\n", rep.Machine["nproc"])
	w("\nAppliance log (`--log-level warn`), whole run of this appliance: %d lines at WARN or ERROR.\n", l.LogLines)
	if len(l.LogMessages) > 0 {
		w("\n| level and message | lines |\n|---|---:|\n")
		keys := make([]string, 0, len(l.LogMessages))
		for k := range l.LogMessages {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return l.LogMessages[keys[i]] > l.LogMessages[keys[j]] })
		for _, k := range keys {
			w("| %s | %d |\n", k, l.LogMessages[k])
		}
		w("\nThe first line of each:\n\n")
		for _, line := range l.LogSample {
			w("    %s\n", line)
		}
	}
	w("\nNotes:\n\n")
	w("- Pullers: Go `net/http` clients trusting the appliance's CA, each its own `http.Transport` limited to one protocol (HTTP/2 or HTTP/1.1 by `Transport.Protocols`; the protocol of every answer is checked), kept between its pulls. *token*: `GET /v2/` (401 Bearer challenge), `GET /service/token?service=…&scope=repository:%s:pull` without credentials, then every request with the token, again for every pull (as a new `crane pull` or a containerd pull does); *no Authorization*: every request anonymous (a challenge would be answered with a token and counted above).\n", pullRepo)
	w("- Verification: the manifest's sha256 and its `Docker-Content-Digest` against the digest pushed, its Content-Type; every blob's sha256 and length against the manifest's descriptor. A pull fails at its first error; its error is kept (kind, step, HTTP status, seconds into the pull).\n")
	w("- The import alone runs in its own fresh appliance (after the same push of the pulled image), so that it does not find its blobs already there; the load's appliance is another fresh one.\n")
	w("- Reproduce: `bench/load.sh%s` (options: `go run ./bench/load -h`).\n", map[bool]string{true: " -quick", false: ""}[o.quick])
	return s.String()
}
