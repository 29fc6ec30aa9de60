package validate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/appliance-dev/appliance/internal/bundle"
)

// fileEntry is one file of the appliance's file store (GET /api/v1/files).
type fileEntry struct {
	Name     string            `json:"name"`
	Digest   string            `json:"digest"`
	Size     int64             `json:"size"`
	Kind     string            `json:"kind"`
	Metadata map[string]string `json:"metadata"`
}

// digestPart is the @sha256:… of an image reference, or the reference.
func digestPart(ref string) string {
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return ref[i+1:]
	}
	return ref
}

// profilesGate: each required NIM model profile (profile id and model
// image digest) has its file in the file store, and the file's bytes hash
// to the sha256 the store (and the inventory, when given) lists.
func (r *run) profilesGate(ctx context.Context, g *GateResult) {
	required := r.parsed.profiles
	want := map[string]string{} // profile id → digest the inventory lists
	if len(required) == 0 && r.against != nil && r.against.inv != nil {
		for _, a := range r.against.inv.Artifacts {
			if a.Kind == bundle.KindFile && a.FileKind == "nim-profile" {
				required = append(required, Profile{ID: a.Metadata["profile"], Image: a.Metadata["image"], GPU: a.Metadata["gpu"], where: r.against.info.Name})
			}
		}
	}
	if r.against != nil && r.against.inv != nil {
		for _, a := range r.against.inv.Artifacts {
			if a.Kind == bundle.KindFile && a.FileKind == "nim-profile" {
				want[a.Metadata["profile"]+" "+digestPart(a.Metadata["image"])] = a.Digest
			}
		}
	}
	if len(required) == 0 {
		g.Status, g.Summary = StatusSkipped, "nothing to check: give --profiles (or --against an inventory that carries nim-profile files)"
		return
	}
	var listing struct {
		Files []fileEntry `json:"files"`
	}
	if err := r.v.getJSON(ctx, "/api/v1/files", &listing); err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "file store", Problem: err.Error()})
		return
	}
	ok := 0
	for _, pr := range required {
		g.Checked++
		what := "profile " + pr.ID
		if pr.Image != "" {
			what += " of " + pr.Image
		}
		var match *fileEntry
		for i, f := range listing.Files {
			if f.Metadata["profile"] != pr.ID {
				continue
			}
			if pr.Image != "" && digestPart(f.Metadata["image"]) != digestPart(pr.Image) {
				continue
			}
			match = &listing.Files[i]
			break
		}
		if match == nil {
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Where: pr.where,
				Problem: "no file of this profile and model image in the file store",
				Action:  "carry it in a bundle (files: kind nim-profile, metadata image/profile/gpu) and import it"})
			continue
		}
		sum, err := r.v.hashFile(ctx, match.Name)
		switch {
		case err != nil:
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Where: pr.where, Problem: "file " + match.Name + ": " + err.Error()})
		case sum != match.Digest:
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Where: pr.where, Digest: sum,
				Problem: fmt.Sprintf("file %s hashes to %s, the file store lists %s", match.Name, sum, match.Digest), Action: "import the profile again"})
		case want[pr.ID+" "+digestPart(pr.Image)] != "" && want[pr.ID+" "+digestPart(pr.Image)] != sum:
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Where: pr.where, Digest: sum,
				Problem: fmt.Sprintf("file %s is %s, the inventory carried %s", match.Name, sum, want[pr.ID+" "+digestPart(pr.Image)]), Action: "import the bundle's profile"})
		default:
			ok++
			r.checked(GateProfiles, what+" ("+match.Name+")", sum)
		}
	}
	g.Summary = fmt.Sprintf("%d profiles required, %d present with matching sha256", len(required), ok)
}

// hashFile downloads /files/NAME over HTTPS and returns its sha256.
func (v *Validator) hashFile(ctx context.Context, fileName string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.base.String()+"/files/"+escapePath(fileName), nil)
	if err != nil {
		return "", err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /files/%s: HTTP %d", fileName, resp.StatusCode)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// escapePath escapes each segment of a file store name (which may hold
// folders).
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}
