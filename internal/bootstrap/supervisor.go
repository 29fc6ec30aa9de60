package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/bootstrap/vsphere"
	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/regclient"
)

// SupervisorFile keeps what the appliance registered with a Supervisor.
const SupervisorFile = "supervisor.json"

// ErrNotPromoted is returned for a re-point before the bundle's parity
// with the new registry is proven.
var ErrNotPromoted = errors.New("not promoted with parity")

// VCenter says how to reach vCenter and which Supervisor to hand over to.
// The password is used for the calls and never kept.
type VCenter = vsphere.Config

// SupervisorState is what the appliance registered with a Supervisor, as
// shown by the API and the console (no password anywhere).
type SupervisorState struct {
	VCenter    string               `json:"vcenter,omitempty"`
	Supervisor string               `json:"supervisor,omitempty"`
	Registries []SupervisorRegistry `json:"registries"`
	Services   []SupervisorService  `json:"services"`
	History    []SupervisorEvent    `json:"history"`
}

// SupervisorRegistry is a container image registry of the Supervisor.
type SupervisorRegistry struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Hostname string    `json:"hostname"`
	Port     int       `json:"port"`
	Default  bool      `json:"default"`
	Role     string    `json:"role"` // "appliance" or "production"
	At       time.Time `json:"at"`
}

// SupervisorService is a Supervisor Service registered from a bundle.
type SupervisorService struct {
	ID        string    `json:"id"`
	Version   string    `json:"version"`
	Name      string    `json:"display_name,omitempty"`
	Bundle    string    `json:"bundle"` // repository@digest in the appliance
	Image     string    `json:"image"`  // where the Supervisor pulls it
	Installed bool      `json:"installed"`
	Change    string    `json:"change,omitempty"`
	At        time.Time `json:"at"`
}

// SupervisorEvent is one recorded hand-over step.
type SupervisorEvent struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Action string    `json:"action"`
	Detail string    `json:"detail"`
}

// Dialer opens a vCenter session (vsphere.Dial; tests may wrap it).
type Dialer func(ctx context.Context, cfg vsphere.Config, log *slog.Logger) (*vsphere.Client, error)

// Bundles reads the imgpkg bundles the appliance holds, from its storage.
type Bundles interface {
	TagDigest(ctx context.Context, repo, tag string) (digest.Digest, bool, error)
	GetManifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error)
	ReadBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, error)
}

// Promotions are the appliance's promotions, with their parity reports.
type Promotions interface {
	List() ([]promote.Promotion, error)
}

// Handover registers the appliance, and later production Harbor, with a
// vSphere Supervisor, and Supervisor Services from the imgpkg bundles the
// appliance holds.
type Handover struct {
	dir        string
	bundles    Bundles
	promotions Promotions
	dial       Dialer
	log        *slog.Logger

	mu    sync.Mutex
	state SupervisorState
}

// NewHandover opens the hand-over's record in dataDir.
func NewHandover(bundles Bundles, promotions Promotions, dataDir string, log *slog.Logger) (*Handover, error) {
	if bundles == nil || promotions == nil {
		return nil, errors.New("new handover: bundles and promotions are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handover{dir: dataDir, bundles: bundles, promotions: promotions, dial: vsphere.Dial, log: log,
		state: SupervisorState{Registries: []SupervisorRegistry{}, Services: []SupervisorService{}, History: []SupervisorEvent{}}}
	data, err := os.ReadFile(filepath.Join(dataDir, SupervisorFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open supervisor record: %w", err)
	default:
		if err := json.Unmarshal(data, &h.state); err != nil {
			return nil, fmt.Errorf("open supervisor record: %s is corrupt: %w", SupervisorFile, err)
		}
	}
	return h, nil
}

// State returns what was registered.
func (h *Handover) State() SupervisorState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.state
	s.Registries, s.Services, s.History = slices.Clone(s.Registries), slices.Clone(s.Services), slices.Clone(s.History)
	return s
}

// RegistryRequest registers the appliance as a registry of the Supervisor.
type RegistryRequest struct {
	VCenter VCenter
	// Registry is the appliance as the Supervisor reaches it: host name
	// (one its certificate carries), port, CA chain, and optional pull
	// credentials.
	Registry vsphere.Registry
	By       string
}

// RegisterRegistry makes the appliance a container image registry of the
// Supervisor, trusted with the appliance's CA.
func (h *Handover) RegisterRegistry(ctx context.Context, req RegistryRequest) (SupervisorState, error) {
	c, err := h.dial(ctx, req.VCenter, h.log)
	if err != nil {
		return SupervisorState{}, err
	}
	defer func() { _ = c.Close(context.WithoutCancel(ctx)) }()
	info, created, err := c.EnsureRegistry(ctx, req.Registry)
	if err != nil {
		return SupervisorState{}, err
	}
	action := "registry updated"
	if created {
		action = "registry registered"
	}
	return h.record(req.VCenter, req.By, action, fmt.Sprintf("%s:%d as %s (default %t)", info.Hostname, info.Port, info.ID, info.Default), func(s *SupervisorState) {
		s.Registries = upsertRegistry(s.Registries, SupervisorRegistry{ID: info.ID, Name: info.Name, Hostname: info.Hostname, Port: info.Port,
			Default: info.Default, Role: "appliance", At: time.Now().UTC()}, info.Default)
	})
}

func upsertRegistry(list []SupervisorRegistry, r SupervisorRegistry, isDefault bool) []SupervisorRegistry {
	out := make([]SupervisorRegistry, 0, len(list)+1)
	for _, x := range list {
		if x.ID == r.ID {
			continue
		}
		if isDefault {
			x.Default = false
		}
		out = append(out, x)
	}
	return append(out, r)
}

// ServiceRequest registers the Carvel packages of an imgpkg bundle the
// appliance holds as Supervisor Services.
type ServiceRequest struct {
	VCenter VCenter
	// Bundle is the bundle in the appliance: REPO:TAG or REPO@DIGEST.
	Bundle string
	// Host is HOST[:PORT] of the appliance as the Supervisor reaches it;
	// the package's imgpkgBundle.image becomes Host/REPO@DIGEST.
	Host string
	// Install installs (and activates) each service on the Supervisor,
	// with Config as its yaml_service_config when given.
	Install bool
	Config  []byte
	By      string
}

// RegisterServices finds the Carvel Package (with its PackageMetadata) in
// the bundle's layers, points its imgpkg bundle at the appliance, and
// registers it as a Supervisor Service; with Install, it installs it too.
// A bundle without a Carvel package is refused before vCenter is called.
func (h *Handover) RegisterServices(ctx context.Context, req ServiceRequest) (SupervisorState, error) {
	repo, d, pkgs, err := h.bundlePackages(ctx, req.Bundle)
	if err != nil {
		return SupervisorState{}, err
	}
	image := req.Host + "/" + repo + "@" + d.String()
	c, err := h.dial(ctx, req.VCenter, h.log)
	if err != nil {
		return SupervisorState{}, err
	}
	defer func() { _ = c.Close(context.WithoutCancel(ctx)) }()
	var infos []vsphere.ServiceInfo
	for _, p := range pkgs {
		info, err := c.RegisterService(ctx, p, image)
		if err != nil {
			return SupervisorState{}, err
		}
		if req.Install {
			if err := c.InstallService(ctx, info.ID, info.Version, req.Config); err != nil {
				return SupervisorState{}, err
			}
		}
		infos = append(infos, info)
	}
	return h.recordServices(req.VCenter, req.By, "service registered", repo, d, image, infos, req.Install)
}

// RepointRequest moves the Supervisor from the appliance to production
// Harbor once the bundle's parity with it is proven.
type RepointRequest struct {
	VCenter VCenter
	Bundle  string
	// Harbor is production Harbor as the Supervisor reaches it (host name,
	// port, CA chain, optional pull credentials); it becomes the default.
	Harbor vsphere.Registry
	// HarborURL is the URL the promotion pushed to, whose parity report
	// must cover the bundle's repository.
	HarborURL string
	// Reinstall uninstalls a service the Supervisor runs at the re-pointed
	// version, re-points it, and installs it again with Config: vCenter
	// replaces only versions no Supervisor runs.
	Reinstall bool
	Config    []byte
	By        string
}

// Repoint re-points the bundle's packages at production Harbor and makes
// Harbor the Supervisor's default registry.
func (h *Handover) Repoint(ctx context.Context, req RepointRequest) (SupervisorState, error) {
	repo, d, pkgs, err := h.bundlePackages(ctx, req.Bundle)
	if err != nil {
		return SupervisorState{}, err
	}
	if err := h.checkPromoted(req.HarborURL, repo, d); err != nil {
		return SupervisorState{}, err
	}
	host := req.Harbor.Hostname
	if req.Harbor.Port != 0 && req.Harbor.Port != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(req.Harbor.Port))
	}
	image := host + "/" + repo + "@" + d.String()
	c, err := h.dial(ctx, req.VCenter, h.log)
	if err != nil {
		return SupervisorState{}, err
	}
	defer func() { _ = c.Close(context.WithoutCancel(ctx)) }()
	var infos []vsphere.ServiceInfo
	reinstalled := false
	for _, p := range pkgs {
		info, err := c.Repoint(ctx, p, image, req.Harbor)
		if errors.Is(err, vsphere.ErrVersionInUse) && req.Reinstall {
			if err = c.UninstallService(ctx, p.RefName); err == nil {
				if info, err = c.Repoint(ctx, p, image, req.Harbor); err == nil {
					err = c.InstallService(ctx, info.ID, info.Version, req.Config)
					reinstalled = true
				}
			}
		} else if errors.Is(err, vsphere.ErrVersionInUse) {
			return SupervisorState{}, fmt.Errorf("%w; give --reinstall to uninstall it, re-point it and install it again (its workloads restart)", err)
		}
		if err != nil {
			return SupervisorState{}, err
		}
		infos = append(infos, info)
	}
	regs, err := c.Registries(ctx)
	if err != nil {
		return SupervisorState{}, err
	}
	installed := reinstalled
	h.mu.Lock()
	for _, s := range h.state.Services {
		if s.Bundle == repo+"@"+d.String() && s.Installed {
			installed = true
		}
	}
	h.mu.Unlock()
	st, err := h.recordServices(req.VCenter, req.By, "service re-pointed at production", repo, d, image, infos, installed)
	if err != nil {
		return st, err
	}
	return h.record(req.VCenter, req.By, "default registry", host, func(s *SupervisorState) {
		for _, r := range regs {
			if r.Hostname == req.Harbor.Hostname && (r.Port == req.Harbor.Port || (req.Harbor.Port == 0 && r.Port == 443)) {
				s.Registries = upsertRegistry(s.Registries, SupervisorRegistry{ID: r.ID, Name: r.Name, Hostname: r.Hostname, Port: r.Port,
					Default: r.Default, Role: "production", At: time.Now().UTC()}, r.Default)
			}
		}
	})
}

// checkPromoted demands a promotion to target with parity covering repo,
// the bundle's digest among its tags' digests or referrers.
func (h *Handover) checkPromoted(target, repo string, d digest.Digest) error {
	recs, err := h.promotions.List()
	if err != nil {
		return err
	}
	want := strings.TrimRight(target, "/")
	for _, r := range recs {
		if r.Parity == nil || !r.Parity.OK || !sameURL(r.Target, want) {
			continue
		}
		for _, rp := range r.Parity.Repositories {
			if rp.Repository != repo {
				continue
			}
			for _, t := range rp.Tags {
				if t.Source == d.String() {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: %s@%s has no promotion to %s with parity; run `appliance promote --target %s` first", ErrNotPromoted, repo, d, want, want)
}

func sameURL(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && strings.EqualFold(ua.Host, ub.Host) && ua.Scheme == ub.Scheme
}

// bundlePackages resolves a bundle reference in the appliance and reads
// the Carvel packages from its layers.
func (h *Handover) bundlePackages(ctx context.Context, ref string) (string, digest.Digest, []vsphere.Package, error) {
	repo, d, err := h.resolve(ctx, ref)
	if err != nil {
		return "", "", nil, err
	}
	mt, payload, err := h.bundles.GetManifest(ctx, repo, d)
	if err != nil {
		return "", "", nil, fmt.Errorf("%w: bundle %s: %w", ErrInvalid, ref, err)
	}
	m, err := regclient.ParseManifest(mt, payload)
	if err != nil {
		return "", "", nil, fmt.Errorf("%w: bundle %s: %w", ErrInvalid, ref, err)
	}
	if len(m.Manifests) > 0 {
		return "", "", nil, fmt.Errorf("%w: %s is an index, not an imgpkg bundle", ErrInvalid, ref)
	}
	var pkgs []vsphere.Package
	for _, l := range m.Layers {
		if l.Size > vsphere.MaxLayer {
			continue
		}
		rc, err := h.bundles.ReadBlob(ctx, repo, l.Digest)
		if err != nil {
			return "", "", nil, fmt.Errorf("bundle %s: read layer %s: %w", ref, l.Digest, err)
		}
		found, err := vsphere.FindPackages(rc)
		_ = rc.Close()
		if errors.Is(err, vsphere.ErrNoPackage) {
			continue
		}
		if err != nil {
			return "", "", nil, fmt.Errorf("%w: bundle %s: %w", ErrInvalid, ref, err)
		}
		pkgs = append(pkgs, found...)
	}
	if len(pkgs) == 0 {
		return "", "", nil, fmt.Errorf("%w: bundle %s: %w", ErrInvalid, ref, vsphere.ErrNoPackage)
	}
	return repo, d, pkgs, nil
}

// resolve reads REPO:TAG or REPO@DIGEST against the appliance's storage.
func (h *Handover) resolve(ctx context.Context, ref string) (string, digest.Digest, error) {
	if repo, dig, ok := strings.Cut(ref, "@"); ok {
		d, err := digest.Parse(dig)
		if err != nil {
			return "", "", fmt.Errorf("%w: bundle %q: %w", ErrInvalid, ref, err)
		}
		return repo, d, nil
	}
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return "", "", fmt.Errorf("%w: bundle %q: want REPOSITORY:TAG or REPOSITORY@DIGEST", ErrInvalid, ref)
	}
	repo, tag := ref[:i], ref[i+1:]
	d, ok, err := h.bundles.TagDigest(ctx, repo, tag)
	if err != nil {
		return "", "", fmt.Errorf("%w: bundle %s: %w", ErrInvalid, ref, err)
	}
	if !ok {
		return "", "", fmt.Errorf("%w: bundle %s: no such tag in the appliance", ErrInvalid, ref)
	}
	return repo, d, nil
}

func (h *Handover) recordServices(vc VCenter, by, action, repo string, d digest.Digest, image string, infos []vsphere.ServiceInfo, installed bool) (SupervisorState, error) {
	var names []string
	for _, i := range infos {
		names = append(names, i.ID+" "+i.Version+" ("+string(i.Change)+")")
	}
	return h.record(vc, by, action, strings.Join(names, ", ")+" → "+image, func(s *SupervisorState) {
		for _, i := range infos {
			s.Services = slices.DeleteFunc(s.Services, func(x SupervisorService) bool { return x.ID == i.ID && x.Version == i.Version })
			s.Services = append(s.Services, SupervisorService{ID: i.ID, Version: i.Version, Name: i.DisplayName, Bundle: repo + "@" + d.String(),
				Image: image, Installed: installed, Change: string(i.Change), At: time.Now().UTC()})
		}
	})
}

// record applies a change to the state, with an event, and saves it.
func (h *Handover) record(vc VCenter, by, action, detail string, change func(*SupervisorState)) (SupervisorState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	next := h.state
	next.Registries, next.Services = slices.Clone(h.state.Registries), slices.Clone(h.state.Services)
	next.History = slices.Clone(h.state.History)
	next.VCenter, next.Supervisor = vc.URL, vc.Supervisor
	change(&next)
	next.History = append(next.History, SupervisorEvent{At: time.Now().UTC(), By: by, Action: action, Detail: detail})
	if len(next.History) > maxHistoryKept {
		next.History = next.History[len(next.History)-maxHistoryKept:]
	}
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return SupervisorState{}, fmt.Errorf("save supervisor record: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(h.dir, SupervisorFile), data, 0o640); err != nil {
		return SupervisorState{}, fmt.Errorf("save supervisor record: %w", err)
	}
	h.state = next
	h.log.Info("supervisor hand-over", "action", action, "detail", detail, "by", by, "supervisor", vc.Supervisor)
	return next, nil
}
