// Command apt is the apt repository benchmark of issue 5: publishing 1,000
// packages, and `apt-get update` against the appliance beside the same
// published tree served by a plain static file server, in the same run. It
// is a benchmark, not a timed test: it prints figures and whether the goal
// (appliance within 10% of the static server) is met, and exits 0 whenever
// the measurement itself succeeded.
//
// In one run it:
//
//  1. generates -packages small valid .deb files in Go (distinct names,
//     about one in ten "Architecture: all", most depending on one or two
//     others, one file of -payload-bytes each), the way internal/aptrepo's
//     tests do: an ar archive of debian-binary, control.tar.gz and
//     data.tar.gz (the report gives the multipart upload's size);
//  2. starts the appliance (the built binary, as a subprocess, fresh data
//     folder, free loopback ports) and times one `appliance apt add` of all
//     of them (one publish);
//  3. copies the current publish's dists/ tree (InRelease, Release,
//     Release.gpg, Packages, Packages.gz, by-hash/…) into a folder, with
//     pool/ as a symbolic link to the publish's pool, and serves it on
//     loopback with nginx (own config, temporary prefix, no daemon, one
//     process) and with Go's http.FileServer; every file of dists/ is
//     fetched from every server and compared with the copy, byte for byte;
//  4. runs `apt-get update` twice per server (fresh lists, then the lists
//     the first left) with Debug::Acquire::http to see what apt requests
//     and what each server answers, times GETs of those
//     files (keep-alive, per-request latency), then times `apt-get update`
//     -rounds times per server, the servers alternating and their order
//     rotating round by round, each update with fresh lists and cache
//     folders (so every round downloads and verifies the indexes);
//  5. times adding one more package to the distribution (-one-more times,
//     one new package each);
//  6. prints a Markdown report (median, p90, ratios, CPU per update) and
//     whether the goal is met; -json writes the raw figures.
//
// apt-get runs with APT_CONFIG pointing at a file of its own that sets
// Dir::Etc::main and Dir::Etc::parts to /dev/null, so the machine's
// /etc/apt (hooks, proxies, GzipIndexes…) plays no part, and with the -o
// options of test/e2e's newAptClient; it touches nothing of the machine's
// apt state. Traffic goes only to 127.0.0.1. Every loop is bounded in count
// and time, and the whole run by -timeout. The machine's other work is
// watched through /proc/stat: the benchmark waits (bounded) for a quiet
// machine before each phase, repeats an update that other processes
// disturbed, and flags what stayed disturbed.
//
//	go run ./bench/apt                            # 1,000 packages, 20 rounds
//	go run ./bench/apt -packages 100 -rounds 3    # smoke run
//
// bench/apt.sh builds the appliance and runs this, keeping the report.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"github.com/appliance-dev/appliance/bench/internal/benchkit"
	"io"
	"io/fs"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	repoName = "bench"
	distName = "noble"
	// disturbedCores is how much CPU other processes may use, on average,
	// while one update runs before it counts as disturbed.
	disturbedCores = 0.25
	goalRatio      = 1.10
)

type options struct {
	packages    int
	payload     int
	rounds      int
	oneMore     int
	latencyGets int
	appliance   string
	nginx       string
	static      string
	work        string
	keep        bool
	out         string
	jsonOut     string
	quietWait   time.Duration
	timeout     time.Duration
	retries     int
}

func main() {
	var o options
	flag.IntVar(&o.packages, "packages", 1000, "packages to generate and publish with one `apt add`")
	flag.IntVar(&o.payload, "payload-bytes", 48, "bytes of the one file in each package")
	flag.IntVar(&o.rounds, "rounds", 20, "timed `apt-get update` rounds per server")
	flag.IntVar(&o.oneMore, "one-more", 3, "times to add one more package to the published distribution (one new package each)")
	flag.IntVar(&o.latencyGets, "latency-gets", 30, "GETs per file and server for the per-request latency table (0: skip)")
	flag.StringVar(&o.appliance, "appliance", "", "appliance binary (default: go build ./cmd/appliance into the work folder)")
	flag.StringVar(&o.nginx, "nginx", "", "nginx binary (default: nginx on PATH, then /usr/sbin/nginx)")
	flag.StringVar(&o.static, "static", "nginx,go", "static servers to compare with, in order of preference for the goal: nginx, go (http.FileServer)")
	flag.StringVar(&o.work, "work", "", "work folder (default: a new temporary folder, removed at the end)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	flag.StringVar(&o.jsonOut, "json", "", "write the raw figures as JSON to this file")
	flag.DurationVar(&o.quietWait, "quiet-wait", 15*time.Minute, "longest wait for a quiet machine before the publish and the update phase")
	flag.DurationVar(&o.timeout, "timeout", 45*time.Minute, "bound on the whole run")
	flag.IntVar(&o.retries, "retries", 3, "times an update disturbed by other processes is repeated")
	flag.Parse()
	if o.packages < 2 || o.packages > 100000 || o.rounds < 1 || o.rounds > 1000 || o.oneMore < 0 || o.oneMore > 100 ||
		o.latencyGets < 0 || o.latencyGets > 10000 || o.retries < 0 || o.retries > 20 || o.payload < 0 || o.payload > 64<<20 {
		fatalf("flags out of range: -packages 2…100000, -rounds 1…1000, -one-more 0…100, -latency-gets 0…10000, -retries 0…20")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/apt: "+format+"\n", args...)
	os.Exit(1)
}

// report is everything measured, for the Markdown report and -json.
type report struct {
	Date         time.Time       `json:"date"`
	Machine      machine         `json:"machine"`
	Options      map[string]any  `json:"options"`
	Debs         debsInfo        `json:"debs"`
	Publish      publishResult   `json:"publish"`
	OneMore      []publishResult `json:"one_more"`
	Tree         treeInfo        `json:"tree"`
	Servers      []*server       `json:"servers"`
	AptConfig    string          `json:"apt_config"`
	AptCommand   string          `json:"apt_command"`
	Requests     []requestRow    `json:"requests"`
	WarmRequests []requestRow    `json:"requests_second_update"`
	Headers      []headerRow     `json:"headers"`
	Latency      []latencyRow    `json:"latency"`
	Updates      []updateRun     `json:"updates"`
	Summary      []summaryRow    `json:"summary"`
	Goal         goalResult      `json:"goal"`
	QuietWaits   []string        `json:"quiet_waits"`
	Disturbed    int             `json:"disturbed_updates"`
	WorkDir      string          `json:"work_dir"`
	AppliancePD  string          `json:"appliance_publish_dir"`
}

type machine struct {
	CPUs      int    `json:"cpus"`
	Model     string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Apt       string `json:"apt"`
	Nginx     string `json:"nginx"`
	Appliance string `json:"appliance"`
}

type debsInfo struct {
	Count      int     `json:"count"`
	Bytes      int64   `json:"bytes"`
	WithDeps   int     `json:"with_depends"`
	ArchAll    int     `json:"arch_all"`
	GenSeconds float64 `json:"generate_seconds"`
}

type publishResult struct {
	Packages     int     `json:"packages_added"`
	Total        int     `json:"packages_after"`
	ID           string  `json:"publish_id"`
	Seconds      float64 `json:"wall_seconds"`
	ServerCPU    float64 `json:"appliance_cpu_seconds"`
	ClientCPU    float64 `json:"cli_cpu_seconds"`
	OtherCores   float64 `json:"other_cores"`
	UploadBytes  int64   `json:"upload_bytes"`
	ServerPubLog string  `json:"-"`
}

type treeInfo struct {
	Files      int      `json:"files"`
	Bytes      int64    `json:"bytes"`
	Listing    []string `json:"listing"`
	InRelease  int      `json:"inrelease_bytes"`
	Skipped    []string `json:"skipped_links"`
	VerifiedOK bool     `json:"verified"`
}

type server struct {
	Name    string `json:"name"`
	Base    string `json:"base_url"` // …/apt
	Kind    string `json:"kind"`
	pid     int    // the serving process, for its CPU time; 0 = this process
	proc    *benchkit.Process
	httpSrv *http.Server
}

type requestRow struct {
	Server  string   `json:"server"`
	Lines   []string `json:"lines"` // "GET path → status"
	Count   int      `json:"count"`
	RawPath string   `json:"raw_log"`
}

type headerRow struct {
	Server  string            `json:"server"`
	Path    string            `json:"path"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
}

type latencyRow struct {
	Path    string             `json:"path"`
	Bytes   int                `json:"bytes"`
	Medians map[string]float64 `json:"median_us"`
	P90s    map[string]float64 `json:"p90_us"`
}

type updateRun struct {
	Server     string  `json:"server"`
	Round      int     `json:"round"`
	Seconds    float64 `json:"seconds"`
	ServerCPU  float64 `json:"server_cpu_seconds"`
	ClientCPU  float64 `json:"apt_cpu_seconds"`
	OtherCores float64 `json:"other_cores"`
	Tries      int     `json:"tries"`
	Disturbed  bool    `json:"disturbed"`
}

type summaryRow struct {
	Server        string  `json:"server"`
	N             int     `json:"n"`
	Median        float64 `json:"median_s"`
	P90           float64 `json:"p90_s"`
	Min           float64 `json:"min_s"`
	Max           float64 `json:"max_s"`
	Mean          float64 `json:"mean_s"`
	ServerCPUMed  float64 `json:"server_cpu_median_s"`
	ClientCPUMed  float64 `json:"apt_cpu_median_s"`
	DisturbedRuns int     `json:"disturbed"`
}

type goalResult struct {
	Reference   string                `json:"reference"`
	MedianRatio float64               `json:"median_ratio"`
	P90Ratio    float64               `json:"p90_ratio"`
	Met         bool                  `json:"met"`
	Others      map[string][2]float64 `json:"other_ratios"` // server → median, p90 ratio
}

func run(ctx context.Context, o options) error {
	rep := &report{Date: time.Now().UTC()}
	rep.Options = map[string]any{"packages": o.packages, "rounds": o.rounds, "one_more": o.oneMore, "static": o.static,
		"latency_gets": o.latencyGets, "retries": o.retries}
	work := o.work
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "apt-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	work, _ = filepath.Abs(work)
	rep.WorkDir = work
	if !o.keep {
		defer os.RemoveAll(work)
	}
	benchkit.Logf("work folder %s", work)

	// Tools.
	for _, tool := range []string{"apt-get", "gpgv"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install -y apt gpgv)", tool)
		}
	}
	statics := strings.Split(o.static, ",")
	for _, s := range statics {
		if s != "nginx" && s != "go" {
			return fmt.Errorf("-static: unknown server %q (nginx, go)", s)
		}
	}
	nginxBin := ""
	if slices.Contains(statics, "nginx") {
		nginxBin = findNginx(o.nginx)
		if nginxBin == "" {
			benchkit.Logf("nginx not found (apt-get install -y nginx-light): comparing with Go's http.FileServer only")
			statics = slices.DeleteFunc(statics, func(s string) bool { return s == "nginx" })
			if len(statics) == 0 {
				statics = []string{"go"}
			}
		}
	}
	if o.appliance == "" {
		o.appliance = filepath.Join(work, "appliance")
		benchkit.Logf("building the appliance: go build -o %s ./cmd/appliance", o.appliance)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.appliance, "./cmd/appliance")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/appliance (run from the repository's root): %w\n%s", err, out)
		}
	}
	rep.Machine = machineInfo(ctx, o.appliance, nginxBin)

	// 1. The packages.
	debDir := filepath.Join(work, "debs")
	t0 := time.Now()
	debs, info, err := generateDebs(debDir, o.packages, o.payload)
	if err != nil {
		return err
	}
	info.GenSeconds = time.Since(t0).Seconds()
	rep.Debs = info
	benchkit.Logf("generated %d .debs (%d bytes) in %.2fs", info.Count, info.Bytes, info.GenSeconds)
	if _, err := exec.LookPath("dpkg-deb"); err == nil {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "--info", debs[1]).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb refuses a generated package: %w\n%s", err, out)
		}
	}

	// 2. The appliance, and the publish of all packages.
	app, err := startAppliance(ctx, o.appliance, filepath.Join(work, "appliance-data"))
	if err != nil {
		return err
	}
	defer app.proc.Stop()
	rep.QuietWaits = append(rep.QuietWaits, waitQuiet(ctx, "publish", o.quietWait))
	pub, err := app.add(ctx, debs)
	if err != nil {
		return err
	}
	rep.Publish = pub
	benchkit.Logf("published %d packages in %.2fs (publish %s)", pub.Total, pub.Seconds, pub.ID)

	// 3. The static copy of the publish.
	pubDir := filepath.Join(app.dataDir, "apt", "public", pub.ID)
	rep.AppliancePD = pubDir
	staticRoot := filepath.Join(work, "static")
	if rep.Tree, err = copyTree(pubDir, filepath.Join(staticRoot, "apt", repoName)); err != nil {
		return err
	}
	servers := []*server{{Name: "appliance", Kind: rep.Machine.Appliance + ", HTTP listener", Base: "http://" + app.httpAddr + "/apt", pid: app.proc.PID()}}
	for _, s := range statics {
		switch s {
		case "nginx":
			srv, err := startNginx(ctx, nginxBin, filepath.Join(work, "nginx"), staticRoot)
			if err != nil {
				return err
			}
			defer srv.proc.Stop()
			servers = append(servers, srv)
		case "go":
			srv, err := startGoStatic(staticRoot)
			if err != nil {
				return err
			}
			defer srv.httpSrv.Close()
			servers = append(servers, srv)
		}
	}
	rep.Servers = servers
	if err := verifySame(ctx, servers, filepath.Join(staticRoot, "apt", repoName), rep.Tree.Listing); err != nil {
		return err
	}
	rep.Tree.VerifiedOK = true
	benchkit.Logf("all %d files of dists/ are byte-identical on %d servers", rep.Tree.Files, len(servers))

	// 4. apt-get update.
	key, err := httpGet(ctx, servers[0].Base+"/key.gpg")
	if err != nil {
		return err
	}
	keyFile := filepath.Join(work, "key.gpg")
	if err := os.WriteFile(keyFile, key, 0o644); err != nil {
		return err
	}
	ac := newAptRunner(work, keyFile)
	rep.AptConfig, rep.AptCommand = ac.describe()
	for _, s := range servers {
		fresh, warm, err := ac.debugRun(ctx, s)
		if err != nil {
			return err
		}
		rep.Requests = append(rep.Requests, fresh)
		rep.WarmRequests = append(rep.WarmRequests, warm)
	}
	paths := requestedPaths(rep.Requests[0].Lines)
	rep.Headers = headersOf(ctx, servers, paths)
	if o.latencyGets > 0 {
		rep.Latency = latencies(ctx, servers, paths, o.latencyGets)
	}
	rep.QuietWaits = append(rep.QuietWaits, waitQuiet(ctx, "apt-get update rounds", o.quietWait))
	for round := 0; round < o.rounds; round++ {
		for i := range servers {
			s := servers[(i+round)%len(servers)]
			u, err := ac.timedRun(ctx, s, round, o.retries)
			if err != nil {
				return err
			}
			rep.Updates = append(rep.Updates, u)
			if u.Disturbed {
				rep.Disturbed++
			}
		}
		benchkit.Logf("round %d/%d: %s", round+1, o.rounds, lastRound(rep.Updates, len(servers)))
	}
	rep.Summary, rep.Goal = summarize(servers, rep.Updates)

	// 5. One more package, -one-more times.
	if o.oneMore > 0 {
		rep.QuietWaits = append(rep.QuietWaits, waitQuiet(ctx, "one more package", o.quietWait/5))
	}
	for i := 0; i < o.oneMore; i++ {
		p := pkgSpec{Name: fmt.Sprintf("extra-tool-%02d", i), Version: "1.0-1", Arch: "amd64", Depends: "bench-lib-0001 (>= 1.0)", InstalledKB: 20, Payload: o.payload}
		path, _, err := writeDeb(debDir, p)
		if err != nil {
			return err
		}
		r, err := app.add(ctx, []string{path})
		if err != nil {
			return err
		}
		benchkit.Logf("added one more package in %.2fs (%d packages now)", r.Seconds, r.Total)
		rep.OneMore = append(rep.OneMore, r)
	}

	return benchkit.WriteReport(markdown(rep), rep, o.out, o.jsonOut)
}

func lastRound(us []updateRun, n int) string {
	var parts []string
	for _, u := range us[len(us)-n:] {
		s := fmt.Sprintf("%s %.3fs", u.Server, u.Seconds)
		if u.Disturbed {
			s += " (disturbed)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// ---- packages ----

type pkgSpec struct {
	Name, Version, Arch, Depends, Section string
	InstalledKB, Payload                  int // Installed-Size, and bytes in the package's one file
}

func (p pkgSpec) file() string { return fmt.Sprintf("%s_%s_%s.deb", p.Name, p.Version, p.Arch) }

func (p pkgSpec) control() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: Appliance Bench <bench@example.invalid>\n", p.Name, p.Version, p.Arch)
	fmt.Fprintf(&b, "Installed-Size: %d\n", max(1, p.InstalledKB))
	if p.Depends != "" {
		b.WriteString("Depends: " + p.Depends + "\n")
	}
	section := p.Section
	if section == "" {
		section = "misc"
	}
	fmt.Fprintf(&b, "Section: %s\nPriority: optional\nHomepage: https://example.invalid/%s\n", section, p.Name)
	fmt.Fprintf(&b, "Description: benchmark package %s\n This package was generated by bench/apt to measure publishing and\n serving an apt repository of many small packages.\n", p.Name)
	return b.String()
}

// generateDebs writes n packages into dir: bench-lib-NNNN (the first
// half) and bench-tool-NNNN, most depending on one or two others; one in
// ten is Architecture: all.
func generateDebs(dir string, n, payload int) ([]string, debsInfo, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, debsInfo{}, err
	}
	info := debsInfo{Count: n}
	specs := make([]pkgSpec, n)
	name := func(i int) string {
		if i < n/2 {
			return fmt.Sprintf("bench-lib-%04d", i)
		}
		return fmt.Sprintf("bench-tool-%04d", i)
	}
	for i := range specs {
		p := pkgSpec{Name: name(i), Version: fmt.Sprintf("1.%d.%d-1", i%7, i), Arch: "amd64", InstalledKB: 8 + (i*37)%400, Payload: payload}
		if i%10 == 3 {
			p.Arch = "all"
			info.ArchAll++
		}
		var deps []string
		if i > 0 && i%4 != 0 {
			deps = append(deps, name(i/2)+" (>= 1.0)")
		}
		if i > 1 && i%3 == 0 {
			deps = append(deps, name(i-1))
		}
		if len(deps) > 0 {
			info.WithDeps++
		}
		p.Depends = strings.Join(deps, ", ")
		p.Section = []string{"libs", "utils", "admin", "devel", "misc"}[i%5]
		specs[i] = p
	}
	paths := make([]string, n)
	var total int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				path, size, err := writeDeb(dir, specs[i])
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				paths[i] = path
				total += size
				mu.Unlock()
			}
		}()
	}
	for i := range specs {
		work <- i
	}
	close(work)
	wg.Wait()
	info.Bytes = total
	return paths, info, firstErr
}

// writeDeb builds p as a .deb: an ar archive of debian-binary,
// control.tar.gz and data.tar.gz (the technique of internal/aptrepo's
// goDeb; dpkg-deb accepts it).
func writeDeb(dir string, p pkgSpec) (string, int64, error) {
	payload := make([]byte, p.Payload)
	h := sha256.Sum256([]byte(p.Name + " " + p.Version))
	for i := range payload {
		// Text-like, a little compressible, distinct per package.
		payload[i] = "abcdefghijklmnopqrstuvwxyz \n"[(int(h[i%32])+i/3)%28]
	}
	ctl, err := tarGz([]tarEntry{{name: "./control", body: []byte(p.control())}})
	if err != nil {
		return "", 0, err
	}
	doc := "./usr/share/doc/" + p.Name + "/"
	data, err := tarGz([]tarEntry{
		{name: "./usr/", dir: true}, {name: "./usr/share/", dir: true}, {name: "./usr/share/doc/", dir: true},
		{name: doc, dir: true}, {name: doc + "README", body: payload},
	})
	if err != nil {
		return "", 0, err
	}
	deb := arArchive([][2][]byte{
		{[]byte("debian-binary"), []byte("2.0\n")},
		{[]byte("control.tar.gz"), ctl},
		{[]byte("data.tar.gz"), data},
	})
	path := filepath.Join(dir, p.file())
	return path, int64(len(deb)), os.WriteFile(path, deb, 0o644)
}

type tarEntry struct {
	name string
	dir  bool
	body []byte
}

func tarGz(entries []tarEntry) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	epoch := time.Unix(1700000000, 0)
	all := append([]tarEntry{{name: "./", dir: true}}, entries...)
	for _, e := range all {
		h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body)), ModTime: epoch, Uname: "root", Gname: "root"}
		if e.dir {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if !e.dir {
			if _, err := tw.Write(e.body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func arArchive(members [][2][]byte) []byte {
	var buf bytes.Buffer
	buf.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&buf, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m[0], 1700000000, 0, 0, "100644", len(m[1]))
		buf.Write(m[1])
		if len(m[1])%2 == 1 {
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes()
}

// ---- processes ----

// ---- the appliance ----

type appliance struct {
	bin, dataDir        string
	httpAddr, httpsAddr string
	password            string
	proc                *benchkit.Process
}

func startAppliance(ctx context.Context, bin, dataDir string) (*appliance, error) {
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return nil, err
	}
	a, err := benchkit.StartAppliance(ctx, bin, benchkit.ApplianceOptions{DataDir: dataDir, LogPath: dataDir + ".log",
		Env: benchkit.CleanEnv("APT_"), Ready: "/healthz"})
	if err != nil {
		return nil, err
	}
	return &appliance{bin: bin, dataDir: dataDir, httpAddr: a.HTTPAddr, httpsAddr: a.HTTPSAddr, password: a.Password, proc: a.Proc}, nil
}

var publishedRE = regexp.MustCompile(`published \S+ \S+ as (\S+) \(add\): (\d+) packages`)

// countWriter counts bytes.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// uploadSize is the size of the multipart body `appliance apt add` sends
// for files (one "file" part each, as cmd/appliance makes it).
func uploadSize(files []string) int64 {
	var cw countWriter
	mw := multipart.NewWriter(&cw)
	for _, f := range files {
		_, _ = mw.CreateFormFile("file", filepath.Base(f))
		if fi, err := os.Stat(f); err == nil {
			cw.n += fi.Size()
		}
	}
	_ = mw.Close()
	return cw.n
}

// add runs `appliance apt add` of files and times it.
func (a *appliance) add(ctx context.Context, files []string) (publishResult, error) {
	size := uploadSize(files)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	args := append([]string{"apt", "add", repoName, distName}, files...)
	args = append(args, "--username", "admin", "--password-stdin")
	cmd := exec.CommandContext(ctx, a.bin, args...)
	cmd.Env = append(benchkit.CleanEnv("APT_"), "APPLIANCE_SERVER=https://"+a.httpsAddr, "APPLIANCE_CA="+filepath.Join(a.dataDir, "ca.crt"))
	cmd.Stdin = strings.NewReader(a.password + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	win := benchkit.BeginWindow(a.proc.PID())
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start).Seconds()
	server, _, other, _ := win.End()
	if err != nil {
		return publishResult{}, fmt.Errorf("appliance apt add (%d files, %d bytes): %w\n%s", len(files), size, err, out.String())
	}
	var cli float64
	if ps := cmd.ProcessState; ps != nil {
		cli = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	// other counted the CLI as "other": take it out.
	other = max(0, other-cli) / wall
	m := publishedRE.FindStringSubmatch(out.String())
	if m == nil {
		return publishResult{}, fmt.Errorf("appliance apt add: unexpected output:\n%s", out.String())
	}
	total, _ := strconv.Atoi(m[2])
	return publishResult{Packages: len(files), Total: total, ID: m[1], Seconds: wall, ServerCPU: server, ClientCPU: cli,
		OtherCores: other, UploadBytes: size}, nil
}

// ---- the static copy and servers ----

// copyTree copies pubDir/dists into dst/dists (regular files, symbolic
// links resolved), and links dst/pool to pubDir/pool.
func copyTree(pubDir, dst string) (treeInfo, error) {
	var ti treeInfo
	src := filepath.Join(pubDir, "dists")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(pubDir, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			// aptly leaves symbolic links by-hash/<algorithm>/Packages… →
			// the newest hash file (absolute paths); the Release files do
			// not name them, apt never asks for them, and the appliance
			// does not serve them.
			ti.Skipped = append(ti.Skipped, filepath.ToSlash(rel))
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, data, 0o644); err != nil {
			return err
		}
		ti.Files++
		ti.Bytes += int64(len(data))
		ti.Listing = append(ti.Listing, fmt.Sprintf("%s (%d bytes)", filepath.ToSlash(rel), len(data)))
		if strings.HasSuffix(rel, "/InRelease") {
			ti.InRelease = len(data)
		}
		return nil
	})
	if err != nil {
		return ti, fmt.Errorf("copy the published tree: %w", err)
	}
	if _, err := os.Stat(filepath.Join(pubDir, "pool")); err == nil {
		if err := os.Symlink(filepath.Join(pubDir, "pool"), filepath.Join(dst, "pool")); err != nil {
			return ti, err
		}
	}
	return ti, nil
}

func findNginx(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// startNginx runs nginx in the foreground, one process (no master, no
// workers: the single process keeps this benchmark's user and reads the
// copy), with a config and prefix of its own, on a free loopback port.
func startNginx(ctx context.Context, bin, prefix, root string) (*server, error) {
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`# bench/apt: a plain static file server for the published tree.
daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
    types { text/html html; }
    default_type application/octet-stream;
    access_log %[1]s/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    server {
        listen %[2]s;
        root %[3]s;
        location / { }
    }
}
`, prefix, addr, root)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-p", prefix + "/", "-c", confPath, "-e", filepath.Join(prefix, "error.log")}
	benchkit.Logf("nginx: %s %s", bin, strings.Join(args, " "))
	p, err := benchkit.Start("nginx", filepath.Join(prefix, "stdout.log"), benchkit.CleanEnv("APT_"), bin, args...)
	if err != nil {
		return nil, err
	}
	p.StopSignal = syscall.SIGQUIT // nginx's graceful stop
	hc := &http.Client{Timeout: 2 * time.Second}
	if err := benchkit.WaitReady(ctx, p, 60*time.Second, func() bool {
		resp, err := hc.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}); err != nil {
		p.Stop()
		b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
		return nil, fmt.Errorf("%w\n%s", err, b)
	}
	return &server{Name: "nginx", Kind: "nginx, one process, sendfile", Base: "http://" + addr + "/apt", pid: p.PID(), proc: p}, nil
}

// startGoStatic serves root with http.FileServer in this process.
func startGoStatic(root string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: http.FileServer(http.Dir(root)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return &server{Name: "go-fileserver", Kind: "Go net/http FileServer (" + runtime.Version() + "), in the benchmark process",
		Base: "http://" + ln.Addr().String() + "/apt", httpSrv: hs}, nil
}

var plainClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 4}}

func httpGet(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return b, nil
}

// verifySame fetches every copied dists/ file, and one pool file, from
// every server and compares them with the copy; InRelease is compared
// across servers explicitly too.
func verifySame(ctx context.Context, servers []*server, copyRoot string, listing []string) error {
	var files []string
	for _, l := range listing {
		rel, _, _ := strings.Cut(l, " (")
		files = append(files, rel)
	}
	inrel := map[string][]byte{}
	for _, rel := range files {
		want, err := os.ReadFile(filepath.Join(copyRoot, rel))
		if err != nil {
			return err
		}
		for _, s := range servers {
			got, err := httpGet(ctx, s.Base+"/"+repoName+"/"+rel)
			if err != nil {
				return fmt.Errorf("verify %s: %w", s.Name, err)
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("verify: %s serves %s different from the published tree (%d bytes, want %d)", s.Name, rel, len(got), len(want))
			}
			if strings.HasSuffix(rel, "/InRelease") {
				inrel[s.Name] = got
			}
		}
	}
	for _, s := range servers[1:] {
		if !bytes.Equal(inrel[s.Name], inrel[servers[0].Name]) {
			return fmt.Errorf("verify: InRelease differs between %s and %s", servers[0].Name, s.Name)
		}
	}
	if len(inrel) != len(servers) {
		return errors.New("verify: no InRelease in the published tree")
	}
	// One package file, to show the pool link works (apt-get update does
	// not fetch any).
	var poolFile string
	_ = filepath.WalkDir(filepath.Join(copyRoot, "pool"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".deb") && poolFile == "" {
			poolFile = path
		}
		return nil
	})
	if poolFile != "" {
		rel, _ := filepath.Rel(copyRoot, poolFile)
		want, _ := os.ReadFile(poolFile)
		for _, s := range servers {
			got, err := httpGet(ctx, s.Base+"/"+repoName+"/"+filepath.ToSlash(rel))
			if err != nil || !bytes.Equal(got, want) {
				return fmt.Errorf("verify %s: pool file %s: %w", s.Name, rel, err)
			}
		}
	}
	return nil
}

// ---- apt-get ----

type aptRunner struct {
	work, keyFile, confPath string
	opts                    []string
	seq                     int
}

func newAptRunner(work, keyFile string) *aptRunner {
	a := &aptRunner{work: work, keyFile: keyFile, confPath: filepath.Join(work, "apt.conf")}
	conf := `// bench/apt: apt-get reads this instead of /etc/apt (APT_CONFIG).
Dir::Etc::main "/dev/null";
Dir::Etc::parts "/dev/null";
`
	_ = os.WriteFile(a.confPath, []byte(conf), 0o644)
	return a
}

// describe returns the APT_CONFIG file and the command line of one update
// (LISTS stands for the fresh folder of each run).
func (a *aptRunner) describe() (string, string) {
	conf, _ := os.ReadFile(a.confPath)
	args := a.args("RUN")
	return string(conf), "APT_CONFIG=" + a.confPath + " apt-get " + strings.Join(args, " ") + " update"
}

func (a *aptRunner) args(dir string) []string {
	return []string{
		"-o", "Dir::Etc::SourceList=" + filepath.Join(dir, "etc", "sources.list"), "-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::State::Lists=" + filepath.Join(dir, "lists"), "-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		"-o", "Dir::State::status=" + filepath.Join(dir, "status"), "-o", "Acquire::Languages=none", "-o", "Debug::NoLocking=1",
		"-o", "APT::Sandbox::User=root", "-o", "Dir::Etc::Preferences=/dev/null", "-o", "Dir::Etc::PreferencesParts=/dev/null",
		"-o", "Dir::Etc::TrustedParts=/dev/null", "-o", "Dir::Etc::Trusted=/dev/null",
		"-o", "Acquire::http::Proxy::127.0.0.1=DIRECT",
	}
}

// fresh makes a new client folder for s: empty lists and cache.
func (a *aptRunner) fresh(s *server) (string, error) {
	a.seq++
	dir := filepath.Join(a.work, "apt-client", fmt.Sprintf("%04d-%s", a.seq, s.Name))
	for _, d := range []string{"lists/partial", "cache/archives/partial", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	line := fmt.Sprintf("deb [signed-by=%s] %s/%s %s main\n", a.keyFile, s.Base, repoName, distName)
	if err := os.WriteFile(filepath.Join(dir, "etc", "sources.list"), []byte(line), 0o644); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "status"), nil, 0o644)
}

func (a *aptRunner) command(ctx context.Context, dir string, extra ...string) *exec.Cmd {
	args := append(a.args(dir), extra...)
	args = append(args, "update")
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(benchkit.CleanEnv("APT_"), "APT_CONFIG="+a.confPath, "LC_ALL=C")
	return cmd
}

var reqRE = regexp.MustCompile(`^(GET|HEAD) (\S+) HTTP/1\.1$`)
var statusRE = regexp.MustCompile(`^HTTP/1\.1 (\d{3})`)

// debugRun runs two updates with Debug::Acquire::http against s, the
// first with fresh lists and the second with the lists the first left
// (what a machine's next update does), and lists what apt asked for and
// what it got each time.
func (a *aptRunner) debugRun(ctx context.Context, s *server) (fresh, warm requestRow, err error) {
	dir, err := a.fresh(s)
	if err != nil {
		return fresh, warm, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for i, row := range []*requestRow{&fresh, &warm} {
		cmd := a.command(ctx, dir, "-o", "Debug::Acquire::http=true")
		out, err := cmd.CombinedOutput()
		logPath := filepath.Join(a.work, fmt.Sprintf("apt-debug-%s-%d.log", s.Name, i+1))
		_ = os.WriteFile(logPath, out, 0o644)
		if err != nil || aptWarned(out) {
			return fresh, warm, fmt.Errorf("apt-get update against %s: %w\n%s", s.Name, err, out)
		}
		*row = parseDebug(s.Name, logPath, out)
	}
	return fresh, warm, nil
}

// parseDebug pairs the requests in apt's Debug::Acquire::http output with
// the status lines of the answers, noting conditional requests.
func parseDebug(name, logPath string, out []byte) requestRow {
	row := requestRow{Server: name, RawPath: logPath}
	var pending []string
	inRequest := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := reqRE.FindStringSubmatch(line); m != nil {
			pending = append(pending, m[1]+" "+m[2])
			row.Count++
			inRequest = true
			continue
		}
		if inRequest {
			if line == "" {
				inRequest = false
			} else if k, _, ok := strings.Cut(line, ":"); ok && (strings.EqualFold(k, "If-Modified-Since") || strings.EqualFold(k, "If-None-Match") || strings.EqualFold(k, "Range") || strings.EqualFold(k, "If-Range")) {
				pending[len(pending)-1] += " [" + k + "]"
			}
			continue
		}
		if m := statusRE.FindStringSubmatch(line); m != nil && len(pending) > 0 {
			row.Lines = append(row.Lines, pending[0]+" → "+m[1])
			pending = pending[1:]
		}
	}
	for _, p := range pending {
		row.Lines = append(row.Lines, p+" → (no answer seen)")
	}
	return row
}

func aptWarned(out []byte) bool {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "W:") || strings.HasPrefix(l, "E:") || strings.HasPrefix(l, "Err:") {
			return true
		}
	}
	return false
}

// requestedPaths turns "GET /apt/… → 200" lines into paths under …/apt/.
func requestedPaths(lines []string) []string {
	var out []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 2 {
			if _, p, ok := strings.Cut(f[1], "/apt/"); ok && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// timedRun times one apt-get update against s with fresh lists; one that
// other processes disturbed is repeated up to retries times.
func (a *aptRunner) timedRun(ctx context.Context, s *server, round, retries int) (updateRun, error) {
	var u updateRun
	for try := 0; try <= retries; try++ {
		dir, err := a.fresh(s)
		if err != nil {
			return u, err
		}
		runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		cmd := a.command(runCtx, dir, "-q")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		win := benchkit.BeginWindow(s.pid)
		start := time.Now()
		err = cmd.Run()
		wall := time.Since(start)
		server, self, other, elapsed := win.End()
		cancel()
		if err != nil || aptWarned(out.Bytes()) {
			return u, fmt.Errorf("apt-get update against %s: %w\n%s", s.Name, err, out.String())
		}
		if m, _ := filepath.Glob(filepath.Join(dir, "lists", "*Packages*")); len(m) == 0 {
			return u, fmt.Errorf("apt-get update against %s left no Packages in its lists:\n%s", s.Name, out.String())
		}
		var aptCPU float64
		if ps := cmd.ProcessState; ps != nil {
			aptCPU = (ps.UserTime() + ps.SystemTime()).Seconds()
		}
		if s.pid == 0 { // served by this process
			server = self
		}
		otherCores := max(0, other-aptCPU) / elapsed
		_ = os.RemoveAll(dir)
		u = updateRun{Server: s.Name, Round: round, Seconds: wall.Seconds(), ServerCPU: server, ClientCPU: aptCPU,
			OtherCores: otherCores, Tries: try + 1, Disturbed: otherCores > disturbedCores}
		if !u.Disturbed {
			return u, nil
		}
		if try < retries {
			waitQuiet(ctx, "", time.Minute)
		}
	}
	return u, nil
}

// headersOf fetches InRelease and the next file apt asked for from each server
// and keeps the response headers that matter for caching.
func headersOf(ctx context.Context, servers []*server, paths []string) []headerRow {
	var rows []headerRow
	var picks []string
	for _, p := range paths {
		if strings.HasSuffix(p, "/InRelease") || (len(picks) == 1 && !strings.HasSuffix(p, "/InRelease")) {
			picks = append(picks, p)
		}
	}
	for _, p := range picks {
		for _, s := range servers {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Base+"/"+p, nil)
			resp, err := plainClient.Do(req)
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			h := map[string]string{}
			for _, k := range []string{"Content-Type", "Content-Length", "Cache-Control", "ETag", "Last-Modified", "Accept-Ranges", "Content-Encoding", "Connection"} {
				h[k] = resp.Header.Get(k)
			}
			rows = append(rows, headerRow{Server: s.Name, Path: p, Status: resp.StatusCode, Headers: h})
		}
	}
	return rows
}

// latencies times n GETs of each path per server over one keep-alive
// connection, the servers alternating.
func latencies(ctx context.Context, servers []*server, paths []string, n int) []latencyRow {
	var rows []latencyRow
	clients := map[string]*http.Client{}
	for _, s := range servers {
		clients[s.Name] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 1}}
	}
	buf := make([]byte, 64<<10)
	for _, p := range paths {
		row := latencyRow{Path: p, Medians: map[string]float64{}, P90s: map[string]float64{}}
		samples := map[string][]float64{}
		for i := 0; i < n+2; i++ { // the first two warm up
			for _, s := range servers {
				start := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Base+"/"+p, nil)
				resp, err := clients[s.Name].Do(req)
				if err != nil {
					continue
				}
				size := 0
				for {
					k, err := resp.Body.Read(buf)
					size += k
					if err != nil {
						break
					}
				}
				resp.Body.Close()
				if i >= 2 && resp.StatusCode == http.StatusOK {
					samples[s.Name] = append(samples[s.Name], float64(time.Since(start).Microseconds()))
					row.Bytes = size
				}
			}
		}
		for name, v := range samples {
			slices.Sort(v)
			row.Medians[name] = benchkit.Median(v)
			row.P90s[name] = pct(v, 0.9)
		}
		rows = append(rows, row)
	}
	return rows
}

// ---- statistics ----

// pct is the nearest-rank percentile of sorted values.
func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func summarize(servers []*server, runs []updateRun) ([]summaryRow, goalResult) {
	var rows []summaryRow
	by := map[string]summaryRow{}
	for _, s := range servers {
		var wall, scpu, ccpu []float64
		row := summaryRow{Server: s.Name}
		for _, u := range runs {
			if u.Server != s.Name {
				continue
			}
			wall = append(wall, u.Seconds)
			scpu = append(scpu, u.ServerCPU)
			ccpu = append(ccpu, u.ClientCPU)
			row.Mean += u.Seconds
			if u.Disturbed {
				row.DisturbedRuns++
			}
		}
		slices.Sort(wall)
		slices.Sort(scpu)
		slices.Sort(ccpu)
		row.N = len(wall)
		if row.N > 0 {
			row.Mean /= float64(row.N)
			row.Median, row.P90, row.Min, row.Max = benchkit.Median(wall), pct(wall, 0.9), wall[0], wall[len(wall)-1]
			row.ServerCPUMed, row.ClientCPUMed = benchkit.Median(scpu), benchkit.Median(ccpu)
		}
		rows = append(rows, row)
		by[s.Name] = row
	}
	g := goalResult{Others: map[string][2]float64{}}
	if len(servers) < 2 {
		return rows, g
	}
	app := by[servers[0].Name]
	ref := by[servers[1].Name]
	g.Reference = servers[1].Name
	g.MedianRatio = app.Median / ref.Median
	g.P90Ratio = app.P90 / ref.P90
	g.Met = g.MedianRatio <= goalRatio
	for _, s := range servers[2:] {
		r := by[s.Name]
		g.Others[s.Name] = [2]float64{app.Median / r.Median, app.P90 / r.P90}
	}
	return rows, g
}

// ---- the machine ----

func machineInfo(ctx context.Context, applianceBin, nginxBin string) machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(l)
		if len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m.MemTotal = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	first := func(name string, args ...string) string {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(c, name, args...).CombinedOutput()
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return l
	}
	m.Apt = first("apt-get", "--version")
	if nginxBin != "" {
		m.Nginx = first(nginxBin, "-v")
	}
	m.Appliance = first(applianceBin, "version")
	return m
}

// waitQuiet waits, at most maxWait, until the rest of the machine has used
// under disturbedCores/2 of a CPU for three seconds in a row, and says what
// it saw.
func waitQuiet(ctx context.Context, what string, maxWait time.Duration) string {
	start := time.Now()
	deadline := start.Add(maxWait)
	quiet := 0
	for i := 0; ; i++ {
		w := benchkit.BeginWindow(0)
		select {
		case <-ctx.Done():
			return what + ": cancelled"
		case <-time.After(time.Second):
		}
		_, _, other, elapsed := w.End()
		cores := other / elapsed
		if cores < disturbedCores/2 {
			quiet++
		} else {
			quiet = 0
		}
		if quiet >= 3 {
			s := fmt.Sprintf("%s: quiet after %.0fs", what, time.Since(start).Seconds())
			if what != "" {
				benchkit.Logf("%s", s)
			}
			return s
		}
		if time.Now().After(deadline) {
			s := fmt.Sprintf("%s: machine still busy after %.0fs (%.2f cores used by other processes); measured anyway", what, time.Since(start).Seconds(), cores)
			benchkit.Logf("%s", s)
			return s
		}
		if i%30 == 0 && what != "" {
			benchkit.Logf("waiting for a quiet machine before %s (%.2f cores used by other processes)", what, cores)
		}
	}
}

// ---- the report ----

func markdown(r *report) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("## apt repository benchmark (issue 5), %s\n\n", r.Date.Format("2006-01-02 15:04 MST"))
	m := r.Machine
	p("Machine: %d CPUs (%s), %s RAM, Linux %s; %s; %s; nginx: %s; appliance: %s.\n\n", m.CPUs, m.Model, m.MemTotal, m.Kernel, m.GoVersion, m.Apt, orNone(m.Nginx), m.Appliance)
	p("Packages: %d generated .debs, %d bytes in all, %d with Depends, %d Architecture: all (generated in %.2fs).\n\n",
		r.Debs.Count, r.Debs.Bytes, r.Debs.WithDeps, r.Debs.ArchAll, r.Debs.GenSeconds)

	p("### Publishing\n\n| change | upload | wall time | appliance CPU | CLI CPU | other processes |\n|---|---:|---:|---:|---:|---:|\n")
	p("| `apt add` of %d packages (one publish, %d packages after) | %d B | **%.2f s** | %.2f s | %.2f s | %.2f cores |\n",
		r.Publish.Packages, r.Publish.Total, r.Publish.UploadBytes, r.Publish.Seconds, r.Publish.ServerCPU, r.Publish.ClientCPU, r.Publish.OtherCores)
	for _, o := range r.OneMore {
		p("| `apt add` of 1 more package (%d packages after) | %d B | **%.2f s** | %.2f s | %.2f s | %.2f cores |\n", o.Total, o.UploadBytes, o.Seconds, o.ServerCPU, o.ClientCPU, o.OtherCores)
	}
	p("\nPublished tree (publish `%s`): %d files under dists/, %d bytes (InRelease %d bytes):\n\n", r.Publish.ID, r.Tree.Files, r.Tree.Bytes, r.Tree.InRelease)
	for _, l := range r.Tree.Listing {
		p("- `%s`\n", l)
	}
	if len(r.Tree.Skipped) > 0 {
		p("\nNot copied: %d symbolic links aptly leaves in by-hash/ (not named by any Release file, never requested by apt, not served by the appliance): `%s`.\n", len(r.Tree.Skipped), strings.Join(r.Tree.Skipped, "`, `"))
	}
	p("\nServers (all on 127.0.0.1, plain HTTP):\n\n")
	for _, s := range r.Servers {
		p("- **%s**: %s, `%s`\n", s.Name, s.Kind, s.Base)
	}
	p("\nEvery dists/ file and one pool file were fetched from every server and are byte-identical to the published tree; InRelease is identical on all servers: %v.\n\n", r.Tree.VerifiedOK)

	p("### apt-get update\n\nEach update: `%s` (RUN is a fresh folder each time: empty lists and cache), with APT_CONFIG:\n\n```\n%s```\n\n", r.AptCommand, r.AptConfig)
	p("What apt requested (Debug::Acquire::http, fresh lists):\n\n")
	for _, q := range r.Requests {
		p("- %s (%d requests): %s\n", q.Server, q.Count, strings.Join(q.Lines, "; "))
	}
	p("\nA second update with the lists the first left (what a machine's next `apt-get update` does):\n\n")
	for _, q := range r.WarmRequests {
		p("- %s (%d requests): %s\n", q.Server, q.Count, strings.Join(q.Lines, "; "))
	}
	p("\n%d rounds, servers alternating (order rotating each round):\n\n", len(r.Updates)/max(1, len(r.Servers)))
	p("| server | n | median | p90 | min | max | mean | server CPU / update (median) | apt CPU / update (median) | disturbed |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Summary {
		p("| %s | %d | **%.1f ms** | **%.1f ms** | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %d |\n", s.Server, s.N, s.Median*1e3, s.P90*1e3, s.Min*1e3, s.Max*1e3, s.Mean*1e3, s.ServerCPUMed*1e3, s.ClientCPUMed*1e3, s.DisturbedRuns)
	}
	g := r.Goal
	if g.Reference != "" {
		verdict := "**met**"
		if !g.Met {
			verdict = "**missed**"
		}
		p("\nRatio appliance / %s: median **%.3f**, p90 %.3f. Goal (appliance within 10%% of the static server, on the median): %s.\n", g.Reference, g.MedianRatio, g.P90Ratio, verdict)
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for k := range g.Others {
				if !yield(k) {
					return
				}
			}
		}) {
			p("Ratio appliance / %s: median %.3f, p90 %.3f.\n", name, g.Others[name][0], g.Others[name][1])
		}
	}
	if len(r.Latency) > 0 {
		p("\nPer-request latency of the files apt fetched (keep-alive Go client, %v GETs per file and server, servers alternating), median (p90) in µs:\n\n| file | bytes |", r.Options["latency_gets"])
		for _, s := range r.Servers {
			p(" %s |", s.Name)
		}
		p("\n|---|---:|%s\n", strings.Repeat("---:|", len(r.Servers)))
		for _, l := range r.Latency {
			p("| `%s` | %d |", l.Path, l.Bytes)
			for _, s := range r.Servers {
				p(" %.0f (%.0f) |", l.Medians[s.Name], l.P90s[s.Name])
			}
			p("\n")
		}
	}
	if len(r.Headers) > 0 {
		p("\nResponse headers:\n\n| server | file | status | Cache-Control | ETag | Last-Modified | Content-Type | Content-Encoding |\n|---|---|---:|---|---|---|---|---|\n")
		for _, h := range r.Headers {
			p("| %s | `%s` | %d | %s | %s | %s | %s | %s |\n", h.Server, h.Path, h.Status, orNone(h.Headers["Cache-Control"]), orNone(h.Headers["ETag"]), orNone(h.Headers["Last-Modified"]), orNone(h.Headers["Content-Type"]), orNone(h.Headers["Content-Encoding"]))
		}
	}
	p("\nQuiet-machine checks: %s. Updates disturbed by other processes (> %.2f cores, after %d retries): %d.\n", strings.Join(r.QuietWaits, "; "), disturbedCores, r.Options["retries"], r.Disturbed)
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
