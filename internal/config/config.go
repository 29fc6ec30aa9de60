// Package config turns flags, APPLIANCE_* environment variables and an
// optional YAML file into one typed, validated Config. Precedence, highest
// first: flags, environment, file, defaults in code. Unknown keys in the file
// are errors, and Validate reports every invalid setting at once.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Config is the complete configuration of `appliance serve`.
type Config struct {
	// DataDir holds everything the appliance persists: registry storage,
	// the CA, certificates, users, token keys and state.
	DataDir string `mapstructure:"data_dir"`
	// HTTPSAddr is the TLS listener: the registry, the API and the token service.
	HTTPSAddr string `mapstructure:"https_addr"`
	// HTTPAddr is the plain listener: /ca.crt, health, metrics and (later) apt;
	// everything else is redirected to HTTPS.
	HTTPAddr string `mapstructure:"http_addr"`
	// Hostnames are extra DNS names and IP addresses the server certificate
	// must carry. The first one, if any, is the name used in redirects and
	// token realms when a request carries no Host header.
	Hostnames []string `mapstructure:"hostnames"`
	// ShutdownTimeout bounds a graceful shutdown on SIGTERM.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// Log controls structured logging.
	Log Log `mapstructure:"log"`
	// Auth controls tokens.
	Auth Auth `mapstructure:"auth"`
	// Apt controls the local apt repository.
	Apt Apt `mapstructure:"apt"`
	// Projects declares project visibility. A project is the first path
	// component of a repository name; undeclared projects are public unless
	// changed through the API.
	Projects []Project `mapstructure:"projects"`
	// Trust lists the public keys whose bundles the appliance imports.
	Trust Trust `mapstructure:"trust"`
	// Audit controls the audit trail (docs/audit.md).
	Audit Audit `mapstructure:"audit"`
	// Validation controls the validation gate (docs/validation.md).
	Validation Validation `mapstructure:"validation"`
	// TLS names a supplied server certificate instead of one issued by
	// the appliance's CA.
	TLS TLS `mapstructure:"tls"`
	// Storage chooses where registry content is kept.
	Storage Storage `mapstructure:"storage"`
	// Role is "writer" (the default: imports, pushes, promotion, gc, and
	// with storage.backend s3 the bucket's lock) or "replica" (a read-only
	// replica of the writer of the same bucket and prefix, serving pulls).
	Role string `mapstructure:"role"`
	// Replica is how a writer publishes, and its replicas follow, the
	// state that decides who may pull what.
	Replica Replica `mapstructure:"replica"`
}

// Roles.
const (
	RoleWriter  = "writer"
	RoleReplica = "replica"
)

// Replica is the replica section.
type Replica struct {
	// PollInterval is how often a writer checks its state for changes to
	// publish (it also publishes at once after an API change) and a
	// replica reads the published state: a change on the writer holds on
	// every replica within one interval (and, after an API change, two at
	// most); nothing a replica caches is older than one interval.
	PollInterval time.Duration `mapstructure:"poll_interval"`
}

// Validation is the validation gate section.
type Validation struct {
	// Schedule re-runs the last requested validation this often in the
	// server (0: only when asked).
	Schedule time.Duration `mapstructure:"schedule"`
	// MaxAge is the age after which an artifact whose inventory names a
	// refresh trigger is reported stale.
	MaxAge time.Duration `mapstructure:"max_age"`
}

// TLS is the server certificate section. Both files or neither: without
// them the appliance issues its own certificate from its private CA.
type TLS struct {
	// CertFile is a PEM certificate chain, the server's certificate first.
	CertFile string `mapstructure:"cert_file"`
	// KeyFile is its PEM private key.
	KeyFile string `mapstructure:"key_file"`
}

// Storage backends.
const (
	BackendFilesystem = "filesystem"
	BackendS3         = "s3"
)

// Storage is the storage section: registry content on the local
// filesystem (under data_dir) or in an S3-compatible object store.
type Storage struct {
	// Backend is "filesystem" (the default) or "s3".
	Backend string `mapstructure:"backend"`
	// S3 is read when Backend is "s3".
	S3 S3 `mapstructure:"s3"`
}

// S3 is an S3-compatible object store (Ceph's RADOS Gateway, MinIO, AWS).
type S3 struct {
	// Endpoint is the object store's URL, http:// or https://.
	Endpoint string `mapstructure:"endpoint"`
	// Region is the signing region (us-east-1 for Ceph RGW by default).
	Region string `mapstructure:"region"`
	// Bucket must exist; the appliance never creates it.
	Bucket string `mapstructure:"bucket"`
	// Prefix is the key prefix everything of this appliance is kept under.
	Prefix string `mapstructure:"prefix"`
	// AccessKeyFile and SecretKeyFile hold the credentials. When both are
	// empty, the environment's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
	// are used. The values are never logged.
	AccessKeyFile string `mapstructure:"access_key_file"`
	SecretKeyFile string `mapstructure:"secret_key_file"`
	// CAFile is a PEM bundle that verifies the object store's TLS
	// certificate, for a store under the enclave's own CA.
	CAFile string `mapstructure:"ca_file"`
	// PathStyle addresses the bucket as ENDPOINT/BUCKET rather than
	// BUCKET.ENDPOINT (Ceph RGW and MinIO usually want true).
	PathStyle bool `mapstructure:"path_style"`
}

// Audit is the audit trail section.
type Audit struct {
	// MaxSegmentBytes is the size at which the current file is renamed to
	// a numbered segment and a new one begins.
	MaxSegmentBytes int64 `mapstructure:"max_segment_bytes"`
	// KeepSegments is how many rotated segments are kept (0: all). The
	// chain then starts at the first kept one.
	KeepSegments int `mapstructure:"keep_segments"`
	// TrustedProxies are the addresses or networks whose X-Forwarded-For
	// header names the client; without them the header is ignored.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
}

// Trust is the bundle trust section.
type Trust struct {
	// Keys are PEM public key files (ECDSA P-256, as `appliance key
	// generate` and cosign write them). A bundle signed by none of them is
	// refused.
	Keys []string `mapstructure:"keys"`
}

// Log is the logging section.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

// Auth is the authentication section.
type Auth struct {
	// TokenTTL is how long a registry bearer token stays valid.
	TokenTTL time.Duration `mapstructure:"token_ttl"`
	// LoginFailures is how many failed logins one client address may make
	// within LoginWindow before its logins are refused (429) until the
	// oldest of them is older than the window.
	LoginFailures int `mapstructure:"login_failures"`
	// LoginWindow is the window LoginFailures counts in.
	LoginWindow time.Duration `mapstructure:"login_window"`
}

// Apt is the apt repository section.
type Apt struct {
	// KeepSnapshots is how many publishes of each distribution are kept
	// for rollback, the current one included.
	KeepSnapshots int `mapstructure:"keep_snapshots"`
}

// Project declares one project's visibility.
type Project struct {
	Name   string `mapstructure:"name"`
	Public bool   `mapstructure:"public"`
}

// Defaults returns the embedded defaults: what `appliance serve` runs with
// when given nothing else.
func Defaults() Config {
	return Config{
		DataDir:         "./data",
		HTTPSAddr:       ":8443",
		HTTPAddr:        ":8080",
		ShutdownTimeout: 20 * time.Second,
		Log:             Log{Level: "info", Format: "text"},
		Auth:            Auth{TokenTTL: 15 * time.Minute, LoginFailures: 10, LoginWindow: time.Minute},
		Apt:             Apt{KeepSnapshots: 10},
		Audit:           Audit{MaxSegmentBytes: 64 << 20},
		Validation:      Validation{MaxAge: 90 * 24 * time.Hour},
		Storage:         Storage{Backend: BackendFilesystem, S3: S3{Region: "us-east-1", PathStyle: true}},
		Role:            RoleWriter,
		Replica:         Replica{PollInterval: 5 * time.Second},
	}
}

// EnvPrefix is the prefix of every environment variable the appliance reads.
const EnvPrefix = "APPLIANCE"

// flagKeys maps serve's flag names to configuration keys.
var flagKeys = map[string]string{
	"data-dir":         "data_dir",
	"https-addr":       "https_addr",
	"http-addr":        "http_addr",
	"hostname":         "hostnames",
	"shutdown-timeout": "shutdown_timeout",
	"log-level":        "log.level",
	"log-format":       "log.format",
	"trusted-key":      "trust.keys",
	"storage-backend":  "storage.backend",
	"role":             "role",
}

// RegisterFlags adds serve's configuration flags to fs, with the embedded
// defaults as their documented values.
func RegisterFlags(fs *pflag.FlagSet) {
	d := Defaults()
	fs.String("config", "", "YAML configuration file (see configs/appliance.yaml)")
	fs.String("data-dir", d.DataDir, "directory for all persistent state")
	fs.String("https-addr", d.HTTPSAddr, "TLS listen address for the registry and API")
	fs.String("http-addr", d.HTTPAddr, "plain-HTTP listen address for /ca.crt, health and apt (empty disables it)")
	fs.StringArray("hostname", nil, "DNS name or IP address the certificate must carry (repeatable)")
	fs.Duration("shutdown-timeout", d.ShutdownTimeout, "deadline for a graceful shutdown")
	fs.String("log-level", d.Log.Level, "log level: debug, info, warn, error")
	fs.String("log-format", d.Log.Format, "log format: text or json")
	fs.StringArray("trusted-key", nil, "public key file whose signed bundles are imported (repeatable; overrides trust.keys)")
	fs.String("storage-backend", d.Storage.Backend, "where registry content is kept: filesystem or s3 (storage.s3.* in the config file)")
	fs.String("role", d.Role, "writer, or replica: a read-only replica of the writer of the same bucket (storage.backend s3)")
}

// Load reads the configuration: defaults, then the file named by --config (or
// APPLIANCE_CONFIG), then APPLIANCE_* variables, then flags that were set.
// env is the environment as os.Environ() returns it, so tests can pass their own.
func Load(fs *pflag.FlagSet, env []string) (Config, error) {
	v := viper.New()
	d := Defaults()
	v.SetDefault("data_dir", d.DataDir)
	v.SetDefault("https_addr", d.HTTPSAddr)
	v.SetDefault("http_addr", d.HTTPAddr)
	v.SetDefault("hostnames", []string{})
	v.SetDefault("shutdown_timeout", d.ShutdownTimeout)
	v.SetDefault("log.level", d.Log.Level)
	v.SetDefault("log.format", d.Log.Format)
	v.SetDefault("auth.token_ttl", d.Auth.TokenTTL)
	v.SetDefault("auth.login_failures", d.Auth.LoginFailures)
	v.SetDefault("auth.login_window", d.Auth.LoginWindow)
	v.SetDefault("apt.keep_snapshots", d.Apt.KeepSnapshots)
	v.SetDefault("projects", []any{})
	v.SetDefault("trust.keys", []string{})
	v.SetDefault("audit.max_segment_bytes", d.Audit.MaxSegmentBytes)
	v.SetDefault("audit.keep_segments", d.Audit.KeepSegments)
	v.SetDefault("audit.trusted_proxies", []string{})
	v.SetDefault("validation.schedule", d.Validation.Schedule)
	v.SetDefault("validation.max_age", d.Validation.MaxAge)
	v.SetDefault("tls.cert_file", "")
	v.SetDefault("tls.key_file", "")
	v.SetDefault("storage.backend", d.Storage.Backend)
	v.SetDefault("storage.s3.endpoint", "")
	v.SetDefault("storage.s3.region", d.Storage.S3.Region)
	v.SetDefault("storage.s3.bucket", "")
	v.SetDefault("storage.s3.prefix", "")
	v.SetDefault("storage.s3.access_key_file", "")
	v.SetDefault("storage.s3.secret_key_file", "")
	v.SetDefault("storage.s3.ca_file", "")
	v.SetDefault("storage.s3.path_style", d.Storage.S3.PathStyle)
	v.SetDefault("role", d.Role)
	v.SetDefault("replica.poll_interval", d.Replica.PollInterval)

	envMap := map[string]string{}
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix+"_") {
			envMap[k] = val
		}
	}

	file := ""
	if f := fs.Lookup("config"); f != nil && f.Changed {
		file = f.Value.String()
	} else if e, ok := envMap[EnvPrefix+"_CONFIG"]; ok {
		file = e
	}
	if file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("read config file %s: %w", file, err)
		}
	}

	// Environment variables: every known key, with '.' and '-' as '_'.
	for _, key := range v.AllKeys() {
		name := EnvPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
		if val, ok := envMap[name]; ok {
			if key == "hostnames" || key == "trust.keys" || key == "audit.trusted_proxies" {
				v.Set(key, splitList(val))
			} else {
				v.Set(key, val)
			}
		}
	}
	// Flags that were set on the command line override everything else.
	for flag, key := range flagKeys {
		f := fs.Lookup(flag)
		if f == nil || !f.Changed {
			continue
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v.Set(key, sv.GetSlice())
		} else {
			v.Set(key, f.Value.String())
		}
	}

	var cfg Config
	err := v.UnmarshalExact(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		where := "configuration"
		if file != "" {
			where = "config file " + file
		}
		return Config{}, fmt.Errorf("%s: %w", where, err)
	}
	return cfg, cfg.Validate()
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

var (
	hostnameRE    = regexp.MustCompile(`^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)
	projectNameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)
)

// ValidProjectName says whether name may be a project: the first
// component of an OCI repository name, at most 128 characters. The
// configuration and the projects API (internal/auth) both hold names to it.
func ValidProjectName(name string) bool {
	return len(name) <= 128 && projectNameRE.MatchString(name)
}

// ErrInvalid marks a configuration that failed validation.
var ErrInvalid = errors.New("invalid configuration")

// Validate checks every setting and reports all problems together.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if strings.TrimSpace(c.DataDir) == "" {
		bad("data_dir: must not be empty")
	}
	if err := checkAddr(c.HTTPSAddr); err != nil {
		bad("https_addr %q: %v", c.HTTPSAddr, err)
	}
	if c.HTTPAddr != "" {
		if err := checkAddr(c.HTTPAddr); err != nil {
			bad("http_addr %q: %v", c.HTTPAddr, err)
		} else if c.HTTPAddr == c.HTTPSAddr && !strings.HasSuffix(c.HTTPAddr, ":0") {
			bad("http_addr and https_addr must differ (both %q)", c.HTTPAddr)
		}
	}
	for _, h := range c.Hostnames {
		if net.ParseIP(h) == nil && !hostnameRE.MatchString(h) {
			bad("hostnames: %q is neither an IP address nor a valid DNS name", h)
		}
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout: must be positive, got %s", c.ShutdownTimeout)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Log.Level)); err != nil {
		bad("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format %q: want text or json", c.Log.Format)
	}
	if c.Auth.TokenTTL < time.Minute || c.Auth.TokenTTL > 24*time.Hour {
		bad("auth.token_ttl: must be between 1m and 24h, got %s", c.Auth.TokenTTL)
	}
	if c.Auth.LoginFailures < 1 || c.Auth.LoginFailures > 1000 {
		bad("auth.login_failures: must be between 1 and 1000, got %d", c.Auth.LoginFailures)
	}
	if c.Auth.LoginWindow < time.Second || c.Auth.LoginWindow > 24*time.Hour {
		bad("auth.login_window: must be between 1s and 24h, got %s", c.Auth.LoginWindow)
	}
	if c.Apt.KeepSnapshots < 1 || c.Apt.KeepSnapshots > 1000 {
		bad("apt.keep_snapshots: must be between 1 and 1000, got %d", c.Apt.KeepSnapshots)
	}
	for i, k := range c.Trust.Keys {
		if strings.TrimSpace(k) == "" {
			bad("trust.keys[%d]: empty file name", i)
		}
	}
	if c.Audit.MaxSegmentBytes < 1<<20 || c.Audit.MaxSegmentBytes > 4<<30 {
		bad("audit.max_segment_bytes: must be between 1 MiB (1048576) and 4 GiB, got %d", c.Audit.MaxSegmentBytes)
	}
	if c.Audit.KeepSegments < 0 || c.Audit.KeepSegments > 1_000_000 {
		bad("audit.keep_segments: must be 0 (keep all) or a count up to 1000000, got %d", c.Audit.KeepSegments)
	}
	for i, p := range c.Audit.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil && net.ParseIP(p) == nil {
			bad("audit.trusted_proxies[%d] %q: want an IP address or a network such as 10.0.0.0/24", i, p)
		}
	}
	if c.Validation.Schedule != 0 && (c.Validation.Schedule < time.Minute || c.Validation.Schedule > 31*24*time.Hour) {
		bad("validation.schedule: must be 0 (off) or between 1m and 744h, got %s", c.Validation.Schedule)
	}
	if c.Validation.MaxAge < time.Hour {
		bad("validation.max_age: must be at least 1h, got %s", c.Validation.MaxAge)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls.cert_file and tls.key_file: give both or neither (got %q and %q)", c.TLS.CertFile, c.TLS.KeyFile)
	}
	errs = append(errs, c.Storage.problems()...)
	switch c.Role {
	case RoleWriter:
	case RoleReplica:
		if c.Storage.Backend != BackendS3 {
			bad("role replica: needs storage.backend s3 (a replica serves the bucket its writer writes), got %q", c.Storage.Backend)
		}
	default:
		bad("role %q: want writer or replica", c.Role)
	}
	if c.Replica.PollInterval < 100*time.Millisecond || c.Replica.PollInterval > 5*time.Minute {
		bad("replica.poll_interval: must be between 100ms and 5m, got %s", c.Replica.PollInterval)
	}
	seen := map[string]bool{}
	for i, p := range c.Projects {
		switch {
		case !ValidProjectName(p.Name):
			bad("projects[%d].name %q: must be lower-case letters, digits and separators (. _ -)", i, p.Name)
		case seen[p.Name]:
			bad("projects[%d].name %q: declared twice", i, p.Name)
		}
		seen[p.Name] = true
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n  %w", ErrInvalid, joinIndented(errs))
}

// problems checks the storage section's own settings (whether the store
// answers is checked at start-up).
func (s Storage) problems() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch s.Backend {
	case BackendFilesystem:
		return nil
	case BackendS3:
	default:
		bad("storage.backend %q: want filesystem or s3", s.Backend)
		return errs
	}
	u, err := url.Parse(s.S3.Endpoint)
	switch {
	case s.S3.Endpoint == "":
		bad("storage.s3.endpoint: required with storage.backend s3 (for example http://127.0.0.1:7480)")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil:
		bad("storage.s3.endpoint %q: want http(s)://host[:port], no path and no credentials", s.S3.Endpoint)
	}
	if strings.TrimSpace(s.S3.Region) == "" {
		bad("storage.s3.region: must not be empty (us-east-1 for Ceph RGW)")
	}
	if !bucketRE.MatchString(s.S3.Bucket) {
		bad("storage.s3.bucket %q: want 3 to 63 lower-case letters, digits, '.' and '-'", s.S3.Bucket)
	}
	if p := s.S3.Prefix; p != "" && (strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.Contains(p, "..") || strings.ContainsAny(p, " \\")) {
		bad("storage.s3.prefix %q: want a relative key prefix such as appliance/site-a", p)
	}
	if (s.S3.AccessKeyFile == "") != (s.S3.SecretKeyFile == "") {
		bad("storage.s3: set both access_key_file and secret_key_file, or neither (then AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	}
	if s.S3.CAFile != "" && u != nil && u.Scheme != "https" {
		bad("storage.s3.ca_file: set, but the endpoint %q is not https", s.S3.Endpoint)
	}
	return errs
}

var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port or :port: %w", err)
	}
	if host != "" && net.ParseIP(host) == nil && !hostnameRE.MatchString(host) {
		return fmt.Errorf("invalid host %q", host)
	}
	if port == "" {
		return errors.New("missing port")
	}
	var n int
	if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n < 0 || n > 65535 || fmt.Sprint(n) != port {
		return fmt.Errorf("invalid port %q", port)
	}
	return nil
}

// multiError joins errors one per line, indented, and still supports errors.Is.
type multiError []error

func joinIndented(errs []error) error { return multiError(errs) }

func (m multiError) Error() string {
	parts := make([]string, len(m))
	for i, e := range m {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n  ")
}

func (m multiError) Unwrap() []error { return m }

// SlogLevel returns the configured level; Validate has already checked it.
func (l Log) SlogLevel() slog.Level {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(l.Level))
	return lvl
}

// NewLogger builds the process logger from the log section.
func (l Log) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.SlogLevel()}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Credentials returns the object store's access and secret key: read from
// AccessKeyFile and SecretKeyFile (surrounding white space trimmed), or,
// when both are empty, from getenv's AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY. Errors name the file or variable, never a value.
func (s S3) Credentials(getenv func(string) string) (accessKey, secretKey string, err error) {
	if s.AccessKeyFile == "" && s.SecretKeyFile == "" {
		accessKey, secretKey = getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
		if accessKey == "" || secretKey == "" {
			return "", "", errors.New("s3 credentials: set storage.s3.access_key_file and secret_key_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
		}
		return accessKey, secretKey, nil
	}
	read := func(key, file string) (string, error) {
		data, err := os.ReadFile(file) //nolint:gosec // G304: the operator's configured credential file
		if err != nil {
			return "", fmt.Errorf("s3 credentials: storage.s3.%s: %w", key, err)
		}
		v := strings.TrimSpace(string(data))
		if v == "" {
			return "", fmt.Errorf("s3 credentials: storage.s3.%s %s: empty", key, file)
		}
		return v, nil
	}
	if accessKey, err = read("access_key_file", s.AccessKeyFile); err != nil {
		return "", "", err
	}
	if secretKey, err = read("secret_key_file", s.SecretKeyFile); err != nil {
		return "", "", err
	}
	return accessKey, secretKey, nil
}
