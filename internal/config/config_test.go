package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/appliance-dev/appliance/internal/config"
)

// newFlags returns a FlagSet with serve's flags registered and args parsed.
func newFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse flags %q: %v", args, err)
	}
	return fs
}

// writeYAML writes content to a fresh config file and returns its path.
func writeYAML(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "appliance.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadDefaults proves that with no flags, no environment and no file,
// Load returns exactly the documented defaults and they validate.
func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(newFlags(t), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.DataDir != "./data" {
		t.Errorf("DataDir = %q, want ./data", cfg.DataDir)
	}
	if cfg.HTTPSAddr != ":8443" {
		t.Errorf("HTTPSAddr = %q, want :8443", cfg.HTTPSAddr)
	}
	if cfg.HTTPAddr != ":8080" {
		t.Errorf("HTTPAddr = %q, want :8080", cfg.HTTPAddr)
	}
	if len(cfg.Hostnames) != 0 {
		t.Errorf("Hostnames = %q, want none", cfg.Hostnames)
	}
	if len(cfg.Projects) != 0 {
		t.Errorf("Projects = %v, want none", cfg.Projects)
	}
	if cfg.ShutdownTimeout != 20*time.Second {
		t.Errorf("ShutdownTimeout = %s, want 20s", cfg.ShutdownTimeout)
	}
	if cfg.Log != (config.Log{Level: "info", Format: "text"}) {
		t.Errorf("Log = %+v, want info/text", cfg.Log)
	}
	if cfg.Auth.TokenTTL != 15*time.Minute {
		t.Errorf("Auth.TokenTTL = %s, want 15m", cfg.Auth.TokenTTL)
	}
	// Defaults() and Load agree on every field.
	d := config.Defaults()
	if cfg.DataDir != d.DataDir || cfg.HTTPSAddr != d.HTTPSAddr || cfg.HTTPAddr != d.HTTPAddr ||
		cfg.ShutdownTimeout != d.ShutdownTimeout || cfg.Log != d.Log || cfg.Auth != d.Auth {
		t.Errorf("Load() = %+v differs from Defaults() = %+v", cfg, d)
	}
}

// TestLoadPrecedence proves the layering flags > APPLIANCE_* env > YAML file
// > defaults, key by key, including nested keys and the config file named
// by APPLIANCE_CONFIG.
func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, `
data_dir: /from/file
https_addr: ":9443"
http_addr: ":9080"
shutdown_timeout: 7s
log:
  level: warn
  format: json
auth:
  token_ttl: 30m
`)
	type want struct {
		dataDir, httpsAddr, httpAddr, level, format string
		shutdown, ttl                               time.Duration
	}
	tests := []struct {
		name string
		args []string
		env  []string
		want want
	}{
		{
			name: "file only",
			args: []string{"--config", file},
			want: want{"/from/file", ":9443", ":9080", "warn", "json", 7 * time.Second, 30 * time.Minute},
		},
		{
			name: "file named by APPLIANCE_CONFIG",
			env:  []string{"APPLIANCE_CONFIG=" + file},
			want: want{"/from/file", ":9443", ":9080", "warn", "json", 7 * time.Second, 30 * time.Minute},
		},
		{
			name: "env beats file",
			args: []string{"--config", file},
			env: []string{
				"APPLIANCE_DATA_DIR=/from/env",
				"APPLIANCE_HTTPS_ADDR=:7443",
				"APPLIANCE_LOG_LEVEL=debug",
				"APPLIANCE_AUTH_TOKEN_TTL=1h",
				"APPLIANCE_SHUTDOWN_TIMEOUT=9s",
				"UNRELATED=1",
				"DATA_DIR=/not/ours",
			},
			want: want{"/from/env", ":7443", ":9080", "debug", "json", 9 * time.Second, time.Hour},
		},
		{
			name: "flags beat env and file",
			args: []string{"--config", file, "--data-dir", "/from/flag", "--log-level", "error", "--shutdown-timeout", "3s"},
			env:  []string{"APPLIANCE_DATA_DIR=/from/env", "APPLIANCE_LOG_LEVEL=debug", "APPLIANCE_HTTPS_ADDR=:7443"},
			want: want{"/from/flag", ":7443", ":9080", "error", "json", 3 * time.Second, 30 * time.Minute},
		},
		{
			name: "env beats defaults without a file",
			env:  []string{"APPLIANCE_HTTP_ADDR=:1080", "APPLIANCE_LOG_FORMAT=json"},
			want: want{"./data", ":8443", ":1080", "info", "json", 20 * time.Second, 15 * time.Minute},
		},
		{
			name: "flags beat defaults without a file",
			args: []string{"--https-addr", "127.0.0.1:443", "--http-addr", ""},
			want: want{"./data", "127.0.0.1:443", "", "info", "text", 20 * time.Second, 15 * time.Minute},
		},
		{
			name: "--config beats APPLIANCE_CONFIG",
			args: []string{"--config", file},
			env:  []string{"APPLIANCE_CONFIG=/does/not/exist.yaml"},
			want: want{"/from/file", ":9443", ":9080", "warn", "json", 7 * time.Second, 30 * time.Minute},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Load(newFlags(t, tc.args...), tc.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got := want{cfg.DataDir, cfg.HTTPSAddr, cfg.HTTPAddr, cfg.Log.Level, cfg.Log.Format, cfg.ShutdownTimeout, cfg.Auth.TokenTTL}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestLoadHostnames proves --hostname is repeatable, APPLIANCE_HOSTNAMES is
// comma-separated, a YAML list works, and the higher layer replaces (not
// merges with) the lower one.
func TestLoadHostnames(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, "hostnames:\n  - file.example.test\n  - 10.1.2.3\n")
	tests := []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{name: "none", want: nil},
		{name: "repeated flag", args: []string{"--hostname", "a.example.test", "--hostname", "192.0.2.7"}, want: []string{"a.example.test", "192.0.2.7"}},
		{name: "env comma separated", env: []string{"APPLIANCE_HOSTNAMES=a.example.test,b.example.test, 192.0.2.8"}, want: []string{"a.example.test", "b.example.test", "192.0.2.8"}},
		{name: "yaml list", args: []string{"--config", file}, want: []string{"file.example.test", "10.1.2.3"}},
		{name: "env replaces yaml", args: []string{"--config", file}, env: []string{"APPLIANCE_HOSTNAMES=env.example.test"}, want: []string{"env.example.test"}},
		{name: "flag replaces env and yaml", args: []string{"--config", file, "--hostname", "flag.example.test"}, env: []string{"APPLIANCE_HOSTNAMES=env.example.test,x.example.test"}, want: []string{"flag.example.test"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Load(newFlags(t, tc.args...), tc.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(cfg.Hostnames) == 0 && len(tc.want) == 0 {
				return
			}
			if !reflect.DeepEqual(cfg.Hostnames, tc.want) {
				t.Errorf("Hostnames = %q, want %q", cfg.Hostnames, tc.want)
			}
		})
	}
}

// TestLoadProjects proves the projects list of the YAML file is decoded.
func TestLoadProjects(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, `
projects:
  - name: nvidia
    public: true
  - name: internal
    public: false
`)
	cfg, err := config.Load(newFlags(t, "--config", file), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []config.Project{{Name: "nvidia", Public: true}, {Name: "internal", Public: false}}
	if !reflect.DeepEqual(cfg.Projects, want) {
		t.Errorf("Projects = %+v, want %+v", cfg.Projects, want)
	}
}

// TestLoadUnknownKey proves an unknown key in the file, top-level or nested,
// is an error that names the key, rather than being silently ignored.
func TestLoadUnknownKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, key string
	}{
		{"top level", "data_dir: /x\nlisten_adress: \":1\"\n", "listen_adress"},
		{"nested", "log:\n  level: info\n  colour: true\n", "colour"},
		{"project field", "projects:\n  - name: a\n    pubic: true\n", "pubic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := writeYAML(t, tc.yaml)
			_, err := config.Load(newFlags(t, "--config", file), nil)
			if err == nil {
				t.Fatal("Load accepted an unknown key")
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("error %q does not name the key %q", err, tc.key)
			}
			if !strings.Contains(err.Error(), file) {
				t.Errorf("error %q does not name the file %q", err, file)
			}
		})
	}
}

// TestLoadFileErrors proves a missing, unparsable or mistyped config file is
// an error naming the culprit (the file, or the key whose value has the
// wrong type).
func TestLoadFileErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	tests := []struct {
		name string
		args []string
		env  []string
		sub  string
	}{
		{"missing via flag", []string{"--config", missing}, nil, missing},
		{"missing via env", nil, []string{"APPLIANCE_CONFIG=" + missing}, missing},
		{"not yaml", []string{"--config", writeYAML(t, "data_dir: [unclosed\n")}, nil, "appliance.yaml"},
		{"unparsable duration", []string{"--config", writeYAML(t, "shutdown_timeout: soon\n")}, nil, "shutdown_timeout"},
		{"unparsable nested duration", []string{"--config", writeYAML(t, "auth:\n  token_ttl: forever\n")}, nil, "token_ttl"},
		{"unparsable env duration", nil, []string{"APPLIANCE_AUTH_TOKEN_TTL=forever"}, "token_ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(newFlags(t, tc.args...), tc.env)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.sub) {
				t.Errorf("error %q does not mention %q", err, tc.sub)
			}
		})
	}
}

// TestLoadReportsAllInvalidSettings proves Validate collects every problem
// of a file into one error that matches ErrInvalid and names each of them.
func TestLoadReportsAllInvalidSettings(t *testing.T) {
	t.Parallel()
	file := writeYAML(t, `
https_addr: ":99999"
hostnames:
  - good.example.test
  - -bad-.example.test
log:
  level: verbose
auth:
  token_ttl: 10s
projects:
  - name: dup
    public: true
  - name: dup
    public: false
  - name: Bad_Name
    public: true
`)
	_, err := config.Load(newFlags(t, "--config", file), nil)
	if err == nil {
		t.Fatal("Load accepted an invalid file")
	}
	if !errors.Is(err, config.ErrInvalid) {
		t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"https_addr", "99999", // bad port
		"-bad-.example.test",   // bad hostname
		"log.level", "verbose", // bad level
		"auth.token_ttl", "10s", // bad ttl
		`"dup": declared twice`, // duplicate project
		"Bad_Name",              // bad project name
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "good.example.test") {
		t.Errorf("error mentions the valid hostname:\n%s", msg)
	}
}

// TestValidate proves each individual rule of Validate, both ways: a valid
// value passes and each invalid one is reported with ErrInvalid.
func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*config.Config)
		errSub string // "" means valid
	}{
		{"defaults", func(*config.Config) {}, ""},
		{"http disabled", func(c *config.Config) { c.HTTPAddr = "" }, ""},
		{"host and port", func(c *config.Config) { c.HTTPSAddr = "0.0.0.0:443"; c.HTTPAddr = "[::]:80" }, ""},
		{"ip and wildcard hostnames", func(c *config.Config) { c.Hostnames = []string{"10.0.0.1", "::1", "*.example.test", "reg"} }, ""},
		{"ttl bounds", func(c *config.Config) { c.Auth.TokenTTL = time.Minute }, ""},
		{"ttl upper bound", func(c *config.Config) { c.Auth.TokenTTL = 24 * time.Hour }, ""},
		{"project names", func(c *config.Config) {
			c.Projects = []config.Project{{Name: "a"}, {Name: "a.b_c__d--e"}}
		}, ""},
		{"empty data dir", func(c *config.Config) { c.DataDir = " " }, "data_dir"},
		{"https no port", func(c *config.Config) { c.HTTPSAddr = "localhost" }, "https_addr"},
		{"https empty port", func(c *config.Config) { c.HTTPSAddr = "localhost:" }, "https_addr"},
		{"https named port", func(c *config.Config) { c.HTTPSAddr = ":https" }, "https_addr"},
		{"https negative port", func(c *config.Config) { c.HTTPSAddr = ":-1" }, "https_addr"},
		{"https padded port", func(c *config.Config) { c.HTTPSAddr = ":0443" }, "https_addr"},
		{"http bad host", func(c *config.Config) { c.HTTPAddr = "bad_host:80" }, "http_addr"},
		{"same addrs", func(c *config.Config) { c.HTTPAddr = c.HTTPSAddr }, "must differ"},
		{"same host and port", func(c *config.Config) { c.HTTPSAddr = "127.0.0.1:9000"; c.HTTPAddr = "127.0.0.1:9000" }, "must differ"},
		{"both kernel-chosen ports", func(c *config.Config) { c.HTTPSAddr = ":0"; c.HTTPAddr = ":0" }, ""},
		{"both kernel-chosen ports on loopback", func(c *config.Config) { c.HTTPSAddr = "127.0.0.1:0"; c.HTTPAddr = "127.0.0.1:0" }, ""},
		{"bad hostname", func(c *config.Config) { c.Hostnames = []string{"under_score.test"} }, "under_score.test"},
		{"zero shutdown", func(c *config.Config) { c.ShutdownTimeout = 0 }, "shutdown_timeout"},
		{"bad format", func(c *config.Config) { c.Log.Format = "xml" }, "log.format"},
		{"bad level", func(c *config.Config) { c.Log.Level = "loud" }, "log.level"},
		{"ttl too short", func(c *config.Config) { c.Auth.TokenTTL = 59 * time.Second }, "auth.token_ttl"},
		{"ttl too long", func(c *config.Config) { c.Auth.TokenTTL = 25 * time.Hour }, "auth.token_ttl"},
		{"upper-case project", func(c *config.Config) { c.Projects = []config.Project{{Name: "Nvidia"}} }, "projects[0].name"},
		{"empty project", func(c *config.Config) { c.Projects = []config.Project{{Name: ""}} }, "projects[0].name"},
		{"project name over 128 characters", func(c *config.Config) { c.Projects = []config.Project{{Name: strings.Repeat("a", 129)}} }, "projects[0].name"},
		{"duplicate project", func(c *config.Config) { c.Projects = []config.Project{{Name: "x"}, {Name: "x"}} }, "projects[1].name"},
		{"audit segments too small", func(c *config.Config) { c.Audit.MaxSegmentBytes = 4096 }, "audit.max_segment_bytes"},
		{"audit segments too large", func(c *config.Config) { c.Audit.MaxSegmentBytes = 5 << 30 }, "audit.max_segment_bytes"},
		{"negative keep_segments", func(c *config.Config) { c.Audit.KeepSegments = -1 }, "audit.keep_segments"},
		{"bad trusted proxy", func(c *config.Config) { c.Audit.TrustedProxies = []string{"10.0.0.0/8", "proxy.local"} }, "audit.trusted_proxies[1]"},
		{"validation schedule too short", func(c *config.Config) { c.Validation.Schedule = 30 * time.Second }, "validation.schedule"},
		{"validation schedule daily", func(c *config.Config) { c.Validation.Schedule = 24 * time.Hour }, ""},
		{"validation max_age too short", func(c *config.Config) { c.Validation.MaxAge = time.Minute }, "validation.max_age"},
		{"supplied certificate", func(c *config.Config) {
			c.TLS = config.TLS{CertFile: "/etc/appliance/tls/server.crt", KeyFile: "/etc/appliance/tls/server.key"}
		}, ""},
		{"certificate without key", func(c *config.Config) { c.TLS.CertFile = "/etc/appliance/tls/server.crt" }, "tls.cert_file and tls.key_file"},
		{"unknown storage backend", func(c *config.Config) { c.Storage.Backend = "nfs" }, "storage.backend"},
		{"s3 without endpoint", func(c *config.Config) { c.Storage.Backend = "s3"; c.Storage.S3.Bucket = "reg" }, "storage.s3.endpoint"},
		{"s3 endpoint with a path", func(c *config.Config) { s3ok(c); c.Storage.S3.Endpoint = "http://rgw:7480/reg" }, "storage.s3.endpoint"},
		{"s3 endpoint not http", func(c *config.Config) { s3ok(c); c.Storage.S3.Endpoint = "ftp://rgw" }, "storage.s3.endpoint"},
		{"s3 without bucket", func(c *config.Config) { s3ok(c); c.Storage.S3.Bucket = "" }, "storage.s3.bucket"},
		{"s3 bad bucket", func(c *config.Config) { s3ok(c); c.Storage.S3.Bucket = "My_Bucket" }, "storage.s3.bucket"},
		{"s3 absolute prefix", func(c *config.Config) { s3ok(c); c.Storage.S3.Prefix = "/a" }, "storage.s3.prefix"},
		{"s3 one key file", func(c *config.Config) { s3ok(c); c.Storage.S3.AccessKeyFile = "/k" }, "secret_key_file"},
		{"s3 empty region", func(c *config.Config) { s3ok(c); c.Storage.S3.Region = "" }, "storage.s3.region"},
		{"s3 ca without https", func(c *config.Config) { s3ok(c); c.Storage.S3.CAFile = "/ca.pem" }, "storage.s3.ca_file"},
		{"s3", s3ok, ""},
		{"unknown role", func(c *config.Config) { s3ok(c); c.Role = "reader" }, "role \"reader\""},
		{"replica on the filesystem", func(c *config.Config) { c.Role = config.RoleReplica }, "role replica: needs storage.backend s3"},
		{"replica on s3", func(c *config.Config) { s3ok(c); c.Role = config.RoleReplica }, ""},
		{"poll too fast", func(c *config.Config) { c.Replica.PollInterval = 10 * time.Millisecond }, "replica.poll_interval"},
		{"poll too slow", func(c *config.Config) { c.Replica.PollInterval = time.Hour }, "replica.poll_interval"},
		{"trusted proxies", func(c *config.Config) {
			c.Audit.TrustedProxies = []string{"10.0.0.5", "fd00::/8"}
			c.Audit.KeepSegments = 10
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := config.Defaults()
			tc.mutate(&c)
			err := c.Validate()
			if tc.errSub == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", c)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			if !strings.Contains(err.Error(), tc.errSub) {
				t.Errorf("error %q does not mention %q", err, tc.errSub)
			}
		})
	}
}

func s3ok(c *config.Config) {
	c.Storage.Backend = "s3"
	c.Storage.S3.Endpoint = "http://127.0.0.1:7480"
	c.Storage.S3.Bucket = "registry"
}

// TestLoadStorageFromEnv proves every storage key is read from APPLIANCE_*.
func TestLoadStorageFromEnv(t *testing.T) {
	t.Parallel()
	c, err := config.Load(newFlags(t), []string{
		"APPLIANCE_STORAGE_BACKEND=s3", "APPLIANCE_STORAGE_S3_ENDPOINT=https://rgw.enclave:443",
		"APPLIANCE_STORAGE_S3_BUCKET=reg", "APPLIANCE_STORAGE_S3_PREFIX=site-a", "APPLIANCE_STORAGE_S3_REGION=eu-1",
		"APPLIANCE_STORAGE_S3_ACCESS_KEY_FILE=/run/ak", "APPLIANCE_STORAGE_S3_SECRET_KEY_FILE=/run/sk",
		"APPLIANCE_STORAGE_S3_CA_FILE=/etc/ca.pem", "APPLIANCE_STORAGE_S3_PATH_STYLE=false",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := config.S3{Endpoint: "https://rgw.enclave:443", Region: "eu-1", Bucket: "reg", Prefix: "site-a",
		AccessKeyFile: "/run/ak", SecretKeyFile: "/run/sk", CAFile: "/etc/ca.pem", PathStyle: false}
	if c.Storage.Backend != "s3" || c.Storage.S3 != want {
		t.Fatalf("storage = %+v, want s3 %+v", c.Storage, want)
	}
	if d := config.Defaults().Storage; d.Backend != "filesystem" || !d.S3.PathStyle || d.S3.Region != "us-east-1" {
		t.Fatalf("defaults = %+v", d)
	}
}

// TestLoadInvalidEnvAndFlags proves invalid values from the environment and
// flags are validated too, not only those of the file.
func TestLoadInvalidEnvAndFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, sub string
		args      []string
		env       []string
	}{
		{"env level", "log.level", nil, []string{"APPLIANCE_LOG_LEVEL=chatty"}},
		{"env hostname", "bad_host", nil, []string{"APPLIANCE_HOSTNAMES=ok.test,bad_host"}},
		{"flag addr", "https_addr", []string{"--https-addr", ":70000"}, nil},
		{"flag hostname", "bad..name", []string{"--hostname", "bad..name"}, nil},
		{"env trusted proxies", "audit.trusted_proxies[1]", nil, []string{"APPLIANCE_AUDIT_TRUSTED_PROXIES=10.0.0.5,nowhere"}},
		{"env audit segment size", "audit.max_segment_bytes", nil, []string{"APPLIANCE_AUDIT_MAX_SEGMENT_BYTES=10"}},
		{"env validation schedule", "validation.schedule", nil, []string{"APPLIANCE_VALIDATION_SCHEDULE=10s"}},
		{"env storage backend", "storage.s3.bucket", nil, []string{"APPLIANCE_STORAGE_BACKEND=s3", "APPLIANCE_STORAGE_S3_ENDPOINT=http://127.0.0.1:7480"}},
		{"flag storage backend", "storage.backend", []string{"--storage-backend", "ceph"}, nil},
		{"flag role", "role \"primary\"", []string{"--role", "primary"}, nil},
		{"env role without s3", "role replica", nil, []string{"APPLIANCE_ROLE=replica"}},
		{"env poll interval", "replica.poll_interval", nil, []string{"APPLIANCE_REPLICA_POLL_INTERVAL=1ms"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(newFlags(t, tc.args...), tc.env)
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("Load error = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.sub) {
				t.Errorf("error %q does not mention %q", err, tc.sub)
			}
		})
	}
}

// TestLogger proves the log section maps to slog levels and handlers.
func TestLogger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		log      config.Log
		debugOut bool
		prefix   string
	}{
		{config.Log{Level: "debug", Format: "json"}, true, "{"},
		{config.Log{Level: "info", Format: "text"}, false, "time="},
		{config.Log{Level: "error", Format: "json"}, false, "{"},
	}
	for _, tc := range tests {
		t.Run(tc.log.Level+"/"+tc.log.Format, func(t *testing.T) {
			t.Parallel()
			var b strings.Builder
			l := tc.log.NewLogger(&b)
			l.Debug("dbg")
			if got := strings.Contains(b.String(), "dbg"); got != tc.debugOut {
				t.Errorf("debug message logged = %v, want %v", got, tc.debugOut)
			}
			l.Error("boom")
			if !strings.HasPrefix(b.String(), tc.prefix) {
				t.Errorf("output %q does not start with %q", b.String(), tc.prefix)
			}
		})
	}
}

// TestRepositoryExampleConfig proves the example configuration shipped in
// configs/appliance.yaml loads and validates.
func TestRepositoryExampleConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join("..", "..", "configs", "appliance.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not present: %v", path, err)
	}
	if _, err := config.Load(newFlags(t, "--config", path), nil); err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
}

// TestS3Credentials proves credentials come from the files, or else the
// environment, and that a missing one is named.
func TestS3Credentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ak, sk := dir+"/ak", dir+"/sk"
	if err := os.WriteFile(ak, []byte("AKID\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sk, []byte(" SECRET \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AWS_ACCESS_KEY_ID": "envak", "AWS_SECRET_ACCESS_KEY": "envsk"}
	a, s, err := config.S3{AccessKeyFile: ak, SecretKeyFile: sk}.Credentials(func(k string) string { return env[k] })
	if err != nil || a != "AKID" || s != "SECRET" {
		t.Fatalf("from files: %q %q %v", a, s, err)
	}
	a, s, err = config.S3{}.Credentials(func(k string) string { return env[k] })
	if err != nil || a != "envak" || s != "envsk" {
		t.Fatalf("from env: %q %q %v", a, s, err)
	}
	if _, _, err := (config.S3{}).Credentials(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Fatalf("no credentials: %v", err)
	}
	_, _, err = config.S3{AccessKeyFile: ak, SecretKeyFile: dir + "/none"}.Credentials(os.Getenv)
	if err == nil || !strings.Contains(err.Error(), "secret_key_file") || strings.Contains(err.Error(), "AKID") {
		t.Fatalf("missing secret file: %v", err)
	}
}
