package validate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// getJSON reads one of the appliance's anonymous JSON endpoints.
func (v *Validator) getJSON(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.base.JoinPath(path).String(), nil)
	if err != nil {
		return err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// dialName connects to the appliance's port at name and verifies its
// certificate with the CA alone, for that name. It tries every address
// the name resolves to and answers the certificate of the first that works.
func (v *Validator) dialName(ctx context.Context, host string) (*x509.Certificate, []string, error) {
	port := v.base.Port()
	if port == "" {
		port = "443"
	}
	var addrs []string
	if ip := net.ParseIP(host); ip != nil {
		addrs = []string{host}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		if addrs, err = net.DefaultResolver.LookupHost(rctx, host); err != nil || len(addrs) == 0 {
			return nil, nil, fmt.Errorf("does not resolve: %w", err)
		}
	}
	var errs []string
	for _, a := range addrs {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second},
			Config: &tls.Config{RootCAs: v.pool, ServerName: host, MinVersion: tls.VersionTLS12}}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(a, port))
		if err != nil {
			errs = append(errs, a+": "+err.Error())
			continue
		}
		st := c.(*tls.Conn).ConnectionState()
		_ = c.Close()
		return st.PeerCertificates[0], addrs, nil
	}
	return nil, addrs, fmt.Errorf("TLS with the appliance's CA alone fails: %s", strings.Join(errs, "; "))
}

// registryGate: every advertised name resolves and speaks TLS the CA
// verifies; one image of every public project pulls anonymously (its
// manifest, config and smallest layer, downloaded and verified).
func (r *run) registryGate(ctx context.Context, g *GateResult) {
	v := r.v
	for _, n := range v.o.Names {
		if _, addrs, err := v.dialName(ctx, n); err != nil {
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: n, Problem: err.Error(),
				Action: "fix DNS for " + n + ", or the certificate's names (hostnames in the configuration)"})
		} else {
			g.Findings = append(g.Findings, Finding{Severity: SeverityInfo, What: n, Problem: "resolves (" + strings.Join(addrs, ", ") + "), TLS verifies with the appliance's CA"})
		}
		g.Checked++
	}
	var projects []struct {
		Name   string `json:"name"`
		Public bool   `json:"public"`
	}
	if err := v.getJSON(ctx, "/api/v1/projects", &projects); err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: v.base.Host, Problem: "the appliance's API does not answer: " + err.Error()})
		return
	}
	// One tag per public project, from what the appliance holds (its
	// receipt), else from the references given.
	tags := map[string][]string{}
	if r.receipt != nil {
		for _, t := range r.receipt.Tags {
			if strings.HasPrefix(t.Tag, "sha256-") {
				continue
			}
			p, _, _ := strings.Cut(t.Repository, "/")
			tags[p] = append(tags[p], t.Repository+":"+t.Tag)
		}
	}
	m := r.mapper()
	for _, ir := range r.parsed.images {
		if local, err := m.Map(ir.Ref); err == nil {
			if ref, err := name.ParseReference(local); err == nil {
				p, _, _ := strings.Cut(ref.Context().RepositoryStr(), "/")
				tags[p] = append(tags[p], strings.TrimPrefix(local, v.base.Host+"/"))
			}
		}
	}
	pulled := 0
	for _, pr := range projects {
		if !pr.Public {
			continue
		}
		cands := tags[pr.Name]
		sort.Strings(cands)
		if len(cands) == 0 {
			g.Findings = append(g.Findings, Finding{Severity: SeverityWarning, What: pr.Name,
				Problem: "public project with no tag known to pull", Action: "run the gate inside the appliance (POST /api/v1/validation), which reads every tag"})
			continue
		}
		ref, err := name.ParseReference(v.base.Host + "/" + cands[0])
		if err != nil {
			continue
		}
		d, err := r.pullOne(ctx, ref)
		g.Checked++
		if err != nil {
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: ref.String(), Repository: ref.Context().RepositoryStr(), Problem: "anonymous pull fails: " + pullError(err),
				Action: "check the project is public and the registry healthy (appliance fsck)"})
			continue
		}
		pulled++
		r.checkedImage(GateRegistry, ref.String(), d, ref.Context().RepositoryStr())
	}
	g.Summary = fmt.Sprintf("%d names, %d public projects pulled anonymously", len(v.o.Names), pulled)
}

// pullOne pulls an image anonymously: its manifest (for an index, the
// first platform asked), config, and smallest layer, each verified.
func (r *run) pullOne(ctx context.Context, ref name.Reference) (string, error) {
	opts, err := r.v.newPuller(nil).opts(ctx, ref.Context())
	if err != nil {
		return "", err
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return "", err
	}
	img, err := desc.Image()
	if desc.MediaType.IsIndex() {
		want, _ := parsePlatform(r.platforms[0])
		img, err = remote.Image(ref, append(opts, remote.WithPlatform(want))...)
	}
	if err != nil {
		return desc.Digest.String(), err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return desc.Digest.String(), fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return desc.Digest.String(), err
	}
	var small v1.Layer
	var smallSize int64 = -1
	for _, l := range layers {
		mt, _ := l.MediaType()
		if !mt.IsDistributable() {
			continue
		}
		if s, err := l.Size(); err == nil && (smallSize < 0 || s < smallSize) {
			small, smallSize = l, s
		}
	}
	if small != nil {
		rc, err := small.Compressed()
		if err != nil {
			return desc.Digest.String(), err
		}
		defer rc.Close()
		// go-containerregistry checks the digest as the layer is read.
		if _, err := io.Copy(io.Discard, rc); err != nil {
			return desc.Digest.String(), fmt.Errorf("layer: %w", err)
		}
	}
	return desc.Digest.String(), nil
}

// certificatesGate: the CA and the server certificate are valid now, the
// server certificate carries every advertised name, and neither expires
// within 30 days (a warning).
func (r *run) certificatesGate(ctx context.Context, g *GateResult) {
	v := r.v
	now := v.o.Now()
	cert, _, err := v.dialName(ctx, v.base.Hostname())
	if err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: v.base.Host, Problem: err.Error()})
		return
	}
	var ca *x509.Certificate
	rest := v.o.CAPEM
	for _, c := range parsePEMCerts(rest) {
		if c.IsCA {
			ca = c
			break
		}
	}
	check := func(what string, c *x509.Certificate) int {
		days := int(c.NotAfter.Sub(now).Hours() / 24)
		f := Finding{Severity: SeverityInfo, What: what, Digest: certDigest(c),
			Problem: fmt.Sprintf("valid until %s (%d days)", c.NotAfter.UTC().Format(time.RFC3339), days)}
		switch {
		case now.Before(c.NotBefore):
			f.Severity, f.Problem = SeverityError, "not valid before "+c.NotBefore.UTC().Format(time.RFC3339)
		case now.After(c.NotAfter):
			f.Severity, f.Problem, f.Action = SeverityError, "expired "+c.NotAfter.UTC().Format(time.RFC3339), "renew it"
		case days < 30:
			f.Severity, f.Action = SeverityWarning, "renew it within "+fmt.Sprint(days)+" days"
		}
		g.Findings = append(g.Findings, f)
		g.Checked++
		r.checked(GateCertificates, what, f.Digest)
		return days
	}
	caDays := -1
	if ca == nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "CA", Problem: "the CA given holds no CA certificate"})
	} else {
		caDays = check("CA "+ca.Subject.CommonName, ca)
	}
	srvDays := check("server certificate "+cert.Subject.CommonName, cert)
	for _, n := range v.o.Names {
		if err := cert.VerifyHostname(n); err != nil {
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: n, Problem: "the server certificate does not carry this name",
				Action: "add it to hostnames and restart the appliance (the certificate is reissued)"})
		}
	}
	g.Summary = fmt.Sprintf("CA %d days, server certificate %d days to expiry, %d names", caDays, srvDays, len(v.o.Names))
}
