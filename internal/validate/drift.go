package validate

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/validate/refs"
)

// Against is the connected side's record drift is measured against: a
// bundle's signed inventory (its bytes, signature and signer key) or an
// appliance receipt.
type Against struct {
	Name      string `json:"name"`
	Inventory []byte `json:"inventory,omitempty"`
	Signature []byte `json:"signature,omitempty"`
	SignerKey []byte `json:"signer_key,omitempty"`
	Receipt   []byte `json:"receipt,omitempty"`
}

// AgainstInfo says what a run was measured against.
type AgainstInfo struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"` // inventory or receipt
	Bundle  string    `json:"bundle,omitempty"`
	SHA256  string    `json:"sha256"`
	Signer  string    `json:"signer"`
	Created time.Time `json:"created"`
}

type against struct {
	info    AgainstInfo
	inv     *bundle.Inventory
	receipt *bundle.Receipt
}

// LoadAgainst reads what --against names: a bundle (one file or parts),
// an inventory.json with inventory.json.sig (and inventory.pub) beside it,
// or a signed receipt. Whether it is trusted is decided by the gate.
func LoadAgainst(path string) (*Against, error) {
	data, err := readHead(path)
	if err != nil {
		return nil, badInput("--against %s: %v", path, err)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		full, err := os.ReadFile(path)
		if err != nil {
			return nil, badInput("--against %s: %v", path, err)
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(full, &probe); err != nil {
			return nil, badInput("--against %s: %s", path, refs.JSONLine(full))
		}
		if _, ok := probe["payload"]; ok {
			return &Against{Name: filepath.Base(path), Receipt: full}, nil
		}
		a := &Against{Name: filepath.Base(path), Inventory: full}
		if a.Signature, err = os.ReadFile(path + ".sig"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, badInput("--against %s.sig: %v", path, err)
		}
		if pub, err := os.ReadFile(filepath.Join(filepath.Dir(path), bundle.EntrySignerKey)); err == nil {
			a.SignerKey = pub
		}
		return a, nil
	}
	r, _, err := bundle.Open(path, bundle.Trust{AnySigner: true})
	if err != nil {
		return nil, badInput("--against %s: %v", path, err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	a := &Against{Name: filepath.Base(path)}
	for i := 0; i < 3; i++ {
		h, err := tr.Next()
		if err != nil {
			if i == 0 {
				return nil, badInput("--against %s: not a bundle, an inventory or a receipt (%v)", path, err)
			}
			break
		}
		if h.Size > bundle.MetaLimit {
			return nil, badInput("--against %s: %s is %d bytes", path, h.Name, h.Size)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, badInput("--against %s: %v", path, err)
		}
		switch h.Name {
		case bundle.EntryInventory:
			a.Inventory = body
		case bundle.EntrySignature:
			a.Signature = body
		case bundle.EntrySignerKey:
			a.SignerKey = body
		default:
			i = 3
		}
	}
	if a.Inventory == nil {
		return nil, badInput("--against %s: the first entry is not inventory.json: not an appliance bundle", path)
	}
	return a, nil
}

func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if _, perr := os.Stat(path + ".parts.json"); perr == nil {
			return []byte("parts"), nil
		}
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

// checkAgainst verifies the signature: an inventory must be signed by a
// trusted key, a receipt by the appliance's receipt key or a trusted one.
func (v *Validator) checkAgainst(_ context.Context, a *Against) (*against, error) {
	if a.Name == "" {
		a.Name = "against"
	}
	switch {
	case len(a.Receipt) > 0:
		keys := append(append([]bundle.TrustedKey{}, v.o.ReceiptKeys...), v.o.Trust...)
		if len(keys) == 0 {
			return nil, badInput("--against %s: no key to trust a receipt with", a.Name)
		}
		rc, signer, sum, err := bundle.ParseSignedReceipt(a.Name, a.Receipt, keys)
		if err != nil {
			return nil, badInput("--against %v", err)
		}
		return &against{receipt: rc, info: AgainstInfo{Name: a.Name, Kind: "receipt", SHA256: sum, Signer: signer, Created: rc.Created}}, nil
	case len(a.Inventory) > 0:
		if len(bytes.TrimSpace(a.Signature)) == 0 {
			return nil, badInput("--against %s: the inventory is not signed (%v); drift is measured only against a signed one", a.Name, bundle.ErrUnsigned)
		}
		c := bundle.NewChecker(bundle.Trust{Keys: v.o.Trust})
		if err := c.Meta(bundle.EntryInventory, a.Inventory); err != nil {
			return nil, badInput("--against %s: %v", a.Name, err)
		}
		if err := c.Meta(bundle.EntrySignature, a.Signature); err != nil {
			return nil, badInput("--against %s: %v", a.Name, err)
		}
		if len(a.SignerKey) > 0 {
			if err := c.Meta(bundle.EntrySignerKey, a.SignerKey); err != nil {
				return nil, badInput("--against %s: %v", a.Name, err)
			}
		}
		if err := c.Meta(bundle.EntryLayout, []byte(bundle.LayoutFile)); err != nil {
			return nil, badInput("--against %s: %v", a.Name, err)
		}
		inv := c.Inventory()
		sum := sha256.Sum256(a.Inventory)
		return &against{inv: inv, info: AgainstInfo{Name: a.Name, Kind: "inventory", Bundle: inv.Name, SHA256: "sha256:" + hex.EncodeToString(sum[:]),
			Signer: c.Fingerprint, Created: inv.Created}}, nil
	}
	return nil, badInput("--against %s: neither an inventory nor a receipt", a.Name)
}

// Drift kinds.
const (
	DriftMissing   = "missing"   // listed, not held by the appliance
	DriftExtra     = "extra"     // held, not listed
	DriftDifferent = "different" // both, with other digests
)

// Difference is one drifted artifact.
type Difference struct {
	Kind     string `json:"kind"`
	Artifact string `json:"artifact"` // image, file, apt
	Name     string `json:"name"`
	Expected string `json:"expected,omitempty"` // the inventory's (or primary's) digest
	Actual   string `json:"actual,omitempty"`   // the appliance's
	Against  string `json:"against"`            // inventory, receipt or primary
	Detail   string `json:"detail,omitempty"`
}

// Drift is every difference found.
type Drift struct {
	Missing     int          `json:"missing"`
	Extra       int          `json:"extra"`
	Different   int          `json:"different"`
	Standby     bool         `json:"standby"`
	Differences []Difference `json:"differences"`
}

func (d *Drift) add(x Difference) {
	switch x.Kind {
	case DriftMissing:
		d.Missing++
	case DriftExtra:
		d.Extra++
	case DriftDifferent:
		d.Different++
	}
	d.Differences = append(d.Differences, x)
}

func (r *run) drift(ctx context.Context) error {
	var d *Drift
	if r.against != nil {
		if r.receipt == nil {
			return badInput("--against needs what the appliance holds: run the gate in the appliance")
		}
		d = &Drift{Differences: []Difference{}}
		if r.against.inv != nil {
			inventoryDrift(d, r.against.inv, r.receipt)
		} else {
			receiptDrift(d, r.against.receipt, r.receipt)
		}
	}
	if r.v.o.Standby != nil {
		if diffs, standby := r.v.o.Standby.StandbyDrift(ctx); standby {
			if d == nil {
				d = &Drift{Differences: []Difference{}}
			}
			d.Standby = true
			for _, x := range diffs {
				d.add(x)
			}
		}
	}
	if d != nil {
		sort.SliceStable(d.Differences, func(i, j int) bool {
			a, b := d.Differences[i], d.Differences[j]
			return a.Kind+a.Artifact+a.Name < b.Kind+b.Artifact+b.Name
		})
	}
	r.res.Drift = d
	return nil
}

// Compare returns the drift between an inventory and a receipt of what
// the appliance holds.
func Compare(inv *bundle.Inventory, held *bundle.Receipt) *Drift {
	d := &Drift{Differences: []Difference{}}
	inventoryDrift(d, inv, held)
	return d
}

func inventoryDrift(d *Drift, inv *bundle.Inventory, held *bundle.Receipt) {
	tags := map[string]string{}
	for _, t := range held.Tags {
		tags[t.Repository+":"+t.Tag] = t.Digest
	}
	files := map[string]string{}
	for _, f := range held.Files {
		files[f.Name] = f.Digest
	}
	pkgs := map[string]string{}
	for _, p := range held.Packages {
		pkgs[p.Repo+"/"+p.Distribution+"/"+p.Component+" "+p.Name+"_"+p.Version+"_"+p.Architecture] = "sha256:" + p.SHA256
	}
	listed := map[string]bool{}
	repos := map[string]bool{}
	aptScopes := map[string]bool{}
	hasFiles := false
	for _, a := range inv.Artifacts {
		switch a.Kind {
		case bundle.KindImage, bundle.KindBundle:
			dest := a.Destination
			if !strings.Contains(dest[strings.LastIndex(dest, "/")+1:], ":") {
				continue // a digest-only destination carries no tag to compare
			}
			repo := dest[:strings.LastIndex(dest, ":")]
			repos[repo] = true
			listed[dest] = true
			for _, rel := range a.Related {
				if rel.Tag != "" {
					listed[repo+":"+rel.Tag] = true
				}
			}
			compare(d, "image", dest, a.Digest, tags[dest])
		case bundle.KindFile:
			hasFiles = true
			listed["file "+a.Destination] = true
			compare(d, "file", a.Destination, a.Digest, files[a.Destination])
		case bundle.KindApt:
			key := a.Destination + " " + a.Metadata["package"] + "_" + a.Metadata["version"] + "_" + a.Metadata["architecture"]
			aptScopes[a.Destination] = true
			listed["apt "+key] = true
			compare(d, "apt", key, a.Digest, pkgs[key])
		}
	}
	for _, k := range sortedKeys(tags) {
		repo := k[:strings.LastIndex(k, ":")]
		tag := k[strings.LastIndex(k, ":")+1:]
		if repos[repo] && !listed[k] && !strings.HasPrefix(tag, "sha256-") {
			d.add(Difference{Kind: DriftExtra, Artifact: "image", Name: k, Actual: tags[k], Against: "inventory"})
		}
	}
	if hasFiles {
		for _, k := range sortedKeys(files) {
			if !listed["file "+k] {
				d.add(Difference{Kind: DriftExtra, Artifact: "file", Name: k, Actual: files[k], Against: "inventory"})
			}
		}
	}
	for _, k := range sortedKeys(pkgs) {
		scope, _, _ := strings.Cut(k, " ")
		if aptScopes[scope] && !listed["apt "+k] {
			d.add(Difference{Kind: DriftExtra, Artifact: "apt", Name: k, Actual: pkgs[k], Against: "inventory"})
		}
	}
}

func compare(d *Drift, artifact, name, want, have string) {
	switch {
	case have == "":
		d.add(Difference{Kind: DriftMissing, Artifact: artifact, Name: name, Expected: want, Against: "inventory"})
	case have != want:
		d.add(Difference{Kind: DriftDifferent, Artifact: artifact, Name: name, Expected: want, Actual: have, Against: "inventory"})
	}
}

func receiptDrift(d *Drift, want, held *bundle.Receipt) {
	diff := func(artifact string, w, h map[string]string) {
		for _, k := range sortedKeys(w) {
			switch {
			case h[k] == "":
				d.add(Difference{Kind: DriftMissing, Artifact: artifact, Name: k, Expected: w[k], Against: "receipt"})
			case h[k] != w[k]:
				d.add(Difference{Kind: DriftDifferent, Artifact: artifact, Name: k, Expected: w[k], Actual: h[k], Against: "receipt"})
			}
		}
		for _, k := range sortedKeys(h) {
			if w[k] == "" {
				d.add(Difference{Kind: DriftExtra, Artifact: artifact, Name: k, Actual: h[k], Against: "receipt"})
			}
		}
	}
	maps := func(r *bundle.Receipt) (map[string]string, map[string]string, map[string]string) {
		t, f, p := map[string]string{}, map[string]string{}, map[string]string{}
		for _, x := range r.Tags {
			t[x.Repository+":"+x.Tag] = x.Digest
		}
		for _, x := range r.Files {
			f[x.Name] = x.Digest
		}
		for _, x := range r.Packages {
			p[x.Repo+"/"+x.Distribution+"/"+x.Component+" "+x.Name+"_"+x.Version+"_"+x.Architecture] = "sha256:" + x.SHA256
		}
		return t, f, p
	}
	wt, wf, wp := maps(want)
	ht, hf, hp := maps(held)
	diff("image", wt, ht)
	diff("file", wf, hf)
	diff("apt", wp, hp)
}

// Stale is an artifact whose inventory names a refresh trigger.
type Stale struct {
	Artifact string    `json:"artifact"`
	Kind     string    `json:"kind"`
	Version  string    `json:"version,omitempty"`
	Refresh  string    `json:"refresh"`
	Bundle   string    `json:"bundle,omitempty"`
	Since    time.Time `json:"since"`
	AgeDays  int       `json:"age_days"`
	Stale    bool      `json:"stale"`
}

// staleness lists every artifact with a refresh trigger, from the
// inventory given and the inventories of the bundles imported (the
// newest wins), with its age and pinned version.
func (r *run) staleness(ctx context.Context) {
	var invs []*bundle.Inventory
	if r.against != nil && r.against.inv != nil {
		invs = append(invs, r.against.inv)
	}
	if r.v.o.History != nil {
		if recs, err := r.v.o.History.Imports(ctx); err == nil {
			for _, rec := range recs {
				if rec.Inventory != nil && rec.Outcome == "succeeded" {
					invs = append(invs, rec.Inventory)
				}
			}
		}
	}
	best := map[string]Stale{}
	now := r.v.o.Now()
	for _, inv := range invs {
		for _, a := range inv.Artifacts {
			if a.Refresh == "" {
				continue
			}
			key := a.Kind + " " + a.Destination
			if old, ok := best[key]; ok && !old.Since.Before(inv.Created) {
				continue
			}
			age := now.Sub(inv.Created)
			best[key] = Stale{Artifact: a.Destination, Kind: a.Kind, Version: a.Version, Refresh: a.Refresh, Bundle: inv.Name,
				Since: inv.Created, AgeDays: int(age.Hours() / 24), Stale: age > r.v.o.MaxAge}
		}
	}
	for _, k := range sortedKeys(best) {
		r.res.Staleness = append(r.res.Staleness, best[k])
	}
}

// ImportRef is an import that brought what a run checked.
type ImportRef struct {
	ImportRecord
	Covers int `json:"covers"` // how many of the checked digests it stored
}

func (r *run) imports(ctx context.Context) {
	if r.v.o.History == nil {
		return
	}
	recs, err := r.v.o.History.Imports(ctx)
	if err != nil {
		r.v.log.Warn("validation could not read the import history", "error", err)
		return
	}
	checked := map[string]bool{}
	for _, c := range r.res.Checked {
		checked[c.Digest] = true
	}
	for _, rec := range recs {
		n := 0
		for _, d := range rec.Digests {
			if checked[d] {
				n++
			}
		}
		if n > 0 || (r.against != nil && r.against.inv != nil && rec.Bundle != "" && rec.Bundle == r.against.inv.Name) {
			r.res.Imports = append(r.res.Imports, ImportRef{ImportRecord: rec, Covers: n})
		}
	}
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TrustedInventory checks an inventory's signature against keys and
// returns it (for `appliance rewrite`, outside the appliance).
func TrustedInventory(a *Against, keys []bundle.TrustedKey) (*bundle.Inventory, error) {
	if len(a.Inventory) == 0 {
		return nil, badInput("--against %s: not a bundle or an inventory", a.Name)
	}
	if len(keys) == 0 {
		return nil, badInput("--against %s: give --trusted-key, the key the inventory must be signed by", a.Name)
	}
	v := &Validator{o: Options{Trust: keys}}
	ag, err := v.checkAgainst(context.Background(), a)
	if err != nil {
		return nil, err
	}
	return ag.inv, nil
}
