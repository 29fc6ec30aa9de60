package main

import (
	"fmt"
	"strings"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

// summary is one phase on one set, over its rounds.
type summary struct {
	Phase        string             `json:"phase"`
	Name         string             `json:"name"`
	Set          string             `json:"set"`
	Runs         int                `json:"runs"`
	MedianSecs   float64            `json:"median_seconds"`
	MedianMBps   float64            `json:"median_mb_per_s"`
	MinMBps      float64            `json:"min_mb_per_s"`
	MaxMBps      float64            `json:"max_mb_per_s"`
	SyncSecs     float64            `json:"median_sync_after_seconds"`
	ClientRSSMiB float64            `json:"client_peak_vmrss_mib"` // highest over the rounds
	ClientHWMMiB float64            `json:"client_vmhwm_mib"`      // highest over the rounds
	ClientCPU    float64            `json:"client_cpu_s"`          // median
	ClientSys    float64            `json:"client_sys_s"`          // median
	UpstreamCPU  float64            `json:"upstream_cpu_s"`        // median
	IOWaitCores  float64            `json:"iowait_cores"`          // median
	OtherCores   float64            `json:"other_cores"`           // highest
	Steps        map[string]float64 `json:"steps,omitempty"`       // medians
	StepOrder    []string           `json:"step_order,omitempty"`
}

func summarize(results []*result) []summary {
	type key struct{ set, phase string }
	var keys []key
	by := map[key][]*result{}
	for _, r := range results {
		k := key{r.Set, r.Phase}
		if by[k] == nil {
			keys = append(keys, k)
		}
		by[k] = append(by[k], r)
	}
	var out []summary
	for _, k := range keys {
		rs := by[k]
		s := summary{Phase: k.phase, Name: rs[0].Name, Set: k.set, Runs: len(rs), MinMBps: rs[0].MBps}
		var secs, mbps, syncs, ccpu, csys, ucpu, iow []float64
		steps := map[string][]float64{}
		for _, r := range rs {
			secs, mbps, syncs = append(secs, r.Seconds), append(mbps, r.MBps), append(syncs, r.SyncSeconds)
			ccpu, csys, ucpu, iow = append(ccpu, r.ClientCPU), append(csys, r.ClientSys), append(ucpu, r.UpstreamCPU), append(iow, r.IOWaitCores)
			s.MinMBps, s.MaxMBps = min(s.MinMBps, r.MBps), max(s.MaxMBps, r.MBps)
			s.ClientRSSMiB, s.ClientHWMMiB = max(s.ClientRSSMiB, r.ClientRSSMiB), max(s.ClientHWMMiB, r.ClientHWMMiB)
			s.OtherCores = max(s.OtherCores, r.OtherCores)
			for st, v := range r.Steps {
				steps[st] = append(steps[st], v)
			}
			if len(r.StepOrder) > len(s.StepOrder) {
				s.StepOrder = r.StepOrder
			}
		}
		s.MedianSecs, s.MedianMBps, s.SyncSecs = benchkit.Median(secs), benchkit.Median(mbps), benchkit.Median(syncs)
		s.ClientCPU, s.ClientSys, s.UpstreamCPU, s.IOWaitCores = benchkit.Median(ccpu), benchkit.Median(csys), benchkit.Median(ucpu), benchkit.Median(iow)
		if len(steps) > 0 {
			s.Steps = map[string]float64{}
			for st, v := range steps {
				s.Steps[st] = benchkit.Median(v)
			}
		}
		out = append(out, s)
	}
	return out
}

func find(sums []summary, set, phase string) *summary {
	for i := range sums {
		if sums[i].Set == set && sums[i].Phase == phase {
			return &sums[i]
		}
	}
	return nil
}

func peak(s *summary) float64 { return max(s.ClientHWMMiB, s.ClientRSSMiB) }

func goals(rep *report, sets []*dataset) []goal {
	var gs []goal
	for _, ds := range sets {
		a, sk := find(rep.Summary, ds.label, phAppliance), find(rep.Summary, ds.label, phSkopeoArchive)
		if a == nil || sk == nil {
			continue
		}
		v := sk.MedianSecs / a.MedianSecs
		gs = append(gs, goal{What: fmt.Sprintf("%s: bundle create ≥ %.1f× skopeo copy → oci-archive (median wall time)", ds.label, goalVsSkopeo),
			Measured: v, Target: fmt.Sprintf("≥ %.2f", goalVsSkopeo), Met: v >= goalVsSkopeo})
	}
	if len(sets) == 2 {
		big, small := find(rep.Summary, sets[0].label, phAppliance), find(rep.Summary, sets[1].label, phAppliance)
		if big != nil && small != nil && peak(small) > 0 {
			v := peak(big) / peak(small)
			gs = append(gs, goal{What: fmt.Sprintf("bundle create peak RSS independent of the size: %s %.1f MiB ÷ %s %.1f MiB (%.0f× the bytes)",
				sets[0].label, peak(big), sets[1].label, peak(small), float64(sets[0].payload)/float64(sets[1].payload)),
				Measured: v, Target: fmt.Sprintf("≤ %.2f", goalRSSGrowth), Met: v <= goalRSSGrowth})
		}
	}
	return gs
}

func render(rep *report, o options, sets []*dataset) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## `bundle create` benchmark (issue 4), %s\n\n", rep.Date)
	b.WriteString(benchkit.MachineList(rep.Machine))
	w("\nSets, each %d images × %d layers of random, incompressible data, pushed to docker-registry with go-containerregistry:\n\n", o.images, o.layers)
	for _, s := range rep.Sets {
		w("- **%s**: layers of %.1f MiB; %d blobs (manifests, configs, layers), **%d bytes**\n", s.Label, benchkit.MiB(s.LayerBytes), s.Blobs, s.Payload)
	}
	w("\nMB/s are 10⁶ bytes of blobs per second of wall time. %d rounds, the order reversed every other round; medians, with the range. "+
		"`bundle create --parallel %d`, a fresh cache every run, signed: %v. *+ sync* is the time a `sync()` right after the run took (output a tool left in the page cache). "+
		"Client = the appliance or skopeo process (VmHWM sampled from /proc every 50 ms; CPU user+system, the system share in brackets); upstream = docker-registry. "+
		"Warm-up: %v (one unreported run of each on the main set first). "+
		"Checks, untimed: the first bundle of each set is read back with `appliance bundle verify` (every blob's sha256 and the signature); "+
		"skopeo's output must hold at least the blobs' bytes; the prototype's archive is read back and hashed once per set.\n\n", o.rounds, o.parallel, o.sign, o.warmup)
	for _, ds := range sets {
		w("### %s\n\n", ds.label)
		sk := find(rep.Summary, ds.label, phSkopeoArchive)
		w("| measurement | runs | median s | MB/s median (min–max) | ÷ skopeo archive | + sync s | client peak VmHWM MiB | client CPU s (kernel) | upstream CPU s | iowait cores | other cores (max) |\n")
		w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range rep.Summary {
			if s.Set != ds.label {
				continue
			}
			ratio := "–"
			if sk != nil {
				ratio = fmt.Sprintf("%.2f", s.MedianMBps/sk.MedianMBps)
			}
			cpu := fmt.Sprintf("%.1f", s.ClientCPU)
			if s.ClientSys > 0 {
				cpu += fmt.Sprintf(" (%.1f)", s.ClientSys)
			}
			w("| %s | %d | %.2f | **%.0f** (%.0f–%.0f) | %s | %.2f | %s | %s | %.1f | %.2f | %.2f |\n", s.Name, s.Runs, s.MedianSecs, s.MedianMBps, s.MinMBps, s.MaxMBps,
				ratio, s.SyncSecs, benchkit.Dash(peak(&s)), cpu, s.UpstreamCPU, s.IOWaitCores, s.OtherCores)
		}
		for _, ph := range []string{phAppliance, phInProcess} {
			if s := find(rep.Summary, ds.label, ph); s != nil && s.Steps != nil {
				var parts []string
				for _, st := range s.StepOrder {
					if v, ok := s.Steps[st]; ok {
						parts = append(parts, fmt.Sprintf("%s %.2f s", st, v))
					}
				}
				w("\n%s, steps (medians): %s.\n", s.Name, strings.Join(parts, ", "))
			}
		}
		if a := find(rep.Summary, ds.label, phAppliance); a != nil && sk != nil {
			w("\nWith the sync after each run counted: bundle create %.2f s, skopeo → oci-archive %.2f s, ratio %.2f.\n",
				a.MedianSecs+a.SyncSecs, sk.MedianSecs+sk.SyncSecs, (sk.MedianSecs+sk.SyncSecs)/(a.MedianSecs+a.SyncSecs))
		}
		w("\n")
	}
	w("### Goals\n\n| goal | measured | target | met |\n|---|---:|---|---|\n")
	for _, g := range rep.Goals {
		w("| %s | %.2f | %s | %s |\n", g.What, g.Measured, g.Target, benchkit.Verdict(g.Met))
	}
	w("\n### All runs\n\n| set | round | measurement | s | MB/s | + sync s | client VmRSS / VmHWM MiB | client CPU s | upstream CPU s | iowait | other | note |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rep.Results {
		w("| %s | %d | %s | %.2f | %.0f | %.2f | %s / %s | %.1f | %.1f | %.2f | %.2f | %s |\n", r.Set, r.Round, r.Name, r.Seconds, r.MBps, r.SyncSeconds,
			benchkit.Dash(r.ClientRSSMiB), benchkit.Dash(r.ClientHWMMiB), r.ClientCPU, r.UpstreamCPU, r.IOWaitCores, r.OtherCores, strings.ReplaceAll(r.Note, "\n", " "))
	}
	return b.String()
}
