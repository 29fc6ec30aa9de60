// Command promote is the promotion benchmark of issue 10. It is a
// benchmark, not a timed test: it prints figures and which goals are met.
//
// It generates the import benchmark's image set (benchkit.WriteImageSet:
// 8 images × 4 random layers of 64 MiB), imports it into a fresh appliance
// (`appliance import --on-server` of the imgpkg tar), and then, round by
// round, with the order reversed every other round:
//
//   - subject: a fresh Debian docker-registry (distribution 2.8) serving
//     TLS with a test CA, and `appliance promote --target https://… --target-ca
//     CA --all` into it. The appliance reads the blobs from its own storage.
//   - anchor: another fresh TLS docker-registry, and `skopeo sync --all
//     --src docker --dest docker` of the same repository from the appliance
//     (HTTPS with the appliance's CA, anonymous pull) into it.
//
// MB/s is the set's blob bytes (layers and configs) over the wall time of
// the command. The appliance's peak resident memory is its VmHWM, reset
// (clear_refs) before each promotion, and its VmRSS sampled every 50 ms:
// the serving process is the one that moves the bytes. After every run the
// target is checked by HEAD of every tag (digest) and blob (size); the
// promotion's own parity report must say every tag is the same. Between
// phases the disk is synced and the benchmark waits (bounded) for a quiet
// machine. All traffic is to 127.0.0.1.
//
//	bench/promote.sh              # 2 GiB
//	bench/promote.sh -quick       # 128 MiB smoke run
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
)

// Goals of issue 10.
const (
	goalVsSkopeo = 1.5   // × skopeo sync's throughput
	goalRSSMiB   = 150.0 // peak resident memory of the appliance during promote
)

const (
	repoName = "bench/big"
	subject  = "appliance promote"
	anchor   = "skopeo sync"
)

type options struct {
	appliance, skopeo, dockerRegistry string
	sizeMiB, layerMiB, layersPerImage int
	quick, keep, warmup               bool
	work                              string
	seed                              uint64
	rounds, parallel                  int
	maxOther                          float64
	quietWait, timeout                time.Duration
	perf, out, jsonOut, revision      string
}

func main() {
	var o options
	flag.StringVar(&o.appliance, "appliance", "", "appliance binary (go build -o … ./cmd/appliance); required")
	flag.StringVar(&o.revision, "revision", "", "the commit the appliance binary was built from, for the report")
	flag.StringVar(&o.skopeo, "skopeo", "/usr/bin/skopeo", "skopeo binary")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary")
	flag.IntVar(&o.sizeMiB, "size-mib", 2048, "total layer bytes to generate, MiB")
	flag.IntVar(&o.layerMiB, "layer-mib", 64, "size of each layer, MiB")
	flag.IntVar(&o.layersPerImage, "layers", 4, "layers per image")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: 128 MiB in 16 MiB layers, 2 per image")
	flag.StringVar(&o.work, "work", "", "folder for the data and the registries (default: a new folder under $TMPDIR)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the random layer bytes")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds (subject and anchor interleaved); the report gives medians")
	flag.IntVar(&o.parallel, "parallel", 0, "appliance promote --parallel (0: the command's default)")
	flag.BoolVar(&o.warmup, "warmup", true, "one unreported run of each before the rounds")
	flag.Float64Var(&o.maxOther, "max-other", 0.3, "run a phase again (at most twice) when other processes used more than this many cores during it")
	flag.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "longest wait, before each phase, for the machine to be quiet")
	flag.StringVar(&o.perf, "perf", "", "record `perf record -a -g` during each promotion into this folder (with text summaries); perf's own CPU then counts as other")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	flag.StringVar(&o.jsonOut, "json", "", "also write the figures as JSON to this file")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Minute, "give up after this long")
	flag.Parse()
	if o.quick {
		o.sizeMiB, o.layerMiB, o.layersPerImage = 128, 16, 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	err := run(ctx, o)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/promote:", err)
		os.Exit(1)
	}
}

// result is one timed run.
type result struct {
	Name    string  `json:"name"`
	Round   int     `json:"round"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
	// RecordSeconds is the promotion record's Finished − Started: the
	// appliance's own time, without the CLI's polling.
	RecordSeconds float64            `json:"record_seconds,omitempty"`
	Phases        map[string]float64 `json:"phases_s,omitempty"`         // promotion phase → seconds, polled
	ApplianceRSS0 float64            `json:"appliance_vmrss_before_mib"` // when the run started
	ApplianceRSS  float64            `json:"appliance_peak_vmrss_mib"`
	ApplianceHWM  float64            `json:"appliance_vmhwm_mib"` // since the reset before the run
	ApplianceCPU  float64            `json:"appliance_cpu_s"`
	RegistryCPU   float64            `json:"docker_registry_cpu_s"`
	RegistryRSS   float64            `json:"docker_registry_peak_vmrss_mib"`
	ClientCPU     float64            `json:"client_cpu_s"`
	ClientRSS     float64            `json:"client_vmhwm_mib"`
	OtherCores    float64            `json:"other_cores"`
	IOWaitCores   float64            `json:"iowait_cores"`
	Checked       string             `json:"checked"`
}

type report struct {
	Date      string            `json:"date"`
	Machine   map[string]string `json:"machine"`
	Options   map[string]any    `json:"options"`
	Images    int               `json:"images"`
	Layers    int               `json:"layers"`
	BlobBytes int64             `json:"blob_bytes"`
	TarBytes  int64             `json:"imgpkg_tar_bytes"`
	ImportS   float64           `json:"import_seconds"`
	Results   []*result         `json:"results"`
	Goals     []goal            `json:"goals"`
}

type goal struct {
	What     string  `json:"what"`
	Measured float64 `json:"measured"`
	Target   float64 `json:"target"`
	Met      bool    `json:"met"`
}

// bench is what every phase needs.
type bench struct {
	o     options
	work  string
	set   *benchkit.ImageSet
	app   *benchkit.Appliance
	appCA string // the appliance's ca.crt
	api   *http.Client
}

func run(ctx context.Context, o options) error {
	if o.appliance == "" {
		return errors.New("-appliance is required (go build -o /tmp/appliance ./cmd/appliance)")
	}
	var err error
	if o.appliance, err = filepath.Abs(o.appliance); err != nil {
		return err
	}
	for _, b := range []string{o.appliance, o.skopeo, o.dockerRegistry} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s: %w (install Debian's skopeo and docker-registry)", b, err)
		}
	}
	if o.rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	work, cleanup, err := benchkit.WorkDir(o.work, "promote-bench.", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	benchkit.Logf("work folder %s", work)
	rep := &report{Date: time.Now().UTC().Format(time.RFC3339),
		Machine: benchkit.Machine(ctx, work, o.appliance, map[string][]string{"skopeo": {o.skopeo, "--version"}, "docker-registry": {o.dockerRegistry, "--version"}}),
		Options: map[string]any{"revision": o.revision, "size_mib": o.sizeMiB, "layer_mib": o.layerMiB, "layers_per_image": o.layersPerImage, "seed": o.seed, "rounds": o.rounds, "parallel": o.parallel, "warmup": o.warmup}}

	// The data set, in a fresh appliance.
	t0 := time.Now()
	set, err := benchkit.WriteImageSet(ctx, filepath.Join(work, "data"), benchkit.ImageSetOptions{SizeMiB: o.sizeMiB, LayerMiB: o.layerMiB,
		LayersPerImage: o.layersPerImage, Seed: o.seed, Repo: repoName})
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if o.revision != "" {
		rep.Machine["appliance source"] = o.revision
	}
	rep.Images, rep.Layers, rep.BlobBytes, rep.TarBytes = len(set.Images), set.LayerCount, set.BlobBytes(), set.TarSize
	benchkit.Logf("generated %d images, %d layers, %.1f MiB of blobs, in %.0f s", len(set.Images), set.LayerCount, benchkit.MiB(set.BlobBytes()), time.Since(t0).Seconds())
	b, err := startAppliance(ctx, o, work, set)
	if err != nil {
		return err
	}
	defer b.app.Proc.Stop()
	if rep.ImportS, err = b.load(ctx); err != nil {
		return err
	}
	// The layout's copy of the blobs is not needed any more; the
	// appliance's storage is what both contenders read.
	_ = os.RemoveAll(set.Layout)
	_ = os.Remove(set.ImgpkgTar)
	syscall.Sync()

	measure := func(phase func(round int) (*result, error), round int) error {
		for attempt := 1; ; attempt++ {
			r, err := phase(round)
			if err != nil {
				return err
			}
			if r.OtherCores <= o.maxOther || attempt == 3 || o.perf != "" {
				if round > 0 {
					rep.Results = append(rep.Results, r)
				}
				benchkit.Logf("%s: %.2f s, %.0f MB/s, appliance peak %.0f MiB (%s)", r.Name, r.Seconds, r.MBps, max(r.ApplianceHWM, r.ApplianceRSS), r.Checked)
				return nil
			}
			benchkit.Logf("%s: %.0f MB/s, but other processes used %.2f cores meanwhile: again", r.Name, r.MBps, r.OtherCores)
		}
	}
	phases := []func(int) (*result, error){
		func(round int) (*result, error) { return b.promote(ctx, round) },
		func(round int) (*result, error) { return b.skopeoSync(ctx, round) },
	}
	if o.warmup {
		benchkit.Logf("warm-up (not reported)")
		for _, p := range phases {
			if err := measure(p, 0); err != nil {
				return err
			}
		}
	}
	for round := 1; round <= o.rounds; round++ {
		benchkit.Logf("round %d of %d", round, o.rounds)
		for i := range phases {
			if round%2 == 0 {
				i = len(phases) - 1 - i
			}
			if err := measure(phases[i], round); err != nil {
				return err
			}
		}
	}
	rep.Goals = goals(rep)
	return benchkit.WriteReport(render(rep, o), rep, o.out, o.jsonOut)
}

// ---------------------------------------------------------------- appliance

func startAppliance(ctx context.Context, o options, work string, set *benchkit.ImageSet) (*bench, error) {
	dir := filepath.Join(work, "appliance")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	app, err := benchkit.StartAppliance(ctx, o.appliance, benchkit.ApplianceOptions{DataDir: dir, LogPath: filepath.Join(work, "appliance.log"),
		Env: benchkit.CleanEnv(), Args: []string{"--log-level", "warn"}, Ready: "/readyz"})
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: app.Roots, MinVersion: tls.VersionTLS12}, Proxy: nil}
	return &bench{o: o, work: work, set: set, app: app, appCA: filepath.Join(dir, "ca.crt"), api: &http.Client{Transport: tr, Timeout: time.Minute}}, nil
}

// cli runs the appliance's command line as admin and returns its stdout.
func (b *bench) cli(ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.CommandContext(ctx, b.o.appliance, append(args, "--username", "admin", "--password-stdin")...)
	cmd.Env = append(benchkit.CleanEnv(), "APPLIANCE_SERVER=https://"+b.app.HTTPSAddr, "APPLIANCE_CA="+b.appCA)
	cmd.Stdin = strings.NewReader(b.app.Password + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// load imports the set's imgpkg tar from the appliance's own disk. Every
// run checks afterwards that the target holds the whole set, which also
// proves that the appliance held it.
func (b *bench) load(ctx context.Context) (float64, error) {
	cmd, stdout, stderr := b.cli(ctx, "import", "--on-server", "--to-repo", repoName, b.set.ImgpkgTar)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("appliance import: %w\n%s%s", err, stdout, stderr)
	}
	secs := time.Since(start).Seconds()
	benchkit.Logf("imported the set into the appliance in %.1f s: %s", secs, strings.Join(strings.Fields(stdout.String()), " "))
	return secs, nil
}

// ---------------------------------------------------------------- targets

// target is a fresh TLS docker-registry.
type target struct {
	proc   *benchkit.Process
	base   *url.URL
	cert   benchkit.TestCert
	caDir  string // a folder holding only ca.crt, for skopeo's --dest-cert-dir
	client *http.Client
}

func (b *bench) startTarget(ctx context.Context, dir string) (*target, error) {
	cert, err := benchkit.WriteTestCert(filepath.Join(dir, "tls"))
	if err != nil {
		return nil, err
	}
	caDir := filepath.Join(dir, "ca")
	if err := os.MkdirAll(caDir, 0o750); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(cert.CertFile)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(caDir, "ca.crt"), pem, 0o644); err != nil { //nolint:gosec // a certificate
		return nil, err
	}
	p, addr, err := benchkit.StartDockerRegistry(ctx, b.o.dockerRegistry, dir, benchkit.DockerRegistryOptions{Secret: "promote-benchmark-secret-not-used-elsewhere",
		CertFile: cert.CertFile, KeyFile: cert.KeyFile, RootCAs: cert.Pool})
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool, MinVersion: tls.VersionTLS12}, Proxy: nil}
	return &target{proc: p, base: &url.URL{Scheme: "https", Host: addr}, cert: cert, caDir: caDir, client: &http.Client{Transport: tr, Timeout: time.Minute}}, nil
}

// window is what a phase measures around the command it times.
type window struct {
	app, reg     *benchkit.Sampler
	rss0         float64
	app0, reg0   float64
	appPID       int
	regPID       int
	io           benchkit.IOWindow
	start        time.Time
	stopPerf     func()
	appRSS, hwm  float64
	regRSS       float64
	appCPU, rCPU float64
}

func (b *bench) begin(ctx context.Context, t *target, perfName string) *window {
	syscall.Sync()
	benchkit.WaitQuiet(ctx, b.o.quietWait)
	w := &window{appPID: b.app.Proc.PID(), regPID: t.proc.PID(), stopPerf: func() {}}
	if err := benchkit.ResetPeak(w.appPID); err != nil {
		benchkit.Logf("  reset VmHWM: %v", err)
	}
	rss, _ := benchkit.ReadStatus(w.appPID, "VmRSS")
	w.rss0 = benchkit.MiB(rss)
	if perfName != "" && b.o.perf != "" {
		w.stopPerf = startPerf(b.o.perf, perfName)
	}
	w.app, w.reg = benchkit.NewSampler(w.appPID), benchkit.NewSampler(w.regPID)
	w.app0, w.reg0 = benchkit.CPUSeconds(w.appPID), benchkit.CPUSeconds(w.regPID)
	w.io = benchkit.BeginIOWindow()
	w.start = time.Now()
	return w
}

func (w *window) end(r *result, clientCPU float64) {
	r.Seconds = time.Since(w.start).Seconds()
	w.stopPerf()
	r.ApplianceRSS0 = w.rss0
	r.ApplianceRSS, _ = w.app.Stop()
	r.RegistryRSS, _ = w.reg.Stop()
	hwm, _ := benchkit.ReadStatus(w.appPID, "VmHWM")
	r.ApplianceHWM = benchkit.MiB(hwm)
	r.ApplianceCPU = benchkit.CPUSeconds(w.appPID) - w.app0
	r.RegistryCPU = benchkit.CPUSeconds(w.regPID) - w.reg0
	r.ClientCPU = clientCPU
	r.OtherCores, r.IOWaitCores = w.io.End(r.ApplianceCPU + r.RegistryCPU + clientCPU)
	r.MBps = float64(r.Bytes) / r.Seconds / 1e6
}

func cpuOf(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

// ---------------------------------------------------------------- subject

// promote runs `appliance promote --all` into a fresh TLS docker-registry.
func (b *bench) promote(ctx context.Context, round int) (*result, error) {
	r := &result{Name: subject, Round: round, Bytes: b.set.BlobBytes()}
	dir := filepath.Join(b.work, "target-promote")
	defer func() { _ = os.RemoveAll(dir); syscall.Sync() }()
	t, err := b.startTarget(ctx, dir)
	if err != nil {
		return r, err
	}
	defer t.proc.Stop()
	args := []string{"promote", "--target", t.base.String(), "--target-ca", t.cert.CertFile, "--all", "--json"}
	if b.o.parallel > 0 {
		args = append(args, "--parallel", strconv.Itoa(b.o.parallel))
	}
	cmd, stdout, stderr := b.cli(ctx, args...)
	w := b.begin(ctx, t, fmt.Sprintf("promote-round-%d", round))
	if err := cmd.Start(); err != nil {
		w.end(r, 0)
		return r, err
	}
	cli := benchkit.NewSampler(cmd.Process.Pid)
	phases := b.pollPhases(ctx, w.start)
	err = cmd.Wait()
	w.end(r, cpuOf(cmd.ProcessState))
	_, r.ClientRSS = cli.Stop()
	r.Phases = phases()
	if err != nil {
		return r, fmt.Errorf("appliance promote: %w\n%s%s\n%s", err, stdout, stderr, b.app.Proc.Tail())
	}
	var rec promote.Promotion
	if err := json.Unmarshal(stdout.Bytes(), &rec); err != nil {
		return r, fmt.Errorf("appliance promote --json: %w", err)
	}
	r.RecordSeconds = rec.Finished.Sub(rec.Started).Seconds()
	if rec.State != promote.StateSucceeded || rec.Parity == nil || !rec.Parity.OK {
		return r, fmt.Errorf("promotion %s: %s %s", rec.ID, rec.State, rec.Error)
	}
	if rec.Progress.BytesDone != r.Bytes {
		return r, fmt.Errorf("promotion %s pushed %d bytes, the set has %d", rec.ID, rec.Progress.BytesDone, r.Bytes)
	}
	// The import tagged each image twice: img-N, and imgpkg's
	// sha256-<hex>.imgpkg. Every tag must be the same on both sides.
	same, all := 0, 0
	sameTag := map[string]bool{}
	for _, rp := range rec.Parity.Repositories {
		for _, tp := range rp.Tags {
			all++
			if tp.Status == promote.ParitySame {
				same++
				sameTag[rp.Repository+":"+tp.Tag] = true
			}
		}
	}
	for _, img := range b.set.Images {
		if !sameTag[repoName+":"+img.Tag] {
			return r, fmt.Errorf("promotion %s: parity does not show %s:%s the same", rec.ID, repoName, img.Tag)
		}
	}
	if same != all {
		return r, fmt.Errorf("promotion %s: parity shows %d of %d tags the same", rec.ID, same, all)
	}
	tags, blobs, err := benchkit.CheckImageSet(ctx, t.client, t.base, repoName, b.set)
	if err != nil {
		return r, fmt.Errorf("check the target: %w", err)
	}
	r.Checked = fmt.Sprintf("parity OK: %d tags same; HEAD: %d tags, %d blobs", same, tags, blobs)
	return r, nil
}

// pollPhases reads the running promotion every 100 ms and returns what
// gives, once the promotion has ended, the seconds each phase lasted.
func (b *bench) pollPhases(ctx context.Context, start time.Time) func() map[string]float64 {
	var (
		mu    sync.Mutex
		seen  []string
		at    []time.Time
		quit  = make(chan struct{})
		done  = make(chan struct{})
		fresh = start
	)
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; i < 36000; i++ { // an hour at most
			var rec promote.Promotion
			if err := b.getJSON(ctx, "/api/v1/promotions/latest", &rec); err == nil && rec.Started.After(fresh.Add(-time.Second)) {
				mu.Lock()
				if len(seen) == 0 || seen[len(seen)-1] != rec.Progress.Phase {
					seen, at = append(seen, rec.Progress.Phase), append(at, time.Now())
				}
				mu.Unlock()
			}
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() map[string]float64 {
		close(quit)
		<-done
		mu.Lock()
		defer mu.Unlock()
		out := map[string]float64{}
		end := time.Now()
		for i, p := range seen {
			if p == promote.PhaseDone {
				break
			}
			next := end
			if i+1 < len(at) {
				next = at[i+1]
			}
			out[p] += next.Sub(at[i]).Seconds()
		}
		if len(seen) > 0 {
			out["(before the first poll saw it)"] = at[0].Sub(start).Seconds()
		}
		return out
	}
}

func (b *bench) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+b.app.HTTPSAddr+path, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth("admin", b.app.Password)
	req.Header.Set("Accept", "application/json")
	resp, err := b.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// ---------------------------------------------------------------- anchor

// skopeoSync runs `skopeo sync` of the repository, from the appliance,
// into a fresh TLS docker-registry.
func (b *bench) skopeoSync(ctx context.Context, round int) (*result, error) {
	r := &result{Name: anchor, Round: round, Bytes: b.set.BlobBytes()}
	dir := filepath.Join(b.work, "target-skopeo")
	defer func() { _ = os.RemoveAll(dir); syscall.Sync() }()
	t, err := b.startTarget(ctx, dir)
	if err != nil {
		return r, err
	}
	defer t.proc.Stop()
	srcCA := filepath.Join(dir, "src-ca")
	if err := os.MkdirAll(srcCA, 0o750); err != nil {
		return r, err
	}
	pem, err := os.ReadFile(b.appCA)
	if err != nil {
		return r, err
	}
	if err := os.WriteFile(filepath.Join(srcCA, "ca.crt"), pem, 0o644); err != nil { //nolint:gosec // a certificate
		return r, err
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return r, err
	}
	// Without --scoped, skopeo puts HOST/bench/big's tags under
	// DEST/big: DEST is the target's bench.
	cmd := exec.CommandContext(ctx, b.o.skopeo, "--insecure-policy", "sync", "--all", "--preserve-digests", "--src", "docker", "--dest", "docker",
		"--src-cert-dir", srcCA, "--dest-cert-dir", t.caDir, "--src-no-creds", "--dest-no-creds",
		b.app.HTTPSAddr+"/"+repoName, t.base.Host+"/"+strings.SplitN(repoName, "/", 2)[0])
	cmd.Env = append(benchkit.CleanEnv(), "TMPDIR="+tmp)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	w := b.begin(ctx, t, fmt.Sprintf("skopeo-round-%d", round))
	if err := cmd.Start(); err != nil {
		w.end(r, 0)
		return r, err
	}
	cli := benchkit.NewSampler(cmd.Process.Pid)
	err = cmd.Wait()
	w.end(r, cpuOf(cmd.ProcessState))
	_, r.ClientRSS = cli.Stop()
	if err != nil {
		return r, fmt.Errorf("skopeo sync: %w\n%s", err, out.String())
	}
	tags, blobs, err := benchkit.CheckImageSet(ctx, t.client, t.base, repoName, b.set)
	if err != nil {
		return r, fmt.Errorf("check the target: %w\nskopeo said:\n%s", err, out.String())
	}
	r.Checked = fmt.Sprintf("HEAD: %d tags, %d blobs", tags, blobs)
	return r, nil
}

// ---------------------------------------------------------------- perf

// startPerf records `perf record -a -g` (every CPU: the appliance and
// the target both) into dir/name.perf.data, and returns what stops it and
// writes text summaries beside it, by process and library and by symbol.
func startPerf(dir, name string) func() {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		benchkit.Logf("  perf: %v", err)
		return func() {}
	}
	base := filepath.Join(dir, name)
	lf, err := os.Create(base + ".perf.log")
	if err != nil {
		benchkit.Logf("  perf: %v", err)
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-a", "-g", "-F", "499", "-o", base+".perf.data")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		benchkit.Logf("  perf: %v", err)
		return func() {}
	}
	time.Sleep(time.Second) // let it attach before the timed part
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			lf.Close()
			for _, s := range []struct{ sort, file string }{{"comm,dso", ".by-dso.txt"}, {"comm,dso,sym", ".by-symbol.txt"}} {
				out, err := exec.Command("perf", "report", "--stdio", "--no-children", "--percent-limit", "0.5", "-g", "none",
					"--sort", s.sort, "-i", base+".perf.data").Output()
				if err != nil {
					benchkit.Logf("  perf report: %v", err)
					return
				}
				_ = os.WriteFile(base+s.file, out, 0o644) //nolint:gosec // a report
			}
		})
	}
}

// ---------------------------------------------------------------- report

// summary is one contender over its rounds.
type summary struct {
	Runs                     int
	Secs, MBps, Min, Max     float64 // medians, and the range of MB/s
	RecordSecs               float64 // median
	AppPeak, RegPeak, Client float64 // highest over the rounds, MiB
	AppCPU, RegCPU, CliCPU   float64 // medians
	Other                    float64 // highest
	Phases                   map[string]float64
}

func summarize(rep *report, name string) summary {
	var s summary
	var secs, mbps, rec, acpu, rcpu, ccpu []float64
	phases := map[string][]float64{}
	for _, r := range rep.Results {
		if r.Name != name {
			continue
		}
		if s.Runs == 0 {
			s.Min, s.Max = r.MBps, r.MBps
		}
		s.Runs++
		secs, mbps, rec = append(secs, r.Seconds), append(mbps, r.MBps), append(rec, r.RecordSeconds)
		acpu, rcpu, ccpu = append(acpu, r.ApplianceCPU), append(rcpu, r.RegistryCPU), append(ccpu, r.ClientCPU)
		s.Min, s.Max = min(s.Min, r.MBps), max(s.Max, r.MBps)
		s.AppPeak = max(s.AppPeak, r.ApplianceHWM, r.ApplianceRSS)
		s.RegPeak, s.Client, s.Other = max(s.RegPeak, r.RegistryRSS), max(s.Client, r.ClientRSS), max(s.Other, r.OtherCores)
		for p, v := range r.Phases {
			phases[p] = append(phases[p], v)
		}
	}
	s.Secs, s.MBps, s.RecordSecs = benchkit.Median(secs), benchkit.Median(mbps), benchkit.Median(rec)
	s.AppCPU, s.RegCPU, s.CliCPU = benchkit.Median(acpu), benchkit.Median(rcpu), benchkit.Median(ccpu)
	s.Phases = map[string]float64{}
	for p, v := range phases {
		s.Phases[p] = benchkit.Median(v)
	}
	return s
}

func goals(rep *report) []goal {
	p, s := summarize(rep, subject), summarize(rep, anchor)
	ratio := p.MBps / s.MBps
	return []goal{
		{What: fmt.Sprintf("appliance promote ≥ %.1f× skopeo sync's MB/s (medians)", goalVsSkopeo), Measured: ratio, Target: goalVsSkopeo, Met: ratio >= goalVsSkopeo},
		{What: fmt.Sprintf("appliance peak RSS during promote < %.0f MiB", goalRSSMiB), Measured: p.AppPeak, Target: goalRSSMiB, Met: p.AppPeak < goalRSSMiB},
	}
}

func render(rep *report, o options) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Promotion benchmark (issue 10), %s\n\n", rep.Date)
	b.WriteString(benchkit.MachineList(rep.Machine))
	w("\nData: the import benchmark's set, %d images × %d layers of %d MiB = %d layers (random, incompressible); %d blob bytes (layers and configs); imported into the appliance (`appliance import --on-server`, %.1f s).\n",
		rep.Images, o.layersPerImage, o.layerMiB, rep.Layers, rep.BlobBytes, rep.ImportS)
	w("MB/s = %d bytes / wall time of the command. %d rounds, subject and anchor interleaved (order reversed every other round)", rep.BlobBytes, o.rounds)
	if o.warmup {
		w(", after one unreported run of each")
	}
	w("; medians, with the range.\n\n")
	p, s := summarize(rep, subject), summarize(rep, anchor)
	w("| command | runs | median s | median MB/s (min–max) | ÷ skopeo | appliance peak RSS MiB | appliance CPU s | docker-registry CPU s / peak MiB | client CPU s / peak MiB | other cores (max) |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range []struct {
		name string
		s    summary
	}{{subject, p}, {anchor, s}} {
		w("| %s | %d | %.2f | **%.0f** (%.0f–%.0f) | %.2f | %.1f | %.1f | %.1f / %.0f | %.1f / %.0f | %.2f |\n", c.name, c.s.Runs, c.s.Secs, c.s.MBps, c.s.Min, c.s.Max,
			c.s.MBps/s.MBps, c.s.AppPeak, c.s.AppCPU, c.s.RegCPU, c.s.RegPeak, c.s.CliCPU, c.s.Client, c.s.Other)
	}
	w("\nThe promotion's own record (Started → Finished: checks, plan, push and parity, without the CLI's start, request and wait for its next poll) took a median %.2f s: %.0f MB/s, %.2f× skopeo.\n",
		p.RecordSecs, float64(rep.BlobBytes)/p.RecordSecs/1e6, float64(rep.BlobBytes)/p.RecordSecs/1e6/s.MBps)
	if len(p.Phases) > 0 {
		w("Where the promotion's time went (medians, phases polled every 100 ms through the API):")
		for _, ph := range []string{"(before the first poll saw it)", promote.PhaseChecking, promote.PhasePlanning, promote.PhaseProjects, promote.PhaseBlobs,
			promote.PhaseManifests, promote.PhaseTags, promote.PhaseReferrers, promote.PhaseParity} {
			if v, ok := p.Phases[ph]; ok {
				w(" %s %.2f s;", ph, v)
			}
		}
		w("\n")
	}
	w("\nNotes:\n\n")
	w("- subject: `appliance promote --target https://127.0.0.1:PORT --target-ca CA --all --json%s` (admin, password on stdin) into a fresh docker-registry 2.8 serving TLS with a self-signed test certificate, no auth; the appliance reads blobs from its own storage. Checked: the promotion record's parity (every tag `same`, all bytes pushed) and a HEAD of every tag (digest) and blob (size) on the target.\n",
		map[bool]string{true: fmt.Sprintf(" --parallel %d", o.parallel), false: ""}[o.parallel > 0])
	w("- anchor: `skopeo --insecure-policy sync --all --preserve-digests --src docker --dest docker --src-cert-dir APPLIANCE-CA --dest-cert-dir TARGET-CA --src-no-creds --dest-no-creds 127.0.0.1:APPLIANCE/%s 127.0.0.1:PORT/%s` into another fresh TLS docker-registry: skopeo pulls from the appliance (HTTPS, anonymous token) and pushes. Checked by the same HEADs.\n",
		repoName, strings.SplitN(repoName, "/", 2)[0])
	w("- appliance peak RSS: the highest of VmHWM (reset with clear_refs before each run) and VmRSS sampled every 50 ms, of the `appliance serve` process; *before* is its VmRSS when the run started (what the import and earlier runs left). During skopeo's runs it is the appliance serving the pulls.\n")
	w("- client: `appliance promote` (it only asks and polls) or skopeo; its VmHWM, sampled. other cores: CPU used by everything else during the run (a run above %.1f is repeated, at most twice).\n", o.maxOther)
	w("\nGoals (on the medians):\n\n| goal | measured | target | met |\n|---|---:|---:|---|\n")
	for _, g := range rep.Goals {
		w("| %s | %.2f | %.2f | %s |\n", g.What, g.Measured, g.Target, benchkit.Verdict(g.Met))
	}
	w("\nAll runs:\n\n| round | command | s | MB/s | record s | appliance VmRSS before / peak VmRSS / VmHWM MiB | appliance CPU s | docker-registry CPU s | client CPU s | iowait cores | other cores | checked |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rep.Results {
		w("| %d | %s | %.2f | %.0f | %s | %.1f / %.1f / %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %s |\n", r.Round, r.Name, r.Seconds, r.MBps, benchkit.Dash(r.RecordSeconds),
			r.ApplianceRSS0, r.ApplianceRSS, r.ApplianceHWM, r.ApplianceCPU, r.RegistryCPU, r.ClientCPU, r.IOWaitCores, r.OtherCores, r.Checked)
	}
	return b.String()
}
