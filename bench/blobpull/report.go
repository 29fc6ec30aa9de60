package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

// report is the Markdown report: the medians, the goals, the rounds.
func report(o options, cells []*Cell, mem map[string]float64, machine map[string]string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	med := func(proto string, n int, target string) float64 {
		for _, c := range cells {
			if c.Proto == proto && c.Clients == n && c.Target == target {
				return benchkit.Median(c.MBps)
			}
		}
		return 0
	}
	w("# Blob pull over TLS: curl, HTTP/1.1 and HTTP/2 (%s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	w("One %d MiB random layer, pulled whole by curl to /dev/null; %d rounds per cell, the targets taking turns "+
		"(who goes first rotates each round); each figure is the median aggregate MB/s (10^6 bytes/s). "+
		"docker-registry serves TLS without auth; the appliance is pulled from with an anonymous pull token.\n\n", o.blobMiB, o.rounds)
	names := []string{"appliance"}
	if o.baseline != "" {
		names = append(names, "baseline")
	}
	w("| HTTP | clients | appliance MB/s |")
	if o.baseline != "" {
		w(" baseline MB/s |")
	}
	w(" docker-registry MB/s | appliance / docker-registry | goal ≥ 1.0× |\n|---|---|---|")
	if o.baseline != "" {
		w("---|")
	}
	w("---|---|---|\n")
	for _, proto := range o.protos {
		for _, n := range o.clients {
			a, d := med(proto, n, "appliance"), med(proto, n, "docker-registry")
			w("| %s | %d | %.0f |", proto, n, a)
			if o.baseline != "" {
				w(" %.0f |", med(proto, n, "baseline"))
			}
			w(" %.0f | **%.2f×** | %s |\n", d, a/d, benchkit.Verdict(a >= d))
		}
	}
	w("\n")
	for _, name := range names {
		h1, h2 := med("1.1", 1, name), med("2", 1, name)
		if h1 > 0 && h2 > 0 {
			w("- %s, one HTTP/2 stream against its own HTTP/1.1: **%.2f×** (goal ≥ 0.8×: %s)\n", name, h2/h1, benchkit.Verdict(h2 >= 0.8*h1))
		}
	}
	for _, name := range append(names, "docker-registry") {
		w("- %s peak resident memory (VmHWM over the whole run, push included): %.1f MiB\n", name, mem[name])
	}
	w("\n## Every round\n\nMB/s, then the server's CPU seconds per GiB served, then the cores other processes " +
		"(not the servers, not this program, not curl) kept busy during the round.\n\n")
	w("| HTTP | clients | target | MB/s | CPU s/GiB | other cores |\n|---|---|---|---|---|---|\n")
	for _, c := range cells {
		w("| %s | %d | %s | %s | %s | %s |\n", c.Proto, c.Clients, c.Target, list(c.MBps, "%.0f"), list(c.CPUPerGiB, "%.2f"), list(c.OtherCores, "%.2f"))
	}
	w("\n## Machine\n\n%s\n", benchkit.MachineList(machine))
	w("\nReproduce: `bench/blobpull.sh` (arguments pass to `go run ./bench/blobpull -h`).\n")
	return b.String()
}

func list(v []float64, format string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, ", ")
}
