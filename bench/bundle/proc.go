package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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

// sampler records, every 50 ms until stopped, the peak VmRSS of a process
// and its VmHWM (the kernel's own peak since exec). ru_maxrss is no use for
// children that Go starts by vfork: it can report the parent's peak.
type sampler struct {
	quit chan struct{}
	done chan [2]int64
}

func newSampler(pid int) *sampler {
	s := &sampler{quit: make(chan struct{}), done: make(chan [2]int64, 1)}
	go func() {
		var peak, hwm int64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := readStatus(pid, "VmRSS"); err == nil {
				peak = max(peak, v)
			}
			if v, err := readStatus(pid, "VmHWM"); err == nil {
				hwm = max(hwm, v)
			}
			select {
			case <-s.quit:
				s.done <- [2]int64{peak, hwm}
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop returns the peak VmRSS and VmHWM seen, in MiB.
func (s *sampler) stop() (rss, hwm float64) {
	close(s.quit)
	v := <-s.done
	return mib(v[0]), mib(v[1])
}

// readStatus reads a "kB" field of /proc/PID/status, in bytes.
func readStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			v, err := strconv.ParseInt(f[0], 10, 64)
			return v << 10, err
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

// cpuTimes reads the machine's busy and iowait jiffies from /proc/stat.
func cpuTimes() (busy, iowait float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	v := make([]float64, len(f)-1)
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[i+1], 64)
	}
	// user nice system idle iowait irq softirq steal
	return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], v[4]
}

type window struct {
	t            time.Time
	busy, iowait float64
}

func beginWindow() window {
	b, io := cpuTimes()
	return window{t: time.Now(), busy: b, iowait: io}
}

// end returns the cores used by everything but ours (ourCPU seconds) and
// the cores spent in iowait, on average over the window.
func (w window) end(ourCPU float64) (other, iowait float64) {
	b, io := cpuTimes()
	secs := time.Since(w.t).Seconds()
	if secs <= 0 {
		return 0, 0
	}
	return max(0, ((b-w.busy)/100-ourCPU)/secs), (io - w.iowait) / 100 / secs
}

// quiet waits (bounded by -quiet-wait) until the machine's CPUs are less
// than 10% busy over a second, so that a phase does not start while
// something else runs.
func quiet(ctx context.Context, o options) {
	deadline := time.Now().Add(o.quietWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		w := beginWindow()
		time.Sleep(time.Second)
		other, _ := w.end(0)
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

func mib(b int64) float64 { return float64(b) / (1 << 20) }
