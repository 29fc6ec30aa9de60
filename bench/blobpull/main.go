// Command blobpull measures blob pulls over TLS as the nodes that pull from
// the appliance make them: curl fetching one large layer over HTTP/1.1 and
// over HTTP/2, by 1 and by 8 concurrent clients, from the appliance and
// from Debian's docker-registry (distribution 2.8) serving TLS, the
// registries taking turns round by round. Optionally a second appliance
// binary (-baseline, an older build) takes its turn in the same rounds.
//
// A round is n curl processes started together, each pulling the whole
// blob to /dev/null; its figure is n × size over the time until the last
// one finished. Every curl must report the asked-for protocol and the
// blob's size. The appliance is pulled from with an anonymous pull token,
// as clients do; docker-registry runs without auth (which favours it).
// Peak memory is each server's VmHWM over the whole run, push included.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

const repo = "bench/blob"

type options struct {
	*benchkit.Flags
	baseline, dockerRegistry, profileDir string
	pprof                                *string // applianceprof's pprof base URL, once started
	blobMiB                              int
	clients                              []int
	protos                               []string
}

// cell is one (protocol, clients, target) figure, one value per round.
type cell struct {
	proto     string
	clients   int
	target    string
	mbps, cpu []float64
}

func main() {
	o := options{Flags: benchkit.CommonFlags("blobpull", 5, 30*time.Minute), pprof: new(string)}
	var clients, protos string
	flag.StringVar(&o.baseline, "baseline", "", "an older appliance binary to measure in the same rounds")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary")
	flag.IntVar(&o.blobMiB, "blob-mib", 256, "size of the blob in MiB (smoke: 16)")
	flag.StringVar(&clients, "clients", "1,8", "comma-separated numbers of concurrent clients")
	flag.StringVar(&protos, "protos", "1.1,2", "comma-separated HTTP versions: 1.1 and/or 2")
	flag.StringVar(&o.profileDir, "profile", "", "with -appliance built from bench/applianceprof: a CPU profile of the appliance per round into this folder")
	o.Parse()
	if o.Smoke {
		o.blobMiB = 16
	}
	var err error
	if o.protos, err = benchkit.SplitList(protos, "1.1", "2"); err == nil {
		o.clients, err = benchkit.Ints(clients, 1, 64)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "blobpull:", err)
		os.Exit(2)
	}
	benchkit.Main("blobpull", o.Timeout, func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	work, cleanup, err := benchkit.WorkDir("", "blobpull", o.Keep)
	if err != nil {
		return err
	}
	defer cleanup()
	benchkit.Logf("writing a %d MiB layer", o.blobMiB)
	img, err := benchkit.WriteImage(ctx, filepath.Join(work, "layout"), "v1", []int64{int64(o.blobMiB) << 20}, 7)
	if err != nil {
		return err
	}
	targets, err := start(ctx, o, work)
	defer benchkit.StopAll(targets)
	if err != nil {
		return err
	}
	samplers := map[string]*benchkit.Sampler{}
	for _, t := range targets {
		if err := t.Push(ctx, repo, img); err != nil {
			return err
		}
		samplers[t.Name] = benchkit.NewSampler(t.Proc.PID())
	}
	// Per number of clients, every (protocol, target) pair takes its turn
	// in each round, so HTTP/1.1 and HTTP/2 are measured side by side, as
	// the registries are.
	var cells []*cell
	for _, n := range o.clients {
		var row []*cell
		for _, proto := range o.protos {
			for _, t := range targets {
				row = append(row, &cell{proto: proto, clients: n, target: t.Name})
			}
		}
		cells = append(cells, row...)
		err := benchkit.Interleave(ctx, o.Rounds, len(row), o.QuietWait, func(r, i int) error {
			c, t := row[i], targets[i%len(targets)]
			name := fmt.Sprintf("blob-h%s-c%d-r%d", strings.ReplaceAll(c.proto, ".", ""), n, r+1)
			prof := *o.pprof
			if t.Name != "appliance" {
				prof = "" // only the appliance under test is profiled
			}
			if err := profile(ctx, prof, name); err != nil {
				return err
			}
			mbps, cpu, err := round(ctx, t, c.proto, n, img.Images[0].Layers[0])
			if perr := profile(ctx, prof, ""); err == nil {
				err = perr
			}
			if err != nil {
				return fmt.Errorf("%s HTTP/%s %d clients: %w", t.Name, c.proto, n, err)
			}
			c.mbps, c.cpu = append(c.mbps, mbps), append(c.cpu, cpu)
			benchkit.Logf("HTTP/%s %d clients round %d %s: %.0f MB/s, %.2f CPU s/GiB", c.proto, n, r+1, t.Name, mbps, cpu)
			return nil
		})
		if err != nil {
			return err
		}
	}
	mem := map[string]float64{}
	for name, s := range samplers {
		_, mem[name] = s.Stop()
	}
	return report(ctx, o, work, cells, mem)
}

// start runs the appliance, the baseline if any, and docker-registry.
func start(ctx context.Context, o options, work string) ([]*benchkit.Target, error) {
	var args []string
	if o.profileDir != "" {
		addr, err := benchkit.FreeAddr()
		if err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(o.profileDir)
		if err == nil {
			err = os.MkdirAll(abs, 0o750)
		}
		if err != nil {
			return nil, fmt.Errorf("-profile: %w", err)
		}
		args = []string{"--pprof-addr", addr, "--profile-dir", abs}
	}
	a, err := benchkit.StartApplianceTarget(ctx, "appliance", o.Appliance, filepath.Join(work, "appliance"), args...)
	if err != nil {
		return nil, err
	}
	targets := []*benchkit.Target{a}
	if len(args) > 0 {
		*o.pprof = "http://" + args[1]
	}
	if o.baseline != "" {
		b, err := benchkit.StartApplianceTarget(ctx, "baseline", o.baseline, filepath.Join(work, "baseline"))
		if err != nil {
			return targets, err
		}
		targets = append(targets, b)
	}
	d, err := benchkit.StartDockerRegistryTLS(ctx, "docker-registry", o.dockerRegistry, filepath.Join(work, "docker-registry"))
	if err != nil {
		return targets, err
	}
	return append(targets, d), nil
}

// round has n curl processes pull the layer from t at once over HTTP/proto.
// It returns the aggregate MB/s and t's CPU seconds per GiB pulled.
func round(ctx context.Context, t *benchkit.Target, proto string, n int, layer benchkit.Layer) (mbps, cpuPerGiB float64, err error) {
	hc := t.Client(1)
	authz, err := t.Token(ctx, hc, "repository:"+repo+":pull", false)
	hc.CloseIdleConnections()
	if err != nil {
		return 0, 0, fmt.Errorf("anonymous pull token: %w", err)
	}
	args := []string{"-sS", "--fail", "-o", "/dev/null", "--cacert", t.CAFile, map[string]string{"1.1": "--http1.1", "2": "--http2"}[proto],
		"--max-time", "300", "-w", "%{http_version} %{size_download}"}
	if authz != "" {
		args = append(args, "-H", "Authorization: "+authz)
	}
	args = append(args, t.Base.JoinPath("/v2/", repo, "/blobs/", layer.Digest).String())
	outs := make([]bytes.Buffer, n)
	errs := make([]error, n)
	w := benchkit.BeginWindow(t.Proc.PID())
	var wg sync.WaitGroup
	for i := range n {
		cmd := exec.CommandContext(ctx, "curl", args...)
		cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
		wg.Go(func() { errs[i] = cmd.Run() })
	}
	wg.Wait()
	server, _, _, elapsed := w.End()
	for i := range n {
		if errs[i] != nil {
			return 0, 0, fmt.Errorf("curl: %w: %s", errs[i], &outs[i])
		}
		if f := strings.Fields(outs[i].String()); len(f) != 2 || f[0] != proto || f[1] != strconv.FormatInt(layer.Size, 10) {
			return 0, 0, fmt.Errorf("curl got HTTP/version and bytes %q, want HTTP/%s and %d", &outs[i], proto, layer.Size)
		}
	}
	if elapsed <= 0 {
		return 0, 0, errors.New("no time elapsed")
	}
	total := float64(n) * float64(layer.Size)
	return total / elapsed / 1e6, server / (total / (1 << 30)), nil
}

// profile starts a CPU profile named name of the applianceprof server at
// base, or stops it when name is ""; nothing when base is "".
func profile(ctx context.Context, base, name string) error {
	if base == "" {
		return nil
	}
	u := base + "/bench/cpu/stop"
	if name != "" {
		u = base + "/bench/cpu/start?name=" + name
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s: %s", u, resp.Status)
	}
	return nil
}

// report prints the RESULT lines and writes the report.
func report(ctx context.Context, o options, work string, cells []*cell, mem map[string]float64) error {
	med := map[string]float64{}
	for _, c := range cells {
		med[fmt.Sprint(c.proto, c.clients, c.target)] = benchkit.Median(c.mbps)
	}
	r := &benchkit.Report{Title: "Blob pull over TLS: curl, HTTP/1.1 and HTTP/2",
		Method: fmt.Sprintf("One %d MiB random layer pulled whole by n curl processes at once to /dev/null; %d interleaved rounds per cell "+
			"(HTTP/1.1 and HTTP/2 and every server take turns in each round, who goes first rotates); medians of aggregate MB/s (10^6 B/s). docker-registry 2.8 serves TLS without auth; the appliance "+
			"is pulled from with an anonymous token. CPU is the server's, per GiB served.", o.blobMiB, o.Rounds),
		Header:  []string{"HTTP", "clients", "target", "MB/s (median)", "× docker-registry", "CPU s/GiB", "rounds MB/s"},
		Machine: benchkit.Machine(ctx, work, o.Appliance, map[string][]string{"docker-registry": {o.dockerRegistry, "--version"}}),
		Command: benchkit.Reproduce("blobpull"),
	}
	for _, c := range cells {
		m := benchkit.Median(c.mbps)
		ratio := benchkit.Ratio(m, med[fmt.Sprint(c.proto, c.clients, "docker-registry")])
		benchkit.PrintResult("blobpull", "proto", c.proto, "clients", c.clients, "target", c.target, "mbps", m,
			"ratio_docker_registry", ratio, "cpu_s_per_gib", benchkit.Median(c.cpu), "rounds", len(c.mbps))
		r.Row(c.proto, c.clients, c.target, fmt.Sprintf("%.0f", m), ratio, benchkit.Median(c.cpu), benchkit.Floats(c.mbps, "%.0f"))
	}
	byName := map[string]*cell{}
	for _, c := range cells {
		byName[fmt.Sprint(c.proto, c.clients, c.target)] = c
	}
	for _, name := range []string{"appliance", "baseline", "docker-registry"} {
		h1, h2 := byName[fmt.Sprint("1.1", 1, name)], byName[fmt.Sprint("2", 1, name)]
		if h1 == nil || h2 == nil || len(h1.mbps) != len(h2.mbps) {
			continue
		}
		// Each round's HTTP/2 figure against the same round's HTTP/1.1,
		// measured moments apart: the machine's drift between rounds
		// cancels out.
		paired := make([]float64, len(h1.mbps))
		for i := range paired {
			paired[i] = benchkit.Ratio(h2.mbps[i], h1.mbps[i])
		}
		m := benchkit.Median(paired)
		benchkit.PrintResult("blobpull", "target", name, "h2_over_h1", m, "rounds", len(paired))
		r.Note("%s, one HTTP/2 stream against its own HTTP/1.1 in the same round: %.2f× median (rounds %s; goal ≥ 0.8× for the appliance)",
			name, m, benchkit.Floats(paired, "%.2f"))
	}
	for _, name := range slices.Sorted(maps.Keys(mem)) {
		benchkit.PrintResult("blobpull", "target", name, "vmhwm_mib", mem[name])
		r.Note("%s peak memory (VmHWM, push included): %.1f MiB", name, mem[name])
	}
	return r.Write(os.Stdout, o.Out)
}
