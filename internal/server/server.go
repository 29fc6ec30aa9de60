// Package server assembles the appliance: it opens the state in the data
// directory (CA, users, tokens, registry storage), wires the registry, the
// token service and the JSON API onto one HTTPS port, puts /ca.crt, health
// and metrics on a plain HTTP port, and runs both until its context ends.
// It is the one place where errors become HTTP statuses.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/coalesce"
	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/filestore"
	"github.com/appliance-dev/appliance/internal/importer"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/pki"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/replica"
	"github.com/appliance-dev/appliance/internal/server/aptapi"
	"github.com/appliance-dev/appliance/internal/server/catalog"
	"github.com/appliance-dev/appliance/internal/server/httpmetrics"
	"github.com/appliance-dev/appliance/internal/server/replicaapi"
	"github.com/appliance-dev/appliance/internal/server/validationapi"
)

// Files in the data directory besides those of pki and auth.
const (
	registryDir   = "registry"
	secretFile    = "http.secret"
	stateFile     = "registry-state.json"
	importsDir    = "imports"
	aptDir        = "apt"
	maxAPIBodyLen = 1 << 20
)

// Server is a running appliance.
type Server struct {
	cfg           config.Config
	log           *slog.Logger
	pki           *pki.Authority
	caFingerprint string
	users         *auth.Users
	projects      *auth.Projects
	tokens        *auth.Tokens
	authz         *auth.Authorizer
	logins        *auth.LoginLimiter
	reg           *registry.Registry
	apt           *aptrepo.Repos
	aptAPI        *aptapi.API
	history       *history.History
	importer      *importer.Importer
	files         *filestore.Store
	trust         []bundle.TrustedKey
	receiptKey    *bundle.Signer
	life          *bootstrap.Lifecycle
	promoter      *promote.Promoter
	follower      *bootstrap.Follower
	handover      *bootstrap.Handover
	metrics       *httpmetrics.Metrics
	maint         *maintenance.Maintainer
	audit         *auditor
	validation    *validationapi.API
	started       time.Time
	replication   *replicaapi.API

	// mounted are the routes echo registered on each listener (the
	// test that every one is documented walks them).
	mounted         map[string][]*echo.Route
	httpsLn, httpLn net.Listener
	httpsSrv        *http.Server
	httpSrv         *http.Server

	// InitialAdminPassword is set when this start created the admin account.
	InitialAdminPassword string
}

// Open binds the listeners and opens (or on first start creates) all state
// in the data directory. Every failure names what failed; on failure nothing
// is left listening.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, started: time.Now().UTC()}
	defer func() {
		if err != nil {
			s.closeListeners()
		}
	}()
	if s.httpsLn, err = listen("https_addr", cfg.HTTPSAddr); err != nil {
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		if s.httpLn, err = listen("http_addr", cfg.HTTPAddr); err != nil {
			return nil, err
		}
	}
	dir := cfg.DataDir
	if err := checkDataDir(dir); err != nil {
		return nil, err
	}
	if s.pki, err = pki.Ensure(dir, cfg.Hostnames, time.Now()); err != nil {
		return nil, err
	}
	if cfg.TLS.CertFile != "" {
		// A supplied certificate (the OVA's guestinfo.tls_cert) serves
		// instead of the one the private CA issued; the CA stays for
		// /ca.crt and what else it signs.
		supplied, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file %s and tls.key_file %s: %w", cfg.TLS.CertFile, cfg.TLS.KeyFile, err)
		}
		s.pki.ServerTLS = supplied
	}
	sum := sha256.Sum256(s.pki.CACert.Raw)
	s.caFingerprint = hex.EncodeToString(sum[:])
	if s.users, err = auth.OpenUsers(filepath.Join(dir, auth.UsersFile)); err != nil {
		return nil, err
	}
	if cfg.Role == config.RoleWriter {
		if s.InitialAdminPassword, err = s.users.EnsureInitialAdmin(ctx, filepath.Join(dir, auth.InitialPasswordFile)); err != nil {
			return nil, err
		}
	}
	configured := map[string]bool{}
	for _, p := range cfg.Projects {
		configured[p.Name] = p.Public
	}
	if s.projects, err = auth.OpenProjects(filepath.Join(dir, auth.ProjectsFile), configured); err != nil {
		return nil, err
	}
	if s.tokens, err = auth.OpenTokens(filepath.Join(dir, auth.TokenKeyFile), cfg.Auth.TokenTTL); err != nil {
		return nil, err
	}
	s.authz = &auth.Authorizer{Users: s.users, Projects: s.projects, Tokens: s.tokens}
	if s.logins, err = auth.NewLoginLimiter(cfg.Auth.LoginFailures, cfg.Auth.LoginWindow); err != nil {
		return nil, err
	}
	s3, err := objectStore(cfg, dir, s.HTTPSAddr())
	if err != nil {
		return nil, err
	}
	s.reg, err = registry.New(ctx, registry.Options{
		RootDir:    filepath.Join(dir, registryDir),
		SecretFile: filepath.Join(dir, secretFile),
		StateFile:  filepath.Join(dir, stateFile),
		Authorizer: registryAuth{s: s},
		Logger:     log,
		S3:         s3,
	})
	if err != nil {
		return nil, err
	}
	if s.apt, err = aptrepo.Open(ctx, aptrepo.Options{Dir: filepath.Join(dir, aptDir), Logger: log, KeepSnapshots: cfg.Apt.KeepSnapshots}); err != nil {
		_ = s.reg.Close()
		return nil, err
	}
	closeStores := func() {
		_ = s.reg.Close()
		_ = s.apt.Close()
	}
	if s.history, err = history.Open(filepath.Join(dir, importsDir)); err != nil {
		closeStores()
		return nil, err
	}
	var filesOpts []filestore.Option
	if objs, ok := s.reg.FileObjects(); ok {
		// On S3 the file store's index and content are in the bucket too
		// (<prefix>/files/); only the staging area stays in data_dir.
		filesOpts = append(filesOpts, filestore.InBucket(objs, s.reg.IsReplica()))
	}
	if s.files, err = filestore.Open(ctx, filepath.Join(dir, filesDir), log, filesOpts...); err != nil {
		closeStores()
		return nil, err
	}
	if s.trust, err = bundle.LoadTrustedKeys(cfg.Trust.Keys); err != nil {
		closeStores()
		return nil, err
	}
	if s.receiptKey, err = openReceiptKey(dir); err != nil {
		closeStores()
		return nil, err
	}
	if s.importer, err = importer.New(s.reg, s.history, importer.WithLogger(log), importer.WithFiles(s.files), importer.WithApt(aptImport{s.apt}),
		importer.WithSyncStore(s.reg.SyncWriter())); err != nil {
		closeStores()
		return nil, err
	}
	if err := s.sweepStaging(ctx); err != nil {
		closeStores()
		return nil, err
	}
	if err := s.openMaintenance(); err != nil {
		closeStores()
		return nil, err
	}
	if err := s.openLifecycle(); err != nil {
		closeStores()
		return nil, err
	}
	if err := s.openAudit(); err != nil {
		closeStores()
		return nil, err
	}
	if s.replication, err = replicaapi.New(ctx, replicaapi.Deps{Registry: s.reg, Users: s.users, Projects: s.projects, Tokens: s.tokens,
		Mode: func() replica.Mode {
			m := s.reg.Mode()
			return replica.Mode{Lifecycle: string(s.life.Mode()), ReadOnly: m.ReadOnly, Reason: m.Reason}
		}, DataDir: dir, TokenTTL: cfg.Auth.TokenTTL, Interval: cfg.Replica.PollInterval, Role: cfg.Role, Files: s.files, Logger: log}); err != nil {
		closeStores()
		return nil, err
	}
	if s.aptAPI, err = s.newAptAPI(); err != nil {
		closeStores()
		return nil, err
	}
	if s.validation, err = s.newValidationAPI(); err != nil {
		closeStores()
		return nil, err
	}
	s.metrics = httpmetrics.New(s.reg.StorageUsed, func() bool { return s.reg.Mode().ReadOnly }, append(httpmetrics.Lifecycle(s.life, s.follower), s.validation.Collectors()...)...)
	handler, err := s.httpsHandler()
	if err != nil {
		closeStores()
		return nil, err
	}
	s.httpsSrv = &http.Server{
		Handler:   handler,
		TLSConfig: tlsConfig(s.pki.ServerTLS),
		// Imports stream gigabytes in one request body: HTTP/2's default
		// 1 MiB receive windows make the client wait for window updates.
		HTTP2:             &http.HTTP2Config{MaxReceiveBufferPerConnection: 16 << 20, MaxReceiveBufferPerStream: 16 << 20},
		ReadHeaderTimeout: 30 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext:       httpsConnContext,
	}
	// HTTP/2 frames reach TLS in large writes, as corked HTTP/1.1 bodies do.
	if err := coalesce.ConfigureHTTP2(s.httpsSrv, nil); err != nil {
		closeStores()
		return nil, fmt.Errorf("https: configure HTTP/2: %w", err)
	}
	s.httpSrv = &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: 30 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// httpsConnContext records the coalesce.Conn under a request's TLS
// connection, so a handler writing a long body can gather its records.
func httpsConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		if cc, ok := tc.NetConn().(*coalesce.Conn); ok {
			return coalesce.WithConn(ctx, cc)
		}
	}
	return ctx
}

// sweepStaging removes the staging repositories of imports that a stopped
// process left unfinished: their blobs were never made visible. The blobs
// stay for a re-run of the same import to reuse.
func (s *Server) sweepStaging(ctx context.Context) error {
	if s.reg.IsReplica() {
		return nil // the writer's to sweep; a replica writes nothing
	}
	repos, err := s.reg.RepositoriesUnder(ctx, importer.StagingProject)
	if err != nil {
		return err
	}
	for _, r := range repos {
		if err := s.reg.RemoveRepository(ctx, r); err != nil {
			return err
		}
		s.log.Info("removed the staging area of an interrupted import", "repository", r)
	}
	return nil
}

// listen binds addr, turning the common failures into one clear line.
func listen(key, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("%s %s: address already in use (another appliance or service is listening there)", key, addr)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("%s %s: permission denied (ports below 1024 need privileges)", key, addr)
	}
	return nil, fmt.Errorf("%s %s: %w", key, addr, err)
}

// checkDataDir creates dir if needed and proves it writable.
func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("data dir %s: cannot create: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s: not writable: %w", dir, unwrapPathError(err))
	}
	name := f.Name()
	_ = f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	return nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// HTTPSAddr is the bound address of the TLS listener (useful with port 0).
func (s *Server) HTTPSAddr() string { return s.httpsLn.Addr().String() }

// HTTPAddr is the bound address of the plain listener, or "".
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// CAPEM is the CA certificate clients must trust.
func (s *Server) CAPEM() []byte { return s.pki.CAPEM }

func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(s.log)
	e.Logger.SetOutput(io.Discard)
	e.Use(limitBodies)
	e.GET("/healthz", s.healthz)
	e.HEAD("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.HEAD("/readyz", s.readyz)
	e.GET("/ca.crt", s.caCert)
	e.GET("/metrics", echo.WrapHandler(s.metrics.Handler()))
	s.aptAPI.Mount(e)
	s.filesRoutes(e)
	return e
}

// httpsHandler serves /v2/ with the registry and everything else with echo.
func (s *Server) httpsHandler() (http.Handler, error) {
	e := s.newEcho()
	if err := s.routes(e); err != nil {
		return nil, err
	}
	var inner http.Handler
	if err := s.mountConsole(e, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inner.ServeHTTP(w, r) })); err != nil {
		return nil, err
	}
	s.mounted = map[string][]*echo.Route{"https": e.Routes()}
	api := s.metrics.Instrument(s.log, func(r *http.Request) string { return httpmetrics.EchoRoute(e, r) }, e)
	members, err := catalog.New(catalog.Deps{Authz: s.authz, ConsolePrincipal: s.consolePrincipal, Repositories: s.reg.Repositories, Log: s.log})
	if err != nil {
		return nil, err
	}
	v2 := s.metrics.Instrument(s.log, httpmetrics.RegistryRoute, s.auditRegistry(members.Wrap(s.reg.Handler())))
	inner = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
			if s.refuseLockedOut(w, r) {
				return
			}
			v2.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
	return hsts(inner), nil
}

// httpHandler serves /ca.crt, health and metrics in the clear and sends
// everything else to HTTPS.
func (s *Server) httpHandler() http.Handler {
	e := s.newEcho()
	_, httpsPort, _ := net.SplitHostPort(s.httpsLn.Addr().String())
	redirect := func(c echo.Context) error {
		r := c.Request()
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" && len(s.pki.Names) > 0 {
			host = s.pki.Names[0]
		}
		target := "https://" + net.JoinHostPort(strings.Trim(host, "[]"), httpsPort) + r.URL.RequestURI()
		return c.Redirect(http.StatusPermanentRedirect, target)
	}
	e.Any("/*", redirect)
	e.Any("/", redirect)
	s.mounted["http"] = e.Routes()
	return s.metrics.Instrument(s.log, func(r *http.Request) string { return "http_" + httpmetrics.EchoRoute(e, r) }, e)
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when the data directory can be written and the
// registry storage read.
func (s *Server) readyz(c echo.Context) error {
	if err := checkDataDir(s.cfg.DataDir); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
	}
	if err := s.reg.Ready(c.Request().Context()); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "read_only": s.reg.Mode().ReadOnly})
}

func (s *Server) caCert(c echo.Context) error {
	c.Response().Header().Set("Content-Disposition", `attachment; filename="ca.crt"`)
	return c.Blob(http.StatusOK, "application/x-pem-file", s.pki.CAPEM)
}

// Run serves until ctx ends, then shuts down gracefully within the
// configured deadline.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	// The TLS layer writes through a coalesce.Conn, which large responses
	// cork to send their records in few large writes (see httpsConnContext).
	go func() { errc <- serveErr("https", s.httpsSrv.ServeTLS(coalesce.Listener{Listener: s.httpsLn}, "", "")) }()
	if s.httpLn != nil {
		go func() { errc <- serveErr("http", s.httpSrv.Serve(s.httpLn)) }()
	}
	followCtx, stopFollowing := context.WithCancel(ctx)
	followDone := make(chan struct{})
	go func() { defer close(followDone); _ = s.follower.Run(followCtx) }()
	replicationDone := make(chan struct{})
	go func() { defer close(replicationDone); _ = s.replication.Run(followCtx) }()
	validateDone := make(chan struct{})
	go func() {
		defer close(validateDone)
		if every := s.cfg.Validation.Schedule; every > 0 {
			s.validation.Schedule(followCtx, every)
		}
	}()
	s.log.Info("appliance serving", "https", s.HTTPSAddr(), "http", s.HTTPAddr(), "data_dir", s.cfg.DataDir,
		"mode", s.life.Mode(), "read_only", s.reg.Mode().ReadOnly, "role", s.cfg.Role, "names", strings.Join(s.pki.Names, ","))
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.log.Info("shutting down", "deadline", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	stopFollowing()
	shutdownErr := errors.Join(s.httpsSrv.Shutdown(sctx), s.httpSrv.Shutdown(sctx), s.shutdownLifecycle(sctx))
	for _, done := range []chan struct{}{followDone, validateDone, replicationDone} {
		select {
		case <-done:
		case <-sctx.Done():
		}
	}
	if shutdownErr != nil {
		_ = s.httpsSrv.Close()
		_ = s.httpSrv.Close()
		shutdownErr = fmt.Errorf("graceful shutdown did not finish within %s: %w", s.cfg.ShutdownTimeout, shutdownErr)
	}
	closeErr := errors.Join(s.closeAudit(), s.reg.Close(), s.apt.Close())
	s.log.Info("stopped")
	return errors.Join(runErr, shutdownErr, closeErr)
}

func serveErr(name string, err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s listener: %w", name, err)
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.httpsLn, s.httpLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

func jsonDecoder(r io.Reader) *json.Decoder {
	d := json.NewDecoder(r)
	d.DisallowUnknownFields()
	return d
}
