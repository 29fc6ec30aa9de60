// Command bundle measures `appliance bundle create` of a set of images
// from a local Debian docker-registry 2.8 (plain HTTP, the upstream)
// against `skopeo copy` of the same images to OCI archives, one image at a
// time, from the same upstream. A second set of a quarter of the size
// shows whether memory follows the size. Each run starts from a fresh
// cache and output folder; the bundles are signed, and the first of each
// set is read back with `appliance bundle verify`.
//
// MB/s is the set's blob bytes (manifests, configs, layers) over the
// command's wall time; "+ sync" adds the time a sync() takes right after,
// the output the tool left dirty in the page cache. Memory is the VmHWM
// of the tool's process (for skopeo, the highest of its runs).
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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

type options struct {
	*benchkit.Flags
	skopeo, dockerRegistry  string
	sizeMiB, images, layers int
	parallel                int
}

// set is one set of images in the upstream, and its bundle spec.
type set struct {
	label string
	repo  string
	ds    *benchkit.ImageSet
	refs  []string // HOST/REPO:TAG
	spec  string
	bytes int64 // manifests, configs and layers
	blobs int
}

// run is one timed run.
type run struct {
	mbps, mbpsSync, hwmMiB float64
}

// bench is what every run needs.
type bench struct {
	o        options
	work     string
	upstream string // host:port
	env      []string
	key, pub string
	verified map[string]bool
}

func main() {
	o := options{Flags: benchkit.CommonFlags("bundle", 3, 90*time.Minute)}
	flag.StringVar(&o.skopeo, "skopeo", "/usr/bin/skopeo", "skopeo binary")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary, the upstream")
	flag.IntVar(&o.sizeMiB, "size-mib", 2048, "layer bytes of the main set, MiB; the second set is a quarter (smoke: 64)")
	flag.IntVar(&o.images, "images", 4, "images per set (smoke: 2)")
	flag.IntVar(&o.layers, "layers", 2, "layers per image")
	flag.IntVar(&o.parallel, "parallel", 8, "appliance bundle create --parallel")
	o.Parse()
	if o.Smoke {
		o.sizeMiB, o.images = 64, 2
	}
	benchkit.Main("bundle", o.Timeout, func(ctx context.Context) error { return runBench(ctx, o) })
}

func runBench(ctx context.Context, o options) error {
	work, cleanup, err := benchkit.WorkDir("", "bundle-bench.", o.Keep)
	if err != nil {
		return err
	}
	defer cleanup()
	b := &bench{o: o, work: work, verified: map[string]bool{}}
	dockerConfig := filepath.Join(work, "docker-config") // empty: anonymous pulls, whatever ~/.docker holds
	if err := os.MkdirAll(dockerConfig, 0o750); err != nil {
		return err
	}
	b.env = append(benchkit.CleanEnv("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "TMPDIR"), "DOCKER_CONFIG="+dockerConfig)
	up, addr, err := benchkit.StartDockerRegistry(ctx, o.dockerRegistry, filepath.Join(work, "upstream"), benchkit.DockerRegistryOptions{Secret: "bundle-bench"})
	if err != nil {
		return err
	}
	defer up.Stop()
	b.upstream = addr
	b.key, b.pub = filepath.Join(work, "bench.key"), filepath.Join(work, "bench.pub")
	if out, err := exec.CommandContext(ctx, o.Appliance, "key", "generate", "--private", b.key, "--public", b.pub).CombinedOutput(); err != nil {
		return fmt.Errorf("appliance key generate: %w\n%s", err, out)
	}
	var sets []*set
	for i, mib := range []int{o.sizeMiB, o.sizeMiB / 4} {
		s, err := b.makeSet(ctx, i, mib)
		if err != nil {
			return err
		}
		sets = append(sets, s)
	}
	syscall.Sync()
	// One unreported run of each: a VM's first writes into untouched memory are slow.
	for _, tool := range []string{"appliance", "skopeo"} {
		if _, err := b.run(ctx, tool, sets[0]); err != nil {
			return fmt.Errorf("warm-up %s: %w", tool, err)
		}
	}
	tools := []string{"appliance", "skopeo"}
	runs := make([][]run, 2*len(sets))
	err = benchkit.Interleave(ctx, o.Rounds, len(runs), o.QuietWait, func(r, i int) error {
		tool, s := tools[i%2], sets[i/2]
		res, err := b.run(ctx, tool, s)
		if err != nil {
			return fmt.Errorf("%s (%s): %w", tool, s.label, err)
		}
		benchkit.Logf("round %d %s (%s): %.0f MB/s, %.0f with sync, %.1f MiB", r+1, tool, s.label, res.mbps, res.mbpsSync, res.hwmMiB)
		runs[i] = append(runs[i], res)
		return nil
	})
	if err != nil {
		return err
	}
	return b.report(ctx, sets, tools, runs)
}

// makeSet generates a set of about mib MiB of layers and pushes it.
func (b *bench) makeSet(ctx context.Context, i, mib int) (*set, error) {
	layerMiB := max(1, mib/(b.o.images*b.o.layers))
	ds, err := benchkit.WriteImageSet(ctx, filepath.Join(b.work, fmt.Sprint("set", i)), benchkit.ImageSetOptions{SizeMiB: layerMiB * b.o.images * b.o.layers,
		LayerMiB: layerMiB, LayersPerImage: b.o.layers, Seed: uint64(10 + i), NoTar: true}) //nolint:gosec // small
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	s := &set{label: fmt.Sprintf("%d MiB", layerMiB*b.o.images*b.o.layers), repo: fmt.Sprint("bench/set", i), ds: ds, bytes: ds.Payload}
	t := &benchkit.Target{Name: "upstream", Base: benchkit.MustURL("http://" + b.upstream)}
	if err := t.Push(ctx, s.repo, ds); err != nil {
		return nil, err
	}
	spec := fmt.Sprintf("name: bundle-bench-%d\nimages:\n", i)
	for _, img := range ds.Images {
		ref := b.upstream + "/" + s.repo + ":" + img.Tag
		s.refs = append(s.refs, ref)
		spec += "  - ref: " + ref + "\n"
		s.blobs += 2 + len(img.Layers)
	}
	s.spec = filepath.Join(b.work, fmt.Sprint("spec", i, ".yaml"))
	return s, os.WriteFile(s.spec, []byte(spec), 0o600)
}

// run times one tool on one set in a fresh folder, then the sync after.
func (b *bench) run(ctx context.Context, tool string, s *set) (run, error) {
	dir, err := os.MkdirTemp(b.work, tool)
	if err != nil {
		return run{}, err
	}
	defer func() { _ = os.RemoveAll(dir); syscall.Sync() }()
	var cmds []*exec.Cmd
	out := filepath.Join(dir, "bundle.tar")
	if tool == "appliance" {
		cmds = append(cmds, exec.CommandContext(ctx, b.o.Appliance, "bundle", "create", "-f", s.spec, "-o", out, "--cache", filepath.Join(dir, "cache"),
			"--insecure-registry", b.upstream, "--parallel", strconv.Itoa(b.o.parallel), "--key", b.key))
	} else {
		for k, ref := range s.refs {
			dest := "oci-archive:" + filepath.Join(dir, fmt.Sprint(k, ".tar")) + ":" + s.ds.Images[k].Tag
			cmds = append(cmds, exec.CommandContext(ctx, b.o.skopeo, "copy", "--src-tls-verify=false", "--quiet", "docker://"+ref, dest))
		}
	}
	res := run{}
	start := time.Now()
	for _, cmd := range cmds {
		cmd.Env = append(slices.Clone(b.env), "TMPDIR="+dir) // skopeo assembles an oci-archive in a folder under TMPDIR
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			return res, err
		}
		smp := benchkit.NewSampler(cmd.Process.Pid)
		err := cmd.Wait()
		_, hwm := smp.Stop()
		res.hwmMiB = max(res.hwmMiB, hwm)
		if err != nil {
			return res, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args[:3], " "), err, &log)
		}
	}
	secs := time.Since(start).Seconds()
	syscall.Sync()
	res.mbps, res.mbpsSync = float64(s.bytes)/secs/1e6, float64(s.bytes)/time.Since(start).Seconds()/1e6
	if tool == "appliance" && !b.verified[s.label] {
		if err := b.verify(ctx, out, s); err != nil {
			return res, err
		}
		b.verified[s.label] = true
	}
	return res, nil
}

// verify reads a bundle back: every blob, every byte, the signature.
func (b *bench) verify(ctx context.Context, path string, s *set) error {
	out, err := exec.CommandContext(ctx, b.o.Appliance, "bundle", "verify", "--json", "--key", b.pub, path).Output()
	if err != nil {
		return fmt.Errorf("appliance bundle verify: %w", err)
	}
	var sum struct {
		Blobs int   `json:"blobs"`
		Bytes int64 `json:"bytes"`
	}
	if err := json.Unmarshal(out, &sum); err != nil {
		return fmt.Errorf("appliance bundle verify: %w", err)
	}
	if sum.Blobs != s.blobs || sum.Bytes != s.bytes {
		return fmt.Errorf("appliance bundle verify: %d blobs of %d bytes, want %d of %d", sum.Blobs, sum.Bytes, s.blobs, s.bytes)
	}
	return nil
}

func (b *bench) report(ctx context.Context, sets []*set, tools []string, runs [][]run) error {
	med := func(i int, f func(run) float64) float64 {
		v := make([]float64, len(runs[i]))
		for k, r := range runs[i] {
			v[k] = f(r)
		}
		return benchkit.Median(v)
	}
	r := &benchkit.Report{Title: "Bundle create against skopeo → oci-archive",
		Method: fmt.Sprintf("`appliance bundle create --parallel %d` (signed, fresh cache) and `skopeo copy docker://… oci-archive:…` one image "+
			"at a time, of %d images × %d random layers from docker-registry 2.8 over plain HTTP on loopback; two sets, %d interleaved rounds, "+
			"medians, after one unreported run of each. MB/s is blob bytes over wall time; + sync includes a sync() right after.",
			b.o.parallel, b.o.images, b.o.layers, b.o.Rounds),
		Header: []string{"set", "tool", "MB/s", "+ sync MB/s", "× skopeo", "VmHWM MiB", "rounds MB/s"},
		Machine: benchkit.Machine(ctx, b.work, b.o.Appliance, map[string][]string{"skopeo": {b.o.skopeo, "--version"},
			"docker-registry": {b.o.dockerRegistry, "--version"}}),
		Command: benchkit.Reproduce("bundle"),
	}
	hwm := map[string]float64{}
	for i := range runs {
		tool, s := tools[i%2], sets[i/2]
		mbps := med(i, func(r run) float64 { return r.mbps })
		anchor := med(i-i%2+1, func(r run) float64 { return r.mbps })
		m := med(i, func(r run) float64 { return r.hwmMiB })
		hwm[fmt.Sprint(tool, i/2)] = m
		benchkit.PrintResult("bundle", "tool", tool, "size_mib", strings.TrimSuffix(s.label, " MiB"), "mbps", mbps,
			"mbps_sync", med(i, func(r run) float64 { return r.mbpsSync }), "ratio_skopeo", benchkit.Ratio(mbps, anchor), "vmhwm_mib", m, "rounds", len(runs[i]))
		rs := make([]float64, len(runs[i]))
		for k, x := range runs[i] {
			rs[k] = x.mbps
		}
		r.Row(s.label, tool, fmt.Sprintf("%.0f", mbps), fmt.Sprintf("%.0f", med(i, func(r run) float64 { return r.mbpsSync })),
			benchkit.Ratio(mbps, anchor), m, benchkit.Floats(rs, "%.0f"))
	}
	ratio := benchkit.Ratio(hwm["appliance0"], hwm["appliance1"])
	benchkit.PrintResult("bundle", "tool", "appliance", "memory_ratio_4x_size", ratio)
	r.Note("appliance memory at %s over %s: %.2f (goal: independent of the size); goal ≥ 2× skopeo", sets[0].label, sets[1].label, ratio)
	return r.Write(os.Stdout, b.o.Out)
}
