// Command manifests measures manifest GETs over TLS: a small OCI manifest
// fetched by tag over -conns keep-alive HTTP/1.1 connections, as fast as
// they go, from the appliance (with an anonymous pull token, as clients
// send it) and from Debian's docker-registry (distribution 2.8) serving
// TLS without auth. Each round is -warmup unmeasured, then -duration
// measured: GETs per second and nearest-rank latency percentiles; the
// registries take turns round by round. Peak memory is each server's
// VmHWM over the run.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

const repo = "bench/manifest"

type options struct {
	*benchkit.Flags
	dockerRegistry   string
	conns            int
	warmup, duration time.Duration
}

// measure is one round against one target.
type measure struct {
	perSecond float64
	lat       benchkit.Quantiles
	errors    int
}

func main() {
	o := options{Flags: benchkit.CommonFlags("manifests", 3, 20*time.Minute)}
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary")
	flag.IntVar(&o.conns, "conns", 32, "concurrent keep-alive connections")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up of each round")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of each round (smoke: 1s)")
	o.Parse()
	if o.Smoke {
		o.warmup, o.duration = 200*time.Millisecond, time.Second
	}
	benchkit.Main("manifests", o.Timeout, func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	work, cleanup, err := benchkit.WorkDir("", "manifests", o.Keep)
	if err != nil {
		return err
	}
	defer cleanup()
	img, err := benchkit.WriteImage(ctx, filepath.Join(work, "layout"), "v1", []int64{64 << 10}, 11)
	if err != nil {
		return err
	}
	a, err := benchkit.StartApplianceTarget(ctx, "appliance", o.Appliance, filepath.Join(work, "appliance"))
	if err != nil {
		return err
	}
	targets := []*benchkit.Target{a}
	defer func() { benchkit.StopAll(targets) }()
	d, err := benchkit.StartDockerRegistryTLS(ctx, "docker-registry", o.dockerRegistry, filepath.Join(work, "docker-registry"))
	if err != nil {
		return err
	}
	targets = append(targets, d)
	samplers := make([]*benchkit.Sampler, len(targets))
	for i, t := range targets {
		if err := t.Push(ctx, repo, img); err != nil {
			return err
		}
		samplers[i] = benchkit.NewSampler(t.Proc.PID())
	}
	got := make([][]measure, len(targets))
	err = benchkit.Interleave(ctx, o.Rounds, len(targets), o.QuietWait, func(r, i int) error {
		m, err := round(ctx, o, targets[i], len(img.Images[0].Manifest))
		if err != nil {
			return fmt.Errorf("%s: %w", targets[i].Name, err)
		}
		benchkit.Logf("round %d %s: %.0f GETs/s, p99 %s, %d errors", r+1, targets[i].Name, m.perSecond, m.lat.P99, m.errors)
		got[i] = append(got[i], m)
		return nil
	})
	if err != nil {
		return err
	}
	r := &benchkit.Report{Title: "Manifest GETs over TLS",
		Method: fmt.Sprintf("A small OCI manifest by tag over %d keep-alive HTTP/1.1 connections as fast as they go: %s warm-up, %s measured, "+
			"%d interleaved rounds, medians. The appliance with an anonymous pull token; docker-registry 2.8 over TLS without auth.",
			o.conns, o.warmup, o.duration, o.Rounds),
		Header:  []string{"target", "GETs/s", "× docker-registry", "p50 ms", "p99 ms", "max ms", "errors", "VmHWM MiB"},
		Machine: benchkit.Machine(ctx, work, o.Appliance, map[string][]string{"docker-registry": {o.dockerRegistry, "--version"}}),
		Command: benchkit.Reproduce("manifests"),
	}
	anchor := medianRate(got[1])
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	for i, t := range targets {
		_, hwm := samplers[i].Stop()
		rate := medianRate(got[i])
		mid := slices.SortedFunc(slices.Values(got[i]), func(a, b measure) int { return cmp.Compare(a.perSecond, b.perSecond) })[len(got[i])/2]
		errs := 0
		for _, m := range got[i] {
			errs += m.errors
		}
		benchkit.PrintResult("manifests", "target", t.Name, "conns", o.conns, "gets_per_s", rate, "ratio_docker_registry", benchkit.Ratio(rate, anchor),
			"p50_ms", ms(mid.lat.P50), "p99_ms", ms(mid.lat.P99), "errors", errs, "vmhwm_mib", hwm)
		r.Row(t.Name, fmt.Sprintf("%.0f", rate), benchkit.Ratio(rate, anchor), ms(mid.lat.P50), ms(mid.lat.P99), ms(mid.lat.Max), errs, hwm)
	}
	r.Note("latencies are those of the middle round by rate; goals: ≥ 3× docker-registry, p99 < 10 ms, memory < 150 MiB")
	return r.Write(os.Stdout, o.Out)
}

func medianRate(ms []measure) float64 {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = m.perSecond
	}
	return benchkit.Median(v)
}

// round keeps o.conns workers GETting the manifest: o.warmup unmeasured,
// then o.duration measured. The window ends when the last measured GET
// does.
func round(ctx context.Context, o options, t *benchkit.Target, size int) (measure, error) {
	hc := t.Client(o.conns)
	defer hc.CloseIdleConnections()
	authz, err := t.Token(ctx, hc, "repository:"+repo+":pull", false)
	if err != nil {
		return measure{}, err
	}
	u := t.Base.JoinPath("/v2/", repo, "/manifests/v1").String()
	var measuring, stopped atomic.Bool
	lats := make([][]time.Duration, o.conns)
	errs := make([]int, o.conns)
	ends := make([]time.Time, o.conns)
	const most = 1 << 20 // GETs per worker and round, a bound
	var wg sync.WaitGroup
	for w := range o.conns {
		wg.Go(func() {
			for n := 0; n < most && !stopped.Load() && ctx.Err() == nil; n++ {
				counted := measuring.Load()
				t0 := time.Now()
				err := get(ctx, hc, u, authz, size)
				if err != nil {
					errs[w]++
					if errs[w] > 100 {
						return
					}
					continue
				}
				if counted {
					lats[w] = append(lats[w], time.Since(t0))
					ends[w] = time.Now()
				}
			}
		})
	}
	sleep(ctx, o.warmup)
	start := time.Now()
	measuring.Store(true)
	sleep(ctx, o.duration)
	stopped.Store(true)
	wg.Wait()
	var all []time.Duration
	var end time.Time
	m := measure{}
	for w := range o.conns {
		all = append(all, lats[w]...)
		m.errors += errs[w]
		if ends[w].After(end) {
			end = ends[w]
		}
	}
	if len(all) == 0 {
		return m, fmt.Errorf("no manifest GET succeeded (%d errors)", m.errors)
	}
	m.perSecond = float64(len(all)) / end.Sub(start).Seconds()
	m.lat = benchkit.QuantilesOf(all)
	return m, ctx.Err()
}

func get(ctx context.Context, hc *http.Client, u, authz string, size int) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", benchkit.ManifestAccept)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, int64(size)+512))
	_ = resp.Body.Close()
	if err == nil && (resp.StatusCode != http.StatusOK || n != int64(size)) {
		err = fmt.Errorf("GET manifest: %s, %d bytes", resp.Status, n)
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
