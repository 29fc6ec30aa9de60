// Command apt measures the appliance's apt repository: one `appliance apt
// add` of -packages small generated .deb files (one publish), adding one
// more package, and `apt-get update` against the appliance beside nginx
// serving a copy of the same published tree (dists/ copied, pool/ linked),
// in the same run. Every file of dists/ is first fetched from both servers
// and compared byte for byte.
//
// Each timed update starts from fresh, empty lists and cache folders and
// runs with an APT_CONFIG of its own (Dir::Etc::main and parts are
// /dev/null), so the machine's /etc/apt plays no part; the servers take
// turns round by round. The figure is the median wall time of an update.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
)

const (
	repoName = "bench"
	distName = "noble"
)

type options struct {
	*benchkit.Flags
	nginx             string
	packages, payload int
}

// server is an apt repository served over plain HTTP: Base/bench is the
// repository.
type server struct {
	name, base string
	proc       *benchkit.Process
}

func main() {
	o := options{Flags: benchkit.CommonFlags("apt", 20, 45*time.Minute)}
	flag.StringVar(&o.nginx, "nginx", "/usr/sbin/nginx", "nginx binary, the static server")
	flag.IntVar(&o.packages, "packages", 1000, "packages to publish with one apt add (smoke: 50)")
	flag.IntVar(&o.payload, "payload-bytes", 48, "bytes of the one file in each package")
	o.Parse()
	if o.Smoke {
		o.packages = 50
	}
	benchkit.Main("apt", o.Timeout, func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	work, cleanup, err := benchkit.WorkDir("", "apt-bench-", o.Keep)
	if err != nil {
		return err
	}
	defer cleanup()
	debs, err := generateDebs(filepath.Join(work, "debs"), o.packages, o.payload)
	if err != nil {
		return err
	}
	dataDir := filepath.Join(work, "appliance")
	a, err := benchkit.StartAppliance(ctx, o.Appliance, benchkit.ApplianceOptions{DataDir: dataDir, LogPath: dataDir + ".log",
		Env: benchkit.CleanEnv("APT_"), Ready: "/readyz"})
	if err != nil {
		return err
	}
	defer a.Proc.Stop()
	benchkit.WaitQuiet(ctx, o.QuietWait)
	publishSecs, id, err := add(ctx, a, debs)
	if err != nil {
		return err
	}
	benchkit.Logf("published %d packages in %.2f s (publish %s)", len(debs), publishSecs, id)
	oneMore, err := writeDeb(filepath.Join(work, "debs"), pkgSpec{Name: "extra-tool", Version: "1.0-1", Arch: "amd64", Payload: o.payload})
	if err != nil {
		return err
	}
	oneMoreSecs, id, err := add(ctx, a, []string{oneMore})
	if err != nil {
		return err
	}
	pubDir := filepath.Join(dataDir, "apt", "public", id)
	root := filepath.Join(work, "static")
	files, err := copyTree(pubDir, filepath.Join(root, "apt", repoName))
	if err != nil {
		return err
	}
	ng, err := startNginx(ctx, o.nginx, filepath.Join(work, "nginx"), root)
	if err != nil {
		return err
	}
	defer ng.proc.Stop()
	servers := []*server{{name: "appliance", base: "http://" + a.HTTPAddr + "/apt", proc: a.Proc}, ng}
	if err := verifySame(ctx, servers, filepath.Join(root, "apt", repoName), files); err != nil {
		return err
	}
	ar, err := newAptRunner(ctx, work, servers[0])
	if err != nil {
		return err
	}
	secs := make([][]float64, len(servers))
	cpu := make([][]float64, len(servers))
	err = benchkit.Interleave(ctx, o.Rounds, len(servers), o.QuietWait, func(r, i int) error {
		wall, server, err := ar.update(ctx, servers[i])
		if err != nil {
			return err
		}
		secs[i], cpu[i] = append(secs[i], wall), append(cpu[i], server)
		benchkit.Logf("round %d %s: %.3f s", r+1, servers[i].name, wall)
		return nil
	})
	if err != nil {
		return err
	}
	r := &benchkit.Report{Title: "apt: publish and apt-get update against nginx",
		Method: fmt.Sprintf("%d generated packages (%d-byte payloads) published with one `appliance apt add`, then one more; `apt-get update` "+
			"with fresh lists against the appliance and nginx serving a copy of the same publish (byte-identical dists/), %d interleaved "+
			"rounds, medians. Server CPU from /proc schedstat.", o.packages, o.payload, o.Rounds),
		Header:  []string{"server", "update s (median)", "× nginx", "server CPU s", "rounds s"},
		Machine: benchkit.Machine(ctx, work, o.Appliance, map[string][]string{"nginx": {o.nginx, "-v"}, "apt-get": {"apt-get", "--version"}}),
		Command: benchkit.Reproduce("apt"),
	}
	if v := r.Machine["apt-get"]; v != "" {
		r.Machine["apt-get"], _, _ = strings.Cut(v, "\n")
	}
	anchor := benchkit.Median(secs[1])
	for i, s := range servers {
		m := benchkit.Median(secs[i])
		benchkit.PrintResult("apt", "server", s.name, "update_ms", 1000*m, "ratio_nginx", benchkit.Ratio(m, anchor),
			"server_cpu_ms", 1000*benchkit.Median(cpu[i]), "rounds", len(secs[i]))
		r.Row(s.name, fmt.Sprintf("%.3f", m), benchkit.Ratio(m, anchor), fmt.Sprintf("%.3f", benchkit.Median(cpu[i])), benchkit.Floats(secs[i], "%.3f"))
	}
	benchkit.PrintResult("apt", "packages", o.packages, "publish_s", publishSecs, "one_more_s", oneMoreSecs)
	r.Note("publish of %d packages: %.2f s; one more package: %.2f s", o.packages, publishSecs, oneMoreSecs)
	r.Note("goal: update within 10%% of nginx (ratio ≤ 1.10)")
	return r.Write(os.Stdout, o.Out)
}

var publishedRE = regexp.MustCompile(`published \S+ \S+ as (\S+) \(add\): (\d+) packages`)

// add runs `appliance apt add` of files and returns its wall time and the
// publish's id.
func add(ctx context.Context, a *benchkit.Appliance, files []string) (float64, string, error) {
	cmd := a.Command(ctx, append([]string{"apt", "add", repoName, distName}, files...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, "", fmt.Errorf("appliance apt add (%d files): %w\n%s", len(files), err, &out)
	}
	m := publishedRE.FindStringSubmatch(out.String())
	if m == nil {
		return 0, "", fmt.Errorf("appliance apt add: unexpected output:\n%s", &out)
	}
	return secs, m[1], nil
}

// pkgSpec is one generated package.
type pkgSpec struct {
	Name, Version, Arch, Depends string
	Payload                      int
}

func (p pkgSpec) control() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: Bench <bench@example.invalid>\nInstalled-Size: 8\n", p.Name, p.Version, p.Arch)
	if p.Depends != "" {
		b.WriteString("Depends: " + p.Depends + "\n")
	}
	fmt.Fprintf(&b, "Section: misc\nPriority: optional\nDescription: benchmark package %s\n generated by bench/apt.\n", p.Name)
	return b.String()
}

// generateDebs writes n packages into dir: bench-pkg-NNNN, most depending
// on another, one in ten Architecture: all.
func generateDebs(dir string, n, payload int) ([]string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	paths := make([]string, n)
	for i := range n {
		p := pkgSpec{Name: fmt.Sprintf("bench-pkg-%04d", i), Version: fmt.Sprintf("1.%d-1", i), Arch: "amd64", Payload: payload}
		if i%10 == 3 {
			p.Arch = "all"
		}
		if i > 0 && i%4 != 0 {
			p.Depends = fmt.Sprintf("bench-pkg-%04d (>= 1.0)", i/2)
		}
		var err error
		if paths[i], err = writeDeb(dir, p); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// writeDeb builds p as a .deb: an ar archive of debian-binary,
// control.tar.gz and data.tar.gz (dpkg-deb accepts it).
func writeDeb(dir string, p pkgSpec) (string, error) {
	payload := make([]byte, p.Payload)
	h := sha256.Sum256([]byte(p.Name + " " + p.Version))
	for i := range payload {
		payload[i] = "abcdefghijklmnopqrstuvwxyz \n"[(int(h[i%32])+i/3)%28] // text-like, distinct per package
	}
	ctl, err := tarGz(map[string][]byte{"./control": []byte(p.control())})
	if err != nil {
		return "", err
	}
	data, err := tarGz(map[string][]byte{"./usr/share/doc/" + p.Name + "/README": payload})
	if err != nil {
		return "", err
	}
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	for _, m := range [][2]string{{"debian-binary", "2.0\n"}, {"control.tar.gz", string(ctl)}, {"data.tar.gz", string(data)}} {
		fmt.Fprintf(&deb, "%-16s%-12d%-6d%-6d%-8s%-10d`\n%s", m[0], 1700000000, 0, 0, "100644", len(m[1]), m[1])
		if len(m[1])%2 == 1 {
			deb.WriteByte('\n')
		}
	}
	path := filepath.Join(dir, fmt.Sprintf("%s_%s_%s.deb", p.Name, p.Version, p.Arch))
	return path, os.WriteFile(path, deb.Bytes(), 0o600)
}

// tarGz is a .tar.gz of files (name → body), their folders before them.
func tarGz(files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	hdr := func(name string, typ byte, mode, size int64) error {
		return tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Mode: mode, Size: size, ModTime: time.Unix(1700000000, 0), Uname: "root", Gname: "root"})
	}
	if err := hdr("./", tar.TypeDir, 0o755, 0); err != nil {
		return nil, err
	}
	for name, body := range files {
		for d, dirs := "./", strings.Split(strings.TrimPrefix(filepath.Dir(name), "./"), "/"); len(dirs) > 0 && dirs[0] != "."; dirs = dirs[1:] {
			d += dirs[0] + "/"
			if err := hdr(d, tar.TypeDir, 0o755, 0); err != nil {
				return nil, err
			}
		}
		if err := hdr(name, tar.TypeReg, 0o644, int64(len(body))); err != nil {
			return nil, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, err
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

// copyTree copies pubDir/dists into dst/dists (regular files only: aptly's
// by-hash symbolic links are named by no Release file) and links dst/pool
// to pubDir/pool. It returns the copied files, relative to dst.
func copyTree(pubDir, dst string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(filepath.Join(pubDir, "dists"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(pubDir, path)
		switch {
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		case !d.Type().IsRegular():
			return nil
		}
		data, err := os.ReadFile(path)
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, rel), data, 0o644) //nolint:gosec // served by nginx
		}
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("copy the published tree: %w", err)
	}
	return files, os.Symlink(filepath.Join(pubDir, "pool"), filepath.Join(dst, "pool"))
}

// startNginx runs nginx in the foreground as one process (no master, no
// workers) with a config and prefix of its own, on a free loopback port.
func startNginx(ctx context.Context, bin, prefix, root string) (*server, error) {
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o750); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    server { listen %[2]s; root %[3]s; location / { } }
}
`, prefix, addr, root)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := benchkit.Start("nginx", filepath.Join(prefix, "stdout.log"), benchkit.CleanEnv("APT_"), bin,
		"-p", prefix+"/", "-c", confPath, "-e", filepath.Join(prefix, "error.log"))
	if err != nil {
		return nil, err
	}
	p.StopSignal = syscall.SIGQUIT // nginx's graceful stop
	hc := &http.Client{Timeout: 2 * time.Second}
	if err := benchkit.WaitReady(ctx, p, time.Minute, func() bool {
		resp, err := hc.Get("http://" + addr + "/")
		if err == nil {
			_ = resp.Body.Close()
		}
		return err == nil
	}); err != nil {
		p.Stop()
		return nil, fmt.Errorf("nginx: %w", err)
	}
	return &server{name: "nginx", base: "http://" + addr + "/apt", proc: p}, nil
}

func httpGet(ctx context.Context, u string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := (&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableCompression: true}}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return b, err
}

// verifySame fetches every copied dists/ file from every server and
// compares it with the copy.
func verifySame(ctx context.Context, servers []*server, copyRoot string, files []string) error {
	for _, rel := range files {
		want, err := os.ReadFile(filepath.Join(copyRoot, rel))
		if err != nil {
			return err
		}
		for _, s := range servers {
			got, err := httpGet(ctx, s.base+"/"+repoName+"/"+rel)
			if err != nil {
				return fmt.Errorf("verify %s: %w", s.name, err)
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("verify: %s serves %s different from the published tree", s.name, rel)
			}
		}
	}
	benchkit.Logf("%d files of dists/ byte-identical on %d servers", len(files), len(servers))
	return nil
}

// aptRunner runs apt-get update with a configuration of its own.
type aptRunner struct {
	work, keyFile, confPath string
	seq                     int
}

func newAptRunner(ctx context.Context, work string, s *server) (*aptRunner, error) {
	key, err := httpGet(ctx, s.base+"/key.gpg")
	if err != nil {
		return nil, err
	}
	a := &aptRunner{work: work, keyFile: filepath.Join(work, "key.gpg"), confPath: filepath.Join(work, "apt.conf")}
	if err := os.WriteFile(a.keyFile, key, 0o600); err != nil {
		return nil, err
	}
	return a, os.WriteFile(a.confPath, []byte("Dir::Etc::main \"/dev/null\";\nDir::Etc::parts \"/dev/null\";\n"), 0o600)
}

// update runs one apt-get update against s with fresh lists and cache; it
// returns its wall time and the server's CPU seconds.
func (a *aptRunner) update(ctx context.Context, s *server) (wall, serverCPU float64, err error) {
	a.seq++
	dir := filepath.Join(a.work, "apt-client", fmt.Sprint(a.seq))
	defer os.RemoveAll(dir)
	for _, d := range []string{"lists/partial", "cache/archives/partial", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			return 0, 0, err
		}
	}
	line := fmt.Sprintf("deb [signed-by=%s] %s/%s %s main\n", a.keyFile, s.base, repoName, distName)
	if err := os.WriteFile(filepath.Join(dir, "etc", "sources.list"), []byte(line), 0o600); err != nil {
		return 0, 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), nil, 0o600); err != nil {
		return 0, 0, err
	}
	args := []string{"-q", "-o", "Dir::Etc::SourceList=" + filepath.Join(dir, "etc", "sources.list"), "-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::State::Lists=" + filepath.Join(dir, "lists"), "-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		"-o", "Dir::State::status=" + filepath.Join(dir, "status"), "-o", "Acquire::Languages=none", "-o", "Debug::NoLocking=1",
		"-o", "APT::Sandbox::User=root", "-o", "Dir::Etc::Preferences=/dev/null", "-o", "Dir::Etc::PreferencesParts=/dev/null",
		"-o", "Dir::Etc::TrustedParts=/dev/null", "-o", "Dir::Etc::Trusted=/dev/null", "-o", "Acquire::http::Proxy::127.0.0.1=DIRECT", "update"}
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(runCtx, "apt-get", args...)
	cmd.Env = append(benchkit.CleanEnv("APT_"), "APT_CONFIG="+a.confPath, "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	w := benchkit.BeginWindow(s.proc.PID())
	err = cmd.Run()
	server, _, _, elapsed := w.End()
	if err != nil {
		return 0, 0, fmt.Errorf("apt-get update against %s: %w\n%s", s.name, err, &out)
	}
	if bytes.Contains(out.Bytes(), []byte("\nW: ")) || bytes.HasPrefix(out.Bytes(), []byte("W: ")) {
		return 0, 0, fmt.Errorf("apt-get update against %s warned:\n%s", s.name, &out)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "lists", "*Packages*")); len(m) == 0 {
		return 0, 0, fmt.Errorf("apt-get update against %s left no Packages:\n%s", s.name, &out)
	}
	return elapsed, server, nil
}
