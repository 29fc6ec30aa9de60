// Command import is the import benchmark of issue 3. It is a benchmark, not
// a timed test: it prints figures, the machine's own limits measured in the
// same run, and which goals are met.
//
// It generates, in a temporary folder, N images of random, incompressible
// layers (gzip streams of stored blocks around a tar of random bytes, so
// every tool sees a real .tar.gz layer that no compressor can shrink), and
// writes them twice: as an imgpkg `copy --to-tar` archive (manifest.json
// first with Go-field-name keys, then sha256-<hex>.tar.gz blobs sorted by
// digest; plain, uncompressed tar) and as an OCI image layout (a folder, and
// one OCI archive per image) for skopeo. Then, on the same disk:
//
//   - sha256 throughput of one core over layer bytes in memory;
//   - `dd if=bundle.tar of=… bs=4M conv=fsync`, before and after the
//     imports (the rate at which the same bytes can be written with fsync);
//   - `appliance import` of the imgpkg tar into a fresh appliance, streamed
//     by the CLI over HTTPS (upload) and with --on-server (no upload), with
//     the appliance's VmRSS sampled from /proc and its VmHWM at the end;
//   - the same import done in this process with internal/importer over
//     internal/registry (no HTTP, no TLS; -cpuprofile profiles it);
//   - `skopeo copy --all` of the same images, one by one, into a fresh
//     Debian docker-registry (distribution 2.8) on loopback, from the OCI
//     archives and from the OCI layout folder. docker-registry is served in
//     plain HTTP (the appliance in HTTPS), which favours skopeo.
//
// Every import is verified through the registry API (tags listed, every
// manifest fetched by digest, one layer pulled and hashed). All traffic is
// to 127.0.0.1. Between phases the benchmark syncs the disk and waits
// (bounded) for the machine to be quiet, and it reports the CPU used by
// anything else while each phase ran.
//
//	go build -o /tmp/appliance ./cmd/appliance
//	go run ./bench/import -appliance /tmp/appliance                 # ~2 GiB
//	go run ./bench/import -appliance /tmp/appliance -quick          # smoke run
//
// bench/import.sh does both steps and keeps the report.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/registry"
)

// Goals of issue 3.
const (
	goalVsSkopeo = 2.0   // × skopeo's throughput
	goalVsImgpkg = 1.5   // × imgpkg copy --tar --to-repo (issue 15)
	goalVsDD     = 0.90  // × dd conv=fsync's rate
	goalRSSMiB   = 100.0 // peak resident memory of the appliance
)

const (
	repoName = "bench/big"
	ddName   = "dd conv=fsync"
)

type options struct {
	appliance      string
	skopeo         string
	imgpkg         string
	dockerRegistry string
	sizeMiB        int
	layerMiB       int
	layersPerImage int
	quick          bool
	work           string
	keep           bool
	seed           uint64
	modes          string
	skopeoFrom     string
	inProcess      bool
	cpuProfile     string
	perf           string
	rounds         int
	analysis       bool
	maxOther       float64
	quietWait      time.Duration
	out            string
	jsonOut        string
	timeout        time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.appliance, "appliance", "", "appliance binary (go build -o … ./cmd/appliance); required unless -modes is empty")
	flag.StringVar(&o.skopeo, "skopeo", "/usr/bin/skopeo", "skopeo binary")
	flag.StringVar(&o.imgpkg, "imgpkg", "", "imgpkg binary (../shared/tools/imgpkg): also time `imgpkg copy --tar bundle.tar --to-repo` into docker-registry (\"\": skip)")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary")
	flag.IntVar(&o.sizeMiB, "size-mib", 2048, "total layer bytes to generate, MiB")
	flag.IntVar(&o.layerMiB, "layer-mib", 64, "size of each layer, MiB")
	flag.IntVar(&o.layersPerImage, "layers", 4, "layers per image")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: 128 MiB in 16 MiB layers, 2 per image")
	flag.StringVar(&o.work, "work", "", "folder for the generated data and the data directories (default: a new folder under $TMPDIR); it must be on the disk under test")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the random layer bytes")
	flag.StringVar(&o.modes, "modes", "upload,on-server,upload-http1", "appliance imports to time: upload (the CLI streams the file over HTTPS/1.1, its TLS records gathered into 256 KiB writes), on-server (--on-server, no upload), upload-http1 (this program streams the file to the same API over HTTPS/1.1 with a plain Go transport: one write per 16 KiB TLS record); comma-separated, may be empty")
	flag.StringVar(&o.skopeoFrom, "skopeo-from", "archive,dir", "skopeo sources to time: archive (oci-archive:IMAGE.tar, one per image), dir (oci:LAYOUT:TAG); comma-separated, may be empty")
	flag.BoolVar(&o.inProcess, "in-process", true, "also time the import in this process (internal/importer over internal/registry: no HTTP, no TLS)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the in-process import to this file")
	flag.StringVar(&o.perf, "perf", "", "record a system-wide `perf record -a -g` profile of each timed phase into this folder (with a text summary of each)")
	flag.BoolVar(&o.analysis, "analysis", true, "also time parts of the import in this process, to see where the time goes (see analysis.go)")
	flag.Float64Var(&o.maxOther, "max-other", 0.3, "run a phase again (at most twice) when other processes used more than this many cores during it")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of every measurement (interleaved); the report gives medians")
	flag.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "longest wait, before each phase, for the machine to be quiet")
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
		fmt.Fprintln(os.Stderr, "bench/import:", err)
		os.Exit(1)
	}
}

// result is one timed measurement.
type result struct {
	Name         string  `json:"name"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	MBps         float64 `json:"mb_per_s"`
	ServerRSSMiB float64 `json:"server_peak_vmrss_mib,omitempty"` // sampled
	ServerHWMMiB float64 `json:"server_vmhwm_mib,omitempty"`      // kernel's peak, since start
	ServerCPU    float64 `json:"server_cpu_s,omitempty"`
	ClientRSSMiB float64 `json:"client_maxrss_mib,omitempty"`
	ClientCPU    float64 `json:"client_cpu_s,omitempty"`
	OtherCores   float64 `json:"other_cores"` // CPU used by everything else, in cores
	IOWaitCores  float64 `json:"iowait_cores"`
	Note         string  `json:"note,omitempty"`
}

type report struct {
	Date      string            `json:"date"`
	Machine   map[string]string `json:"machine"`
	Options   map[string]any    `json:"options"`
	Data      datasetSummary    `json:"data"`
	SHA256    float64           `json:"sha256_one_core_mb_per_s"`
	Results   []*result         `json:"results"`
	Summary   []summary         `json:"summary"`
	Goals     []goal            `json:"goals"`
	Generated float64           `json:"generate_seconds"`
}

type datasetSummary struct {
	Images       int   `json:"images"`
	Layers       int   `json:"layers"`
	LayerBytes   int64 `json:"layer_bytes"`
	PayloadBytes int64 `json:"payload_bytes"` // layers + configs + manifests
	TarBytes     int64 `json:"imgpkg_tar_bytes"`
}

type goal struct {
	What     string  `json:"what"`
	Measured float64 `json:"measured"`
	Target   float64 `json:"target"`
	Met      bool    `json:"met"`
}

func run(ctx context.Context, o options) error {
	modes, err := benchkit.SplitList(o.modes, "upload", "on-server", "upload-http1")
	if err != nil {
		return fmt.Errorf("-modes: %w", err)
	}
	froms, err := benchkit.SplitList(o.skopeoFrom, "archive", "dir")
	if err != nil {
		return fmt.Errorf("-skopeo-from: %w", err)
	}
	if len(modes) > 0 {
		if o.appliance == "" {
			return errors.New("-appliance is required (go build -o /tmp/appliance ./cmd/appliance)")
		}
		if o.appliance, err = filepath.Abs(o.appliance); err != nil {
			return err
		}
	}
	if len(froms) > 0 {
		for _, b := range []string{o.skopeo, o.dockerRegistry} {
			if _, err := exec.LookPath(b); err != nil {
				return fmt.Errorf("%s: %w (install Debian's skopeo and docker-registry)", b, err)
			}
		}
	}
	if _, err := exec.LookPath("dd"); err != nil {
		return err
	}
	if o.rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	if o.sizeMiB < o.layerMiB || o.layerMiB < 1 || o.layersPerImage < 1 {
		return errors.New("need -size-mib ≥ -layer-mib ≥ 1 and -layers ≥ 1")
	}
	work, cleanup, err := benchkit.WorkDir(o.work, "import-bench.", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	benchkit.Logf("work folder %s", work)

	rep := &report{Date: time.Now().UTC().Format(time.RFC3339), Machine: benchkit.Machine(ctx, work, o.appliance, map[string][]string{"skopeo": {o.skopeo, "--version"}, "docker-registry": {o.dockerRegistry, "--version"}}),
		Options: map[string]any{"size_mib": o.sizeMiB, "layer_mib": o.layerMiB, "layers_per_image": o.layersPerImage, "seed": o.seed, "modes": modes, "skopeo_from": froms, "in_process": o.inProcess, "rounds": o.rounds, "analysis": o.analysis}}

	t0 := time.Now()
	ds, err := benchkit.WriteImageSet(ctx, work, benchkit.ImageSetOptions{SizeMiB: o.sizeMiB, LayerMiB: o.layerMiB, LayersPerImage: o.layersPerImage,
		Seed: o.seed, Repo: repoName, Archives: slices.Contains(froms, "archive")})
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	rep.Generated = time.Since(t0).Seconds()
	rep.Data = datasetSummary{Images: len(ds.Images), Layers: ds.LayerCount, LayerBytes: ds.LayerBytes, PayloadBytes: ds.Payload, TarBytes: ds.TarSize}
	benchkit.Logf("generated %d images, %d layers, %.1f MiB of layers, imgpkg tar %.1f MiB, in %.1f s", len(ds.Images), ds.LayerCount, benchkit.MiB(ds.LayerBytes), benchkit.MiB(ds.TarSize), rep.Generated)
	syncDisk()

	// The machine's limits.
	rep.SHA256, err = sha256Rate(ds)
	if err != nil {
		return err
	}
	benchkit.Logf("sha256, one core: %.0f MB/s", rep.SHA256)
	add := func(r *result, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		benchkit.Logf("%s: %.2f s, %.0f MB/s", r.Name, r.Seconds, r.MBps)
		rep.Results = append(rep.Results, r)
		return nil
	}
	// measure runs a phase again (at most twice more) when something else
	// used the CPUs while it ran.
	measure := func(phase func() (*result, error)) error {
		for attempt := 1; ; attempt++ {
			r, err := phase()
			if err != nil || r.OtherCores <= o.maxOther || attempt == 3 || o.perf != "" { // perf's own CPU counts as other
				if err == nil && r.OtherCores > o.maxOther {
					r.Note = strings.TrimPrefix(r.Note+"; ", "; ") + fmt.Sprintf("other processes used %.2f cores during this run", r.OtherCores)
				}
				return add(r, err)
			}
			benchkit.Logf("%s: %.0f MB/s, but other processes used %.2f cores meanwhile: again", r.Name, r.MBps, r.OtherCores)
		}
	}
	// A first dd, not reported: on a VM the first writes into memory the
	// guest has not touched yet are slow; the import would otherwise pay
	// for it alone.
	if _, err := ddPhase(ctx, o, ds, work, "dd warm-up"); err != nil {
		return fmt.Errorf("dd warm-up: %w", err)
	}
	for round := 1; round <= o.rounds; round++ {
		benchkit.Logf("round %d of %d", round, o.rounds)
		if err := measure(func() (*result, error) { return ddPhase(ctx, o, ds, work, ddName) }); err != nil {
			return err
		}
		for _, m := range modes {
			if err := measure(func() (*result, error) { return appliancePhase(ctx, o, ds, work, m) }); err != nil {
				return err
			}
		}
		if o.inProcess {
			if err := measure(func() (*result, error) { return inProcessPhase(ctx, o, ds, work) }); err != nil {
				return err
			}
		}
		if o.analysis {
			for _, a := range []string{analysisCPU, analysisFsync, analysisPipeline} {
				if err := measure(func() (*result, error) { return analysisPhase(ctx, o, ds, work, a) }); err != nil {
					return err
				}
			}
		}
		for _, f := range froms {
			if err := measure(func() (*result, error) { return skopeoPhase(ctx, o, ds, work, f) }); err != nil {
				return err
			}
		}
		if o.imgpkg != "" {
			if err := measure(func() (*result, error) { return imgpkgPhase(ctx, o, ds, work) }); err != nil {
				return err
			}
		}
	}
	if err := measure(func() (*result, error) { return ddPhase(ctx, o, ds, work, ddName) }); err != nil {
		return err
	}
	rep.Goals = goals(rep)
	rep.Summary = summarize(rep)
	return benchkit.WriteReport(render(rep, o), rep, o.out, o.jsonOut)
}

// ---------------------------------------------------------------- limits

// sha256Rate hashes one layer, in memory, on one core, as many times as
// needed for about 1 GiB (at most the data set).
func sha256Rate(ds *benchkit.ImageSet) (float64, error) {
	l := ds.Images[0].Layers[0]
	data, err := os.ReadFile(ds.BlobPath(l.Digest))
	if err != nil {
		return 0, err
	}
	rounds := max(1, min(int((1<<30)/len(data)), int(ds.LayerBytes/int64(len(data)))))
	h := sha256.New()
	start := time.Now()
	for range rounds {
		h.Write(data)
	}
	_ = h.Sum(nil)
	return float64(rounds*len(data)) / time.Since(start).Seconds() / 1e6, nil
}

func ddPhase(ctx context.Context, o options, ds *benchkit.ImageSet, work, name string) (*result, error) {
	r := &result{Name: name, Bytes: ds.TarSize}
	out := filepath.Join(work, "dd.out")
	defer func() { _ = os.Remove(out); syncDisk() }()
	benchkit.WaitQuiet(ctx, o.quietWait)
	stopPerf := func() {}
	if name == ddName {
		stopPerf = startPerf(o, name)
	}
	defer stopPerf()
	w := benchkit.BeginIOWindow()
	cmd := exec.CommandContext(ctx, "dd", "if="+ds.ImgpkgTar, "of="+out, "bs=4M", "conv=fsync")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("%w: %s", err, stderr.String())
	}
	r.Seconds = time.Since(start).Seconds()
	r.MBps = float64(r.Bytes) / r.Seconds / 1e6
	ru := rusage(cmd.ProcessState)
	r.ClientCPU = ru.cpu
	r.OtherCores, r.IOWaitCores = w.End(ru.cpu)
	r.Note = strings.TrimSpace(benchkit.LastLine(stderr.String()))
	return r, nil
}

// ---------------------------------------------------------------- appliance

func appliancePhase(ctx context.Context, o options, ds *benchkit.ImageSet, work, mode string) (*result, error) {
	r := &result{Name: "appliance import (" + mode + ")", Bytes: ds.TarSize}
	dir := filepath.Join(work, "appliance-"+mode)
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	a, err := startAppliance(ctx, o, dir)
	if err != nil {
		return r, err
	}
	defer a.proc.Stop()
	syncDisk()
	benchkit.WaitQuiet(ctx, o.quietWait)
	args := []string{"import", "--to-repo", repoName, "--username", "admin", "--password-stdin"}
	if mode == "on-server" {
		args = append(args, "--on-server")
	}
	args = append(args, ds.ImgpkgTar)
	cmd := exec.CommandContext(ctx, o.appliance, args...)
	cmd.Env = append(benchkit.CleanEnv(), "APPLIANCE_SERVER="+a.base.String(), "APPLIANCE_CA="+filepath.Join(dir, "ca.crt"))
	cmd.Stdin = strings.NewReader(a.password + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	stopPerf := startPerf(o, r.Name)
	defer stopPerf()
	sampler := benchkit.NewSampler(a.proc.PID())
	cpu0 := benchkit.CPUSeconds(a.proc.PID())
	self := os.Getpid()
	self0 := benchkit.CPUSeconds(self)
	w := benchkit.BeginIOWindow()
	start := time.Now()
	if mode == "upload-http1" {
		err = uploadHTTP1(ctx, a, ds.ImgpkgTar, &stdout)
		r.Seconds = time.Since(start).Seconds()
		stopPerf()
		r.ClientCPU = benchkit.CPUSeconds(self) - self0
		r.ServerRSSMiB, _ = sampler.Stop()
	} else {
		if err := cmd.Start(); err != nil {
			sampler.Stop()
			return r, err
		}
		clientSampler := benchkit.NewSampler(cmd.Process.Pid)
		err = cmd.Wait()
		r.Seconds = time.Since(start).Seconds()
		stopPerf()
		r.ServerRSSMiB, _ = sampler.Stop()
		_, r.ClientRSSMiB = clientSampler.Stop()
		r.ClientCPU = rusage(cmd.ProcessState).cpu
	}
	r.ServerCPU = benchkit.CPUSeconds(a.proc.PID()) - cpu0
	r.OtherCores, r.IOWaitCores = w.End(r.ServerCPU + r.ClientCPU)
	hwm, _ := benchkit.ReadStatus(a.proc.PID(), "VmHWM")
	r.ServerHWMMiB = benchkit.MiB(hwm)
	if err != nil {
		return r, fmt.Errorf("appliance import: %w\n%s%s\nserver log:\n%s", err, stdout.String(), stderr.String(), a.proc.Tail())
	}
	r.MBps = float64(r.Bytes) / r.Seconds / 1e6
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if strings.Contains(line, "blobs:") || strings.HasPrefix(line, "imported") {
			benchkit.Logf("  %s", strings.TrimSpace(line))
		}
	}
	if err := verify(ctx, a.client, a.base, a.authorize, ds); err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	r.Note = "verified: tags listed, manifests fetched, a layer pulled and hashed"
	return r, nil
}

type appliance struct {
	proc      *benchkit.Process
	base      *url.URL
	client    *http.Client
	password  string
	authorize func(ctx context.Context, scope string) (string, error)
}

func startAppliance(ctx context.Context, o options, dir string) (*appliance, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	srv, err := benchkit.StartAppliance(ctx, o.appliance, benchkit.ApplianceOptions{DataDir: dir, LogPath: filepath.Join(dir, "serve.log"),
		Env: benchkit.CleanEnv(), Args: []string{"--log-level", "warn"}, Ready: "/readyz"})
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots, MinVersion: tls.VersionTLS12}, Proxy: nil}
	a := &appliance{proc: srv.Proc, base: &url.URL{Scheme: "https", Host: srv.HTTPSAddr}, client: &http.Client{Transport: tr, Timeout: 5 * time.Minute},
		password: srv.Password}
	a.authorize = func(ctx context.Context, scope string) (string, error) {
		u := *a.base
		u.Path = "/service/token"
		u.RawQuery = url.Values{"scope": {scope}}.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return "", err
		}
		req.SetBasicAuth("admin", a.password)
		resp, err := a.client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var tok struct {
			Token string `json:"token"`
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("token: HTTP %d", resp.StatusCode)
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
			return "", err
		}
		return "Bearer " + tok.Token, nil
	}
	return a, nil
}

// uploadHTTP1 does what `appliance import FILE` does, with a client
// limited to HTTP/1.1: it streams the file as the body of
// POST /api/v1/imports and writes a summary of the answer to out.
func uploadHTTP1(ctx context.Context, a *appliance, path string, out io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	base := a.client.Transport.(*http.Transport)
	tr := &http.Transport{TLSClientConfig: base.TLSClientConfig.Clone(), Proxy: nil, ForceAttemptHTTP2: false,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}} // no HTTP/2
	defer tr.CloseIdleConnections()
	u := *a.base
	u.Path = "/api/v1/imports"
	u.RawQuery = url.Values{"to_repo": {repoName}, "source": {filepath.Base(path)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), f)
	if err != nil {
		return err
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth("admin", a.password)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST /api/v1/imports: %s (%s): %s", resp.Status, resp.Proto, body)
	}
	var rec struct {
		ID       string `json:"id"`
		BlobsNew int    `json:"blobs_new"`
	}
	_ = json.Unmarshal(body, &rec)
	fmt.Fprintf(out, "imported %s over %s as import %s\n  blobs: %d new\n", filepath.Base(path), resp.Proto, rec.ID, rec.BlobsNew)
	return nil
}

// verify checks through the registry API that every image landed: the tags
// are listed, every manifest is served by digest and byte for byte, and one
// layer (the last of the last image) hashes to its digest.
func verify(ctx context.Context, c *http.Client, base *url.URL, authorize func(context.Context, string) (string, error), ds *benchkit.ImageSet) error {
	return verifyTags(ctx, c, base, authorize, ds, true)
}

// verifyContent is verify without the tags, for a copy that names the
// images its own way.
func verifyContent(ctx context.Context, c *http.Client, base *url.URL, ds *benchkit.ImageSet) error {
	return verifyTags(ctx, c, base, nil, ds, false)
}

func verifyTags(ctx context.Context, c *http.Client, base *url.URL, authorize func(context.Context, string) (string, error), ds *benchkit.ImageSet, tagged bool) error {
	authz := ""
	if authorize != nil {
		var err error
		if authz, err = authorize(ctx, "repository:"+repoName+":pull"); err != nil {
			return err
		}
	}
	get := func(path, accept string, w io.Writer) (int64, error) {
		u := *base
		u.Path = path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return 0, err
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return 0, fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, b)
		}
		return io.Copy(w, resp.Body)
	}
	var tl bytes.Buffer
	if !tagged {
		tl.WriteString(`{"tags":[]}`)
	} else if _, err := get("/v2/"+repoName+"/tags/list", "", &tl); err != nil {
		return err
	}
	var tags struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(tl.Bytes(), &tags); err != nil {
		return fmt.Errorf("tags list: %w", err)
	}
	for _, img := range ds.Images {
		if tagged && !slices.Contains(tags.Tags, img.Tag) {
			return fmt.Errorf("tag %s missing (have %d tags)", img.Tag, len(tags.Tags))
		}
		var mb bytes.Buffer
		if _, err := get("/v2/"+repoName+"/manifests/"+img.ManifestDigest, benchkit.MediaTypeManifest, &mb); err != nil {
			return err
		}
		if !bytes.Equal(mb.Bytes(), img.Manifest) {
			return fmt.Errorf("manifest %s differs", img.ManifestDigest)
		}
	}
	last := ds.Images[len(ds.Images)-1]
	l := last.Layers[len(last.Layers)-1]
	h := sha256.New()
	n, err := get("/v2/"+repoName+"/blobs/"+l.Digest, "", h)
	if err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.Digest || n != l.Size {
		return fmt.Errorf("layer %s: got %s, %d bytes", l.Digest, got, n)
	}
	benchkit.Logf("  verified: %d tags listed, %d manifests served, layer %s… pulled (%.0f MiB)", len(tags.Tags), len(ds.Images), l.Digest[:19], benchkit.MiB(n))
	return nil
}

// ---------------------------------------------------------------- in-process

// profiled: the in-process import was profiled already (-cpuprofile
// covers the first round only).
var profiled bool

type allowAll struct{}

func (allowAll) AuthorizeRegistry(*http.Request, []registry.Access) (string, error) {
	return "bench", nil
}

// inProcessPhase imports the imgpkg tar with internal/importer straight
// into internal/registry's storage, in this process: the appliance's import
// path without HTTP, TLS or the CLI.
func inProcessPhase(ctx context.Context, o options, ds *benchkit.ImageSet, work string) (*result, error) {
	r := &result{Name: "importer in-process (no HTTP/TLS)", Bytes: ds.TarSize}
	dir := filepath.Join(work, "in-process")
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	reg, err := registry.New(ctx, registry.Options{RootDir: filepath.Join(dir, "registry"), SecretFile: filepath.Join(dir, "secret"),
		StateFile: filepath.Join(dir, "state.json"), Authorizer: allowAll{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return r, err
	}
	defer reg.Close()
	hist, err := history.Open(filepath.Join(dir, "imports"))
	if err != nil {
		return r, err
	}
	imp, err := importer.New(reg, hist)
	if err != nil {
		return r, err
	}
	f, err := os.Open(ds.ImgpkgTar)
	if err != nil {
		return r, err
	}
	defer f.Close()
	syncDisk()
	benchkit.WaitQuiet(ctx, o.quietWait)
	profile := o.cpuProfile != "" && !profiled
	profiled = true
	if profile {
		pf, err := os.Create(o.cpuProfile)
		if err != nil {
			return r, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return r, err
		}
	}
	stopPerf := startPerf(o, r.Name)
	defer stopPerf()
	self := os.Getpid()
	cpu0 := benchkit.CPUSeconds(self)
	w := benchkit.BeginIOWindow()
	start := time.Now()
	rec, err := imp.Import(ctx, importer.Request{Source: "bundle.tar", Reader: f, Size: ds.TarSize, ToRepo: repoName, User: "bench"})
	r.Seconds = time.Since(start).Seconds()
	stopPerf()
	r.ServerCPU = benchkit.CPUSeconds(self) - cpu0
	r.OtherCores, r.IOWaitCores = w.End(r.ServerCPU)
	if profile {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return r, err
	}
	r.MBps = float64(r.Bytes) / r.Seconds / 1e6
	tags, err := reg.Tags(ctx, repoName)
	if err != nil {
		return r, err
	}
	for _, img := range ds.Images {
		if !slices.Contains(tags, img.Tag) {
			return r, fmt.Errorf("tag %s missing", img.Tag)
		}
	}
	benchkit.Logf("  in-process: %d blobs new, %d tags", rec.BlobsNew, len(tags))
	r.Note = "server CPU = this process's; tags verified in storage"
	return r, nil
}

// ---------------------------------------------------------------- skopeo

func skopeoPhase(ctx context.Context, o options, ds *benchkit.ImageSet, work, from string) (*result, error) {
	r := &result{Name: "skopeo copy → docker-registry (" + from + ")", Bytes: ds.TarSize}
	dir := filepath.Join(work, "docker-registry-"+from)
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	reg, err := startDockerRegistry(ctx, o, dir)
	if err != nil {
		return r, err
	}
	defer reg.proc.Stop()
	tmp := filepath.Join(dir, "skopeo-tmp") // oci-archive: unpacks here, on the same disk
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return r, err
	}
	syncDisk()
	benchkit.WaitQuiet(ctx, o.quietWait)
	stopPerf := startPerf(o, r.Name)
	defer stopPerf()
	sampler := benchkit.NewSampler(reg.proc.PID())
	cpu0 := benchkit.CPUSeconds(reg.proc.PID())
	w := benchkit.BeginIOWindow()
	var clientCPU, clientRSS float64
	start := time.Now()
	for _, img := range ds.Images {
		src := "oci:" + ds.Layout + ":" + img.Tag
		if from == "archive" {
			src = "oci-archive:" + img.Archive
		}
		cmd := exec.CommandContext(ctx, o.skopeo, "copy", "--all", "--insecure-policy", "--dest-tls-verify=false", "--quiet",
			src, "docker://"+reg.base.Host+"/"+repoName+":"+img.Tag)
		cmd.Env = append(benchkit.CleanEnv(), "TMPDIR="+tmp)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			sampler.Stop()
			return r, err
		}
		cs := benchkit.NewSampler(cmd.Process.Pid)
		err := cmd.Wait()
		_, hwm := cs.Stop()
		if err != nil {
			sampler.Stop()
			return r, fmt.Errorf("skopeo copy %s: %w\n%s", src, err, out.String())
		}
		ru := rusage(cmd.ProcessState)
		clientCPU += ru.cpu
		clientRSS = max(clientRSS, hwm)
	}
	r.Seconds = time.Since(start).Seconds()
	stopPerf()
	r.ServerRSSMiB, _ = sampler.Stop()
	r.ServerCPU = benchkit.CPUSeconds(reg.proc.PID()) - cpu0
	r.ClientCPU, r.ClientRSSMiB = clientCPU, clientRSS
	r.OtherCores, r.IOWaitCores = w.End(r.ServerCPU + r.ClientCPU)
	hwm, _ := benchkit.ReadStatus(reg.proc.PID(), "VmHWM")
	r.ServerHWMMiB = benchkit.MiB(hwm)
	r.MBps = float64(r.Bytes) / r.Seconds / 1e6
	if err := verify(ctx, &http.Client{Timeout: 5 * time.Minute}, reg.base, nil, ds); err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	r.Note = fmt.Sprintf("%d skopeo runs, one per image; docker-registry in plain HTTP; verified", len(ds.Images))
	return r, nil
}

// imgpkgPhase times `imgpkg copy --tar bundle.tar --to-repo` of the same
// tar the appliance imports into a fresh docker-registry (plain HTTP,
// which favours imgpkg), and verifies every manifest and the last layer.
func imgpkgPhase(ctx context.Context, o options, ds *benchkit.ImageSet, work string) (*result, error) {
	r := &result{Name: imgpkgName, Bytes: ds.TarSize}
	dir := filepath.Join(work, "docker-registry-imgpkg")
	defer func() { _ = os.RemoveAll(dir); syncDisk() }()
	reg, err := startDockerRegistry(ctx, o, dir)
	if err != nil {
		return r, err
	}
	defer reg.proc.Stop()
	home := filepath.Join(dir, "home") // imgpkg keeps nothing between runs
	if err := os.MkdirAll(home, 0o750); err != nil {
		return r, err
	}
	syncDisk()
	benchkit.WaitQuiet(ctx, o.quietWait)
	stopPerf := startPerf(o, r.Name)
	defer stopPerf()
	sampler := benchkit.NewSampler(reg.proc.PID())
	cpu0 := benchkit.CPUSeconds(reg.proc.PID())
	w := benchkit.BeginIOWindow()
	start := time.Now()
	cmd := exec.CommandContext(ctx, o.imgpkg, "copy", "--tar", ds.ImgpkgTar, "--to-repo", reg.base.Host+"/"+repoName, "--registry-insecure")
	cmd.Env = append(benchkit.CleanEnv(), "HOME="+home, "TMPDIR="+home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		sampler.Stop()
		return r, err
	}
	cs := benchkit.NewSampler(cmd.Process.Pid)
	err = cmd.Wait()
	_, clientHWM := cs.Stop()
	if err != nil {
		sampler.Stop()
		return r, fmt.Errorf("imgpkg copy: %w\n%s", err, out.String())
	}
	r.Seconds = time.Since(start).Seconds()
	stopPerf()
	r.ServerRSSMiB, _ = sampler.Stop()
	r.ServerCPU = benchkit.CPUSeconds(reg.proc.PID()) - cpu0
	r.ClientCPU, r.ClientRSSMiB = rusage(cmd.ProcessState).cpu, clientHWM
	r.OtherCores, r.IOWaitCores = w.End(r.ServerCPU + r.ClientCPU)
	hwm, _ := benchkit.ReadStatus(reg.proc.PID(), "VmHWM")
	r.ServerHWMMiB = benchkit.MiB(hwm)
	r.MBps = float64(r.Bytes) / r.Seconds / 1e6
	// imgpkg pushes the images by digest and tags them with its own
	// generated tags, not the tar's: the manifests and a layer are checked.
	if err := verifyContent(ctx, &http.Client{Timeout: 5 * time.Minute}, reg.base, ds); err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	r.Note = "one imgpkg run of the whole tar; docker-registry in plain HTTP; verified"
	return r, nil
}

type dockerRegistry struct {
	proc *benchkit.Process
	base *url.URL
}

func startDockerRegistry(ctx context.Context, o options, dir string) (*dockerRegistry, error) {
	p, addr, err := benchkit.StartDockerRegistry(ctx, o.dockerRegistry, dir, benchkit.DockerRegistryOptions{Secret: "import-benchmark-secret-not-used-elsewhere"})
	if err != nil {
		return nil, err
	}
	return &dockerRegistry{proc: p, base: &url.URL{Scheme: "http", Host: addr}}, nil
}

// ---------------------------------------------------------------- processes

type usage struct{ cpu float64 }

func rusage(ps *os.ProcessState) usage {
	if ps == nil {
		return usage{}
	}
	return usage{cpu: (ps.UserTime() + ps.SystemTime()).Seconds()}
}

// ---------------------------------------------------------------- /proc

func syncDisk() { syscall.Sync() }

var slugRE = regexp.MustCompile(`[^a-z0-9]+`)

// startPerf starts `perf record -a -g` (all CPUs) when -perf is set, and
// returns what stops it and writes a text summary next to its data file.
func startPerf(o options, name string) func() {
	if o.perf == "" {
		return func() {}
	}
	base := filepath.Join(o.perf, strings.Trim(slugRE.ReplaceAllString(strings.ToLower(name), "-"), "-"))
	if err := os.MkdirAll(o.perf, 0o750); err != nil {
		benchkit.Logf("  perf: %v", err)
		return func() {}
	}
	for i := 2; ; i++ {
		if _, err := os.Stat(base + ".perf.data"); err != nil {
			break
		}
		base = strings.TrimSuffix(base, "-"+strconv.Itoa(i-1)) + "-" + strconv.Itoa(i)
	}
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
	return func() { once.Do(func() { stopPerf(cmd, lf, base) }) }
}

func stopPerf(cmd *exec.Cmd, lf *os.File, base string) {
	{
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
		for _, sort := range []string{"comm,dso", "comm,dso,sym"} {
			out, err := exec.Command("perf", "report", "--stdio", "--no-children", "--percent-limit", "0.5", "-g", "none",
				"--sort", sort, "-i", base+".perf.data").Output()
			if err != nil {
				benchkit.Logf("  perf report: %v", err)
				return
			}
			f := base + ".by-dso.txt"
			if strings.HasSuffix(sort, "sym") {
				f = base + ".by-symbol.txt"
			}
			_ = os.WriteFile(f, out, 0o644) //nolint:gosec // a report
		}
	}
}

// ---------------------------------------------------------------- report

// summary is one measurement over its rounds.
type summary struct {
	Name         string  `json:"name"`
	Runs         int     `json:"runs"`
	MedianMBps   float64 `json:"median_mb_per_s"`
	MinMBps      float64 `json:"min_mb_per_s"`
	MaxMBps      float64 `json:"max_mb_per_s"`
	MedianSecs   float64 `json:"median_seconds"`
	ServerRSSMiB float64 `json:"server_peak_vmrss_mib"` // highest over the rounds
	ServerHWMMiB float64 `json:"server_vmhwm_mib"`      // highest over the rounds
	ServerCPU    float64 `json:"server_cpu_s"`          // median
	ClientCPU    float64 `json:"client_cpu_s"`          // median
	ClientRSSMiB float64 `json:"client_maxrss_mib"`     // highest
	OtherCores   float64 `json:"other_cores"`           // highest
	IOWaitCores  float64 `json:"iowait_cores"`          // median
}

func summarize(rep *report) []summary {
	var names []string
	by := map[string][]*result{}
	for _, r := range rep.Results {
		if by[r.Name] == nil {
			names = append(names, r.Name)
		}
		by[r.Name] = append(by[r.Name], r)
	}
	var out []summary
	for _, n := range names {
		rs := by[n]
		var mbps, secs, scpu, ccpu, iow []float64
		s := summary{Name: n, Runs: len(rs), MinMBps: rs[0].MBps}
		for _, r := range rs {
			mbps, secs, scpu, ccpu, iow = append(mbps, r.MBps), append(secs, r.Seconds), append(scpu, r.ServerCPU), append(ccpu, r.ClientCPU), append(iow, r.IOWaitCores)
			s.MinMBps, s.MaxMBps = min(s.MinMBps, r.MBps), max(s.MaxMBps, r.MBps)
			s.ServerRSSMiB, s.ServerHWMMiB = max(s.ServerRSSMiB, r.ServerRSSMiB), max(s.ServerHWMMiB, r.ServerHWMMiB)
			s.ClientRSSMiB, s.OtherCores = max(s.ClientRSSMiB, r.ClientRSSMiB), max(s.OtherCores, r.OtherCores)
		}
		s.MedianMBps, s.MedianSecs, s.ServerCPU, s.ClientCPU, s.IOWaitCores = benchkit.Median(mbps), benchkit.Median(secs), benchkit.Median(scpu), benchkit.Median(ccpu), benchkit.Median(iow)
		out = append(out, s)
	}
	return out
}

func rateOf(sums []summary, name string) float64 {
	for _, s := range sums {
		if s.Name == name {
			return s.MedianMBps
		}
	}
	return 0
}

const (
	imgpkgName    = "imgpkg copy --tar → docker-registry"
	skopeoArchive = "skopeo copy → docker-registry (archive)"
	skopeoDir     = "skopeo copy → docker-registry (dir)"
)

func goals(rep *report) []goal {
	var gs []goal
	sums := summarize(rep)
	dd := rateOf(sums, ddName)
	for _, a := range sums {
		if !strings.HasPrefix(a.Name, "appliance import") || strings.Contains(a.Name, "http1") { // upload-http1 is a what-if, not the product
			continue
		}
		for _, sk := range []string{skopeoArchive, skopeoDir} {
			if s := rateOf(sums, sk); s > 0 {
				v := a.MedianMBps / s
				gs = append(gs, goal{What: fmt.Sprintf("%s ≥ %.0f× %s", a.Name, goalVsSkopeo, sk), Measured: v, Target: goalVsSkopeo, Met: v >= goalVsSkopeo})
			}
		}
		if ip := rateOf(sums, imgpkgName); ip > 0 && !strings.Contains(a.Name, "on-server") {
			v := a.MedianMBps / ip
			gs = append(gs, goal{What: fmt.Sprintf("%s ≥ %.1f× %s", a.Name, goalVsImgpkg, imgpkgName), Measured: v, Target: goalVsImgpkg, Met: v >= goalVsImgpkg})
		}
		if dd > 0 {
			v := a.MedianMBps / dd
			gs = append(gs, goal{What: fmt.Sprintf("%s ≥ %.0f%% of dd conv=fsync", a.Name, goalVsDD*100), Measured: v, Target: goalVsDD, Met: v >= goalVsDD})
		}
		peak := max(a.ServerHWMMiB, a.ServerRSSMiB)
		gs = append(gs, goal{What: fmt.Sprintf("%s: appliance peak RSS (VmHWM) < %.0f MiB", a.Name, goalRSSMiB), Measured: peak, Target: goalRSSMiB, Met: peak < goalRSSMiB})
	}
	return gs
}

func render(rep *report, o options) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Import benchmark (issue 3), %s\n\n", rep.Date)
	b.WriteString(benchkit.MachineList(rep.Machine))
	w("\nData: %d images × %d layers of %d MiB = %d layers, %.1f MiB of layers (random, incompressible); imgpkg tar %.1f MiB (%d bytes); generated in %.0f s.\n",
		rep.Data.Images, o.layersPerImage, o.layerMiB, rep.Data.Layers, benchkit.MiB(rep.Data.LayerBytes), benchkit.MiB(rep.Data.TarBytes), rep.Data.TarBytes, rep.Generated)
	w("MB/s are 10⁶ bytes per second: the imgpkg tar's size (%d bytes; the images' blobs are %d bytes) over the wall time. %d rounds, interleaved; medians, with the range.\n\n",
		rep.Data.TarBytes, rep.Data.PayloadBytes, o.rounds)
	w("sha256, one core, in memory: **%.0f MB/s**\n\n", rep.SHA256)
	sums := summarize(rep)
	dd := rateOf(sums, ddName)
	sa, sd := rateOf(sums, skopeoArchive), rateOf(sums, skopeoDir)
	w("| measurement | runs | median s | median MB/s (min–max) | ÷ skopeo archive | ÷ skopeo dir | ÷ dd | server peak VmRSS / VmHWM MiB | server CPU s | client CPU s / peak VmHWM MiB | iowait cores | other cores (max) |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range sums {
		ratio := func(d float64) string {
			if d <= 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f", s.MedianMBps/d)
		}
		srv := "–"
		if s.ServerRSSMiB > 0 || s.ServerHWMMiB > 0 {
			srv = fmt.Sprintf("%.0f / %s", s.ServerRSSMiB, benchkit.Dash(s.ServerHWMMiB))
		}
		cli := "–"
		if s.ClientCPU > 0 || s.ClientRSSMiB > 0 {
			cli = fmt.Sprintf("%s / %s", benchkit.Dash(s.ClientCPU), benchkit.Dash(s.ClientRSSMiB))
		}
		w("| %s | %d | %.2f | **%.0f** (%.0f–%.0f) | %s | %s | %s | %s | %s | %s | %.2f | %.2f |\n", s.Name, s.Runs, s.MedianSecs, s.MedianMBps, s.MinMBps, s.MaxMBps,
			ratio(sa), ratio(sd), ratio(dd), srv, benchkit.Dash(s.ServerCPU), cli, s.IOWaitCores, s.OtherCores)
	}
	w("\nNotes:\n\n")
	w("- dd: `dd if=bundle.tar of=<work>/dd.out bs=4M conv=fsync`, once per round and once at the end (after an unreported warm-up run).\n")
	w("- appliance import (upload): `appliance import --to-repo %s bundle.tar` (the CLI streams the file over HTTPS); (on-server): the same with `--on-server` (no upload). A fresh appliance (new data directory) for every run; VmRSS sampled every 50 ms, VmHWM read at the end (it covers the start-up too). Client = the CLI (its peak VmHWM, sampled); the CLI uploads over HTTP/1.1 and gathers its TLS records into 256 KiB writes. (upload-http1): this benchmark program streams the file to the same API, POST /api/v1/imports, over HTTPS/1.1 with a plain Go transport, one write per 16 KiB TLS record (client CPU = this program's), to show what the gathering saves; it is not a goal row.\n", repoName)
	w("- importer in-process: internal/importer over internal/registry in the benchmark's own process (no HTTP, no TLS); server CPU = the benchmark process's.\n")
	w("- skopeo: `skopeo copy --all --dest-tls-verify=false` of each image in turn, from `oci-archive:IMAGE.tar` (archive; skopeo unpacks each archive to a temporary folder on the same disk first) or from `oci:LAYOUT:TAG` (dir), into a fresh Debian docker-registry in plain HTTP on loopback (the appliance is in HTTPS). Server = docker-registry, client = skopeo (CPU summed, RSS max over the runs).\n")
	if o.analysis {
		w("- analysis (in this process, same tar, same disk; server CPU = this process's): *read + sha256 ×2, no write* reads the tar as the importer does (1 MiB bufio, sha256 of the whole stream) and hashes every blob with 32 KiB io.Copy as the registry's blob writer does, writing nothing: the CPU floor. *write + fsync each blob, serial* writes every blob to its own file (1 MiB writes) and fsyncs it before reading the next, no hashing at all: the floor of one fsync per blob, serially. *pipelined WriteBlob prototype* hands every blob in 1 MiB buffers (8 MiB in all) to internal/registry's WriteBlob running in its own goroutine (at most 2 blobs in flight), so that the stream's sha256 and the blob's run on two cores and one blob's commit (fsync) overlaps reading and hashing the next (see bench/import/analysis.go).\n")
	}
	if o.imgpkg != "" {
		w("- imgpkg: `imgpkg copy --tar bundle.tar --to-repo <docker-registry>/%s --registry-insecure` (Carvel imgpkg v0.43.1 from ../shared/tools), the same tar, into a fresh docker-registry in plain HTTP; verified by manifests and the last layer (imgpkg tags the images its own way). Server = docker-registry, client = imgpkg.\n", repoName)
	}
	w("- Every import was verified through the registry API: tags listed, every manifest fetched by digest and compared, the last layer pulled and hashed.\n")
	w("- iowait cores: average cores idle waiting for I/O during the run; other cores: CPU used by everything else (should be ~0).\n")
	w("\nGoals (on the medians):\n\n| goal | measured | target | met |\n|---|---:|---:|---|\n")
	for _, g := range rep.Goals {
		w("| %s | %.2f | %.2f | %s |\n", g.What, g.Measured, g.Target, benchkit.Verdict(g.Met))
	}
	w("\nAll runs:\n\n| measurement | s | MB/s | server VmRSS / VmHWM MiB | server CPU s | client CPU s | iowait cores | other cores |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		w("| %s | %.2f | %.0f | %s / %s | %s | %s | %.2f | %.2f |\n", r.Name, r.Seconds, r.MBps, benchkit.Dash(r.ServerRSSMiB), benchkit.Dash(r.ServerHWMMiB), benchkit.Dash(r.ServerCPU), benchkit.Dash(r.ClientCPU), r.IOWaitCores, r.OtherCores)
	}
	return b.String()
}
