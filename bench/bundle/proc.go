package main

import (
	"context"
	"runtime"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

// upstream is Debian's docker-registry (distribution 2.8), in plain HTTP on
// loopback, with its storage in the work folder.
type upstream struct {
	proc *benchkit.Process
	host string // 127.0.0.1:PORT
}

func startUpstream(ctx context.Context, o options, dir string) (*upstream, error) {
	p, addr, err := benchkit.StartDockerRegistry(ctx, o.dockerRegistry, dir, "bundle-benchmark-secret-not-used-elsewhere")
	if err != nil {
		return nil, err
	}
	return &upstream{proc: p, host: addr}, nil
}

// quiet waits (bounded by -quiet-wait) until the machine's CPUs are less
// than 10% busy over a second, so that a phase does not start while
// something else runs.
func quiet(ctx context.Context, o options) {
	deadline := time.Now().Add(o.quietWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		w := benchkit.BeginIOWindow()
		time.Sleep(time.Second)
		other, _ := w.End(0)
		if other < 0.1*float64(runtime.NumCPU()) {
			return
		}
		benchkit.Logf("  waiting for a quiet machine (%.2f cores busy)", other)
	}
}

// syncDisk flushes every dirty page and returns how long that took.
func syncDisk() float64 {
	t := time.Now()
	syscall.Sync()
	return time.Since(t).Seconds()
}
