package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o750); err != nil {
		return nil, err
	}
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	// Debian's /etc/docker/registry/config.yml, without auth, on loopback,
	// in plain HTTP, with the access log off.
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: bundle-benchmark-secret-not-used-elsewhere
  headers:
    X-Content-Type-Options: [nosniff]
`, filepath.Join(dir, "storage"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := benchkit.Start("docker-registry", filepath.Join(dir, "docker-registry.log"), benchkit.CleanEnv("REGISTRY_"), o.dockerRegistry, "serve", cfgPath)
	if err != nil {
		return nil, err
	}
	if err := benchkit.WaitHTTP(ctx, p, nil, "http://"+addr+"/v2/", 60*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("docker-registry: %w", err)
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
