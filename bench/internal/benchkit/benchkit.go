// Package benchkit holds what the benchmark programs under bench/ share,
// so that each program is mostly its method: the common flags and main
// (CommonFlags, Main), the servers under test as child processes
// (StartApplianceTarget, StartDockerRegistryTLS), the wait for a quiet
// machine, /proc sampling of CPU and VmHWM, interleaved rounds
// (Interleave) and medians, the generated images and imgpkg tars, the
// machine's facts, the one machine-readable line every program prints
// (Result, documented in result.go) and the short Markdown report
// (Report).
package benchkit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Logf writes a time-stamped progress line to standard error.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Process is a server the benchmark started; it dies with the benchmark.
type Process struct {
	Name    string
	LogPath string
	// StopSignal asks it to stop (SIGTERM unless set; nginx wants SIGQUIT).
	StopSignal os.Signal

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start runs bin with args and env, its output going to logPath.
func Start(name, logPath string, env []string, bin string, args ...string) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, StopSignal: syscall.SIGTERM, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited returns nil while the process runs, else why it ended.
func (p *Process) Exited() error {
	select {
	case <-p.done:
		if p.waitErr == nil {
			return errors.New("exit status 0")
		}
		return p.waitErr
	default:
		return nil
	}
}

// Stop asks the process to stop, waits up to 30 s, then kills it.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(p.StopSignal)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		Logf("%s did not stop within 30s; killing it", p.Name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Tail is the end of the process's log, for error messages.
func (p *Process) Tail() string {
	data, _ := os.ReadFile(p.LogPath)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// WaitReady polls check every 50 ms until it holds, the process exits, ctx
// ends or timeout passes.
func WaitReady(ctx context.Context, p *Process, timeout time.Duration, check func() bool) error {
	deadline := time.Now().Add(timeout)
	for !check() {
		if err := p.Exited(); err != nil {
			return fmt.Errorf("%s exited during start: %w\n%s", p.Name, err, p.Tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s\n%s", p.Name, timeout, p.Tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// CleanEnv is the environment without proxies, APPLIANCE_* settings and
// any variable starting with one of drop (REGISTRY_, APT_, …), so servers
// and clients run on their defaults and talk only to loopback.
func CleanEnv(drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY":
			continue
		}
		if strings.HasPrefix(k, "APPLIANCE_") || slices.ContainsFunc(drop, func(p string) bool { return strings.HasPrefix(k, p) }) {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// FreeAddr returns a loopback address with a port the kernel just gave out.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// userHZ is the kernel's clock tick for /proc times.
const userHZ = 100

// CPUSeconds is the CPU time a process has used: the sum of its threads'
// schedstat (nanoseconds) when available, else utime+stime in ticks.
func CPUSeconds(pid int) float64 {
	if tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); err == nil {
		var ns int64
		ok := false
		for _, t := range tasks {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
			if err != nil {
				continue
			}
			if f := strings.Fields(string(data)); len(f) > 0 {
				if v, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					ns += v
					ok = true
				}
			}
		}
		if ok {
			return float64(ns) / 1e9
		}
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / userHZ
}

// MachineBusy is the CPU time the whole machine has spent busy (not idle
// nor waiting for I/O), in seconds, from /proc/stat.
func MachineBusy() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are already in user
			continue
		}
		busy += n
	}
	return float64(busy) / userHZ
}

// CPUWindow measures, over an interval, the CPU of the server under test,
// of this program, and of everything else on the machine.
type CPUWindow struct {
	pid                  int
	server0, self0, busy float64
	start                time.Time
}

// BeginWindow starts a window; pid 0 means no server.
func BeginWindow(pid int) CPUWindow {
	w := CPUWindow{pid: pid, busy: MachineBusy(), start: time.Now(), self0: CPUSeconds(os.Getpid())}
	if pid > 0 {
		w.server0 = CPUSeconds(pid)
	}
	return w
}

// End returns the CPU seconds of the server, of this program and of all
// other processes since BeginWindow, and the seconds elapsed.
func (w CPUWindow) End() (server, self, other, elapsed float64) {
	elapsed = time.Since(w.start).Seconds()
	self = CPUSeconds(os.Getpid()) - w.self0
	if w.pid > 0 {
		server = CPUSeconds(w.pid) - w.server0
	}
	other = max(0, MachineBusy()-w.busy-self-server)
	return server, self, other, elapsed
}

// Median of v (NaN when empty); v is not changed.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// WaitHTTP waits, up to timeout, until GET url answers 200 (or the process
// exits, or ctx ends). hc nil means a plain client with a 2 s timeout.
func WaitHTTP(ctx context.Context, p *Process, hc *http.Client, url string, timeout time.Duration) error {
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Second}
	}
	return WaitReady(ctx, p, timeout, func() bool {
		resp, err := hc.Get(url)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// WaitHTTPS is WaitHTTP over TLS, trusting roots, on a client of its own
// whose connections it closes before it returns.
func WaitHTTPS(ctx context.Context, p *Process, roots *x509.CertPool, url string, timeout time.Duration) error {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	return WaitHTTP(ctx, p, &http.Client{Timeout: 2 * time.Second, Transport: tr}, url, timeout)
}

// WorkDir makes a benchmark's work folder: dir, created if missing, or,
// when dir is "", a new folder under $TMPDIR whose name starts with
// prefix. It returns the folder's absolute path and a function that
// removes the folder unless keep.
func WorkDir(dir, prefix string, keep bool) (string, func(), error) {
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", prefix); err != nil {
			return "", nil, fmt.Errorf("make the work folder: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", nil, fmt.Errorf("make the work folder: %w", err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, fmt.Errorf("make the work folder: %w", err)
	}
	return dir, func() {
		if !keep {
			_ = os.RemoveAll(dir)
		}
	}, nil
}

// Parallel hands do(0), …, do(n-1), in that order, to up to four
// goroutines (no more than there are CPUs), and no more calls once ctx
// ends. It returns the first error a call returned, else ctx's.
func Parallel(ctx context.Context, n int, do func(i int) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		jobs     = make(chan int)
	)
	for range max(1, min(runtime.NumCPU(), 4)) {
		wg.Go(func() {
			for i := range jobs {
				if err := do(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
