package benchkit

import (
	"context"
	"crypto/x509"
	"debug/buildinfo"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Machine describes the machine a benchmark ran on: CPUs, memory, kernel,
// the disk under work, how the appliance binary was built, and the version
// each named tool prints (name -> command line).
func Machine(ctx context.Context, work, applianceBin string, tools map[string][]string) map[string]string {
	m := map[string]string{
		"nproc":       strconv.Itoa(runtime.NumCPU()),
		"go":          runtime.Version(),
		"os/arch":     runtime.GOOS + "/" + runtime.GOARCH,
		"work folder": work,
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		m["memory"] = strings.Join(strings.Fields(line)[1:], " ")
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
		if strings.Contains(string(b), " sha_ni") {
			m["cpu"] += " (SHA-NI)"
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if out, err := exec.CommandContext(ctx, "df", "-hT", work).Output(); err == nil {
		m["disk"] = strings.Join(strings.Fields(LastLine(string(out))), " ")
	}
	if applianceBin != "" {
		if out, err := exec.CommandContext(ctx, applianceBin, "version").Output(); err == nil {
			m["appliance version"] = strings.Join(strings.Fields(string(out)), " ") // "appliance v… commit: … go: …"
		}
		if bi, err := buildinfo.ReadFile(applianceBin); err == nil {
			m["appliance built with"] = bi.GoVersion
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" || s.Key == "vcs.modified" {
					m["appliance "+s.Key] = s.Value
				}
			}
		}
	}
	for name, argv := range tools {
		if len(argv) == 0 {
			continue
		}
		if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output(); err == nil {
			m[name] = strings.TrimSpace(string(out))
		}
	}
	return m
}

// MachineList is m, from Machine, as a Markdown list sorted by name: one
// "- name: value" line each.
func MachineList(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "- %s: %s\n", k, m[k])
	}
	return b.String()
}

// LastLine is the last non-empty line of s.
func LastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// SplitList parses a comma-separated flag of names, each one of allowed,
// without repeats; it may be empty.
func SplitList(s string, allowed ...string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(allowed, f) {
			return nil, fmt.Errorf("unknown %q (want %s)", f, strings.Join(allowed, ", "))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// DockerRegistryOptions says how StartDockerRegistry configures
// docker-registry. The zero value is plain HTTP, log level warn, no access
// log and no log fields.
type DockerRegistryOptions struct {
	// Secret is http.secret, the key the registry signs upload state with.
	Secret string
	// LogLevel is log.level; "" means warn.
	LogLevel string
	// AccessLog turns the access log on.
	AccessLog bool
	// LogService, when set, is log.fields.service, a field of every line
	// the registry logs.
	LogService string
	// CertFile and KeyFile, when set, make the registry serve HTTPS with
	// this certificate and key; RootCAs, which must trust CertFile, is then
	// what the wait for the registry trusts.
	CertFile, KeyFile string
	RootCAs           *x509.CertPool
}

// StartDockerRegistry runs Debian's docker-registry (distribution 2.8) on a
// free loopback port, storage under dir, as Debian's
// /etc/docker/registry/config.yml has it but without auth and with o's
// settings, and waits until GET /v2/ answers. Its config.yml and its log,
// docker-registry.log, are in dir. It returns the process and its
// host:port.
func StartDockerRegistry(ctx context.Context, bin, dir string, o DockerRegistryOptions) (*Process, string, error) {
	if o.CertFile != "" && o.RootCAs == nil {
		return nil, "", errors.New("docker-registry: TLS needs RootCAs")
	}
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o750); err != nil {
		return nil, "", err
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(dockerRegistryConfig(o, filepath.Join(dir, "storage"), addr)), 0o600); err != nil {
		return nil, "", err
	}
	p, err := Start("docker-registry", filepath.Join(dir, "docker-registry.log"), CleanEnv("REGISTRY_"), bin, "serve", cfgPath)
	if err != nil {
		return nil, "", err
	}
	if o.CertFile != "" {
		err = WaitHTTPS(ctx, p, o.RootCAs, "https://"+addr+"/v2/", 60*time.Second)
	} else {
		err = WaitHTTP(ctx, p, nil, "http://"+addr+"/v2/", 60*time.Second)
	}
	if err != nil {
		p.Stop()
		return nil, "", fmt.Errorf("docker-registry: %w\n%s", err, p.Tail())
	}
	return p, addr, nil
}

// dockerRegistryConfig is docker-registry's config.yml for o, storing
// under storage and listening on addr.
func dockerRegistryConfig(o DockerRegistryOptions, storage, addr string) string {
	level := o.LogLevel
	if level == "" {
		level = "warn"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version: 0.1\nlog:\n  level: %s\n  accesslog:\n    disabled: %t\n", level, !o.AccessLog)
	if o.LogService != "" {
		fmt.Fprintf(&b, "  fields:\n    service: %s\n", o.LogService)
	}
	fmt.Fprintf(&b, `storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
  headers:
    X-Content-Type-Options: [nosniff]
`, storage, addr, o.Secret)
	if o.CertFile != "" {
		fmt.Fprintf(&b, "  tls:\n    certificate: %s\n    key: %s\n", o.CertFile, o.KeyFile)
	}
	return b.String()
}
