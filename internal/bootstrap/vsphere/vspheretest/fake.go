package vspheretest

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"go.yaml.in/yaml/v3"
)

// vcenterFake is the contract fake described in the package comment. Every
// handler runs under mu (see record), so the handlers themselves need no
// locking.
type vcenterFake struct {
	supervisor string
	// echoBodies and reformat are the faults of EchoRefusedBodies and
	// ReformatContent; they are set before the server starts.
	echoBodies bool
	reformat   bool

	mu         sync.Mutex
	registries map[string]*fakeRegistry
	nextID     int
	services   map[string]*fakeService
	installs   map[string]*fakeInstall // by service id, on the one Supervisor
	calls      []string                // "METHOD /path?query", every call in order
}

type fakeRegistry struct {
	seq                                  int // creation order
	ID, Name, Hostname                   string
	Port                                 int
	Username, Password, CertificateChain string
	Default                              bool
}

type fakeService struct {
	ID, DisplayName, Description, State string
	Versions                            map[string]*fakeVersion
}

type fakeVersion struct {
	Version, State string
	Content        string   // base64, as received (or re-encoded)
	YAML           []byte   // decoded
	Images         []string // the imgpkgBundle images the fake read in it
}

type fakeInstall struct {
	Version string
	Config  []byte // decoded yaml_service_config
}

func newVCenterFake(supervisor string, o options) *vcenterFake {
	return &vcenterFake{
		supervisor: supervisor,
		echoBodies: o.echoBodies,
		reformat:   o.reformat,
		registries: map[string]*fakeRegistry{},
		services:   map[string]*fakeService{},
		installs:   map[string]*fakeInstall{},
	}
}

// sortedRegistries gives the registries in the order they were created.
func (f *vcenterFake) sortedRegistries() []*fakeRegistry {
	list := make([]*fakeRegistry, 0, len(f.registries))
	for _, r := range f.registries {
		list = append(list, r)
	}
	slices.SortFunc(list, func(a, b *fakeRegistry) int { return a.seq - b.seq })
	return list
}

// register adds the fake's routes to vcsim's vAPI mux, behind its session
// check. It must run before Service.NewServer.
func (f *vcenterFake) register(s *simulator.Service) {
	const nm = "/api/vcenter/namespace-management"
	routes := map[string]func(http.ResponseWriter, *http.Request){
		nm + "/supervisors/{supervisor}/container-image-registries":      f.registriesHandler,
		nm + "/supervisors/{supervisor}/container-image-registries/{id}": f.registryHandler,
		nm + "/supervisor-services":                                      f.servicesHandler,
		nm + "/supervisor-services/{id}":                                 f.serviceHandler,
		nm + "/supervisor-services/{id}/versions":                        f.versionsHandler,
		nm + "/supervisor-services/{id}/versions/{version}":              f.versionHandler,
		nm + "/supervisors/{supervisor}/supervisor-services":             f.installsHandler,
		nm + "/supervisors/{supervisor}/supervisor-services/{id}":        f.installHandler,
	}
	for pattern, h := range routes {
		s.HandleFunc(pattern, f.record(h))
	}
}

func (f *vcenterFake) record(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		call := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			call += "?" + r.URL.RawQuery
		}
		f.calls = append(f.calls, call)
		h(w, r)
	}
}

// apiError answers with a vAPI standard error body.
func apiError(w http.ResponseWriter, status int, errorType, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error_type": errorType,
		"messages": []map[string]any{{
			"id":              "fake." + strings.ToLower(errorType),
			"default_message": fmt.Sprintf(format, args...),
			"args":            []string{},
		}},
	})
}

func answer(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeStrict reads one JSON value and refuses unknown fields.
func decodeStrict(r *http.Request, v any) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return body, err
	}
	if dec.More() {
		return body, errors.New("trailing data after the JSON body")
	}
	return body, nil
}

func (f *vcenterFake) knownSupervisor(w http.ResponseWriter, r *http.Request) bool {
	if r.PathValue("supervisor") != f.supervisor {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "Supervisor %s not found", r.PathValue("supervisor"))
		return false
	}
	return true
}

// --- container image registries (vSphere API 8.0.3) ---

type fakeImageRegistry struct {
	Hostname         string `json:"hostname"`
	Port             int    `json:"port,omitempty"`
	Username         string `json:"username,omitempty"`
	Password         string `json:"password,omitempty"`
	CertificateChain string `json:"certificate_chain,omitempty"`
}

func (r *fakeRegistry) info() map[string]any {
	// The documented Info; the password is never returned.
	ir := map[string]any{"hostname": r.Hostname, "port": r.Port}
	if r.Username != "" {
		ir["username"] = r.Username
	}
	if r.CertificateChain != "" {
		ir["certificate_chain"] = r.CertificateChain
	}
	return map[string]any{"id": r.ID, "name": r.Name, "image_registry": ir, "default_registry": r.Default}
}

func validChain(pemText string) bool {
	rest := []byte(pemText)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return n > 0
		}
		if _, err := x509.ParseCertificate(b.Bytes); b.Type != "CERTIFICATE" || err != nil {
			return false
		}
		n++
	}
}

func (f *vcenterFake) registriesHandler(w http.ResponseWriter, r *http.Request) {
	if !f.knownSupervisor(w, r) {
		return
	}
	switch r.Method {
	case http.MethodGet:
		list := []map[string]any{}
		for _, reg := range f.sortedRegistries() {
			list = append(list, reg.info())
		}
		answer(w, list)
	case http.MethodPost:
		var spec struct {
			Name            string             `json:"name"`
			ImageRegistry   *fakeImageRegistry `json:"image_registry"`
			DefaultRegistry *bool              `json:"default_registry"`
		}
		body, err := decodeStrict(r, &spec)
		refuse := func(errorType, format string, args ...any) {
			if f.echoBodies {
				format += " in request %s"
				args = append(args, body)
			}
			apiError(w, http.StatusBadRequest, errorType, format, args...)
		}
		switch {
		case err != nil:
			refuse("INVALID_ARGUMENT", "bad CreateSpec: %v", err)
			return
		case spec.Name == "":
			refuse("INVALID_ARGUMENT", "name is required")
			return
		case spec.ImageRegistry == nil || spec.ImageRegistry.Hostname == "":
			refuse("INVALID_ARGUMENT", "image_registry.hostname is required")
			return
		case spec.ImageRegistry.Port < 0 || spec.ImageRegistry.Port > 65535:
			refuse("INVALID_ARGUMENT", "port %d out of range", spec.ImageRegistry.Port)
			return
		case spec.ImageRegistry.CertificateChain != "" && !validChain(spec.ImageRegistry.CertificateChain):
			refuse("INVALID_ARGUMENT", "certificate_chain is not a PEM CA chain")
			return
		}
		for _, e := range f.registries {
			if e.Name == spec.Name {
				refuse("ALREADY_EXISTS", "a registry named %s exists", spec.Name)
				return
			}
		}
		port := spec.ImageRegistry.Port
		if port == 0 {
			port = 443 // documented default
		}
		f.nextID++
		reg := &fakeRegistry{
			seq: f.nextID,
			ID:  "registry-" + strconv.Itoa(f.nextID), Name: spec.Name,
			Hostname: spec.ImageRegistry.Hostname, Port: port,
			Username: spec.ImageRegistry.Username, Password: spec.ImageRegistry.Password,
			CertificateChain: spec.ImageRegistry.CertificateChain,
			Default:          spec.DefaultRegistry != nil && *spec.DefaultRegistry,
		}
		if reg.Default { // documented: a new default takes the default over
			for _, e := range f.registries {
				e.Default = false
			}
		}
		f.registries[reg.ID] = reg
		answer(w, reg.info())
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *vcenterFake) registryHandler(w http.ResponseWriter, r *http.Request) {
	if !f.knownSupervisor(w, r) {
		return
	}
	reg, ok := f.registries[r.PathValue("id")]
	if !ok {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "container image registry %s not found", r.PathValue("id"))
		return
	}
	switch r.Method {
	case http.MethodGet:
		answer(w, reg.info())
	case http.MethodPatch:
		var u struct {
			Name             *string `json:"name"`
			Hostname         *string `json:"hostname"`
			Port             *int    `json:"port"`
			Username         *string `json:"username"`
			Password         *string `json:"password"`
			CertificateChain *string `json:"certificate_chain"`
			DefaultRegistry  *bool   `json:"default_registry"`
		}
		if _, err := decodeStrict(r, &u); err != nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "bad UpdateSpec: %v", err)
			return
		}
		if u.CertificateChain != nil && *u.CertificateChain != "" && !validChain(*u.CertificateChain) {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "certificate_chain is not a PEM CA chain")
			return
		}
		set := func(dst *string, src *string) {
			if src != nil {
				*dst = *src
			}
		}
		set(&reg.Name, u.Name)
		set(&reg.Hostname, u.Hostname)
		set(&reg.Username, u.Username)
		set(&reg.Password, u.Password)
		set(&reg.CertificateChain, u.CertificateChain)
		if u.Port != nil {
			reg.Port = *u.Port
		}
		if u.DefaultRegistry != nil {
			reg.Default = *u.DefaultRegistry // other registries keep theirs: see the package comment
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		delete(f.registries, reg.ID)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// --- Supervisor Services (vSphere API 7.0.3+, Carvel since 8.0) ---

// carvelContent decodes and checks a Carvel version's content: a
// PackageMetadata and a Package of data.packaging.carvel.dev/v1alpha1.
func carvelContent(b64 string) (*fakeVersion, string, string, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, "", "", fmt.Errorf("content is not base64: %w", err)
	}
	var pkg, meta map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, "", "", fmt.Errorf("content is not YAML: %w", err)
		}
		if doc["apiVersion"] != "data.packaging.carvel.dev/v1alpha1" {
			continue
		}
		switch doc["kind"] {
		case "Package":
			pkg = doc
		case "PackageMetadata":
			meta = doc
		}
	}
	if pkg == nil || meta == nil {
		return nil, "", "", errors.New("content must declare a Package and a PackageMetadata")
	}
	metaName, _ := dig(meta, "metadata", "name").(string)
	refName, _ := dig(pkg, "spec", "refName").(string)
	version, _ := dig(pkg, "spec", "version").(string)
	pkgName, _ := dig(pkg, "metadata", "name").(string)
	switch {
	case metaName == "" || refName != metaName:
		return nil, "", "", fmt.Errorf("the Package's spec.refName %q does not name the PackageMetadata %q", refName, metaName)
	case version == "":
		return nil, "", "", errors.New("the Package has no spec.version")
	case pkgName != refName+"."+version:
		return nil, "", "", fmt.Errorf("the Package name %q is not <spec.refName>.<spec.version>", pkgName)
	}
	v := &fakeVersion{Version: version, State: "DEACTIVATED", Content: b64, YAML: raw}
	fetch, _ := dig(pkg, "spec", "template", "spec", "fetch").([]any)
	for _, item := range fetch {
		if img, ok := dig(item, "imgpkgBundle", "image").(string); ok {
			v.Images = append(v.Images, img)
		}
	}
	if len(v.Images) == 0 {
		return nil, "", "", errors.New("the Package fetches no imgpkgBundle")
	}
	display, _ := dig(meta, "spec", "displayName").(string)
	return v, metaName, display, nil
}

// maybeReformat re-encodes a version's content when f.reformat is set.
func (f *vcenterFake) maybeReformat(v *fakeVersion) error {
	if !f.reformat {
		return nil
	}
	var out bytes.Buffer
	dec := yaml.NewDecoder(bytes.NewReader(v.YAML))
	for {
		var doc any
		if err := dec.Decode(&doc); err != nil {
			break
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return fmt.Errorf("re-encode content: %w", err)
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	v.YAML = out.Bytes()
	v.Content = base64.StdEncoding.EncodeToString(v.YAML)
	return nil
}

// dig follows map keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

type fakeCarvelSpec struct {
	Content string `json:"content"`
}

func (f *vcenterFake) servicesHandler(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		list := []map[string]any{}
		for _, s := range f.services {
			list = append(list, map[string]any{"supervisor_service": s.ID, "display_name": s.DisplayName, "state": s.State})
		}
		answer(w, list)
	case http.MethodPost:
		var spec struct {
			CustomSpec  json.RawMessage `json:"custom_spec"`
			VsphereSpec json.RawMessage `json:"vsphere_spec"`
			CarvelSpec  *struct {
				VersionSpec *fakeCarvelSpec `json:"version_spec"`
			} `json:"carvel_spec"`
		}
		if _, err := decodeStrict(r, &spec); err != nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "bad CreateSpec: %v", err)
			return
		}
		if spec.CustomSpec != nil || spec.VsphereSpec != nil {
			apiError(w, http.StatusBadRequest, "UNSUPPORTED", "the fake takes carvel_spec only")
			return
		}
		if spec.CarvelSpec == nil || spec.CarvelSpec.VersionSpec == nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "exactly one spec must be set: carvel_spec.version_spec is missing")
			return
		}
		v, id, display, err := carvelContent(spec.CarvelSpec.VersionSpec.Content)
		if err != nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "%v", err)
			return
		}
		if _, dup := f.services[id]; dup {
			apiError(w, http.StatusBadRequest, "ALREADY_EXISTS", "Supervisor Service %s exists", id)
			return
		}
		if err := f.maybeReformat(v); err != nil {
			apiError(w, http.StatusInternalServerError, "ERROR", "%v", err)
			return
		}
		f.services[id] = &fakeService{ID: id, DisplayName: display, State: "DEACTIVATED",
			Versions: map[string]*fakeVersion{v.Version: v}}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *vcenterFake) serviceHandler(w http.ResponseWriter, r *http.Request) {
	s, ok := f.services[r.PathValue("id")]
	if !ok {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "Supervisor Service %s not found", r.PathValue("id"))
		return
	}
	switch r.Method {
	case http.MethodGet:
		answer(w, map[string]any{"display_name": s.DisplayName, "state": s.State, "description": s.Description,
			"must_be_installed": false, "has_default_versions_registered": false})
	case http.MethodPatch:
		// Documented: activating or deactivating a service does the same
		// to all of its versions.
		var state string
		switch r.URL.Query().Get("action") {
		case "activate":
			state = "ACTIVATED"
		case "deactivate":
			state = "DEACTIVATED"
		default:
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "unknown action %q", r.URL.Query().Get("action"))
			return
		}
		s.State = state
		for _, v := range s.Versions {
			v.State = state
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		if s.State != "DEACTIVATED" {
			apiError(w, http.StatusBadRequest, "NOT_ALLOWED_IN_CURRENT_STATE", "deactivate Supervisor Service %s first", s.ID)
			return
		}
		delete(f.services, s.ID)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *vcenterFake) versionsHandler(w http.ResponseWriter, r *http.Request) {
	s, ok := f.services[r.PathValue("id")]
	if !ok {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "Supervisor Service %s not found", r.PathValue("id"))
		return
	}
	switch r.Method {
	case http.MethodGet:
		list := []map[string]any{}
		for _, v := range s.Versions {
			list = append(list, map[string]any{"version": v.Version, "display_name": s.DisplayName, "state": v.State})
		}
		answer(w, list)
	case http.MethodPost:
		var spec struct {
			CustomSpec  json.RawMessage `json:"custom_spec"`
			VsphereSpec json.RawMessage `json:"vsphere_spec"`
			CarvelSpec  *fakeCarvelSpec `json:"carvel_spec"`
		}
		if _, err := decodeStrict(r, &spec); err != nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "bad version CreateSpec: %v", err)
			return
		}
		if spec.CarvelSpec == nil || spec.CustomSpec != nil || spec.VsphereSpec != nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "the fake takes carvel_spec only")
			return
		}
		v, id, _, err := carvelContent(spec.CarvelSpec.Content)
		if err != nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "%v", err)
			return
		}
		if id != s.ID {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "content is for service %s, not %s", id, s.ID)
			return
		}
		if _, dup := s.Versions[v.Version]; dup {
			apiError(w, http.StatusBadRequest, "ALREADY_EXISTS", "version %s of %s exists", v.Version, s.ID)
			return
		}
		if err := f.maybeReformat(v); err != nil {
			apiError(w, http.StatusInternalServerError, "ERROR", "%v", err)
			return
		}
		s.Versions[v.Version] = v
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *vcenterFake) versionHandler(w http.ResponseWriter, r *http.Request) {
	s, ok := f.services[r.PathValue("id")]
	if !ok {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "Supervisor Service %s not found", r.PathValue("id"))
		return
	}
	v, ok := s.Versions[r.PathValue("version")]
	if !ok {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "version %s of %s not found", r.PathValue("version"), s.ID)
		return
	}
	switch r.Method {
	case http.MethodGet:
		answer(w, map[string]any{"display_name": s.DisplayName, "state": v.State, "description": s.Description,
			"content_type": "CARVEL_APPS_YAML", "content": v.Content, "trust_verified": false, "registered_by_default": false})
	case http.MethodPatch:
		switch r.URL.Query().Get("action") {
		case "activate":
			v.State = "ACTIVATED"
		case "deactivate":
			v.State = "DEACTIVATED"
		default:
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "unknown action %q", r.URL.Query().Get("action"))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		// Documented: only a DEACTIVATED version that no Supervisor runs.
		if v.State != "DEACTIVATED" {
			apiError(w, http.StatusBadRequest, "NOT_ALLOWED_IN_CURRENT_STATE", "deactivate version %s of %s first", v.Version, s.ID)
			return
		}
		if in, ok := f.installs[s.ID]; ok && in.Version == v.Version {
			apiError(w, http.StatusBadRequest, "RESOURCE_IN_USE", "version %s of %s runs on Supervisor %s", v.Version, s.ID, f.supervisor)
			return
		}
		delete(s.Versions, v.Version)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// --- Supervisor Services on a Supervisor (vSphere API 9.0) ---

// activeVersion refuses a service or version that is unknown or not
// ACTIVATED, as install and set are documented to.
func (f *vcenterFake) activeVersion(w http.ResponseWriter, id, version string) bool {
	s, ok := f.services[id]
	if !ok {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "Supervisor Service %s not found", id)
		return false
	}
	v, ok := s.Versions[version]
	if !ok {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "version %s of %s not found", version, id)
		return false
	}
	if s.State != "ACTIVATED" || v.State != "ACTIVATED" {
		apiError(w, http.StatusBadRequest, "NOT_ALLOWED_IN_CURRENT_STATE", "%s %s is not ACTIVATED", id, version)
		return false
	}
	return true
}

func decodeServiceConfig(w http.ResponseWriter, b64 string) ([]byte, bool) {
	if b64 == "" {
		return nil, true
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	var probe any
	if err == nil {
		err = yaml.Unmarshal(raw, &probe)
	}
	if err != nil {
		apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "yaml_service_config is not base64 YAML")
		return nil, false
	}
	return raw, true
}

func (f *vcenterFake) installsHandler(w http.ResponseWriter, r *http.Request) {
	if !f.knownSupervisor(w, r) {
		return
	}
	switch r.Method {
	case http.MethodGet:
		list := []map[string]any{}
		for id, in := range f.installs {
			list = append(list, map[string]any{"supervisor_service": id, "desired_version": in.Version,
				"current_version": in.Version, "config_status": "CONFIGURED"})
		}
		answer(w, list)
	case http.MethodPost:
		var spec struct {
			SupervisorService string `json:"supervisor_service"`
			Version           string `json:"version"`
			YAMLServiceConfig string `json:"yaml_service_config"`
		}
		if _, err := decodeStrict(r, &spec); err != nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "bad CreateSpec: %v", err)
			return
		}
		if spec.SupervisorService == "" || spec.Version == "" {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "supervisor_service and version are required")
			return
		}
		if !f.activeVersion(w, spec.SupervisorService, spec.Version) {
			return
		}
		if _, dup := f.installs[spec.SupervisorService]; dup {
			apiError(w, http.StatusBadRequest, "ALREADY_EXISTS", "%s is installed on %s", spec.SupervisorService, f.supervisor)
			return
		}
		config, ok := decodeServiceConfig(w, spec.YAMLServiceConfig)
		if !ok {
			return
		}
		f.installs[spec.SupervisorService] = &fakeInstall{Version: spec.Version, Config: config}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *vcenterFake) installHandler(w http.ResponseWriter, r *http.Request) {
	if !f.knownSupervisor(w, r) {
		return
	}
	id := r.PathValue("id")
	in, ok := f.installs[id]
	if !ok {
		apiError(w, http.StatusNotFound, "NOT_FOUND", "%s is not installed on %s", id, f.supervisor)
		return
	}
	switch r.Method {
	case http.MethodGet:
		answer(w, map[string]any{"desired_version": in.Version, "current_version": in.Version, "config_status": "CONFIGURED"})
	case http.MethodPut:
		var spec struct {
			Version           string `json:"version"`
			YAMLServiceConfig string `json:"yaml_service_config"`
		}
		if _, err := decodeStrict(r, &spec); err != nil {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "bad SetSpec: %v", err)
			return
		}
		if spec.Version == "" {
			apiError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "version is required")
			return
		}
		if !f.activeVersion(w, id, spec.Version) {
			return
		}
		config, ok := decodeServiceConfig(w, spec.YAMLServiceConfig)
		if !ok {
			return
		}
		// Documented: the SetSpec replaces the current one in its entirety.
		in.Version, in.Config = spec.Version, config
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		delete(f.installs, id)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}
