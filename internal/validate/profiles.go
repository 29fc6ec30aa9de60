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
	"github.com/appliance-dev/appliance/internal/validate/nim"
)

// fileEntry is one file of the appliance's file store (GET /api/v1/files).
type fileEntry struct {
	Name     string            `json:"name"`
	Digest   string            `json:"digest"`
	Size     int64             `json:"size"`
	Kind     string            `json:"kind"`
	Metadata map[string]string `json:"metadata"`
}

// File kinds of a bundle the profiles gate reads.
const (
	FileKindNIMProfile  = "nim-profile"  // a model profile's files (metadata image, profile, gpu)
	FileKindNIMManifest = "nim-manifest" // NIM's model_manifest.yaml (metadata image: the NIM it came from)
)

// selectProfiles turns the NIM manifests given as inputs into the
// profiles required.
func (p *parsedInputs) selectProfiles(sel nim.Selection) error {
	ps, from, err := nim.Select(p.manifests, sel)
	if err != nil {
		return badInput("%v", err)
	}
	for i, np := range ps {
		p.profiles = append(p.profiles, fromManifest(np, from[i].File, ""))
	}
	return nil
}

// fromManifest is a required profile of a NIM manifest; image is the NIM
// the manifest came from when known, else the profile's container_url.
func fromManifest(np nim.Profile, file, image string) Profile {
	if image == "" {
		image = np.ContainerURL
	}
	var tags []string
	for _, k := range []string{"gpu", "precision", "tp", "pp", "llm_engine", "profile"} {
		if v := np.Tags[k]; v != "" {
			tags = append(tags, k+"="+v)
		}
	}
	about := strings.TrimSpace(np.Model + " " + np.Release)
	if len(tags) > 0 {
		about += " (" + strings.Join(tags, " ") + ")"
	}
	return Profile{ID: np.ID, Image: image, GPU: np.Tags["gpu"], where: fmt.Sprintf("%s:%d", file, np.Line), about: about}
}

// manifestFiles are the NIM manifests the --against inventory carried.
func (r *run) manifestFiles() []bundle.Artifact {
	if r.against == nil || r.against.inv == nil {
		return nil
	}
	var out []bundle.Artifact
	for _, a := range r.against.inv.Artifacts {
		if a.Kind == bundle.KindFile && a.FileKind == FileKindNIMManifest {
			out = append(out, a)
		}
	}
	return out
}

// imageMatches tells whether a file's NIM image is the one a profile
// requires: the same digest when both carry one, else the same
// repository (and tag, when both carry one).
func imageMatches(want, have string) bool {
	if want == "" {
		return true
	}
	wr, wd, _ := strings.Cut(want, "@")
	hr, hd, _ := strings.Cut(have, "@")
	if wd != "" {
		return wd == hd // a digest required: the file must name that one
	}
	split := func(r string) (string, string) {
		if i := strings.LastIndex(r, ":"); i > strings.LastIndex(r, "/") {
			return r[:i], r[i+1:]
		}
		return r, ""
	}
	wn, wt := split(wr)
	hn, ht := split(hr)
	return wn == hn && (wt == "" || ht == "" || wt == ht)
}

// requiredProfiles are the profiles gate 3 checks: those of --profiles
// (a list, or NIM manifests with the selection); else those of the NIM
// manifests the --against inventory carried, read from the file store
// (their sha256 checked against the inventory's) with the selection;
// else the nim-profile files that inventory carried. A manifest the gate
// cannot read or select from is an error finding.
func (r *run) requiredProfiles(ctx context.Context, files []fileEntry) ([]Profile, []Finding) {
	if len(r.parsed.profiles) > 0 {
		return r.parsed.profiles, nil
	}
	if mf := r.manifestFiles(); len(mf) > 0 {
		var ms []*nim.Manifest
		image := map[*nim.Manifest]string{}
		var bad []Finding
		for _, a := range mf {
			what := "NIM manifest " + a.Destination
			var entry *fileEntry
			for i := range files {
				if files[i].Name == a.Destination {
					entry = &files[i]
				}
			}
			if entry == nil {
				bad = append(bad, Finding{Severity: SeverityError, What: what, Where: r.against.info.Name,
					Problem: "the inventory carried it; the file store does not hold it", Action: "import the bundle " + r.against.info.Name})
				continue
			}
			data, sum, err := r.v.getFile(ctx, entry.Name, 16<<20)
			switch {
			case err != nil:
				bad = append(bad, Finding{Severity: SeverityError, What: what, Problem: "file " + entry.Name + ": " + err.Error()})
				continue
			case sum != a.Digest:
				bad = append(bad, Finding{Severity: SeverityError, What: what, Digest: sum,
					Problem: fmt.Sprintf("file %s is %s, the inventory carried %s", entry.Name, sum, a.Digest), Action: "import the bundle's manifest"})
				continue
			}
			m, err := nim.Parse(entry.Name, data)
			if err != nil {
				bad = append(bad, Finding{Severity: SeverityError, What: what, Problem: err.Error(), Action: "carry NIM's model_manifest.yaml as it is"})
				continue
			}
			r.checked(GateProfiles, what, sum)
			ms = append(ms, m)
			image[m] = a.Metadata["image"]
		}
		if len(bad) > 0 {
			return nil, bad
		}
		ps, from, err := nim.Select(ms, nim.Selection{IDs: r.req.ProfileIDs, Tags: r.req.ProfileTags})
		if err != nil {
			return nil, []Finding{{Severity: SeverityError, What: "profile selection", Where: r.against.info.Name, Problem: err.Error(),
				Action: "select profiles the manifest lists (--profile-ids, --profile-tag)"}}
		}
		var out []Profile
		for i, np := range ps {
			out = append(out, fromManifest(np, from[i].File, image[from[i]]))
		}
		return out, nil
	}
	var out []Profile
	if r.against != nil && r.against.inv != nil {
		for _, a := range r.against.inv.Artifacts {
			if a.Kind == bundle.KindFile && a.FileKind == FileKindNIMProfile {
				out = append(out, Profile{ID: a.Metadata["profile"], Image: a.Metadata["image"], GPU: a.Metadata["gpu"], where: r.against.info.Name})
			}
		}
	}
	return out, nil
}

// profilesGate: each required NIM model profile (profile id and model
// image digest) has its file in the file store, and the file's bytes hash
// to the sha256 the store (and the inventory, when given) lists.
func (r *run) profilesGate(ctx context.Context, g *GateResult) {
	want := map[string]string{} // profile id → digest the inventory lists
	if r.against != nil && r.against.inv != nil {
		for _, a := range r.against.inv.Artifacts {
			if a.Kind == bundle.KindFile && a.FileKind == FileKindNIMProfile {
				want[strings.ToLower(a.Metadata["profile"])] = a.Digest
			}
		}
	}
	if len(r.parsed.profiles) == 0 && len(r.manifestFiles()) == 0 && len(want) == 0 {
		g.Status, g.Summary = StatusSkipped, "nothing to check: give --profiles (or --against an inventory that carries nim-profile files or a nim-manifest)"
		return
	}
	var listing struct {
		Files []fileEntry `json:"files"`
	}
	if err := r.v.getJSON(ctx, "/api/v1/files", &listing); err != nil {
		g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: "file store", Problem: err.Error()})
		return
	}
	required, bad := r.requiredProfiles(ctx, listing.Files)
	if len(bad) > 0 {
		g.Findings = append(g.Findings, bad...)
		g.Summary = "the NIM manifest the inventory carried cannot be used"
		return
	}
	ok := 0
	for _, pr := range required {
		g.Checked++
		what := "profile " + pr.ID
		if pr.Image != "" {
			what += " of " + pr.Image
		}
		if pr.about != "" {
			what += ": " + pr.about
		}
		var match *fileEntry
		for i, f := range listing.Files {
			if !strings.EqualFold(f.Metadata["profile"], pr.ID) {
				continue
			}
			if !imageMatches(pr.Image, f.Metadata["image"]) {
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
		inv := want[strings.ToLower(pr.ID)]
		switch {
		case err != nil:
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Where: pr.where, Problem: "file " + match.Name + ": " + err.Error()})
		case sum != match.Digest:
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Where: pr.where, Digest: sum,
				Problem: fmt.Sprintf("file %s hashes to %s, the file store lists %s", match.Name, sum, match.Digest), Action: "import the profile again"})
		case inv != "" && inv != sum:
			g.Findings = append(g.Findings, Finding{Severity: SeverityError, What: what, Where: pr.where, Digest: sum,
				Problem: fmt.Sprintf("file %s is %s, the inventory carried %s", match.Name, sum, inv), Action: "import the bundle's profile"})
		default:
			ok++
			r.checked(GateProfiles, what+" ("+match.Name+")", sum)
		}
	}
	g.Summary = fmt.Sprintf("%d profiles required, %d present with matching sha256", len(required), ok)
}

// getFile downloads /files/NAME over HTTPS (at most limit bytes) and
// returns it with its sha256.
func (v *Validator) getFile(ctx context.Context, fileName string, limit int64) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.base.String()+"/files/"+escapePath(fileName), nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET /files/%s: HTTP %d", fileName, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("download: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, "", fmt.Errorf("larger than %d bytes: not a model manifest", limit)
	}
	return data, sha256Hex(data), nil
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
