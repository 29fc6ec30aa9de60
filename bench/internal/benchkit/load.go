package benchkit

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Repeat runs workers goroutines at once, each calling do(ctx, worker, i)
// for i = 0, 1, … until it has made maxEach calls, until has passed or ctx
// has ended, whichever comes first. A call started before until runs to its
// end (the caller bounds it). Repeat returns when every worker has.
func Repeat(ctx context.Context, workers, maxEach int, until time.Time, do func(ctx context.Context, worker, i int)) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; i < maxEach && ctx.Err() == nil && time.Now().Before(until); i++ {
				do(ctx, w, i)
			}
		})
	}
	wg.Wait()
}

// Quantiles are the nearest-rank percentiles of a set of durations.
type Quantiles struct {
	N                       int
	P50, P90, P99, Max, Min time.Duration
}

// QuantilesOf d (d is not changed); the zero Quantiles when d is empty.
func QuantilesOf(d []time.Duration) Quantiles {
	if len(d) == 0 {
		return Quantiles{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1 // ceil(p·n) − 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Quantiles{N: len(s), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: s[len(s)-1], Min: s[0]}
}

// Probe is one lone request of ProbeManifest.
type Probe struct {
	At   time.Time     `json:"at"`
	Took time.Duration `json:"took_ns"`
	Err  string        `json:"error,omitempty"`
}

// ProbeManifest GETs (and checks) repo:tag with p every interval, one
// GET at a time, until stop is closed, ctx ends, or it has made most
// GETs; it returns what each took.
func ProbeManifest(ctx context.Context, p *Puller, repo, tag, want string, every time.Duration, most int, stop <-chan struct{}) []Probe {
	var out []Probe
	tick := time.NewTicker(every)
	defer tick.Stop()
	for range most {
		at := time.Now()
		d, err := p.Manifest(ctx, repo, tag, want)
		pr := Probe{At: at, Took: d}
		if err != nil {
			pr.Err = err.Error()
		}
		out = append(out, pr)
		select {
		case <-stop:
			return out
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
	}
	return out
}
