// Command promote measures `appliance promote --all` of the import
// benchmark's image set into a fresh Debian docker-registry 2.8 serving
// TLS, beside `skopeo sync --all --preserve-digests` of the same
// repository from the appliance (HTTPS, anonymous pull) into another fresh
// TLS docker-registry, the two taking turns round by round after one
// unreported run of each. The set is imported once with `appliance import
// --on-server`.
//
// MB/s is the set's blob bytes over the command's wall time. Memory is the
// VmHWM of the `appliance serve` process (reset before each run), the one
// that reads and sends the blobs. Every run is checked: the promotion's
// parity report (every tag the same, every byte pushed) and, for both
// tools, a HEAD of every tag and blob on the target.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
)

const repo = "bench/big"

var tools = []string{"appliance promote", "skopeo sync"}

type options struct {
	*benchkit.Flags
	skopeo, dockerRegistry                string
	sizeMiB, layerMiB, perImage, parallel int
}

// bench is the appliance holding the set, and the set.
type bench struct {
	o    options
	work string
	app  *benchkit.Target
	set  *benchkit.ImageSet
}

// run is one timed run.
type run struct {
	mbps, hwmMiB float64
}

func main() {
	o := options{Flags: benchkit.CommonFlags("promote", 3, time.Hour)}
	flag.StringVar(&o.skopeo, "skopeo", "/usr/bin/skopeo", "skopeo binary")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary")
	flag.IntVar(&o.sizeMiB, "size-mib", 2048, "layer bytes of the set, MiB (smoke: 64)")
	flag.IntVar(&o.layerMiB, "layer-mib", 64, "size of each layer, MiB (smoke: 16)")
	flag.IntVar(&o.perImage, "layers", 4, "layers per image (smoke: 2)")
	flag.IntVar(&o.parallel, "parallel", 0, "appliance promote --parallel (0: the command's default)")
	o.Parse()
	if o.Smoke {
		o.sizeMiB, o.layerMiB, o.perImage = 64, 16, 2
	}
	benchkit.Main("promote", o.Timeout, func(ctx context.Context) error { return runBench(ctx, o) })
}

func runBench(ctx context.Context, o options) error {
	work, cleanup, err := benchkit.WorkDir("", "promote-bench.", o.Keep)
	if err != nil {
		return err
	}
	defer cleanup()
	set, err := benchkit.WriteImageSet(ctx, filepath.Join(work, "data"), benchkit.ImageSetOptions{SizeMiB: o.sizeMiB, LayerMiB: o.layerMiB,
		LayersPerImage: o.perImage, Seed: 1, Repo: repo})
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	app, err := benchkit.StartApplianceTarget(ctx, "appliance", o.Appliance, filepath.Join(work, "appliance"), "--log-level", "warn")
	if err != nil {
		return err
	}
	defer app.Proc.Stop()
	b := &bench{o: o, work: work, app: app, set: set}
	if out, err := b.cli(ctx, "import", "--on-server", "--to-repo", repo, set.ImgpkgTar); err != nil {
		return fmt.Errorf("appliance import: %w\n%s", err, out)
	}
	_ = os.RemoveAll(set.Layout) // the appliance's storage is what both tools read
	_ = os.Remove(set.ImgpkgTar)
	syscall.Sync()
	for i := range tools { // one unreported run of each
		if _, err := b.run(ctx, i); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	runs := make([][]run, len(tools))
	err = benchkit.Interleave(ctx, o.Rounds, len(tools), o.QuietWait, func(r, i int) error {
		res, err := b.run(ctx, i)
		if err != nil {
			return err
		}
		benchkit.Logf("round %d %s: %.0f MB/s, appliance %.1f MiB", r+1, tools[i], res.mbps, res.hwmMiB)
		runs[i] = append(runs[i], res)
		return nil
	})
	if err != nil {
		return err
	}
	return b.report(ctx, runs)
}

// cli runs the appliance's command line as admin and returns its output.
func (b *bench) cli(ctx context.Context, args ...string) ([]byte, error) {
	cmd := b.app.Appliance.Command(ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// run times tool i into a fresh TLS docker-registry and checks the result.
func (b *bench) run(ctx context.Context, i int) (run, error) {
	dir := filepath.Join(b.work, "target")
	defer func() { _ = os.RemoveAll(dir); syscall.Sync() }()
	t, err := benchkit.StartDockerRegistryTLS(ctx, "target", b.o.dockerRegistry, dir)
	if err != nil {
		return run{}, err
	}
	defer t.Proc.Stop()
	pid := b.app.Proc.PID()
	_ = benchkit.ResetPeak(pid)
	smp := benchkit.NewSampler(pid)
	start := time.Now()
	if i == 0 {
		err = b.promote(ctx, t)
	} else {
		err = b.skopeoSync(ctx, t, dir)
	}
	secs := time.Since(start).Seconds()
	rss, hwm := smp.Stop()
	if err != nil {
		return run{}, fmt.Errorf("%s: %w", tools[i], err)
	}
	hc := t.Client(1)
	defer hc.CloseIdleConnections()
	if _, _, err := benchkit.CheckImageSet(ctx, hc, t.Base, repo, b.set); err != nil {
		return run{}, fmt.Errorf("%s: check the target: %w", tools[i], err)
	}
	return run{mbps: float64(b.set.BlobBytes()) / secs / 1e6, hwmMiB: max(rss, hwm)}, nil
}

// promote runs appliance promote --all into t and checks its parity report.
func (b *bench) promote(ctx context.Context, t *benchkit.Target) error {
	args := []string{"promote", "--target", t.Base.String(), "--target-ca", t.CAFile, "--all", "--json"}
	if b.o.parallel > 0 {
		args = append(args, "--parallel", strconv.Itoa(b.o.parallel))
	}
	cmd := b.app.Appliance.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w\n%s%s", err, &stdout, &stderr)
	}
	var rec promote.Promotion
	if err := json.Unmarshal(stdout.Bytes(), &rec); err != nil {
		return fmt.Errorf("promote --json: %w", err)
	}
	if rec.State != promote.StateSucceeded || rec.Parity == nil || !rec.Parity.OK {
		return fmt.Errorf("promotion %s: %s %s", rec.ID, rec.State, rec.Error)
	}
	if rec.Progress.BytesDone != b.set.BlobBytes() {
		return fmt.Errorf("promotion %s pushed %d bytes, the set has %d", rec.ID, rec.Progress.BytesDone, b.set.BlobBytes())
	}
	for _, rp := range rec.Parity.Repositories {
		for _, tp := range rp.Tags {
			if tp.Status != promote.ParitySame {
				return fmt.Errorf("promotion %s: parity shows %s:%s %s", rec.ID, rp.Repository, tp.Tag, tp.Status)
			}
		}
	}
	return nil
}

// skopeoSync runs skopeo sync of the repository from the appliance into t.
func (b *bench) skopeoSync(ctx context.Context, t *benchkit.Target, dir string) error {
	srcCA, destCA, tmp := filepath.Join(dir, "src-ca"), filepath.Join(dir, "dest-ca"), filepath.Join(dir, "tmp")
	for _, c := range [][2]string{{srcCA, b.app.CAFile}, {destCA, t.CAFile}} {
		pem, err := os.ReadFile(c[1])
		if err == nil {
			err = os.MkdirAll(c[0], 0o750)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(c[0], "ca.crt"), pem, 0o600)
		}
		if err != nil {
			return err
		}
	}
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return err
	}
	// Without --scoped, skopeo puts HOST/bench/big's tags under DEST/big:
	// DEST is the target's bench.
	cmd := exec.CommandContext(ctx, b.o.skopeo, "--insecure-policy", "sync", "--all", "--preserve-digests", "--src", "docker", "--dest", "docker",
		"--src-cert-dir", srcCA, "--dest-cert-dir", destCA, "--src-no-creds", "--dest-no-creds",
		b.app.Base.Host+"/"+repo, t.Base.Host+"/"+strings.SplitN(repo, "/", 2)[0])
	cmd.Env = append(benchkit.CleanEnv(), "TMPDIR="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}

func (b *bench) report(ctx context.Context, runs [][]run) error {
	med := func(i int, f func(run) float64) float64 {
		v := make([]float64, len(runs[i]))
		for k, r := range runs[i] {
			v[k] = f(r)
		}
		return benchkit.Median(v)
	}
	r := &benchkit.Report{Title: "Promote against skopeo sync",
		Method: fmt.Sprintf("`appliance promote --all` of %d images (%d blob bytes) into a fresh docker-registry 2.8 over TLS, against "+
			"`skopeo sync --all --preserve-digests` of the same repository from the appliance into another; %d interleaved rounds after one "+
			"unreported run of each, medians. Memory is the appliance server's VmHWM, reset before each run.", len(b.set.Images), b.set.BlobBytes(), b.o.Rounds),
		Header: []string{"tool", "MB/s (median)", "× skopeo sync", "appliance VmHWM MiB", "rounds MB/s"},
		Machine: benchkit.Machine(ctx, b.work, b.o.Appliance, map[string][]string{"skopeo": {b.o.skopeo, "--version"},
			"docker-registry": {b.o.dockerRegistry, "--version"}}),
		Command: benchkit.Reproduce("promote"),
	}
	anchor := med(1, func(r run) float64 { return r.mbps })
	for i, tool := range tools {
		mbps, hwm := med(i, func(r run) float64 { return r.mbps }), med(i, func(r run) float64 { return r.hwmMiB })
		benchkit.PrintResult("promote", "tool", strings.ReplaceAll(tool, " ", "_"), "size_mib", b.o.sizeMiB, "mbps", mbps,
			"ratio_skopeo", benchkit.Ratio(mbps, anchor), "appliance_vmhwm_mib", hwm, "rounds", len(runs[i]))
		rs := make([]float64, len(runs[i]))
		for k, x := range runs[i] {
			rs[k] = x.mbps
		}
		r.Row(tool, fmt.Sprintf("%.0f", mbps), benchkit.Ratio(mbps, anchor), hwm, benchkit.Floats(rs, "%.0f"))
	}
	r.Note("goals: ≥ 1.5× skopeo sync; appliance memory < 150 MiB")
	return r.Write(os.Stdout, b.o.Out)
}
