// Command applianceprof runs the appliance in-process exactly as
// `appliance serve` does (same flags, environment and config file, through
// internal/config and internal/server), and also serves net/http/pprof on a
// loopback address, so that bench/blobpull can profile the server under
// load, one CPU profile per round:
//
//	go build -o /tmp/applianceprof ./bench/applianceprof
//	go run ./bench/blobpull -appliance /tmp/applianceprof -profile /tmp/prof -smoke
//	go tool pprof -top /tmp/applianceprof /tmp/prof/appliance-blob-h2-c1-r1-cpu.pprof
//
// It is a benchmarking aid, not a product binary.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	rpprof "runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "applianceprof:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "serve" {
		return errors.New("usage: applianceprof serve [appliance serve flags] [--pprof-addr 127.0.0.1:PORT]")
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	pprofAddr := fs.String("pprof-addr", "127.0.0.1:6061", "loopback address for net/http/pprof")
	profDir := fs.String("profile-dir", "", "folder for CPU profiles started and stopped with POST /bench/cpu/start?name=NAME and /bench/cpu/stop")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*pprofAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--pprof-addr %q: must be a loopback IP address and port", *pprofAddr)
	}
	cfg, err := config.Load(fs, os.Environ())
	if err != nil {
		return err
	}
	log := cfg.Log.NewLogger(os.Stderr)
	srv, err := server.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	if srv.InitialAdminPassword != "" {
		fmt.Fprintf(os.Stderr, "admin password written to %s\n", filepath.Join(cfg.DataDir, auth.InitialPasswordFile))
	}

	ln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		return fmt.Errorf("pprof listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	cp := &cpuProfiles{dir: *profDir}
	mux.HandleFunc("POST /bench/cpu/start", cp.start)
	mux.HandleFunc("POST /bench/cpu/stop", cp.stop)
	psrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = psrv.Serve(ln) }()
	defer psrv.Close()
	defer cp.stopQuietly()
	log.Info("pprof serving", "addr", ln.Addr().String())
	return srv.Run(ctx)
}

// cpuProfiles writes one CPU profile per named benchmark phase into dir, as
// appliance-NAME-cpu.pprof.
type cpuProfiles struct {
	dir string
	mu  sync.Mutex
	f   *os.File
}

var phaseNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

func (p *cpuProfiles) start(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if p.dir == "" || !phaseNameRE.MatchString(name) {
		http.Error(w, "need --profile-dir and a name of lower-case letters, digits and dashes", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		http.Error(w, "a CPU profile is already running", http.StatusConflict)
		return
	}
	f, err := os.Create(filepath.Join(p.dir, "appliance-"+name+"-cpu.pprof"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if err := rpprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.f = f
}

func (p *cpuProfiles) stop(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		http.Error(w, "no CPU profile is running", http.StatusConflict)
		return
	}
	rpprof.StopCPUProfile()
	if err := p.f.Close(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	p.f = nil
}

func (p *cpuProfiles) stopQuietly() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		rpprof.StopCPUProfile()
		_ = p.f.Close()
		p.f = nil
	}
}
