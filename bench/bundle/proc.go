package main

import (
	"context"
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
	p, addr, err := benchkit.StartDockerRegistry(ctx, o.dockerRegistry, dir, benchkit.DockerRegistryOptions{Secret: "bundle-benchmark-secret-not-used-elsewhere"})
	if err != nil {
		return nil, err
	}
	return &upstream{proc: p, host: addr}, nil
}

// syncDisk flushes every dirty page and returns how long that took.
func syncDisk() float64 {
	t := time.Now()
	syscall.Sync()
	return time.Since(t).Seconds()
}
