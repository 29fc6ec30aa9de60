// Command blobpull measures blob pulls over TLS as the nodes that pull from
// the appliance make them: curl fetching one large layer over HTTP/1.1 and
// over HTTP/2, by 1 and by 8 concurrent clients, from the appliance and
// from Debian's docker-registry (distribution 2.8) serving TLS, the
// registries taking turns round by round. Optionally a second appliance
// binary (-baseline, an older build) takes its turn in the same rounds.
//
// Each cell is the median of -rounds rounds: n curl processes started
// together, each pulling the whole blob to /dev/null; the aggregate MB/s
// is n × size over the time until the last one finished. Every curl
// reports the protocol it spoke and the bytes it received, and a round
// whose figures are not the blob's size over the asked-for protocol fails
// the run. The appliance is pulled from with an anonymous pull token, as
// clients do; docker-registry runs without auth (which favours it).
//
// It prints one machine-readable line per cell,
//
//	RESULT blobpull proto=2 clients=1 target=appliance mbps=812.3 cpu_s_per_gib=1.21
//
// then a Markdown report (also to -out), and the figures as JSON (-json).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

const (
	repo = "bench/blob"
	tag  = "v1"
)

type options struct {
	appliance, baseline, dockerRegistry string
	blobMiB, rounds                     int
	clients                             []int
	protos                              []string
	quietWait, timeout                  time.Duration
	out, jsonOut, profileDir            string
	keep                                bool
}

// target is one registry under test.
type target struct {
	name           string
	base           *url.URL
	ca             string // the CA file curl trusts
	proc           *benchkit.Process
	user, password string // the appliance's admin, who pushes; pulls are anonymous
	rss            *benchkit.Sampler
	pprof          string // applianceprof's pprof base URL, or ""
}

// cell is one (protocol, clients, target) figure.
type Cell struct {
	Proto      string    `json:"proto"`
	Clients    int       `json:"clients"`
	Target     string    `json:"target"`
	MBps       []float64 `json:"mbps"`
	CPUPerGiB  []float64 `json:"cpu_s_per_gib"`
	OtherCores []float64 `json:"other_cores"`
}

func main() {
	var o options
	var clients, protos string
	flag.StringVar(&o.appliance, "appliance", "", "appliance binary (required)")
	flag.StringVar(&o.baseline, "baseline", "", "an older appliance binary to measure in the same rounds (optional)")
	flag.StringVar(&o.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "docker-registry (distribution 2.8) binary")
	flag.IntVar(&o.blobMiB, "blob-mib", 256, "size of the blob in MiB")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds per cell (the median is reported)")
	flag.StringVar(&clients, "clients", "1,8", "comma-separated numbers of concurrent clients")
	flag.StringVar(&protos, "protos", "1.1,2", "comma-separated HTTP versions: 1.1 and/or 2")
	flag.DurationVar(&o.quietWait, "quiet-wait", 20*time.Second, "before each round, wait up to this long for a quiet machine")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "hard limit for the whole run")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report here")
	flag.StringVar(&o.jsonOut, "json", "", "also write the figures as JSON here")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder")
	flag.StringVar(&o.profileDir, "profile", "", "with -appliance built from bench/applianceprof: write a CPU profile of the appliance per cell into this folder")
	flag.Parse()
	if err := parseLists(&o, clients, protos); err != nil {
		fmt.Fprintln(os.Stderr, "blobpull:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "blobpull:", err)
		os.Exit(1)
	}
}

func parseLists(o *options, clients, protos string) error {
	if o.appliance == "" {
		return errors.New("-appliance is required")
	}
	for _, s := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 64 {
			return fmt.Errorf("-clients: %q is not a number from 1 to 64", s)
		}
		o.clients = append(o.clients, n)
	}
	var err error
	o.protos, err = benchkit.SplitList(protos, "1.1", "2")
	if err != nil {
		return fmt.Errorf("-protos: %w", err)
	}
	if o.rounds < 1 || o.rounds > 50 {
		return errors.New("-rounds: from 1 to 50")
	}
	return nil
}

func run(ctx context.Context, o options) error {
	work, cleanup, err := benchkit.WorkDir("", "blobpull", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	benchkit.Logf("writing a %d MiB layer", o.blobMiB)
	img, err := benchkit.WriteImage(ctx, filepath.Join(work, "layout"), tag, []int64{int64(o.blobMiB) << 20}, 7)
	if err != nil {
		return err
	}
	layer := img.Images[0].Layers[0]

	var targets []*target
	defer func() {
		for _, t := range targets {
			t.proc.Stop()
		}
	}()
	bins := [][2]string{{"appliance", o.appliance}}
	if o.baseline != "" {
		bins = append(bins, [2]string{"baseline", o.baseline})
	}
	for i, b := range bins {
		prof := ""
		if i == 0 {
			prof = o.profileDir
		}
		t, err := startAppliance(ctx, b[0], b[1], filepath.Join(work, b[0]), prof)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	dr, err := startDockerRegistry(ctx, o.dockerRegistry, filepath.Join(work, "docker-registry"))
	if err != nil {
		return err
	}
	targets = append(targets, dr)
	for _, t := range targets {
		if err := push(ctx, t, img); err != nil {
			return fmt.Errorf("%s: push: %w", t.name, err)
		}
		t.rss = benchkit.NewSampler(t.proc.PID())
	}

	var cells []*Cell
	for _, proto := range o.protos {
		for _, n := range o.clients {
			byTarget := map[string]*Cell{}
			for _, t := range targets {
				c := &Cell{Proto: proto, Clients: n, Target: t.name}
				byTarget[t.name] = c
				cells = append(cells, c)
			}
			for r := range o.rounds {
				for i := range targets {
					t := targets[(i+r)%len(targets)] // rotate who goes first
					benchkit.WaitQuiet(ctx, o.quietWait)
					if err := profile(ctx, t, true, fmt.Sprintf("blob-h%s-c%d-r%d", strings.ReplaceAll(proto, ".", ""), n, r+1)); err != nil {
						return err
					}
					mbps, cpu, other, err := round(ctx, t, proto, n, layer)
					if perr := profile(ctx, t, false, ""); err == nil {
						err = perr
					}
					if err != nil {
						return fmt.Errorf("%s HTTP/%s %d clients: %w", t.name, proto, n, err)
					}
					c := byTarget[t.name]
					c.MBps = append(c.MBps, mbps)
					c.CPUPerGiB = append(c.CPUPerGiB, cpu)
					c.OtherCores = append(c.OtherCores, other)
					benchkit.Logf("HTTP/%s %d clients round %d %s: %.0f MB/s, %.2f CPU s/GiB, %.2f other cores", proto, n, r+1, t.name, mbps, cpu, other)
				}
			}
		}
	}
	mem := map[string]float64{}
	for _, t := range targets {
		_, hwm := t.rss.Stop()
		mem[t.name] = hwm
	}
	for _, c := range cells {
		fmt.Printf("RESULT blobpull proto=%s clients=%d target=%s mbps=%.1f cpu_s_per_gib=%.2f\n",
			c.Proto, c.Clients, c.Target, benchkit.Median(c.MBps), benchkit.Median(c.CPUPerGiB))
	}
	machine := benchkit.Machine(ctx, work, o.appliance, map[string][]string{
		"curl": {"curl", "--version"}, "docker-registry": {o.dockerRegistry, "--version"},
	})
	if v := machine["curl"]; v != "" {
		machine["curl"], _, _ = strings.Cut(v, "\n")
	}
	md := report(o, cells, mem, machine)
	return benchkit.WriteReport(md, map[string]any{"cells": cells, "vmhwm_mib": mem, "machine": machine}, o.out, o.jsonOut)
}

func startAppliance(ctx context.Context, name, bin, dir, profileDir string) (*target, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	var args []string
	pprof := ""
	if profileDir != "" {
		abs, err := filepath.Abs(profileDir)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(abs, 0o750); err != nil {
			return nil, err
		}
		addr, err := benchkit.FreeAddr()
		if err != nil {
			return nil, err
		}
		args = []string{"--pprof-addr", addr, "--profile-dir", abs}
		pprof = "http://" + addr
	}
	a, err := benchkit.StartAppliance(ctx, bin, benchkit.ApplianceOptions{DataDir: filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "appliance.log"), Env: benchkit.CleanEnv("REGISTRY_"), Args: args, Ready: "/healthz"})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &target{name: name, base: &url.URL{Scheme: "https", Host: a.HTTPSAddr}, ca: a.CAFile, proc: a.Proc,
		user: "admin", password: a.Password, pprof: pprof}, nil
}

// profile starts (start) or stops a CPU profile of t named name, when t
// was started with one.
func profile(ctx context.Context, t *target, start bool, name string) error {
	if t.pprof == "" {
		return nil
	}
	u := t.pprof + "/bench/cpu/stop"
	if start {
		u = t.pprof + "/bench/cpu/start?name=" + name
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s: %s", u, resp.Status)
	}
	return nil
}

func startDockerRegistry(ctx context.Context, bin, dir string) (*target, error) {
	cert, err := benchkit.WriteTestCert(dir)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	p, addr, err := benchkit.StartDockerRegistry(ctx, bin, dir, benchkit.DockerRegistryOptions{
		Secret: hex.EncodeToString(secret), CertFile: cert.CertFile, KeyFile: cert.KeyFile, RootCAs: cert.Pool})
	if err != nil {
		return nil, err
	}
	return &target{name: "docker-registry", base: &url.URL{Scheme: "https", Host: addr}, ca: cert.CertFile, proc: p}, nil
}
