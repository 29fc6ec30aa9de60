// Command replicas measures aggregate blob pull throughput through
// Debian's haproxy (running configs/haproxy.cfg, as TestReplicas does) in
// front of 1, 2 and 3 read-only replicas of one writer on a real Ceph
// object store (../shared/ceph), and, beside them in the same rounds, of
// one appliance on the local filesystem behind the same haproxy (a
// backend of its own, so both pay the same hop).
//
// Each round, every target in turn: -clients anonymous pullers started
// together, each pulling the whole image (manifest and layers, every
// digest verified) once over HTTP/1.1 and TLS; the aggregate MB/s is the
// bytes of all pulls over the time until the last one finished, the
// latency a pull's whole time. Each cell is the median of -rounds rounds.
// It prints one RESULT line per cell, then the report.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/bench/internal/benchkit"
	"github.com/appliance-dev/appliance/internal/testkit"
)

type options struct {
	*benchkit.Flags
	haproxyCfg                string
	layerMiB, layers, clients int
}

// cell is one target's figures, one per round.
type cell struct {
	mbps, p50, p95 []float64
}

func main() {
	o := options{Flags: benchkit.CommonFlags("replicas", 3, 30*time.Minute)}
	flag.StringVar(&o.haproxyCfg, "haproxy-config", "configs/haproxy.cfg", "the example haproxy configuration")
	flag.IntVar(&o.layerMiB, "layer-mib", 32, "MiB per layer (smoke: 8)")
	flag.IntVar(&o.layers, "layers", 2, "layers of the image")
	flag.IntVar(&o.clients, "clients", 8, "concurrent pullers (smoke: 4)")
	o.Parse()
	if o.Smoke {
		o.layerMiB, o.clients = 8, 4
	}
	benchkit.Main("replicas", o.Timeout, func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	work, cleanup, err := benchkit.WorkDir("", "replicas-bench-", o.Keep)
	if err != nil {
		return err
	}
	defer cleanup()

	// The object store, a writer and three replicas on it, and the
	// filesystem appliance.
	benchkit.Logf("starting Ceph")
	ceph, err := testkit.LaunchCeph(ctx, filepath.Join(work, "ceph"))
	if err != nil {
		return err
	}
	defer func() { _ = ceph.Stop() }()
	if err := createBucket(ctx, ceph, "bench"); err != nil {
		return err
	}
	ak, sk := filepath.Join(work, "ak"), filepath.Join(work, "sk")
	if err := errors.Join(os.WriteFile(ak, []byte(ceph.AccessKey), 0o600), os.WriteFile(sk, []byte(ceph.SecretKey), 0o600)); err != nil {
		return err
	}
	config := func(role string) (string, error) {
		p := filepath.Join(work, role+".yaml")
		return p, os.WriteFile(p, fmt.Appendf(nil, "role: %s\nstorage:\n  backend: s3\n  s3:\n    endpoint: %s\n    bucket: bench\n    prefix: site-a\n    access_key_file: %s\n    secret_key_file: %s\n",
			role, ceph.URL, ak, sk), 0o600)
	}
	wcfg, err := config("writer")
	if err != nil {
		return err
	}
	writer, err := benchkit.StartAppliance(ctx, o.Appliance, benchkit.ApplianceOptions{DataDir: filepath.Join(work, "writer"),
		LogPath: filepath.Join(work, "writer.log"), Env: benchkit.CleanEnv(), Args: []string{"--config", wcfg}, Ready: "/readyz"})
	if err != nil {
		return err
	}
	defer writer.Proc.Stop()
	rcfg, err := config("replica")
	if err != nil {
		return err
	}
	var replicas []backend
	for i := range 3 {
		b, err := startReplica(ctx, o.Appliance, work, writer, rcfg, i+1)
		if err != nil {
			return err
		}
		defer b.proc.Stop()
		replicas = append(replicas, b)
	}
	local, err := benchkit.StartAppliance(ctx, o.Appliance, benchkit.ApplianceOptions{DataDir: filepath.Join(work, "filesystem"),
		LogPath: filepath.Join(work, "filesystem.log"), Env: benchkit.CleanEnv(), Ready: "/readyz"})
	if err != nil {
		return err
	}
	defer local.Proc.Stop()
	lb, err := startHAProxy(ctx, o.haproxyCfg, work, replicas, backend{https: local.HTTPSAddr, http: local.HTTPAddr})
	if err != nil {
		return err
	}
	defer lb.proc.Stop()

	// One image, pushed to the writer and to the filesystem appliance.
	sizes := make([]int64, o.layers)
	for i := range sizes {
		sizes[i] = int64(o.layerMiB) << 20
	}
	set, err := benchkit.WriteImage(ctx, filepath.Join(work, "image"), "v1", sizes, 16)
	if err != nil {
		return err
	}
	img := set.Images[0]
	for _, a := range []*benchkit.Appliance{writer, local} {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(a.Roots)}}
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+a.Password))
		if err := benchkit.PushImage(ctx, hc, &url.URL{Scheme: "https", Host: a.HTTPSAddr}, basic, "bench/blob", set, img); err != nil {
			return fmt.Errorf("push to %s: %w", a.HTTPSAddr, err)
		}
	}

	targets := []struct {
		name, addr string
		up         int // replicas in the backend
	}{
		{"filesystem", lb.local, 0}, {"s3-1-replica", lb.addr, 1}, {"s3-2-replicas", lb.addr, 2}, {"s3-3-replicas", lb.addr, 3},
	}
	cells := make([]cell, len(targets))
	err = benchkit.Interleave(ctx, o.Rounds, len(targets), o.QuietWait, func(r, i int) error {
		tg := targets[i]
		if tg.up > 0 {
			if err := lb.use(ctx, tg.up); err != nil {
				return err
			}
		}
		roots := writer.Roots // the replicas' CA
		if tg.up == 0 {
			roots = local.Roots
		}
		mbps, p50, p95, err := pullRound(ctx, tg.addr, roots, o.clients, img.ManifestDigest, set.Payload)
		if err != nil {
			return fmt.Errorf("round %d, %s: %w", r+1, tg.name, err)
		}
		c := &cells[i]
		c.mbps, c.p50, c.p95 = append(c.mbps, mbps), append(c.p50, p50), append(c.p95, p95)
		benchkit.Logf("round %d %s: %.1f MB/s, p50 %.2f s", r+1, tg.name, mbps, p50)
		return nil
	})
	if err != nil {
		return err
	}
	rep := &benchkit.Report{Title: "Blob pulls through haproxy: replicas on Ceph against one appliance on the filesystem",
		Method: fmt.Sprintf("%d anonymous pullers at once, each pulling one image of %d × %d MiB over HTTP/1.1 and TLS through haproxy "+
			"(configs/haproxy.cfg); 1, 2, 3 read-only replicas on one Ceph bucket (../shared/ceph), set through haproxy's stats socket, "+
			"against one appliance on the filesystem behind the same haproxy; %d interleaved rounds, medians.", o.clients, o.layers, o.layerMiB, o.Rounds),
		Header:  []string{"target", "aggregate MB/s", "× filesystem", "pull p50 s", "pull p95 s"},
		Machine: benchkit.Machine(ctx, work, o.Appliance, map[string][]string{"haproxy": {"haproxy", "-v"}}),
		Command: benchkit.Reproduce("replicas"),
	}
	if v := rep.Machine["haproxy"]; v != "" {
		rep.Machine["haproxy"], _, _ = strings.Cut(v, "\n")
	}
	anchor := benchkit.Median(cells[0].mbps)
	for i, c := range cells {
		m, p50, p95 := benchkit.Median(c.mbps), benchkit.Median(c.p50), benchkit.Median(c.p95)
		benchkit.PrintResult("replicas", "target", targets[i].name, "clients", o.clients, "mbps", m, "ratio_filesystem", benchkit.Ratio(m, anchor),
			"p50_s", p50, "p95_s", p95, "rounds", len(c.mbps))
		rep.Row(targets[i].name, fmt.Sprintf("%.1f", m), benchkit.Ratio(m, anchor), p50, p95)
	}
	return rep.Write(os.Stdout, o.Out)
}

// backend is one appliance behind haproxy.
type backend struct {
	https, http string
	proc        *benchkit.Process
}

func startReplica(ctx context.Context, bin, work string, writer *benchkit.Appliance, cfg string, n int) (backend, error) {
	dir := filepath.Join(work, fmt.Sprintf("replica%d", n))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return backend{}, err
	}
	for _, f := range []string{"ca.crt", "ca.key"} {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(writer.CAFile), f))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, f), data, 0o600)
		}
		if err != nil {
			return backend{}, err
		}
	}
	b := backend{}
	var err error
	if b.https, err = benchkit.FreeAddr(); err != nil {
		return b, err
	}
	if b.http, err = benchkit.FreeAddr(); err != nil {
		return b, err
	}
	b.proc, err = benchkit.Start(fmt.Sprintf("replica%d", n), dir+".log", benchkit.CleanEnv(), bin,
		"serve", "--data-dir", dir, "--https-addr", b.https, "--http-addr", b.http, "--config", cfg)
	if err != nil {
		return b, err
	}
	if err := benchkit.WaitHTTP(ctx, b.proc, nil, "http://"+b.http+"/readyz", time.Minute); err != nil {
		b.proc.Stop()
		return b, err
	}
	return b, nil
}

// lb is haproxy with the replicas' backend and the filesystem
// appliance's (a listener of its own).
type lb struct {
	addr, local, socket string
	proc                *benchkit.Process
}

var serverLineRE = regexp.MustCompile(`(?m)^(\s*server replica(\d+) )\S+:8443 check port 8080$`)

func startHAProxy(ctx context.Context, example, work string, replicas []backend, local backend) (*lb, error) {
	data, err := os.ReadFile(example)
	if err != nil {
		return nil, err
	}
	h := &lb{socket: filepath.Join(work, "haproxy.sock")}
	if h.addr, err = benchkit.FreeAddr(); err != nil {
		return nil, err
	}
	if h.local, err = benchkit.FreeAddr(); err != nil {
		return nil, err
	}
	cfg := strings.Replace(string(data), "bind :8443", "bind "+h.addr, 1)
	cfg = strings.Replace(cfg, "stats socket /run/haproxy/appliance.sock", "stats socket "+h.socket, 1)
	cfg = serverLineRE.ReplaceAllStringFunc(cfg, func(line string) string {
		m := serverLineRE.FindStringSubmatch(line)
		var i int
		_, _ = fmt.Sscan(m[2], &i)
		_, port, _ := net.SplitHostPort(replicas[i-1].http)
		return m[1] + replicas[i-1].https + " check port " + port
	})
	_, port, _ := net.SplitHostPort(local.http)
	cfg += fmt.Sprintf("\nfrontend filesystem\n    bind %s\n    default_backend filesystem\n\nbackend filesystem\n    option httpchk GET /readyz\n    server local %s check port %s\n",
		h.local, local.https, port)
	path := filepath.Join(work, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if h.proc, err = benchkit.Start("haproxy", filepath.Join(work, "haproxy.log"), benchkit.CleanEnv(), "haproxy", "-db", "-f", path); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := h.command("show info"); err == nil {
			break
		} else if time.Now().After(deadline) {
			h.proc.Stop()
			return nil, fmt.Errorf("haproxy: its stats socket does not answer within 20s: %w\n%s", err, h.proc.Tail())
		}
	}
	if err := h.use(ctx, 3); err != nil {
		h.proc.Stop()
		return nil, err
	}
	return h, nil
}

// use leaves the first n replicas in the backend and waits until haproxy
// has them up and the others in maintenance.
func (h *lb) use(ctx context.Context, n int) error {
	for i := 1; i <= 3; i++ {
		cmd := "enable"
		if i > n {
			cmd = "disable"
		}
		if _, err := h.command(fmt.Sprintf("%s server replicas/replica%d", cmd, i)); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		stat, err := h.command("show stat")
		if err == nil {
			up, maint := 0, 0
			for line := range strings.SplitSeq(stat, "\n") {
				f := strings.Split(line, ",")
				if len(f) > 17 && f[0] == "replicas" && strings.HasPrefix(f[1], "replica") {
					switch f[17] {
					case "UP":
						up++
					case "MAINT":
						maint++
					}
				}
			}
			if up == n && maint == 3-n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("haproxy: %d replicas not up within 30s:\n%s", n, stat)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (h *lb) command(c string) (string, error) {
	conn, err := net.DialTimeout("unix", h.socket, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, c+"\n"); err != nil {
		return "", err
	}
	var b strings.Builder
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return b.String(), sc.Err()
}

// pullRound runs clients pullers at once against addr and returns the
// aggregate MB/s and the pulls' median and 95th percentile in seconds.
// (Until 2026-12-02 14:00 the pullers went through benchkit.Parallel, at
// most as many at once as there are CPUs, up to 4: not all at once.)
func pullRound(ctx context.Context, addr string, pool *x509.CertPool, clients int, want string, payload int64) (mbps, p50, p95 float64, err error) {
	secs := make([]float64, clients)
	errs := make([]error, clients)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			p := benchkit.NewPuller(&url.URL{Scheme: "https", Host: addr}, benchkit.PullOptions{Roots: pool, Token: true, Timeout: 10 * time.Minute})
			defer p.Close()
			r := p.Pull(ctx, "bench/blob", "v1", want)
			secs[i], errs[i] = r.Total.Seconds(), r.Err
		})
	}
	wg.Wait()
	wall := time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		return 0, 0, 0, err
	}
	slices.Sort(secs)
	return float64(clients) * float64(payload) / 1e6 / wall, secs[len(secs)/2], secs[(len(secs)*95+99)/100-1], nil
}

func tlsConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// createBucket creates the bucket with a signed PUT (curl, as ceph-up's
// README does).
func createBucket(ctx context.Context, c *testkit.Ceph, bucket string) error {
	out, err := exec.CommandContext(ctx, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--aws-sigv4", "aws:amz:us-east-1:s3", //nolint:gosec // G204: the benchmark's own Ceph
		"--user", c.AccessKey+":"+c.SecretKey, "-H", "x-amz-content-sha256:UNSIGNED-PAYLOAD", "-X", "PUT", c.URL+"/"+bucket).Output()
	if err == nil && strings.TrimSpace(string(out)) != "200" {
		err = errors.New("not created")
	}
	if err != nil {
		return fmt.Errorf("create bucket %s: HTTP %s: %w", bucket, out, err)
	}
	return nil
}
