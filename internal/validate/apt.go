package validate

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

type aptRepo struct {
	Name  string `json:"name"`
	Dists []struct {
		Name       string `json:"name"`
		Components []struct {
			Name string `json:"name"`
		} `json:"components"`
		Architectures []string `json:"architectures"`
	} `json:"dists"`
}

// fetch downloads one of the appliance's files into path.
func (v *Validator) fetch(ctx context.Context, p, dst string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.base.String()+p, nil)
	if err != nil {
		return err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", p, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", p, err)
	}
	return os.WriteFile(dst, data, 0o600)
}

// aptGate: every repository's Release is signed and verifies with plain
// gpgv against the appliance's key; the packages the cloud-init files
// install resolve, with their dependencies, in a real apt-get run against
// the appliance (a throwaway root: nothing of this machine's apt is read
// or changed).
func (r *run) aptGate(ctx context.Context, g *GateResult) {
	v := r.v
	var repos []aptRepo
	if err := v.getJSON(ctx, "/api/v1/apt/repos", &repos); err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "apt", Problem: err.Error()})
		return
	}
	if len(repos) == 0 && len(r.parsed.packages) == 0 {
		g.Status, g.Summary = StatusSkipped, "nothing to check: the appliance serves no apt repository and no --cloud-init was given"
		return
	}
	gpgv, err := lookTool("gpgv")
	if err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "gpgv", Problem: err.Error()})
		return
	}
	work, err := os.MkdirTemp("", "appliance-validate-apt-")
	if err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "apt", Problem: err.Error()})
		return
	}
	defer os.RemoveAll(work)
	key := filepath.Join(work, "key.gpg")
	if err := v.fetch(ctx, "/apt/key.gpg", key); err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "/apt/key.gpg", Problem: err.Error()})
		return
	}
	var sources []string
	dists := 0
	for _, repo := range repos {
		for _, d := range repo.Dists {
			dists++
			what := repo.Name + "/" + d.Name
			base := "/apt/" + repo.Name + "/dists/" + d.Name + "/"
			dir := filepath.Join(work, repo.Name, d.Name)
			if err := os.MkdirAll(dir, 0o750); err != nil {
				g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Problem: err.Error()})
				continue
			}
			okSigs := 0
			for _, f := range [][]string{{"InRelease"}, {"Release.gpg", "Release"}} {
				var args []string
				failed := false
				for _, name := range f {
					if err := v.fetch(ctx, base+name, filepath.Join(dir, name)); err != nil {
						g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Problem: "not signed: " + err.Error(), Action: "publish the distribution again (appliance apt add)"})
						failed = true
						break
					}
					args = append(args, filepath.Join(dir, name))
				}
				if failed {
					continue
				}
				out, err := runTool(ctx, gpgv, append([]string{"--homedir", work, "--keyring", key}, args...)...)
				if err != nil {
					g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what + " " + f[0], Problem: "gpgv does not verify it: " + lastLines(out, 3),
						Action: "the metadata was changed or the key replaced: publish again from the appliance"})
					continue
				}
				okSigs++
			}
			if okSigs == 2 {
				g.Checked++
				sum, _ := fileSHA256(filepath.Join(dir, "InRelease"))
				r.checked(GateApt, what+" InRelease", sum)
			}
			var comps []string
			for _, c := range d.Components {
				comps = append(comps, c.Name)
			}
			if len(comps) > 0 {
				sources = append(sources, fmt.Sprintf("deb [signed-by=%s] %s/apt/%s %s %s", key, v.base.String(), repo.Name, d.Name, strings.Join(comps, " ")))
			}
		}
	}
	resolved := 0
	if len(r.parsed.packages) > 0 {
		resolved = r.aptResolve(ctx, g, work, sources, r.aptSums(ctx, repos))
	}
	g.Summary = fmt.Sprintf("%d distributions signed and verified with gpgv, %d of %d cloud-init packages resolved with apt-get", g.Checked, resolved, len(r.parsed.packages))
}

// uriRE is a line of apt-get install --print-uris: 'URI' FILE SIZE
// HASH:HEX, apt's choice of hash (MD5Sum, SHA256…).
// aptSums maps every package's path (/apt/REPO/pool/…) to its sha256,
// as the appliance lists them, for the evidence.
func (r *run) aptSums(ctx context.Context, repos []aptRepo) map[string]string {
	sums := map[string]string{}
	for _, repo := range repos {
		for _, d := range repo.Dists {
			var pkgs []struct {
				SHA256   string `json:"sha256"`
				Filename string `json:"filename"`
			}
			if err := r.v.getJSON(ctx, "/api/v1/apt/repos/"+repo.Name+"/"+d.Name+"/packages", &pkgs); err != nil {
				continue
			}
			for _, p := range pkgs {
				sums["/apt/"+repo.Name+"/"+p.Filename] = p.SHA256
			}
		}
	}
	return sums
}

var uriRE = regexp.MustCompile(`(?m)^'([^']+)' ((\S+?)_(\S+?)_\S+\.deb) \d+ (\w+):([0-9a-f]+)$`)

// aptResolve runs apt-get update and apt-get install --print-uris in a
// throwaway root against the appliance's sources: apt resolves each
// package with its dependencies and names every .deb it would fetch with
// its sha256, without fetching.
func (r *run) aptResolve(ctx context.Context, g *GateResult, work string, sources []string, sums map[string]string) int {
	aptGet, err := lookTool("apt-get")
	if err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "apt-get", Problem: err.Error()})
		return 0
	}
	if len(sources) == 0 {
		for _, p := range r.parsed.packages {
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: p.name, Where: p.where, Problem: "the appliance serves no apt repository", Action: "import a bundle that carries apt packages"})
		}
		return 0
	}
	root := filepath.Join(work, "root")
	for _, d := range []string{"lists/partial", "cache/archives/partial", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o750); err != nil {
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "apt", Problem: err.Error()})
			return 0
		}
	}
	list, status, ca := filepath.Join(root, "etc", "sources.list"), filepath.Join(root, "status"), filepath.Join(root, "ca.crt")
	werr := os.WriteFile(list, []byte(strings.Join(sources, "\n")+"\n"), 0o600)
	if werr == nil {
		werr = os.WriteFile(status, nil, 0o600)
	}
	if werr == nil {
		werr = os.WriteFile(ca, r.v.o.CAPEM, 0o600)
	}
	if werr != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "apt", Problem: werr.Error()})
		return 0
	}
	arch := "amd64"
	if p, err := parsePlatform(r.platforms[0]); err == nil {
		arch = p.Architecture
	}
	opts := []string{
		"-o", "Dir::Etc::SourceList=" + list, "-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::State::Lists=" + filepath.Join(root, "lists"), "-o", "Dir::Cache=" + filepath.Join(root, "cache"),
		"-o", "Dir::State::status=" + status, "-o", "Acquire::Languages=none", "-o", "Debug::NoLocking=1",
		"-o", "Dir::Etc::Preferences=/dev/null", "-o", "Dir::Etc::PreferencesParts=/dev/null",
		"-o", "Dir::Etc::TrustedParts=/dev/null", "-o", "Dir::Etc::Trusted=/dev/null",
		"-o", "Acquire::https::CaInfo=" + ca, "-o", "APT::Architecture=" + arch, "-o", "APT::Architectures=" + arch,
		"-o", "Acquire::Retries=0", "-o", "Acquire::http::Proxy=DIRECT", "-o", "Acquire::https::Proxy=DIRECT",
	}
	if os.Geteuid() == 0 {
		opts = append(opts, "-o", "APT::Sandbox::User=root")
	}
	out, err := runTool(ctx, aptGet, append(opts, "update")...)
	if err != nil || strings.Contains(out, "W: GPG error") || strings.Contains(out, "E: ") {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "apt-get update", Problem: "fails against the appliance: " + lastLines(out, 4)})
		return 0
	}
	resolved := 0
	for _, p := range r.parsed.packages {
		spec := p.name
		if p.version != "" {
			spec += "=" + p.version
		}
		out, err := runTool(ctx, aptGet, append(opts, "install", "--print-uris", "-y", "--no-install-recommends", spec)...)
		if err != nil {
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: spec, Where: p.where, Problem: "apt-get cannot resolve it: " + aptProblem(out),
				Action: "carry the package and its dependencies in a bundle (apt: packages) and import it"})
			continue
		}
		resolved++
		var deps []string
		for _, m := range uriRE.FindAllStringSubmatch(out, -1) {
			version := strings.ReplaceAll(m[4], "%3a", ":")
			deps = append(deps, m[3]+"="+version)
			digest := strings.ToLower(m[5]) + ":" + m[6]
			if sum, ok := sums[strings.TrimPrefix(m[1], r.v.base.String())]; ok {
				digest = "sha256:" + sum
			}
			r.checked(GateApt, "package "+m[3]+"="+version+" (for "+spec+")", digest)
		}
		sort.Strings(deps)
		g.Findings = append(g.Findings, Finding{Severity: SeverityInfo, What: spec, Where: p.where, Problem: "resolves: " + strings.Join(deps, " ")})
	}
	return resolved
}

// aptProblem picks apt's error lines.
func aptProblem(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "E: ") || strings.Contains(l, "Depends:") || strings.Contains(l, "but it is not") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return lastLines(out, 3)
	}
	return strings.Join(lines, "; ")
}

func runTool(ctx context.Context, tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...) //nolint:gosec // G204: the tools are fixed (gpgv, apt-get); the arguments are our own paths
	// The gate talks to the appliance directly: no proxy of this machine.
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasSuffix(strings.ToLower(k), "_proxy") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func fileSHA256(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return sha256Hex(data), nil
}
