package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/regclient"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestPromoteToHarbor hands an appliance's content over to a real Harbor
// (core v2.15.2 behind TLS, ../shared/harbor): the checks refuse a
// read-only Harbor and a project name Harbor would refuse, listing both at
// once and changing nothing; a dry run plans with sizes and pushes
// nothing; the promotion creates the projects with the appliance's
// visibility, leaves a project of the other visibility as it is (and
// says so), and ends with parity. Then Harbor serves it all: anonymous
// pulls from the public project and not the private one, the artifacts
// API lists every tag, skopeo and crane pull, the imgpkg bundle resolves
// with its locations image, the cosign signature verifies, the referrers
// API lists the SBOM. A second run pushes nothing.
func TestPromoteToHarbor(t *testing.T) {
	testkit.Need(t, "skopeo", "crane")
	h := sharedHarbor(t)
	a := startAppliance(t, t.TempDir())
	repos, app := seed(t, a, "hb")
	pass := writeSecret(t, h.Password)
	appliance := applianceView(t, a).content(t, repos...)

	// A project Harbor holds already, private, which the appliance has public.
	if code, body := h.API(t, http.MethodPost, "/api/v2.0/projects", `{"project_name":"hb-mixed","metadata":{"public":"false"}}`); code != http.StatusCreated {
		t.Fatalf("create hb-mixed in Harbor: %d %s", code, body)
	}
	v := applianceView(t, a)
	v.write(t, "hb-mixed/tool:1", randomImage(t, 4<<10, 1))
	repos = append(repos, "hb-mixed/tool")
	appliance["hb-mixed/tool"] = v.content(t, "hb-mixed/tool")["hb-mixed/tool"]

	// Every problem at once, before anything moves: Harbor read-only, and a
	// project name it refuses (the appliance allows double underscores).
	v.write(t, "hb__odd/x:1", randomImage(t, 1<<10, 1))
	h.SetReadOnly(t, true)
	out, err := a.cliLong(a.password+"\n", promoteArgs(h.URL, h.CAFile, h.Admin, pass, "--all")...)
	h.SetReadOnly(t, false)
	mustFail(t, "promote into a read-only Harbor", out, err, "read-only", `"hb__odd": Harbor refuses this name`, "refused before anything was pushed")
	if code, _ := h.API(t, http.MethodHead, "/api/v2.0/projects?project_name=hb-nvidia", ""); code != http.StatusNotFound {
		t.Fatalf("a refused promotion created a project (HEAD hb-nvidia: %d)", code)
	}

	projects := []string{"hb-nvidia", "hb-vendor", "hb-mixed"}
	plan, out, err := promoteJSON(t, a, promoteArgs(h.URL, h.CAFile, h.Admin, pass, "--projects", strings.Join(projects, ","), "--dry-run")...)
	mustOK(t, "dry run", out, err)
	if plan.State != promote.StatePlanned || plan.Plan == nil || plan.Plan.BlobsToPush == 0 || plan.Plan.BytesToPush == 0 || plan.Plan.TagsToSet == 0 {
		t.Fatalf("dry run plan: %+v", plan.Plan)
	}
	if plan.TargetKind != "harbor" {
		t.Errorf("target kind = %q, want harbor", plan.TargetKind)
	}
	if code, _ := h.API(t, http.MethodHead, "/api/v2.0/projects?project_name=hb-nvidia", ""); code != http.StatusNotFound {
		t.Fatalf("a dry run created a project (HEAD hb-nvidia: %d)", code)
	}
	out, err = a.cliLong(a.password+"\n", promoteArgs(h.URL, h.CAFile, h.Admin, pass, "--projects", strings.Join(projects, ","), "--dry-run")...)
	mustOK(t, "dry run as a table", out, err)
	for _, want := range []string{"BYTES TO PUSH", "hb-nvidia/bundle", "create (private)", "hb-vendor"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run table lacks %q:\n%s", want, out)
		}
	}

	rec, out, err := promoteJSON(t, a, promoteArgs(h.URL, h.CAFile, h.Admin, pass, "--projects", strings.Join(projects, ","), "--parallel", "3")...)
	mustOK(t, "promote", out, err)
	if rec.State != promote.StateSucceeded || rec.Parity == nil || !rec.Parity.OK {
		t.Fatalf("promotion %s, parity %+v", rec.State, rec.Parity)
	}
	if !slices.ContainsFunc(rec.Warnings, func(w string) bool { return strings.Contains(w, "hb-mixed is public on the appliance but private") }) {
		t.Errorf("no warning about hb-mixed's visibility: %v", rec.Warnings)
	}

	// Projects through Harbor's API, with metadata.public as the appliance says.
	for p, want := range map[string]string{"hb-nvidia": "true", "hb-vendor": "false", "hb-mixed": "false"} {
		code, body := h.API(t, http.MethodGet, "/api/v2.0/projects/"+p, "")
		var pr struct {
			Metadata map[string]string `json:"metadata"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &pr) != nil || pr.Metadata["public"] != want {
			t.Errorf("Harbor project %s: HTTP %d, public %q, want %q", p, code, pr.Metadata["public"], want)
		}
	}

	// Every digest on both sides, read back independently.
	admin := newRegView(t, h.Host, h.CAFile, h.Admin, h.Password)
	sameContent(t, "Harbor", appliance, admin.content(t, repos...))

	// The artifacts API lists every tag (signatures are the accessories
	// of their subjects there, each with its own tags).
	for _, repo := range repos {
		listed := harborTags(t, h, repo)
		for tag := range appliance[repo] {
			if !listed[tag] {
				t.Errorf("Harbor's artifacts API does not list %s:%s", repo, tag)
			}
		}
	}

	// Anonymous pulls: the public project yes, the private one no.
	certs := h.CertDir(t)
	out, err = run(t, nil, "skopeo", "inspect", "--cert-dir", certs, "--no-creds", "--format", "{{.Digest}}", "docker://"+h.Host+"/hb-nvidia/gpu-operator:v24.9")
	mustOK(t, "anonymous pull from the public project", out, err)
	if strings.TrimSpace(out) != app {
		t.Errorf("anonymous pull digest %s, want %s", out, app)
	}
	out, err = run(t, nil, "skopeo", "inspect", "--cert-dir", certs, "--no-creds", "--raw", "docker://"+h.Host+"/hb-vendor/app3:"+firstTag(appliance["hb-vendor/app3"]))
	mustFail(t, "anonymous pull from the private project", out, err, "unauthorized")
	out, err = run(t, nil, "skopeo", "copy", "--src-cert-dir", certs, "--src-creds", h.Admin+":"+h.Password, "--all",
		"docker://"+h.Host+"/hb-vendor/app3:"+firstTag(appliance["hb-vendor/app3"]), "oci:"+t.TempDir()+":x")
	mustOK(t, "skopeo copy of the multi-arch index with credentials", out, err)
	out, err = run(t, []string{"SSL_CERT_FILE=" + h.CAFile}, "crane", "pull", h.Host+"/hb-nvidia/gpu-operator:latest", filepath.Join(t.TempDir(), "img.tar"))
	mustOK(t, "crane pull", out, err)

	// The imgpkg bundle resolves on Harbor through its locations image:
	// imgpkg copies it, with every image it names, from Harbor alone.
	copied := filepath.Join(t.TempDir(), "b.tar")
	out, err = run(t, []string{"SSL_CERT_FILE=" + h.CAFile}, imgpkgTool(t), "copy", "-b", h.Host+"/hb-nvidia/bundle@"+fixtureBundle, "--to-tar", copied)
	mustOK(t, "imgpkg copy of the bundle from Harbor", out, err)
	assertImgpkgTarHolds(t, copied, fixtureApp1)

	// The cosign signature still verifies against the key that made it.
	verifyFixtureSignature(t, newRegView(t, h.Host, h.CAFile, "", ""), "hb-nvidia/bundle")

	// Harbor's referrers API lists the SBOM.
	refs, err := remote.Referrers(admin.ref(t, "hb-nvidia/gpu-operator@"+app).(name.Digest), admin.opts...)
	if err != nil {
		t.Fatal(err)
	}
	if im, _ := refs.IndexManifest(); im == nil || len(im.Manifests) != 1 {
		t.Fatalf("Harbor's referrers of gpu-operator: %+v", im)
	}

	// The report is kept and shown; a second run pushes nothing.
	var par promote.Parity
	if err := getJSON(a, "/api/v1/parity", &par); err != nil || !par.OK {
		t.Fatalf("GET /api/v1/parity: %v %+v", err, par)
	}
	again, out, err := promoteJSON(t, a, promoteArgs(h.URL, h.CAFile, h.Admin, pass, "--projects", strings.Join(projects, ","))...)
	mustOK(t, "second promotion", out, err)
	if again.Plan.BlobsToPush != 0 || again.Plan.ManifestsToPush != 0 || again.Plan.TagsToSet != 0 || !again.Parity.OK {
		t.Fatalf("second promotion pushed again: %+v", again.Plan)
	}

	// A robot account's credentials work as a user's: a new repository in
	// an existing project, pushed with a project robot that may push there;
	// a robot that may only pull is refused before anything moves.
	robot := harborRobot(t, h, "hb-nvidia", "promoter", "pull", "push")
	reader := harborRobot(t, h, "hb-nvidia", "reader", "pull")
	fresh := v.write(t, "hb-nvidia/driver:550", randomImage(t, 16<<10, 2))
	out, err = a.cliLong(a.password+"\n", promoteArgs(h.URL, h.CAFile, reader.name, writeSecret(t, reader.secret), "--projects", "hb-nvidia")...)
	mustFail(t, "promote with a pull-only robot", out, err, "may not push", reader.name)
	byRobot, out, err := promoteJSON(t, a, promoteArgs(h.URL, h.CAFile, robot.name, writeSecret(t, robot.secret), "--projects", "hb-nvidia")...)
	mustOK(t, "promote as a robot account", out, err)
	if !byRobot.Parity.OK || byRobot.Plan.TagsToSet != 1 {
		t.Fatalf("robot promotion: parity %v, %d tags set (want 1)", byRobot.Parity.OK, byRobot.Plan.TagsToSet)
	}
	if got := admin.digest(t, "hb-nvidia/driver:550"); got != fresh {
		t.Fatalf("hb-nvidia/driver:550 on Harbor = %s, want %s", got, fresh)
	}

	out, err = a.cli(a.password+"\n", "status", "--username", "admin", "--password-stdin")
	mustOK(t, "status", out, err)
	if !strings.Contains(out, "parity ok") || !strings.Contains(out, "mode: bootstrap") {
		t.Errorf("status:\n%s", out)
	}
}

type robotAccount struct{ name, secret string }

// harborRobot creates a project robot account through Harbor's API.
func harborRobot(t *testing.T, h *testkit.Harbor, project, name string, actions ...string) robotAccount {
	t.Helper()
	var access []string
	for _, a := range actions {
		access = append(access, `{"resource":"repository","action":"`+a+`"}`)
	}
	body := `{"name":"` + name + `","level":"project","duration":-1,"permissions":[{"kind":"project","namespace":"` + project + `","access":[` + strings.Join(access, ",") + `]}]}`
	code, data := h.API(t, http.MethodPost, "/api/v2.0/robots", body)
	var r struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	}
	if code != http.StatusCreated || json.Unmarshal(data, &r) != nil || r.Secret == "" {
		t.Fatalf("create robot %s: HTTP %d %s", name, code, data)
	}
	return robotAccount{name: r.Name, secret: r.Secret}
}

func firstTag(tags map[string]string) string {
	var all []string
	for t := range tags {
		all = append(all, t)
	}
	slices.Sort(all)
	if len(all) == 0 {
		return "missing"
	}
	return all[0]
}

// verifyFixtureSignature checks app1's cosign signature in repo, the way
// `cosign verify --key cosign.pub --insecure-ignore-tlog` does.
func verifyFixtureSignature(t *testing.T, v *regView, repo string) {
	t.Helper()
	pemBytes, err := os.ReadFile(fixturePath(t, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := remote.Image(v.ref(t, repo+":sha256-"+strings.TrimPrefix(fixtureApp1, "sha256:")+".sig"), v.opts...)
	if err != nil {
		t.Fatalf("read the signature from %s: %v", v.host, err)
	}
	if err := testkit.VerifyCosign(sig, pemBytes, fixtureApp1); err != nil {
		t.Fatalf("app1's signature on %s: %v", v.host, err)
	}
}

// TestPromoteToDockerRegistryResumes promotes into Debian's docker-registry
// (TLS, htpasswd), a plain OCI registry without the referrers API, through
// a throttling proxy, and stops the registry in the middle: the promotion
// fails naming it, and the re-run after the registry is back pushes only
// what is missing and ends with parity. Referrers are then found through
// their fallback tags, and skopeo, imgpkg and the cosign check work
// against the registry.
func TestPromoteToDockerRegistryResumes(t *testing.T) {
	testkit.Need(t, "skopeo", "crane", "docker-registry")
	t.Parallel()
	a := startAppliance(t, t.TempDir())
	repos, app := seed(t, a, "dr")
	v := applianceView(t, a)
	v.write(t, "dr-big/model:1", randomImage(t, 8<<20, 6))
	repos = append(repos, "dr-big/model")
	appliance := v.content(t, repos...)
	reg := startTLSRegistry(t)
	pass := writeSecret(t, reg.password)
	proxy := startThrottle(t, reg.Host, 8<<20) // 8 MB/s: the 48 MiB model takes seconds

	type result struct {
		out string
		err error
	}
	first := make(chan result, 1)
	go func() {
		out, err := a.cliLong(a.password+"\n", promoteArgs("https://"+proxy.addr(), reg.caFile, "promoter", pass, "--all", "--parallel", "2")...)
		first <- result{out, err}
	}()
	waitPromotionBytes(t, a, 20<<20)
	reg.Stop()
	r := <-first
	mustFail(t, "promotion while the target stops", r.out, r.err, "unreachable", "re-run the promotion to resume")
	var failed promote.Promotion
	if err := getJSON(a, "/api/v1/promotions/latest", &failed); err != nil || failed.State != promote.StateFailed {
		t.Fatalf("the failed promotion's record: %v %+v", err, failed.State)
	}

	reg.Restart()
	proxy.rate.Store(0)
	rec, out, err := promoteJSON(t, a, promoteArgs("https://"+proxy.addr(), reg.caFile, "promoter", pass, "--all")...)
	mustOK(t, "resumed promotion", out, err)
	if !rec.Parity.OK || rec.Plan.BlobsPresent == 0 {
		t.Fatalf("resumed promotion: parity %v, %d blobs were already there (want > 0)", rec.Parity.OK, rec.Plan.BlobsPresent)
	}
	target := newRegView(t, reg.Host, reg.caFile, "promoter", reg.password)
	sameContent(t, "docker-registry", appliance, target.content(t, repos...))

	// Without the referrers API, the SBOM is listed by the fallback tag.
	refs, err := remote.Referrers(target.ref(t, "dr-nvidia/gpu-operator@"+app).(name.Digest), target.opts...)
	if err != nil {
		t.Fatal(err)
	}
	if im, _ := refs.IndexManifest(); im == nil || len(im.Manifests) != 1 {
		t.Fatalf("referrers of gpu-operator on docker-registry: %+v", im)
	}
	verifyFixtureSignature(t, target, "dr-nvidia/bundle")
	creds := "promoter:" + reg.password
	certs := t.TempDir()
	caPEM, _ := os.ReadFile(reg.caFile)
	if err := os.WriteFile(filepath.Join(certs, "ca.crt"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, nil, "skopeo", "copy", "--src-cert-dir", certs, "--src-creds", creds, "docker://"+reg.Host+"/dr-big/model:1", "oci:"+t.TempDir()+":m")
	mustOK(t, "skopeo pull of the model from docker-registry", out, err)
	craneCfg := t.TempDir()
	if err := os.WriteFile(filepath.Join(craneCfg, "config.json"), []byte(`{"auths":{"`+reg.Host+`":{"auth":"`+base64.StdEncoding.EncodeToString([]byte(creds))+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, []string{"SSL_CERT_FILE=" + reg.caFile, "DOCKER_CONFIG=" + craneCfg}, "crane", "pull", reg.Host+"/dr-vendor/app3:"+firstTag(appliance["dr-vendor/app3"]), filepath.Join(t.TempDir(), "i.tar"))
	mustOK(t, "crane pull from docker-registry", out, err)
	out, err = run(t, []string{"SSL_CERT_FILE=" + reg.caFile, "IMGPKG_REGISTRY_HOSTNAME=" + reg.Host, "IMGPKG_REGISTRY_USERNAME=promoter",
		"IMGPKG_REGISTRY_PASSWORD=" + reg.password}, imgpkgTool(t), "copy", "-b", reg.Host+"/dr-nvidia/bundle@"+fixtureBundle, "--to-tar", filepath.Join(t.TempDir(), "b.tar"))
	mustOK(t, "imgpkg copy of the bundle from docker-registry", out, err)
}

// TestPromoteToApplianceSurvivesKill promotes into a second appliance and
// kills the first (SIGKILL) in the middle: after its restart the record
// says the promotion was interrupted, and the re-run completes with
// parity, pushing only what is missing.
func TestPromoteToApplianceSurvivesKill(t *testing.T) {
	testkit.Need(t, "skopeo", "crane")
	t.Parallel()
	a := startAppliance(t, t.TempDir())
	repos, app := seed(t, a, "ap")
	v := applianceView(t, a)
	v.write(t, "ap-big/model:1", randomImage(t, 8<<20, 6))
	repos = append(repos, "ap-big/model")
	want := v.content(t, repos...)
	prod := startAppliance(t, t.TempDir())
	pass := writeSecret(t, prod.password)
	proxy := startThrottle(t, prod.host(), 8<<20)

	go func() {
		_, _ = a.cliLong(a.password+"\n", promoteArgs("https://"+proxy.addr(), filepath.Join(prod.dataDir, "ca.crt"), "admin", pass, "--all")...)
	}()
	waitPromotionBytes(t, a, 20<<20)
	a.kill()
	a.start()
	var rec promote.Promotion
	if err := getJSON(a, "/api/v1/promotions/latest", &rec); err != nil || rec.State != promote.StateInterrupted {
		t.Fatalf("after the kill, the promotion is %q (%v), want interrupted", rec.State, err)
	}
	proxy.rate.Store(0)
	rec, out, err := promoteJSON(t, a, promoteArgs("https://"+proxy.addr(), filepath.Join(prod.dataDir, "ca.crt"), "admin", pass, "--all")...)
	mustOK(t, "promotion after the restart", out, err)
	if !rec.Parity.OK || rec.Plan.BlobsPresent == 0 {
		t.Fatalf("re-run: parity %v, %d blobs already there", rec.Parity.OK, rec.Plan.BlobsPresent)
	}
	sameContent(t, "second appliance", want, applianceView(t, prod).content(t, repos...))
	out, err = run(t, nil, "skopeo", "copy", "--src-cert-dir", prod.certDir(), "--src-no-creds", "docker://"+prod.host()+"/ap-nvidia/gpu-operator:v24.9", "oci:"+t.TempDir()+":x")
	mustOK(t, "anonymous skopeo pull from the second appliance", out, err)
	prodCA := filepath.Join(prod.dataDir, "ca.crt")
	out, err = run(t, []string{"SSL_CERT_FILE=" + prodCA}, "crane", "pull", prod.host()+"/ap-big/model:1", filepath.Join(t.TempDir(), "m.tar"))
	mustOK(t, "crane pull from the second appliance", out, err)
	copied := filepath.Join(t.TempDir(), "b.tar")
	out, err = run(t, []string{"SSL_CERT_FILE=" + prodCA}, imgpkgTool(t), "copy", "-b", prod.host()+"/ap-nvidia/bundle@"+fixtureBundle, "--to-tar", copied)
	mustOK(t, "imgpkg copy of the bundle from the second appliance", out, err)
	assertImgpkgTarHolds(t, copied, fixtureApp1)
	verifyFixtureSignature(t, newRegView(t, prod.host(), prodCA, "", ""), "ap-nvidia/bundle")
	refs, err := remote.Referrers(applianceView(t, prod).ref(t, "ap-nvidia/gpu-operator@"+app).(name.Digest), applianceView(t, prod).opts...)
	if err != nil {
		t.Fatal(err)
	}
	if im, _ := refs.IndexManifest(); im == nil || len(im.Manifests) != 1 {
		t.Fatalf("referrers of gpu-operator on the second appliance: %+v", im)
	}
}

// TestPromoteRefusals shows each bad input refused with an error that
// names it, found before anything is pushed, with nothing changed on the
// appliance and nothing on the target.
func TestPromoteRefusals(t *testing.T) {
	testkit.Need(t, "docker-registry")
	t.Parallel()
	a := startAppliance(t, t.TempDir())
	v := applianceView(t, a)
	v.write(t, "refuse/app:1", randomImage(t, 4<<10, 1))
	before := v.content(t, "refuse/app")
	reg := startTLSRegistry(t)
	pass := writeSecret(t, reg.password)
	wrong := writeSecret(t, "not-the-password")
	closed := freeAddr(t)
	ro := startTLSRegistry(t)
	ro.SetReadOnly(true)
	guestTarget := startAppliance(t, t.TempDir())
	guestPW := writeSecret(t, "guest-password-123")
	out, err := guestTarget.cli(guestTarget.password+"\n", "user", "add", "viewer", "--role", "guest", "--new-password-file", guestPW, "--username", "admin", "--password-stdin")
	mustOK(t, "add a guest on the target", out, err)

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unreachable", promoteArgs("https://"+closed, reg.caFile, "promoter", pass, "--all"), []string{"unreachable", closed}},
		{"wrong CA", promoteArgs("https://"+reg.Host, filepath.Join(a.dataDir, "ca.crt"), "promoter", pass, "--all"), []string{"TLS", "give the registry's CA"}},
		{"no CA", promoteArgs("https://"+reg.Host, "", "promoter", pass, "--all"), []string{"TLS"}},
		{"wrong password", promoteArgs("https://"+reg.Host, reg.caFile, "promoter", wrong, "--all"), []string{"credentials refused", "promoter"}},
		{"no credentials", promoteArgs("https://"+reg.Host, reg.caFile, "", "", "--all"), []string{"credentials"}},
		{"read-only target", promoteArgs("https://"+ro.Host, ro.caFile, "promoter", writeSecret(t, ro.password), "--all"), []string{"read-only"}},
		{"no push rights", promoteArgs("https://"+guestTarget.host(), filepath.Join(guestTarget.dataDir, "ca.crt"), "viewer", guestPW, "--all"), []string{"may not push", "viewer"}},
		{"unknown project", promoteArgs("https://"+reg.Host, reg.caFile, "promoter", pass, "--projects", "nothere"), []string{"no repository in project nothere"}},
		{"plain http target", promoteArgs("https://"+a.httpAddr, "", "", "", "--all"), []string{"does not speak TLS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := a.cliLong(a.password+"\n", tc.args...)
			mustFail(t, "promote", out, err, tc.want...)
			if strings.Contains(out, "promoter-password-1") || strings.Contains(out, "not-the-password") {
				t.Errorf("a password shows in the output:\n%s", out)
			}
		})
	}
	out, err = a.cli(a.password+"\n", "promote", "--all", "--username", "admin", "--password-stdin")
	mustFail(t, "promote without --target", out, err, "--target is required")
	out, err = a.cli(a.password+"\n", "promote", "--target", "https://"+reg.Host, "--username", "admin", "--password-stdin")
	mustFail(t, "promote without projects", out, err, "name the projects")

	sameContent(t, "the appliance after refusals", before, v.content(t, "refuse/app"))
	if tags := newRegView(t, reg.Host, reg.caFile, "promoter", reg.password).tagsOrNone(t, "refuse/app"); len(tags) != 0 {
		t.Fatalf("refused promotions left tags on the target: %v", tags)
	}
	var recs []promote.Promotion
	if err := getJSON(a, "/api/v1/promotions", &recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.State != promote.StateRefused && r.State != promote.StateFailed {
			t.Errorf("promotion %s to %s is %s", r.ID, r.Target, r.State)
		}
		if r.Progress.BytesDone != 0 {
			t.Errorf("refused promotion %s moved %d bytes", r.ID, r.Progress.BytesDone)
		}
	}
}

func (v *regView) tagsOrNone(t *testing.T, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(v.host+"/"+repo, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r, v.opts...)
	if err != nil {
		return nil
	}
	return slices.DeleteFunc(tags, regclient.IsFallbackTag)
}

// harborTags lists every tag of repo through Harbor's artifacts API,
// accessories (cosign signatures) included.
func harborTags(t *testing.T, h *testkit.Harbor, repo string) map[string]bool {
	t.Helper()
	p, r, _ := strings.Cut(repo, "/")
	base := "/api/v2.0/projects/" + p + "/repositories/" + url.PathEscape(url.PathEscape(r)) + "/artifacts"
	code, body := h.API(t, http.MethodGet, base+"?with_tag=true&with_accessory=true&page_size=100", "")
	if code != http.StatusOK {
		t.Fatalf("artifacts of %s: %d %s", repo, code, body)
	}
	type tag struct {
		Name string `json:"name"`
	}
	var arts []struct {
		Tags        []tag `json:"tags"`
		Accessories []struct {
			Digest string `json:"digest"`
		} `json:"accessories"`
	}
	if err := json.Unmarshal(body, &arts); err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, a := range arts {
		for _, tg := range a.Tags {
			listed[tg.Name] = true
		}
		for _, acc := range a.Accessories {
			code, body := h.API(t, http.MethodGet, base+"/"+acc.Digest+"?with_tag=true", "")
			var one struct {
				Tags []tag `json:"tags"`
			}
			if code != http.StatusOK || json.Unmarshal(body, &one) != nil {
				t.Fatalf("accessory %s of %s: %d %s", acc.Digest, repo, code, body)
			}
			for _, tg := range one.Tags {
				listed[tg.Name] = true
			}
		}
	}
	return listed
}

// assertImgpkgTarHolds checks that a tar imgpkg wrote names digest.
func assertImgpkgTarHolds(t *testing.T, tarPath, digest string) {
	t.Helper()
	data, err := os.ReadFile(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), strings.TrimPrefix(digest, "sha256:")) {
		t.Fatalf("the tar imgpkg copied does not hold %s", digest)
	}
}
