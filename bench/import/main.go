// Command import measures `appliance import` of an imgpkg tar of random,
// incompressible layers into a fresh appliance, two ways: upload (the CLI
// streams the file over HTTPS) and --on-server (the file is on the
// appliance's disk). In the same interleaved rounds, on the same disk, it
// times the two anchors: `imgpkg copy --tar … --to-repo` of the same tar
// into a fresh Debian docker-registry 2.8 serving TLS (the real tool,
// ../shared/tools/imgpkg), and `dd bs=4M conv=fsync` of the same bytes;
// and, for issue 3's goal, `skopeo copy --all` of the same images from an
// OCI layout into a fresh docker-registry serving TLS, one image at a time.
//
// MB/s is 10⁶ bytes of the tar per second of wall time. Memory is the
// VmHWM of the appliance server and of the CLI. Every import is checked
// through the registry API (every tag's digest, every blob's size).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

const repo = "bench/import"

// contestants, in the order of the first round.
var contestants = []string{"upload", "on-server", "imgpkg", "skopeo", "dd"}

type options struct {
	*benchkit.Flags
	imgpkg, skopeo, dockerRegistry string
	sizeMiB, layerMiB, perImage    int
}

// run is one timed run of one contestant.
type run struct {
	mbps, secs, serverMiB, clientMiB, serverCPU float64
}

func main() {
	o := options{Flags: benchkit.CommonFlags("import", 3, time.Hour)}
	flag.StringVar(&o.imgpkg, "imgpkg", "../shared/tools/imgpkg", "imgpkg binary (\"\": skip the imgpkg anchor)")
	flag.StringVar(&o.skopeo, "skopeo", "/usr/bin/skopeo", "skopeo binary (\"\": skip the skopeo anchor)")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary")
	flag.IntVar(&o.sizeMiB, "size-mib", 2048, "layer bytes in the tar, MiB (smoke: 64)")
	flag.IntVar(&o.layerMiB, "layer-mib", 64, "size of each layer, MiB (smoke: 16)")
	flag.IntVar(&o.perImage, "layers", 4, "layers per image (smoke: 2)")
	o.Parse()
	if o.Smoke {
		o.sizeMiB, o.layerMiB, o.perImage = 64, 16, 2
	}
	benchkit.Main("import", o.Timeout, func(ctx context.Context) error { return bench(ctx, o) })
}

func bench(ctx context.Context, o options) error {
	var names []string
	for _, n := range contestants {
		tool := map[string]string{"imgpkg": o.imgpkg, "skopeo": o.skopeo}[n]
		if tool == "" && (n == "imgpkg" || n == "skopeo") {
			continue
		}
		if _, err := exec.LookPath(tool); tool != "" && err != nil {
			return fmt.Errorf("%s, an anchor: %w (-%s PATH, or -%s '' to leave it out)", n, err, n, n)
		}
		names = append(names, n)
	}
	work, cleanup, err := benchkit.WorkDir("", "import-bench.", o.Keep)
	if err != nil {
		return err
	}
	defer cleanup()
	ds, err := benchkit.WriteImageSet(ctx, work, benchkit.ImageSetOptions{SizeMiB: o.sizeMiB, LayerMiB: o.layerMiB,
		LayersPerImage: o.perImage, Seed: 1, Repo: repo})
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	benchkit.Logf("%d images, %d layers, imgpkg tar of %.0f MiB", len(ds.Images), ds.LayerCount, benchkit.MiB(ds.TarSize))
	// One unreported dd first: a VM's first writes into untouched memory are slow.
	if _, err := dd(ctx, ds, work); err != nil {
		return err
	}
	runs := make([][]run, len(names))
	err = benchkit.Interleave(ctx, o.Rounds, len(names), o.QuietWait, func(r, i int) error {
		syscall.Sync()
		var res run
		var err error
		switch names[i] {
		case "dd":
			res, err = dd(ctx, ds, work)
		case "imgpkg", "skopeo":
			res, err = anchor(ctx, o, ds, work, names[i])
		default:
			res, err = appliance(ctx, o, ds, work, names[i] == "on-server")
		}
		if err != nil {
			return fmt.Errorf("%s: %w", names[i], err)
		}
		benchkit.Logf("round %d %s: %.0f MB/s", r+1, names[i], res.mbps)
		runs[i] = append(runs[i], res)
		return nil
	})
	if err != nil {
		return err
	}
	return report(ctx, o, work, ds, names, runs)
}

// dd copies the tar with dd bs=4M conv=fsync: the disk's own speed.
func dd(ctx context.Context, ds *benchkit.ImageSet, work string) (run, error) {
	out := filepath.Join(work, "dd.out")
	defer os.Remove(out)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "dd", "if="+ds.ImgpkgTar, "of="+out, "bs=4M", "conv=fsync")
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return run{}, fmt.Errorf("dd: %w: %s", err, &stderr)
	}
	return run{mbps: float64(ds.TarSize) / time.Since(start).Seconds() / 1e6}, nil
}

// appliance imports the tar into a fresh appliance: uploaded by the CLI,
// or with --on-server.
func appliance(ctx context.Context, o options, ds *benchkit.ImageSet, work string, onServer bool) (run, error) {
	dir := filepath.Join(work, "appliance")
	defer os.RemoveAll(dir)
	t, err := benchkit.StartApplianceTarget(ctx, "appliance", o.Appliance, dir, "--log-level", "warn")
	if err != nil {
		return run{}, err
	}
	defer t.Proc.Stop()
	args := []string{"import", "--to-repo", repo}
	if onServer {
		args = append(args, "--on-server")
	}
	cmd := t.Appliance.Command(ctx, append(args, ds.ImgpkgTar)...)
	res, err := timed(cmd, t, ds.TarSize)
	if err != nil {
		return res, fmt.Errorf("%w\nserver log:\n%s", err, t.Proc.Tail())
	}
	return res, check(ctx, t, ds, false)
}

// anchor copies the set into a fresh docker-registry serving TLS with
// imgpkg (the tar) or skopeo (the OCI layout, image by image).
func anchor(ctx context.Context, o options, ds *benchkit.ImageSet, work, tool string) (run, error) {
	dir := filepath.Join(work, "docker-registry")
	defer os.RemoveAll(dir)
	t, err := benchkit.StartDockerRegistryTLS(ctx, "docker-registry", o.dockerRegistry, dir)
	if err != nil {
		return run{}, err
	}
	defer t.Proc.Stop()
	home := filepath.Join(dir, "home") // imgpkg keeps nothing between runs
	if err := os.MkdirAll(home, 0o750); err != nil {
		return run{}, err
	}
	if tool == "skopeo" {
		return skopeo(ctx, o, ds, t, home)
	}
	cmd := exec.CommandContext(ctx, o.imgpkg, "copy", "--tar", ds.ImgpkgTar, "--to-repo", t.Base.Host+"/"+repo,
		"--registry-ca-cert-path", t.CAFile)
	cmd.Env = append(benchkit.CleanEnv(), "HOME="+home, "TMPDIR="+home)
	res, err := timed(cmd, t, ds.TarSize)
	if err != nil {
		return res, err
	}
	return res, check(ctx, t, ds, true) // imgpkg tags the images its own way
}

// skopeo copies the layout's images into t one at a time; MB/s counts the
// tar's bytes, as for the others.
func skopeo(ctx context.Context, o options, ds *benchkit.ImageSet, t *benchkit.Target, home string) (run, error) {
	certDir := filepath.Join(home, "certs")
	pem, err := os.ReadFile(t.CAFile)
	if err == nil {
		err = os.MkdirAll(certDir, 0o750)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(certDir, "ca.crt"), pem, 0o600)
	}
	if err != nil {
		return run{}, err
	}
	var total run
	for _, img := range ds.Images {
		cmd := exec.CommandContext(ctx, o.skopeo, "--insecure-policy", "copy", "--all", "--quiet", "--dest-cert-dir", certDir,
			"oci:"+ds.Layout+":"+img.Tag, "docker://"+t.Base.Host+"/"+repo+":"+img.Tag)
		cmd.Env = append(benchkit.CleanEnv(), "HOME="+home, "TMPDIR="+home)
		res, err := timed(cmd, t, ds.TarSize)
		if err != nil {
			return res, err
		}
		total.secs += res.secs
		total.serverCPU += res.serverCPU
		total.serverMiB, total.clientMiB = max(total.serverMiB, res.serverMiB), max(total.clientMiB, res.clientMiB)
	}
	total.mbps = float64(ds.TarSize) / total.secs / 1e6
	return total, check(ctx, t, ds, false)
}

// timed runs cmd, a client of t, and measures it.
func timed(cmd *exec.Cmd, t *benchkit.Target, size int64) (run, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	pid := t.Proc.PID()
	_ = benchkit.ResetPeak(pid)
	server := benchkit.NewSampler(pid)
	w := benchkit.BeginWindow(pid)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		server.Stop()
		return run{}, err
	}
	client := benchkit.NewSampler(cmd.Process.Pid)
	err := cmd.Wait()
	secs := time.Since(start).Seconds()
	cpu, _, _, _ := w.End()
	_, clientHWM := client.Stop()
	_, serverHWM := server.Stop()
	if err != nil {
		return run{}, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args[:2], " "), err, &out)
	}
	return run{mbps: float64(size) / secs / 1e6, secs: secs, serverMiB: serverHWM, clientMiB: clientHWM, serverCPU: cpu}, nil
}

// check proves every image arrived: each manifest (by tag, or by digest)
// and each blob with its size.
func check(ctx context.Context, t *benchkit.Target, ds *benchkit.ImageSet, byDigest bool) error {
	hc := t.Client(1)
	defer hc.CloseIdleConnections()
	authz, err := t.Token(ctx, hc, "repository:"+repo+":pull", true)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	check := benchkit.CheckImageSet
	if byDigest {
		check = benchkit.CheckImageSetByDigest
	}
	if _, _, err := check(ctx, benchkit.WithAuthorization(hc, authz), t.Base, repo, ds); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	return nil
}

func report(ctx context.Context, o options, work string, ds *benchkit.ImageSet, names []string, runs [][]run) error {
	med := func(i int, f func(run) float64) float64 {
		v := make([]float64, len(runs[i]))
		for k, r := range runs[i] {
			v[k] = f(r)
		}
		return benchkit.Median(v)
	}
	rate := map[string]float64{}
	for i, n := range names {
		rate[n] = med(i, func(r run) float64 { return r.mbps })
	}
	r := &benchkit.Report{Title: "Import: appliance import against imgpkg copy and dd conv=fsync",
		Method: fmt.Sprintf("An imgpkg tar of %d images × %d layers of %d MiB of random data (%d bytes), each run into a fresh server, "+
			"%d interleaved rounds, medians. upload: the CLI streams the tar over HTTPS; on-server: `--on-server`. imgpkg: "+
			"`imgpkg copy --tar … --to-repo` into docker-registry 2.8 serving TLS; skopeo: `skopeo copy --all` of each image from an OCI layout "+
			"into the same. dd: `dd bs=4M conv=fsync` of the tar on the same disk. "+
			"Memory is VmHWM; CPU is the server's.", len(ds.Images), o.perImage, o.layerMiB, ds.TarSize, o.Rounds),
		Header: []string{"run", "MB/s (median)", "× dd", "× imgpkg", "× skopeo", "server MiB", "client MiB", "server CPU s", "rounds MB/s"},
		Machine: benchkit.Machine(ctx, work, o.Appliance, map[string][]string{"imgpkg": {o.imgpkg, "version"},
			"skopeo": {o.skopeo, "--version"}, "docker-registry": {o.dockerRegistry, "--version"}}),
		Command: benchkit.Reproduce("import"),
	}
	if v := r.Machine["imgpkg"]; v != "" {
		r.Machine["imgpkg"], _, _ = strings.Cut(v, "\n")
	}
	for i, n := range names {
		mbps := rate[n]
		srv, cli := med(i, func(r run) float64 { return r.serverMiB }), med(i, func(r run) float64 { return r.clientMiB })
		cpu := med(i, func(r run) float64 { return r.serverCPU })
		benchkit.PrintResult("import", "run", n, "size_mib", o.sizeMiB, "mbps", mbps, "ratio_dd", benchkit.Ratio(mbps, rate["dd"]),
			"ratio_imgpkg", benchkit.Ratio(mbps, rate["imgpkg"]), "ratio_skopeo", benchkit.Ratio(mbps, rate["skopeo"]), "server_mib", srv, "client_mib", cli, "server_cpu_s", cpu, "rounds", len(runs[i]))
		rs := make([]float64, len(runs[i]))
		for k, x := range runs[i] {
			rs[k] = x.mbps
		}
		r.Row(n, fmt.Sprintf("%.0f", mbps), benchkit.Ratio(mbps, rate["dd"]), benchkit.Ratio(mbps, rate["imgpkg"]), benchkit.Ratio(mbps, rate["skopeo"]), srv, cli, cpu, benchkit.Floats(rs, "%.0f"))
	}
	r.Note("goals: upload ≥ 0.9× dd and ≥ 1.5× imgpkg (issue 15), ≥ 2× skopeo (issue 3); on-server ≥ 1.0× dd; appliance memory < 100 MiB whatever the size")
	return r.Write(os.Stdout, o.Out)
}
