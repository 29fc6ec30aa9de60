// Command load measures the appliance under load: -pullers concurrent
// anonymous pullers of a public multi-layer image, in four kinds (HTTP/2
// or HTTP/1.1, each with an anonymous token as crane and skopeo get one,
// or with no Authorization as containerd's first request), pull whole
// images for -duration, verifying every blob's sha256 and the manifest's
// digest, while `appliance import` uploads the import benchmark's imgpkg
// tar. The import runs once alone first, in a fresh appliance: the anchor.
// A lone client in a process of its own GETs the manifest every 250 ms:
// the pullers' own latencies include their process's scheduling.
//
// The goal is zero failed pulls with every digest verified; the figures
// are the pulls' aggregate MB/s, the lone client's manifest latencies, the
// import's MB/s under load against alone, and the appliance's VmHWM.
package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

const (
	pullProject = "load"
	pullRepo    = pullProject + "/multi"
	pullTag     = "v1"
	importRepo  = "bench/big"
	probeEvery  = 250 * time.Millisecond
)

type options struct {
	*benchkit.Flags
	pullers, maxPulls                           int
	duration, importAfter, pullTimeout          time.Duration
	sizeMiB, layerMiB, perImage, minMiB, maxMiB int
}

// kind is one kind of puller.
type kind struct {
	name         string
	http2, token bool
}

var kinds = []kind{{"h2-token", true, true}, {"h2-none", true, false}, {"h1-token", false, true}, {"h1-none", false, false}}

type bench struct {
	o     options
	work  string
	image *benchkit.ImageSet
	set   *benchkit.ImageSet
}

func main() {
	o := options{Flags: benchkit.CommonFlags("load", 1, 30*time.Minute)}
	var probeBase, probeCA, probeDigest string
	flag.IntVar(&o.pullers, "pullers", 200, "concurrent anonymous pullers (smoke: 20)")
	flag.IntVar(&o.maxPulls, "max-pulls", 1000, "most pulls one puller makes")
	flag.DurationVar(&o.duration, "duration", time.Minute, "how long pulls are started (smoke: 10s)")
	flag.DurationVar(&o.importAfter, "import-after", 5*time.Second, "when the import starts, after the pullers (smoke: 2s)")
	flag.DurationVar(&o.pullTimeout, "pull-timeout", 3*time.Minute, "longest a pull may take")
	flag.IntVar(&o.minMiB, "image-min-mib", 4, "the pulled image's smallest of 8 layers, MiB; the others evenly up to -image-max-mib (smoke: 1)")
	flag.IntVar(&o.maxMiB, "image-max-mib", 16, "its largest layer, MiB (smoke: 4)")
	flag.IntVar(&o.sizeMiB, "size-mib", 2048, "layer bytes of the imported tar, MiB (smoke: 128)")
	flag.IntVar(&o.layerMiB, "layer-mib", 64, "size of each imported layer, MiB (smoke: 32)")
	flag.IntVar(&o.perImage, "layers", 4, "layers per imported image (smoke: 2)")
	flag.StringVar(&probeBase, "probe-child", "", "internal: run as the lone client of this registry URL")
	flag.StringVar(&probeCA, "probe-ca", "", "internal: the lone client's CA file")
	flag.StringVar(&probeDigest, "probe-digest", "", "internal: the manifest digest the lone client checks")
	o.Parse()
	if probeBase != "" {
		benchkit.Main("load -probe-child", o.Timeout, func(context.Context) error { return probeChild(probeBase, probeCA, probeDigest, o) })
		return
	}
	if o.Smoke {
		o.pullers, o.duration, o.importAfter, o.minMiB, o.maxMiB = 20, 10*time.Second, 2*time.Second, 1, 4
		o.sizeMiB, o.layerMiB, o.perImage = 128, 32, 2
	}
	benchkit.Main("load", o.Timeout, func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	work, cleanup, err := benchkit.WorkDir("", "load-bench.", o.Keep)
	if err != nil {
		return err
	}
	defer cleanup()
	b := &bench{o: o, work: work}
	sizes := make([]int64, 8) // from -image-min-mib to -image-max-mib, evenly
	for i := range sizes {
		sizes[i] = int64((float64(o.minMiB) + float64(o.maxMiB-o.minMiB)*float64(i)/7) * (1 << 20))
	}
	if b.image, err = benchkit.WriteImage(ctx, filepath.Join(work, "image"), pullTag, sizes, 1); err != nil {
		return fmt.Errorf("generate the image: %w", err)
	}
	if b.set, err = benchkit.WriteImageSet(ctx, filepath.Join(work, "set"), benchkit.ImageSetOptions{SizeMiB: o.sizeMiB, LayerMiB: o.layerMiB,
		LayersPerImage: o.perImage, Seed: 1, Repo: importRepo}); err != nil {
		return fmt.Errorf("generate the import: %w", err)
	}
	syscall.Sync()
	var r results
	for round := range o.Rounds {
		benchkit.WaitQuiet(ctx, o.QuietWait)
		alone, err := b.importAlone(ctx)
		if err != nil {
			return fmt.Errorf("import alone: %w", err)
		}
		benchkit.WaitQuiet(ctx, o.QuietWait)
		l, err := b.underLoad(ctx, fmt.Sprint("loaded-", round))
		if err != nil {
			return err
		}
		l.aloneMBps = alone
		r = append(r, l)
	}
	return b.report(ctx, r)
}

// start starts a fresh appliance in work/name, makes the pull project
// public and pushes the image into it.
func (b *bench) start(ctx context.Context, name string) (*benchkit.Target, error) {
	t, err := benchkit.StartApplianceTarget(ctx, "appliance", b.o.Appliance, filepath.Join(b.work, name), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd := t.Appliance.Command(ctx, "project", "set", pullProject, "--public")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Proc.Stop()
		return nil, fmt.Errorf("appliance project set %s --public: %w\n%s", pullProject, err, &out)
	}
	if err := t.Push(ctx, pullRepo, b.image); err != nil {
		t.Proc.Stop()
		return nil, err
	}
	return t, nil
}

// importAlone runs the import in a fresh appliance, nothing else running.
func (b *bench) importAlone(ctx context.Context) (float64, error) {
	t, err := b.start(ctx, "alone")
	if err != nil {
		return 0, err
	}
	defer func() { t.Proc.Stop(); _ = os.RemoveAll(filepath.Join(b.work, "alone")); syscall.Sync() }()
	secs, err := b.runImport(ctx, t)
	if err != nil {
		return 0, err
	}
	benchkit.Logf("import alone: %.0f MB/s", float64(b.set.TarSize)/secs/1e6)
	return float64(b.set.TarSize) / secs / 1e6, nil
}

// runImport uploads the imgpkg tar with `appliance import` and checks that
// every image landed; it returns the import's seconds.
func (b *bench) runImport(ctx context.Context, t *benchkit.Target) (float64, error) {
	var out bytes.Buffer
	cmd := t.Appliance.Command(ctx, "import", "--to-repo", importRepo, b.set.ImgpkgTar)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("appliance import: %w\n%s", err, &out)
	}
	secs := time.Since(start).Seconds()
	hc := t.Client(1)
	defer hc.CloseIdleConnections()
	if _, _, err := benchkit.CheckImageSet(ctx, hc, t.Base, importRepo, b.set); err != nil {
		return 0, fmt.Errorf("check the import: %w", err)
	}
	return secs, nil
}

// loaded is what one run under load measured.
type loaded struct {
	pulls, failed, digests, wantDigests int
	mbps, importMBps, aloneMBps, hwmMiB float64
	probe                               benchkit.Quantiles
	probeFailed                         int
	firstErr                            string
}

type results []loaded

// underLoad runs the pullers for the window with the import started
// -import-after into it, in a fresh appliance.
func (b *bench) underLoad(ctx context.Context, name string) (loaded, error) {
	o := b.o
	t, err := b.start(ctx, name)
	if err != nil {
		return loaded{}, err
	}
	defer func() { t.Proc.Stop(); _ = os.RemoveAll(filepath.Join(b.work, name)); syscall.Sync() }()
	want := b.image.Images[0].ManifestDigest
	pullers := make([]*benchkit.Puller, o.pullers)
	for i := range pullers {
		k := kinds[i%len(kinds)]
		pullers[i] = benchkit.NewPuller(t.Base, benchkit.PullOptions{Roots: t.Roots, HTTP2: k.http2, Token: k.token, Timeout: o.pullTimeout})
		defer pullers[i].Close()
	}
	for i := range kinds { // one pull of each kind alone: a failure here is a setup error
		if p := pullers[i].Pull(ctx, pullRepo, pullTag, want); p.Err != nil {
			return loaded{}, fmt.Errorf("a single pull (%s) failed: %w", kinds[i].name, p.Err)
		}
	}
	pid := t.Proc.PID()
	_ = benchkit.ResetPeak(pid)
	smp := benchkit.NewSampler(pid)
	stopProber, err := startProber(ctx, t, o, want)
	if err != nil {
		return loaded{}, err
	}
	importDone := make(chan error, 1)
	var importSecs float64
	go func() {
		select {
		case <-time.After(o.importAfter):
		case <-ctx.Done():
			importDone <- ctx.Err()
			return
		}
		var err error
		importSecs, err = b.runImport(ctx, t)
		importDone <- err
	}()
	benchkit.Logf("load: %d pullers for %s; the import starts after %s", o.pullers, o.duration, o.importAfter)
	start := time.Now()
	pulls := make([][]benchkit.Pull, o.pullers)
	benchkit.Repeat(ctx, o.pullers, o.maxPulls, start.Add(o.duration), func(ctx context.Context, w, _ int) {
		pulls[w] = append(pulls[w], pullers[w].Pull(ctx, pullRepo, pullTag, want))
	})
	probes, err := stopProber()
	if err != nil {
		return loaded{}, err
	}
	if err := <-importDone; err != nil {
		return loaded{}, fmt.Errorf("import under load: %w", err)
	}
	l := loaded{importMBps: float64(b.set.TarSize) / importSecs / 1e6}
	_, l.hwmMiB = smp.Stop()
	var bytes int64
	last := start
	for _, ps := range pulls {
		for _, p := range ps {
			l.pulls++
			l.digests += p.Digests
			bytes += p.Bytes
			if end := p.Start.Add(p.Total); end.After(last) {
				last = end
			}
			if p.Err != nil {
				l.failed++
				l.firstErr = p.Err.Error()
				continue
			}
			l.wantDigests += 2 + len(b.image.Images[0].Layers)
		}
	}
	l.mbps = float64(bytes) / last.Sub(start).Seconds() / 1e6
	var lat []time.Duration
	for _, p := range probes {
		if p.Err != "" {
			l.probeFailed++
		} else {
			lat = append(lat, p.Took)
		}
	}
	l.probe = benchkit.QuantilesOf(lat)
	benchkit.Logf("load: %d pulls, %d failed, %.0f MB/s; import %.0f MB/s under load", l.pulls, l.failed, l.mbps, l.importMBps)
	return l, nil
}

// startProber starts the lone client: this program again, in a process of
// its own (so that it waits neither behind the pullers in this process's
// scheduler nor for their CPU beyond the kernel's fair share). stop
// returns its GETs.
func startProber(ctx context.Context, t *benchkit.Target, o options, want string) (stop func() ([]benchkit.Probe, error), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-probe-child", t.Base.String(), "-probe-ca", t.CAFile, "-probe-digest", want,
		"-timeout", (o.duration + o.pullTimeout + time.Minute).String(), "-pull-timeout", o.pullTimeout.String())
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() ([]benchkit.Probe, error) {
		_ = in.Close() // the child's cue to stop
		if err := cmd.Wait(); err != nil {
			return nil, fmt.Errorf("the lone client: %w\n%s", err, &stderr)
		}
		var probes []benchkit.Probe
		if err := json.Unmarshal(stdout.Bytes(), &probes); err != nil {
			return nil, fmt.Errorf("the lone client: %w", err)
		}
		return probes, nil
	}, nil
}

// probeChild is the lone client's process: an HTTP/2 puller without
// Authorization that GETs the manifest every 250 ms until its standard
// input closes, then prints the GETs as JSON.
func probeChild(base, caFile, want string, o options) error {
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
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	p := benchkit.NewPuller(u, benchkit.PullOptions{Roots: roots, HTTP2: true, Timeout: o.pullTimeout})
	defer p.Close()
	probes := benchkit.ProbeManifest(context.Background(), p, pullRepo, pullTag, want, probeEvery, int(o.Timeout/probeEvery)+1, stop)
	return json.NewEncoder(os.Stdout).Encode(probes)
}

func (b *bench) report(ctx context.Context, rs results) error {
	r := &benchkit.Report{Title: "Load: concurrent anonymous pulls during an import",
		Method: fmt.Sprintf("%d anonymous pullers (HTTP/2 and HTTP/1.1, with an anonymous token or no Authorization) pull an "+
			"8-layer public image (%.1f MiB) whole for %s, verifying every digest, while `appliance import` uploads a %d MiB imgpkg tar started %s in. "+
			"The import alone in a fresh appliance is the anchor. The manifest latency is a lone HTTP/2 client's, in its own process, every %s.",
			b.o.pullers, benchkit.MiB(b.image.BlobBytes()), b.o.duration, b.o.sizeMiB, b.o.importAfter, probeEvery),
		Header:  []string{"round", "pulls", "failed", "digests verified", "pull MB/s", "manifest p50 / p99 ms", "import MB/s (alone)", "VmHWM MiB"},
		Machine: benchkit.Machine(ctx, b.work, b.o.Appliance, nil),
		Command: benchkit.Reproduce("load"),
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	for i, l := range rs {
		benchkit.PrintResult("load", "round", i+1, "pullers", b.o.pullers, "pulls", l.pulls, "failed", l.failed, "digests", l.digests,
			"digests_want", l.wantDigests, "pull_mbps", l.mbps, "manifest_p50_ms", ms(l.probe.P50), "manifest_p99_ms", ms(l.probe.P99),
			"probe_failed", l.probeFailed, "import_mbps", l.importMBps, "import_alone_mbps", l.aloneMBps, "vmhwm_mib", l.hwmMiB)
		r.Row(i+1, l.pulls, l.failed, fmt.Sprintf("%d / %d", l.digests, l.wantDigests), fmt.Sprintf("%.0f", l.mbps),
			fmt.Sprintf("%.1f / %.1f", ms(l.probe.P50), ms(l.probe.P99)), fmt.Sprintf("%.0f (%.0f)", l.importMBps, l.aloneMBps), l.hwmMiB)
		if l.firstErr != "" {
			r.Note("round %d, a failed pull: %s", i+1, l.firstErr)
		}
	}
	r.Note("goal: zero failed pulls, every digest verified")
	return r.Write(os.Stdout, b.o.Out)
}
