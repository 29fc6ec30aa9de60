// Package evidence is the validation gate's evidence report: a run's
// result as JSON and as a self-contained HTML page, each signed with the
// appliance's key (base64 ASN.1 ECDSA over sha256, the format of cosign
// sign-blob and of bundle inventories), and its verification. See
// docs/validation.md.
package evidence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"time"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/validate"
)

// Report is the evidence report's JSON: the whole result of a run, who
// signed it, and the key to check it with.
type Report struct {
	// EvidenceVersion is 1. (Not schemaVersion: a report can never be
	// read as a receipt, which the same key signs.)
	EvidenceVersion int       `json:"evidenceVersion"`
	Created         time.Time `json:"created"`
	Appliance       string    `json:"appliance"`
	// Signer is the sha256 fingerprint of the signing key (the appliance's
	// receipt key, <data-dir>/receipt.pub); PublicKey is its PEM.
	Signer    string           `json:"signer"`
	PublicKey string           `json:"publicKey"`
	Result    *validate.Result `json:"result"`
}

// Evidence is a signed report: the JSON and the HTML page, each with its
// signature (base64 ASN.1 ECDSA over sha256 of the exact bytes, the format
// of cosign sign-blob), and the public key.
type Evidence struct {
	JSON          []byte `json:"json"`
	Signature     []byte `json:"signature"`
	HTML          []byte `json:"html"`
	HTMLSignature []byte `json:"html_signature"`
	PublicKey     []byte `json:"public_key"`
}

// Signer signs evidence (bundle.Signer, the appliance's receipt key).
type Signer interface {
	Sign(data []byte) ([]byte, error)
	PublicKey() ([]byte, error)
}

// Make renders a result as a signed report.
func Make(res *validate.Result, s Signer, now time.Time) (*Evidence, error) {
	pub, err := s.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	k, err := bundle.ParsePublicKey("the appliance's key", pub)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	rep := Report{EvidenceVersion: 1, Created: now.UTC(), Appliance: res.Appliance, Signer: "sha256:" + k.Fingerprint(), PublicKey: string(pub), Result: res}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	data = append(data, '\n')
	page, err := renderHTML(&rep, data)
	if err != nil {
		return nil, err
	}
	ev := &Evidence{JSON: data, HTML: page, PublicKey: pub}
	if ev.Signature, err = s.Sign(data); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	if ev.HTMLSignature, err = s.Sign(page); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	return ev, nil
}

// ErrInvalid marks a report that does not verify.
var ErrInvalid = errors.New("the evidence report does not verify")

// Verify checks a report's signature. With keys, the signer must
// be one of them; without, the key the report names is used (and its
// fingerprint returned, to compare with the appliance's receipt.pub).
func Verify(data, sig []byte, keys []bundle.TrustedKey) (*Report, string, error) {
	var rep Report
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil || rep.EvidenceVersion != 1 || rep.Result == nil {
		if len(keys) == 0 {
			return nil, "", fmt.Errorf("%w: not an appliance evidence report (give --key to check its signature alone)", ErrInvalid)
		}
	}
	if len(keys) == 0 {
		k, err := bundle.ParsePublicKey("the report's key", []byte(rep.PublicKey))
		if err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		keys = []bundle.TrustedKey{k}
	}
	k, err := bundle.Verify(data, sig, keys)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &rep, "sha256:" + k.Fingerprint(), nil
}

// VerifyDocument checks the signature of another signed document of the
// report (the HTML page) with the key that signed the JSON.
func VerifyDocument(data, sig []byte, keys []bundle.TrustedKey) error {
	if _, err := bundle.Verify(data, sig, keys); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

var pageTmpl = template.Must(template.New("evidence").Funcs(template.FuncMap{
	"ts": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Validation evidence — {{.Rep.Appliance}} — {{ts .Rep.Created}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.ok{color:#106010}.warning{color:#8a5a00}.failed{color:#a01010;font-weight:bold}.skipped{color:#777}
code{font-size:12px;word-break:break-all}
</style></head><body>
<h1>Validation evidence</h1>
<p>Appliance <b>{{.Rep.Appliance}}</b>, run {{ts .Rep.Result.Started}} – {{ts .Rep.Result.Finished}}.
Outcome: {{if .Rep.Result.OK}}<b class="ok">all gates passed</b>{{else}}<b class="failed">a gate failed</b>{{end}}.<br>
Signed by key <code>{{.Rep.Signer}}</code> (the appliance's receipt key). Platforms: {{range .Rep.Result.Platforms}}{{.}} {{end}}</p>
{{with .Rep.Result.Against}}<p>Measured against the {{.Kind}} <b>{{.Name}}</b> {{if .Bundle}}(bundle {{.Bundle}}) {{end}}<code>{{.SHA256}}</code>, signed by <code>{{.Signer}}</code>, created {{ts .Created}}.</p>{{end}}
<h2>Inputs</h2><table><tr><th>kind</th><th>file</th><th>sha256</th><th>bytes</th></tr>
{{range .Rep.Result.Inputs}}<tr><td>{{.Kind}}</td><td>{{.Name}}</td><td><code>{{.SHA256}}</code></td><td>{{.Bytes}}</td></tr>{{end}}</table>
<h2>Gates</h2><table><tr><th>gate</th><th>outcome</th><th>summary</th></tr>
{{range .Rep.Result.Gates}}<tr><td>{{.Gate}}</td><td class="{{.Status}}">{{.Status}}</td><td>{{.Summary}}</td></tr>{{end}}</table>
{{range .Rep.Result.Gates}}{{if .Findings}}<h3>{{.Gate}}</h3><table><tr><th>severity</th><th>what</th><th>where</th><th>problem</th><th>local</th><th>action</th></tr>
{{range .Findings}}<tr><td class="{{if eq .Severity "error"}}failed{{else if eq .Severity "warning"}}warning{{end}}">{{.Severity}}</td><td>{{.What}}</td><td>{{.Where}}</td><td>{{.Problem}}</td><td>{{.Local}}</td><td>{{.Action}}</td></tr>{{end}}</table>{{end}}{{end}}
<h2>Every digest checked</h2><table><tr><th>gate</th><th>what</th><th>digest</th></tr>
{{range .Rep.Result.Checked}}<tr><td>{{.Gate}}</td><td>{{.What}}</td><td><code>{{.Digest}}</code></td></tr>{{end}}</table>
{{with .Rep.Result.Drift}}<h2>Drift</h2><p>{{.Missing}} missing, {{.Extra}} extra, {{.Different}} different{{if .Standby}} (this appliance is a standby){{end}}.</p>
<table><tr><th>kind</th><th>artifact</th><th>name</th><th>expected</th><th>on the appliance</th><th>against</th></tr>
{{range .Differences}}<tr><td>{{.Kind}}</td><td>{{.Artifact}}</td><td>{{.Name}}</td><td><code>{{.Expected}}</code></td><td><code>{{.Actual}}</code></td><td>{{.Against}}</td></tr>{{end}}</table>{{end}}
{{if .Rep.Result.Staleness}}<h2>Staleness</h2><table><tr><th>artifact</th><th>kind</th><th>version</th><th>refresh when</th><th>bundle</th><th>age (days)</th><th>stale</th></tr>
{{range .Rep.Result.Staleness}}<tr><td>{{.Artifact}}</td><td>{{.Kind}}</td><td>{{.Version}}</td><td>{{.Refresh}}</td><td>{{.Bundle}}</td><td>{{.AgeDays}}</td><td>{{if .Stale}}<b class="warning">yes</b>{{else}}no{{end}}</td></tr>{{end}}</table>{{end}}
{{if .Rep.Result.Imports}}<h2>Import history of what was checked</h2><table><tr><th>id</th><th>source</th><th>bundle</th><th>signer</th><th>user</th><th>finished</th><th>outcome</th><th>digests checked</th></tr>
{{range .Rep.Result.Imports}}<tr><td>{{.ID}}</td><td>{{.Source}}</td><td>{{.Bundle}}</td><td><code>{{.Signer}}</code></td><td>{{.User}}</td><td>{{ts .Finished}}</td><td>{{.Outcome}}</td><td>{{.Covers}}</td></tr>{{end}}</table>{{end}}
<h2>Checking this page</h2><p>This page and the JSON report beside it are each signed (<code>.sig</code>, base64 ECDSA P-256 over sha256).
<code>appliance evidence verify REPORT.json</code>, or <code>base64 -d REPORT.html.sig &gt; s.der; openssl dgst -sha256 -verify receipt.pub -signature s.der REPORT.html</code>.</p>
<script type="application/json" id="report">{{.JSON}}</script>
</body></html>
`))

func renderHTML(rep *Report, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	// The report as it is signed, embedded for machines. encoding/json
	// escapes <, > and & (\u003c…), so it cannot close the script element.
	if err := pageTmpl.Execute(&buf, struct {
		Rep  *Report
		JSON template.JS
	}{rep, template.JS(data)}); err != nil { //nolint:gosec // G203: json.Marshal output, HTML-escaped, see above
		return nil, fmt.Errorf("evidence: render the page: %w", err)
	}
	return buf.Bytes(), nil
}
