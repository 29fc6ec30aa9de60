// Command bundle is the `bundle create` benchmark of issue 4. It is a
// benchmark, not a timed test: it prints figures and which goals are met,
// and asserts nothing.
//
// In a temporary folder it starts Debian's docker-registry (distribution
// 2.8) in plain HTTP on a free loopback port as the upstream, and pushes to
// it, with go-containerregistry, -images images of -layers random,
// incompressible layers (gzip streams of stored blocks around a tar of
// random bytes), about -size in all, and a second set of the same shape at
// -small (default a quarter of -size). Then, per round and per set:
//
//   - `appliance bundle create -f SPEC -o OUT --cache FRESH --insecure-registry
//     HOST --parallel P --key KEY`, with a new, empty cache each time, so
//     every blob is downloaded; its VmRSS/VmHWM sampled from /proc every
//     50 ms, its CPU time, and when it went from resolving the images to
//     downloading to writing the archive (from its stderr);
//   - `skopeo copy --src-tls-verify=false docker://HOST/bench/imgN:1.0
//     oci-archive:DIR/imgN.tar:imgN` for each image in turn, as a user would
//     script it (the baseline of the goal); the same into one OCI layout
//     folder (oci:DIR:imgN); and the archives with all images at once;
//   - for context, GETs of every blob from this process (sha256, nothing
//     written), over one connection and over P: what the upstream and the
//     loopback can deliver;
//   - a what-if (prototype.go): a pipelined bundler in this process that
//     hashes once and writes the archive while it downloads.
//
// After each timed run it calls sync() and reports how long that took: a
// tool that leaves its output in the page cache finishes sooner than one
// that fsyncs, and the sync time shows the difference.
//
// All traffic is to 127.0.0.1. Every loop is bounded; the whole run by
// -timeout. bench/bundle.sh builds the appliance and runs this:
//
//	go build -o /tmp/appliance ./cmd/appliance
//	go run ./bench/bundle -appliance /tmp/appliance -size 2GiB -rounds 3
//	go run ./bench/bundle -appliance /tmp/appliance -size 256MiB -rounds 1    # smoke run
//
// With -cpuprofile FILE it also runs the bundler once more in this process
// (internal/bundler, the code behind `bundle create`) on the -size set,
// under pprof.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/bundler"
)

// Goals of issue 4.
const (
	goalVsSkopeo  = 1.5  // × skopeo copy → oci-archive, same images, same run
	goalRSSGrowth = 1.25 // peak RSS at -size ÷ peak RSS at -small: "independent of the size"
)

// Phases.
const (
	phAppliance      = "appliance"
	phSkopeoArchive  = "skopeo-archive"
	phSkopeoDir      = "skopeo-dir"
	phSkopeoParallel = "skopeo-parallel"
	phGet            = "get"
	phInProcess      = "in-process"
)

type options struct {
	appliance      string
	skopeo         string
	dockerRegistry string
	size, small    string
	sizeMiB        int
	smallMiB       int
	images, layers int
	parallel       int
	rounds         int
	phases         string
	sign           bool
	warmup         bool
	work           string
	keep           bool
	seed           uint64
	cpuProfile     string
	maxOther       float64
	quietWait      time.Duration
	out, jsonOut   string
	timeout        time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.appliance, "appliance", "", "appliance binary (go build -o … ./cmd/appliance); required")
	flag.StringVar(&o.skopeo, "skopeo", "/usr/bin/skopeo", "skopeo binary")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary, the upstream")
	flag.StringVar(&o.size, "size", "2GiB", "bytes of layers in the main set (2GiB, 1G, 512MiB, …)")
	flag.StringVar(&o.small, "small", "", "bytes of layers in the second set, to see whether memory follows the size (default a quarter of -size; 0 for none)")
	flag.IntVar(&o.images, "images", 4, "images per set")
	flag.IntVar(&o.layers, "layers", 4, "layers per image")
	flag.IntVar(&o.parallel, "parallel", 8, "`appliance bundle create --parallel`, and the connections of the parallel GET")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of every measurement (the order alternates); the report gives medians")
	flag.StringVar(&o.phases, "phases", "appliance,skopeo-archive,skopeo-dir,skopeo-parallel,get", "what to time, comma-separated: appliance, skopeo-archive (the goal's baseline), skopeo-dir, skopeo-parallel, get, prototype (a what-if, see prototype.go), prototype-serial, prototype-rehash (its two variants)")
	flag.BoolVar(&o.sign, "sign", true, "sign the bundles (a key from `appliance key generate`), as a real run would")
	flag.BoolVar(&o.warmup, "warmup", true, "one unreported `bundle create` and skopeo run on the main set first (the first writes into memory the VM has not touched yet are slow)")
	flag.StringVar(&o.work, "work", "", "folder for the upstream's storage and every output (default: a new folder under $TMPDIR); it is the disk under test")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the random layer bytes")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "also run internal/bundler in this process on the main set, once, with a CPU profile written to this file")
	flag.Float64Var(&o.maxOther, "max-other", 0.3, "run a phase again (at most twice) when other processes used more than this many cores during it")
	flag.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "longest wait, before each phase, for the machine to be quiet")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	flag.StringVar(&o.jsonOut, "json", "", "also write the figures as JSON to this file")
	flag.DurationVar(&o.timeout, "timeout", 90*time.Minute, "give up after this long")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	err := run(ctx, o)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/bundle:", err)
		os.Exit(1)
	}
}

// result is one timed run.
type result struct {
	Phase        string             `json:"phase"`
	Name         string             `json:"name"`
	Set          string             `json:"set"`
	Round        int                `json:"round"`
	Bytes        int64              `json:"bytes"` // blobs moved
	Seconds      float64            `json:"seconds"`
	MBps         float64            `json:"mb_per_s"`
	SyncSeconds  float64            `json:"sync_after_seconds"`
	ClientRSSMiB float64            `json:"client_peak_vmrss_mib,omitempty"`
	ClientHWMMiB float64            `json:"client_vmhwm_mib,omitempty"`
	ClientCPU    float64            `json:"client_cpu_s"`
	ClientSys    float64            `json:"client_sys_s,omitempty"` // of ClientCPU, in the kernel
	UpstreamCPU  float64            `json:"upstream_cpu_s"`
	OtherCores   float64            `json:"other_cores"`
	IOWaitCores  float64            `json:"iowait_cores"`
	Steps        map[string]float64 `json:"steps,omitempty"` // seconds per step of bundle create
	StepOrder    []string           `json:"step_order,omitempty"`
	Note         string             `json:"note,omitempty"`
}

type report struct {
	Date     string            `json:"date"`
	Machine  map[string]string `json:"machine"`
	Options  map[string]any    `json:"options"`
	Sets     []setSummary      `json:"sets"`
	Results  []*result         `json:"results"`
	Summary  []summary         `json:"summary"`
	Goals    []goal            `json:"goals"`
	Prepared float64           `json:"prepare_seconds"`
}

type setSummary struct {
	Label      string `json:"label"`
	Images     int    `json:"images"`
	Blobs      int    `json:"blobs"`
	LayerBytes int64  `json:"layer_bytes"`
	Payload    int64  `json:"payload_bytes"`
}

type goal struct {
	What     string  `json:"what"`
	Measured float64 `json:"measured"`
	Target   string  `json:"target"`
	Met      bool    `json:"met"`
}

// bench is what every phase shares.
type bench struct {
	o         options
	work      string
	up        *upstream
	key, pub  string   // signing key pair, when -sign
	clientEnv []string // for the appliance and skopeo: no proxies, no credentials
	verified  map[string]bool
}

func run(ctx context.Context, o options) error {
	phases, err := benchkit.SplitList(o.phases, phAppliance, phSkopeoArchive, phSkopeoDir, phSkopeoParallel, phGet, phPrototype, phPrototypeSerial, phPrototypeRehash)
	if err == nil && len(phases) == 0 {
		err = errors.New("nothing to time")
	}
	if err != nil {
		return fmt.Errorf("-phases: %w", err)
	}
	if o.appliance == "" {
		return errors.New("-appliance is required (go build -o /tmp/appliance ./cmd/appliance)")
	}
	if o.appliance, err = filepath.Abs(o.appliance); err != nil {
		return err
	}
	for _, b := range []string{o.appliance, o.skopeo, o.dockerRegistry} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s: %w (install Debian's skopeo and docker-registry)", b, err)
		}
	}
	size, err := bundle.ParseSize(o.size)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	o.sizeMiB = int(size >> 20)
	switch o.small {
	case "":
		o.smallMiB = o.sizeMiB / 4
	case "0", "none":
	default:
		s, err := bundle.ParseSize(o.small)
		if err != nil {
			return fmt.Errorf("-small: %w", err)
		}
		o.smallMiB = int(s >> 20)
	}
	if o.rounds < 1 || o.rounds > 50 || o.images < 1 || o.layers < 1 || o.parallel < 1 {
		return errors.New("need 1 ≤ -rounds ≤ 50, -images ≥ 1, -layers ≥ 1, -parallel ≥ 1")
	}
	work, cleanup, err := benchkit.WorkDir(o.work, "bundle-bench.", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	benchkit.Logf("work folder %s", work)
	b := &bench{o: o, work: work, verified: map[string]bool{}}
	dockerConfig := filepath.Join(work, "docker-config") // empty: anonymous pulls, whatever ~/.docker holds
	if err := os.MkdirAll(dockerConfig, 0o750); err != nil {
		return err
	}
	b.clientEnv = append(benchkit.CleanEnv("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "TMPDIR"), "DOCKER_CONFIG="+dockerConfig)

	rep := &report{Date: time.Now().UTC().Format(time.RFC3339), Machine: benchkit.Machine(ctx, work, o.appliance, map[string][]string{"skopeo": {o.skopeo, "--version"}, "docker-registry": {o.dockerRegistry, "--version"}}),
		Options: map[string]any{"size_mib": o.sizeMiB, "small_mib": o.smallMiB, "images": o.images, "layers_per_image": o.layers,
			"parallel": o.parallel, "rounds": o.rounds, "phases": phases, "sign": o.sign, "seed": o.seed}}
	t0 := time.Now()
	if b.up, err = startUpstream(ctx, o, filepath.Join(work, "upstream")); err != nil {
		return err
	}
	defer b.up.proc.Stop()
	benchkit.Logf("upstream docker-registry on %s", b.up.host)
	if o.sign {
		b.key, b.pub = filepath.Join(work, "bench.key"), filepath.Join(work, "bench.pub")
		if out, err := exec.CommandContext(ctx, o.appliance, "key", "generate", "--private", b.key, "--public", b.pub).CombinedOutput(); err != nil {
			return fmt.Errorf("appliance key generate: %w\n%s", err, out)
		}
	}
	big, err := makeDataset(ctx, o, b.up, work, fmt.Sprintf("%d MiB", o.sizeMiB), "", o.sizeMiB)
	if err != nil {
		return fmt.Errorf("data set: %w", err)
	}
	sets := []*dataset{big}
	if o.smallMiB > 0 {
		small, err := makeDataset(ctx, o, b.up, work, fmt.Sprintf("%d MiB", o.smallMiB), "small/", o.smallMiB)
		if err != nil {
			return fmt.Errorf("data set: %w", err)
		}
		sets = append(sets, small)
	}
	for _, ds := range sets {
		rep.Sets = append(rep.Sets, setSummary{Label: ds.label, Images: len(ds.images), Blobs: len(ds.blobs), LayerBytes: ds.layerBytes, Payload: ds.payload})
		// Untimed: warms the page cache and the upstream, and checks every blob.
		if _, err := b.getPhase(ctx, ds, o.parallel); err != nil {
			return fmt.Errorf("warm-up GET: %w", err)
		}
	}
	syncDisk()
	rep.Prepared = time.Since(t0).Seconds()
	benchkit.Logf("prepared in %.0f s", rep.Prepared)

	if o.warmup {
		ws := sets[0]
		for _, ph := range []string{phAppliance, phSkopeoArchive} {
			r, err := b.phase(ctx, ph, ws, 0)
			if err != nil {
				return fmt.Errorf("warm-up %s: %w", ph, err)
			}
			benchkit.Logf("warm-up %s (%s, not reported): %.2f s, %.0f MB/s", r.Name, ws.label, r.Seconds, r.MBps)
		}
	}

	// measure runs a phase again (at most twice more) when something else
	// used the CPUs while it ran.
	measure := func(ph string, ds *dataset, round int) error {
		for attempt := 1; ; attempt++ {
			r, err := b.phase(ctx, ph, ds, round)
			if err != nil {
				return fmt.Errorf("%s (%s): %w", ph, ds.label, err)
			}
			if r.OtherCores <= o.maxOther || attempt == 3 {
				if r.OtherCores > o.maxOther {
					r.Note = strings.TrimPrefix(r.Note+"; ", "; ") + fmt.Sprintf("other processes used %.2f cores during this run", r.OtherCores)
				}
				benchkit.Logf("%s (%s): %.2f s, %.0f MB/s, sync after %.2f s, client CPU %.1f s, peak %s MiB", r.Name, ds.label, r.Seconds, r.MBps, r.SyncSeconds, r.ClientCPU, benchkit.Dash(max(r.ClientHWMMiB, r.ClientRSSMiB)))
				rep.Results = append(rep.Results, r)
				return nil
			}
			benchkit.Logf("%s (%s): %.0f MB/s, but other processes used %.2f cores meanwhile: again", r.Name, ds.label, r.MBps, r.OtherCores)
		}
	}
	var todo []string
	for _, ph := range phases {
		if ph == phGet {
			todo = append(todo, phGet+"-1", phGet+"-n")
		} else {
			todo = append(todo, ph)
		}
	}
	for round := 1; round <= o.rounds; round++ {
		benchkit.Logf("round %d of %d", round, o.rounds)
		order, setOrder := slices.Clone(todo), slices.Clone(sets)
		if round%2 == 0 { // alternate, so that neither contender always goes first
			slices.Reverse(order)
			slices.Reverse(setOrder)
		}
		for _, ds := range setOrder {
			for _, ph := range order {
				if err := measure(ph, ds, round); err != nil {
					return err
				}
			}
		}
	}
	if o.cpuProfile != "" {
		r, err := b.inProcessPhase(ctx, big)
		if err != nil {
			return fmt.Errorf("in-process: %w", err)
		}
		benchkit.Logf("%s: %.2f s, %.0f MB/s; profile in %s", r.Name, r.Seconds, r.MBps, o.cpuProfile)
		rep.Results = append(rep.Results, r)
	}
	rep.Summary = summarize(rep.Results)
	rep.Goals = goals(rep, sets)
	return benchkit.WriteReport(render(rep, o, sets), rep, o.out, o.jsonOut)
}

var phaseNames = map[string]string{
	phAppliance:       "appliance bundle create",
	phSkopeoArchive:   "skopeo copy → oci-archive, one image at a time",
	phSkopeoDir:       "skopeo copy → one OCI layout folder, one image at a time",
	phSkopeoParallel:  "skopeo copy → oci-archive, all images at once",
	phGet + "-1":      "GET every blob, 1 connection (sha256, no write)",
	phGet + "-n":      "GET every blob, P connections (sha256, no write)",
	phInProcess:       "internal/bundler in this process, under pprof",
	phPrototype:       "what-if: pipelined prototype (one sha256, archive written as blobs land, copy_file_range)",
	phPrototypeSerial: "what-if: the prototype, archive written after all downloads",
	phPrototypeRehash: "what-if: the prototype, archive copied through user space and hashed again",
}

// phase runs one timed phase in a fresh folder, then syncs and times the
// sync, and removes what it wrote.
func (b *bench) phase(ctx context.Context, ph string, ds *dataset, round int) (*result, error) {
	var (
		r   *result
		err error
	)
	switch ph {
	case phAppliance:
		r, err = b.appliancePhase(ctx, ds)
	case phSkopeoArchive, phSkopeoDir, phSkopeoParallel:
		r, err = b.skopeoPhase(ctx, ds, ph)
	case phGet + "-1":
		r, err = b.getPhase(ctx, ds, 1)
	case phGet + "-n":
		r, err = b.getPhase(ctx, ds, b.o.parallel)
	case phPrototype, phPrototypeSerial, phPrototypeRehash:
		r, err = b.prototypePhase(ctx, ds, ph)
	default:
		return nil, fmt.Errorf("unknown phase %q", ph)
	}
	if r != nil {
		r.Round = round
	}
	return r, err
}

func newResult(ph string, ds *dataset) *result {
	return &result{Phase: ph, Name: phaseNames[ph], Set: ds.label, Bytes: ds.payload}
}

// runDir is a new, empty folder for one run's output.
func (b *bench) runDir(name string) (string, error) {
	dir := filepath.Join(b.work, "run-"+name)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o750)
}

// selfMeter measures a phase that runs in this program: this program's CPU
// (the client's), the upstream's, and the machine's other work and iowait.
type selfMeter struct {
	up         *benchkit.Process
	w          benchkit.IOWindow
	self0, up0 float64
}

// meterSelf starts a selfMeter.
func (b *bench) meterSelf() selfMeter {
	m := selfMeter{up: b.up.proc, w: benchkit.BeginIOWindow()}
	m.self0 = benchkit.CPUSeconds(os.Getpid())
	m.up0 = benchkit.CPUSeconds(m.up.PID())
	return m
}

// stop fills r's client and upstream CPU, other cores and iowait.
func (m selfMeter) stop(r *result) {
	r.ClientCPU = benchkit.CPUSeconds(os.Getpid()) - m.self0
	r.UpstreamCPU = benchkit.CPUSeconds(m.up.PID()) - m.up0
	r.OtherCores, r.IOWaitCores = m.w.End(r.ClientCPU + r.UpstreamCPU)
}

// finish fills the rates and the sync time of a timed run.
func finish(r *result) {
	r.MBps = float64(r.Bytes) / r.Seconds / 1e6
	r.SyncSeconds = syncDisk()
}

// ---------------------------------------------------------------- appliance

type stampedLine struct {
	t    time.Time
	text string
}

func (b *bench) appliancePhase(ctx context.Context, ds *dataset) (*result, error) {
	r := newResult(phAppliance, ds)
	dir, err := b.runDir("appliance")
	if err != nil {
		return r, err
	}
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	out := filepath.Join(dir, "bundle.tar")
	args := []string{"bundle", "create", "-f", ds.spec, "-o", out, "--cache", filepath.Join(dir, "cache"),
		"--insecure-registry", b.up.host, "--parallel", strconv.Itoa(b.o.parallel)}
	if b.key != "" {
		args = append(args, "--key", b.key)
	}
	cmd := exec.CommandContext(ctx, b.o.appliance, args...)
	cmd.Env = b.clientEnv
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return r, err
	}
	syncDisk()
	benchkit.WaitQuiet(ctx, b.o.quietWait)
	w := benchkit.BeginIOWindow()
	up0 := benchkit.CPUSeconds(b.up.proc.PID())
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	s := benchkit.NewSampler(cmd.Process.Pid)
	var lines []stampedLine
	sc := bufio.NewScanner(stderr)
	for sc.Scan() { // ends when the process closes stderr, at exit
		lines = append(lines, stampedLine{time.Now(), sc.Text()})
	}
	err = cmd.Wait()
	end := time.Now()
	r.Seconds = end.Sub(start).Seconds()
	r.ClientRSSMiB, r.ClientHWMMiB = s.Stop()
	r.UpstreamCPU = benchkit.CPUSeconds(b.up.proc.PID()) - up0
	r.ClientCPU, r.ClientSys = cpuOf(cmd.ProcessState), sysOf(cmd.ProcessState)
	r.OtherCores, r.IOWaitCores = w.End(r.ClientCPU + r.UpstreamCPU)
	if err != nil {
		var log strings.Builder
		for _, l := range lines {
			log.WriteString(l.text + "\n")
		}
		return r, fmt.Errorf("appliance %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), log.String())
	}
	finish(r)
	r.Steps, r.StepOrder = steps(start, end, lines)
	st, err := os.Stat(out)
	if err != nil {
		return r, err
	}
	if st.Size() < ds.payload {
		return r, fmt.Errorf("bundle %s: %d bytes, less than the %d bytes of blobs", out, st.Size(), ds.payload)
	}
	r.Note = strings.ReplaceAll(strings.TrimSpace(stdout.String()), dir+string(filepath.Separator), "")
	if !b.verified[ds.label] { // once per set: read it back and check every blob
		vargs := []string{"bundle", "verify", "--json", out}
		if b.pub != "" {
			vargs = append(vargs, "--key", b.pub)
		} else {
			vargs = append(vargs, "--allow-unsigned")
		}
		vout, err := exec.CommandContext(ctx, b.o.appliance, vargs...).Output()
		if err != nil {
			return r, fmt.Errorf("appliance bundle verify: %w", err)
		}
		var sum struct {
			Blobs int   `json:"blobs"`
			Bytes int64 `json:"bytes"`
		}
		if err := json.Unmarshal(vout, &sum); err != nil {
			return r, fmt.Errorf("appliance bundle verify: %w", err)
		}
		if sum.Blobs != len(ds.blobs) || sum.Bytes != ds.payload {
			return r, fmt.Errorf("appliance bundle verify: %d blobs of %d bytes, want %d of %d", sum.Blobs, sum.Bytes, len(ds.blobs), ds.payload)
		}
		b.verified[ds.label] = true
		r.Note += fmt.Sprintf("; verified: %d blobs, %d bytes, signature", sum.Blobs, sum.Bytes)
	}
	return r, nil
}

// steps splits a bundle create run by its stderr: "resolve" until the
// bundler logs "downloading", then one step per progress phase ("download",
// "write", or "download and write" where the two overlap), each ending at
// its last progress line (printed when the next phase starts, or when the
// archive is written, synced and renamed), then "exit".
func steps(start, end time.Time, lines []stampedLine) (map[string]float64, []string) {
	var (
		tDown time.Time
		names []string
		last  = map[string]time.Time{}
	)
	for _, l := range lines {
		if strings.Contains(l.text, "msg=downloading") {
			tDown = l.t
			continue
		}
		if m := progressLine.FindStringSubmatch(l.text); m != nil {
			if _, seen := last[m[1]]; !seen {
				names = append(names, m[1])
			}
			last[m[1]] = l.t
		}
	}
	if tDown.IsZero() || len(names) == 0 {
		return nil, nil
	}
	out := map[string]float64{"resolve": tDown.Sub(start).Seconds()}
	prev := tDown
	for _, n := range names {
		out[n] = last[n].Sub(prev).Seconds()
		prev = last[n]
	}
	out["exit"] = end.Sub(prev).Seconds()
	return out, append(append([]string{"resolve"}, names...), "exit")
}

// progressLine is a line of the CLI's progress when stderr is not a
// terminal: "download: 1.2 GiB of 2.0 GiB (60%), 300.1 MiB/s, ETA 2s".
var progressLine = regexp.MustCompile(`^([a-z][a-z ]*): .* of .* \(\d+%\)`)

func cpuOf(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

func sysOf(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return ps.SystemTime().Seconds()
}

// ---------------------------------------------------------------- skopeo

func (b *bench) skopeoPhase(ctx context.Context, ds *dataset, ph string) (*result, error) {
	r := newResult(ph, ds)
	dir, err := b.runDir(ph)
	if err != nil {
		return r, err
	}
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	tmp := filepath.Join(dir, "tmp") // oci-archive: is assembled in a folder here first
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return r, err
	}
	env := append(slices.Clone(b.clientEnv), "TMPDIR="+tmp)
	cmds := make([]*exec.Cmd, len(ds.images))
	outs := make([]bytes.Buffer, len(ds.images))
	for i, im := range ds.images {
		dest := "oci-archive:" + filepath.Join(dir, im.name+".tar") + ":" + im.name
		if ph == phSkopeoDir {
			dest = "oci:" + filepath.Join(dir, "layout") + ":" + im.name
		}
		cmds[i] = exec.CommandContext(ctx, b.o.skopeo, "copy", "--src-tls-verify=false", "--quiet", "docker://"+im.ref, dest)
		cmds[i].Env = env
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
	}
	syncDisk()
	benchkit.WaitQuiet(ctx, b.o.quietWait)
	w := benchkit.BeginIOWindow()
	up0 := benchkit.CPUSeconds(b.up.proc.PID())
	var (
		mu            sync.Mutex
		cpu, sys, rss float64
		hwm           float64
	)
	runOne := func(cmd *exec.Cmd, out *bytes.Buffer) error {
		if err := cmd.Start(); err != nil {
			return err
		}
		s := benchkit.NewSampler(cmd.Process.Pid)
		err := cmd.Wait()
		pr, ph := s.Stop()
		mu.Lock()
		defer mu.Unlock()
		cpu, sys = cpu+cpuOf(cmd.ProcessState), sys+sysOf(cmd.ProcessState)
		if b.o.images > 1 && r.Phase == phSkopeoParallel { // at once: the peaks add up
			rss, hwm = rss+pr, hwm+ph
		} else {
			rss, hwm = max(rss, pr), max(hwm, ph)
		}
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out.String())
		}
		return nil
	}
	start := time.Now()
	if ph == phSkopeoParallel {
		errs := make([]error, len(cmds))
		var wg sync.WaitGroup
		for i := range cmds {
			wg.Go(func() { errs[i] = runOne(cmds[i], &outs[i]) })
		}
		wg.Wait()
		err = errors.Join(errs...)
	} else {
		for i := range cmds {
			if err = runOne(cmds[i], &outs[i]); err != nil {
				break
			}
		}
	}
	r.Seconds = time.Since(start).Seconds()
	r.UpstreamCPU = benchkit.CPUSeconds(b.up.proc.PID()) - up0
	r.ClientCPU, r.ClientSys, r.ClientRSSMiB, r.ClientHWMMiB = cpu, sys, rss, hwm
	r.OtherCores, r.IOWaitCores = w.End(r.ClientCPU + r.UpstreamCPU)
	if err != nil {
		return r, err
	}
	finish(r)
	// Check: the output holds at least the blobs' bytes (and, for the
	// archives, one per image).
	var total int64
	var files int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasPrefix(p, tmp+string(filepath.Separator)) {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
				files++
			}
		}
		return nil
	})
	if total < ds.payload {
		return r, fmt.Errorf("skopeo wrote %d bytes in %d files, less than the %d bytes of blobs", total, files, ds.payload)
	}
	r.Note = fmt.Sprintf("%d skopeo runs; wrote %d files, %d bytes", len(cmds), files, total)
	if ph == phSkopeoParallel {
		r.Note += "; client memory is the sum of the runs' peaks"
	}
	return r, nil
}

// ---------------------------------------------------------------- GET

// getPhase GETs every blob (and manifest) of the set from the upstream,
// largest first, over conns connections, hashing each and writing nothing:
// what the upstream and loopback deliver to one Go client.
func (b *bench) getPhase(ctx context.Context, ds *dataset, conns int) (*result, error) {
	ph := phGet + "-n"
	if conns == 1 {
		ph = phGet + "-1"
	}
	r := newResult(ph, ds)
	if conns > 1 {
		r.Name = strings.Replace(r.Name, "P connections", strconv.Itoa(conns)+" connections", 1)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Minute}
	blobs := slices.Clone(ds.blobs)
	sort.SliceStable(blobs, func(i, j int) bool { return blobs[i].size > blobs[j].size })
	jobs := make(chan blobRef)
	errs := make([]error, conns)
	benchkit.WaitQuiet(ctx, b.o.quietWait)
	m := b.meterSelf()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for bl := range jobs {
				if errs[i] == nil {
					errs[i] = b.get(ctx, hc, bl, buf)
				}
			}
		})
	}
	for _, bl := range blobs {
		jobs <- bl
	}
	close(jobs)
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	m.stop(r)
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	finish(r)
	r.Note = "client = this program"
	return r, nil
}

func (b *bench) get(ctx context.Context, hc *http.Client, bl blobRef, buf []byte) error {
	kind, accept := "blobs", ""
	if bl.manifest {
		kind, accept = "manifests", "application/vnd.oci.image.manifest.v1+json"
	}
	u := "http://" + b.up.host + "/v2/" + bl.repo + "/" + kind + "/" + bl.digest
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, buf)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != bl.digest || n != bl.size {
		return fmt.Errorf("GET %s: %d bytes hashing to %s", u, n, got)
	}
	return nil
}

// ---------------------------------------------------------------- in-process

// stepClock implements bundler.Progress and notes when each phase starts.
type stepClock struct {
	mu    sync.Mutex
	marks []stampedLine
}

func (c *stepClock) Phase(name string, _ int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.marks = append(c.marks, stampedLine{time.Now(), name})
}

func (c *stepClock) Add(int64) {}

// inProcessPhase runs internal/bundler (what `bundle create` runs) in this
// process, under pprof, on a fresh cache.
func (b *bench) inProcessPhase(ctx context.Context, ds *dataset) (*result, error) {
	r := newResult(phInProcess, ds)
	dir, err := b.runDir("in-process")
	if err != nil {
		return r, err
	}
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	f, err := os.Open(ds.spec)
	if err != nil {
		return r, err
	}
	spec, err := bundle.ParseSpec(f)
	_ = f.Close()
	if err != nil {
		return r, err
	}
	bo := bundler.Options{Spec: spec, SpecDir: filepath.Dir(ds.spec), Out: filepath.Join(dir, "bundle.tar"), CacheDir: filepath.Join(dir, "cache"),
		Insecure: []string{b.up.host}, Parallel: b.o.parallel, Tool: "bench/bundle"}
	if b.key != "" {
		if bo.Signer, err = bundle.LoadSigner(b.key); err != nil {
			return r, err
		}
	}
	clock := &stepClock{}
	bo.Progress = clock
	pf, err := os.Create(b.o.cpuProfile)
	if err != nil {
		return r, err
	}
	defer pf.Close()
	syncDisk()
	benchkit.WaitQuiet(ctx, b.o.quietWait)
	m := b.meterSelf()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return r, err
	}
	start := time.Now()
	res, err := bundler.Create(ctx, bo)
	end := time.Now()
	pprof.StopCPUProfile()
	r.Seconds = end.Sub(start).Seconds()
	m.stop(r)
	if err != nil {
		return r, err
	}
	finish(r)
	if res.Bytes != ds.payload {
		return r, fmt.Errorf("bundler carried %d bytes, want %d", res.Bytes, ds.payload)
	}
	r.Steps, r.StepOrder = map[string]float64{}, []string{"resolve"}
	prev, prevName := start, "resolve"
	for _, m := range clock.marks {
		r.Steps[prevName] = m.t.Sub(prev).Seconds()
		prev, prevName = m.t, m.text
		r.StepOrder = append(r.StepOrder, m.text)
	}
	r.Steps[prevName] = end.Sub(prev).Seconds()
	r.Note = "client = this program; CPU profile in " + b.o.cpuProfile
	return r, nil
}

var slugRE = regexp.MustCompile(`[^a-z0-9]+`)

func slug(s string) string {
	return strings.Trim(slugRE.ReplaceAllString(strings.ToLower(s), "-"), "-")
}
