package benchkit

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Sampler records, every 50 ms until stopped, the peak VmRSS of a process
// and its VmHWM (the kernel's own peak since exec). ru_maxrss is no use for
// children that Go starts by vfork: it can report the parent's peak.
type Sampler struct {
	quit chan struct{}
	done chan [2]int64
}

// NewSampler starts sampling pid.
func NewSampler(pid int) *Sampler {
	s := &Sampler{quit: make(chan struct{}), done: make(chan [2]int64, 1)}
	go func() {
		var peak, hwm int64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := ReadStatus(pid, "VmRSS"); err == nil {
				peak = max(peak, v)
			}
			if v, err := ReadStatus(pid, "VmHWM"); err == nil {
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

// Stop returns the peak VmRSS and VmHWM seen, in MiB.
func (s *Sampler) Stop() (rss, hwm float64) {
	close(s.quit)
	v := <-s.done
	return MiB(v[0]), MiB(v[1])
}

// ReadStatus reads a "kB" field of /proc/PID/status, in bytes.
func ReadStatus(pid int, field string) (int64, error) {
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

// WaitQuiet waits, up to maxWait, until the machine's CPUs are less than
// 10% busy over a second, so that a phase does not start while something
// else runs.
func WaitQuiet(ctx context.Context, maxWait time.Duration) {
	deadline := time.Now().Add(maxWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		busy := MachineBusy()
		time.Sleep(time.Second)
		other := MachineBusy() - busy
		if other < 0.1*float64(runtime.NumCPU()) {
			return
		}
		Logf("  waiting for a quiet machine (%.2f cores busy)", other)
	}
}

// MiB converts bytes to mebibytes.
func MiB(b int64) float64 { return float64(b) / (1 << 20) }

// ResetPeak sets a process's VmHWM back to its VmRSS (clear_refs 5), so
// that VmHWM read later is the peak of what came after.
func ResetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200)
}
