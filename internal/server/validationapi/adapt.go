package validationapi

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/validate"
)

// Advertised is the address the gate proves: the first configured host
// name on the bound HTTPS port, and every configured name (wildcards
// aside). Without one: the listener's configured address when it is a
// specific IP, else localhost.
func Advertised(hostnames []string, listen, bound string) (string, []string) {
	_, port, _ := net.SplitHostPort(bound)
	var names []string
	for _, n := range hostnames {
		if !strings.HasPrefix(n, "*.") {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		host, _, _ := net.SplitHostPort(listen)
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			names = []string{host}
		} else {
			names = []string{"localhost"}
		}
	}
	return "https://" + net.JoinHostPort(names[0], port), names
}

// FromHistory is the import history as the gate reads it: each record's
// manifests and, for a bundle, its inventory and what it carried.
func FromHistory(recs []history.Record) []validate.ImportRecord {
	out := make([]validate.ImportRecord, 0, len(recs))
	for _, rec := range recs {
		ir := validate.ImportRecord{ID: rec.ID, Source: rec.Source, Outcome: rec.Outcome, Finished: rec.Finished, User: rec.User}
		for _, m := range rec.Manifests {
			ir.Digests = append(ir.Digests, m.Digest)
		}
		if b := rec.Bundle; b != nil {
			ir.Bundle, ir.Signer = b.Name, b.Fingerprint
			if inv, err := bundle.ParseInventory(b.Inventory); len(b.Inventory) > 0 && err == nil {
				ir.Inventory = inv
				for _, a := range inv.Artifacts {
					ir.Digests = append(ir.Digests, a.Digest)
				}
			}
		}
		out = append(out, ir)
	}
	return out
}

// FromFollower is a standby's drift from its primary as its follower
// found it after the last sync: reused, not recomputed.
func FromFollower(st bootstrap.SyncStatus) []validate.Difference {
	out := make([]validate.Difference, 0, len(st.Drift))
	for _, d := range st.Drift {
		kind := validate.DriftDifferent
		switch d.Kind {
		case bootstrap.DriftMissing:
			kind = validate.DriftMissing
		case bootstrap.DriftOnlyHere:
			kind = validate.DriftExtra
		}
		out = append(out, validate.Difference{Kind: kind, Artifact: "image", Name: d.Repository + ":" + d.Tag,
			Expected: d.Primary, Actual: d.Standby, Against: "primary", Detail: d.Error})
	}
	return out
}

// ApplianceSubject is the subject of the appliance's own pull tokens (a
// scheduled run).
const ApplianceSubject = "appliance"

// Credentials are a run's pull rights (validate.Credentials): User's, or
// the appliance's when User is "". Mint issues the registry token.
type Credentials struct {
	User string
	Mint func(user, repo string) (string, error)
}

// Who names the credentials in findings.
func (c Credentials) Who() string {
	if c.User == "" {
		return "the appliance (a scheduled run)"
	}
	return c.User
}

// PullToken is a registry token granting pull on repo, as far as the
// credentials may.
func (c Credentials) PullToken(_ context.Context, repo string) (string, error) {
	tok, err := c.Mint(c.User, repo)
	if err != nil {
		return "", fmt.Errorf("validation: pull token for %s: %w", repo, err)
	}
	return tok, nil
}
