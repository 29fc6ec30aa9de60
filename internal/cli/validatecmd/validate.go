package validatecmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/apiclient"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/server/validationapi"
	"github.com/appliance-dev/appliance/internal/validate"
	"github.com/appliance-dev/appliance/internal/validate/evidence"
	"github.com/appliance-dev/appliance/internal/validate/refs"
)

// exitError is an error with its own exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the process's exit status for this error.
func (e *exitError) ExitCode() int { return e.code }

// Exit statuses of `appliance validate`.
const (
	exitGateFailed = 1 // a gate is red
	exitBadInput   = 2 // the gate could not run on what it was given
)

type validateFlags struct {
	images, manifests, pods, cloudInit, profiles, platforms []string
	profileIDs, profileTags                                 []string
	against, report                                         string
	asJSON, anonymous                                       bool
}

func (c cmds) validateCmd() *cobra.Command {
	var (
		f  cli.ClientFlags
		vf validateFlags
	)
	cmd := &cobra.Command{
		Use:   "validate [--json] [--images FILE] [--manifests DIR|FILE] [--pods FILE] [--cloud-init FILE] [--profiles FILE [--profile-ids ID,…] [--profile-tag KEY=VALUE]] [--against INVENTORY] [--report FILE]",
		Short: "Prove bottom-up that every layer pulls from the appliance",
		Long: `Run the validation gate in the appliance: its gates, bottom-up, stop at the
first red one and name every missing or stale artifact and what to do:

  1 registry      the advertised names resolve, TLS verifies with the CA alone,
                  an anonymous pull from each public project works (over the network)
  2 images        every reference of --images, --manifests, --pods resolves,
                  indexes for every --platform; outside registries are named with
                  their local replacement (appliance rewrite prints them replaced);
                  private projects' images pull with your credentials (a warning:
                  pods need an imagePullSecret), or anonymously with --anonymous
  3 profiles      each NIM model profile of --profiles has its file, sha256 matching;
                  --profiles takes the gate's list or NIM's model_manifest.yaml, of
                  which --profile-ids and --profile-tag select (default: all)
  4 apt           every repository verifies with gpgv; the packages of --cloud-init
                  resolve with their dependencies (a real apt-get)
  5 certificates  CA and server certificate valid for the names; under 30 days warns

--against (a bundle, its inventory.json with .sig, or a receipt) adds drift:
missing, extra, different; a standby adds its drift from the primary.
--report FILE writes the signed evidence report: FILE (JSON), FILE.html, each
with .sig, and FILE.pub; "appliance evidence verify FILE" checks it.

Exit status: 0 when every gate passed, 1 when one failed, 2 on bad input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := vf.request()
			if err != nil {
				return &exitError{exitBadInput, err}
			}
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var ans validationapi.Answer
			if err := cl.DoLong(cmd.Context(), http.MethodPost, "/api/v1/validation", req, &ans); err != nil {
				var se *apiclient.StatusError
				if errors.As(err, &se) && se.Status == http.StatusBadRequest {
					return &exitError{exitBadInput, fmt.Errorf("validate: %w", err)}
				}
				return fmt.Errorf("validate: %w", err)
			}
			if ans.Result == nil {
				return errors.New("validate: the appliance answered no result")
			}
			if vf.report != "" {
				if err := writeEvidence(vf.report, ans.Evidence); err != nil {
					return err
				}
			}
			if vf.asJSON {
				enc := json.NewEncoder(c.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(ans.Result); err != nil {
					return err
				}
			} else {
				printValidation(c.Stdout, ans.Result)
				if vf.report != "" {
					fmt.Fprintf(c.Stdout, "\nevidence: %s, %s.html (signed: .sig; key %s.pub)\n", vf.report, vf.report, vf.report)
				}
			}
			if g := ans.Result.FailedGate(); g != "" {
				return &exitError{exitGateFailed, fmt.Errorf("validate: gate %s failed", g)}
			}
			return nil
		},
	}
	f.Register(cmd)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{exitBadInput, fmt.Errorf("validate: %w (see appliance validate --help)", err)}
	})
	fl := cmd.Flags()
	fl.BoolVar(&vf.asJSON, "json", false, "print the result as JSON")
	fl.StringArrayVar(&vf.images, "images", nil, "file of image references, one a line (repeatable)")
	fl.StringArrayVar(&vf.manifests, "manifests", nil, "Kubernetes manifests: a YAML file or a folder of them (repeatable)")
	fl.StringArrayVar(&vf.pods, "pods", nil, "`kubectl get pods -A -o json` output (repeatable)")
	fl.StringArrayVar(&vf.cloudInit, "cloud-init", nil, "cloud-config whose packages apt must resolve (repeatable)")
	fl.StringArrayVar(&vf.profiles, "profiles", nil, "NIM model profiles required: NIM's model_manifest.yaml, or profiles: [{id, image}] (repeatable)")
	fl.StringSliceVar(&vf.profileIDs, "profile-ids", nil, "profiles of the NIM manifest required, by id or its first 8+ hex digits (comma-separated; default all)")
	fl.StringArrayVar(&vf.profileTags, "profile-tag", nil, "require the NIM manifest's profiles with this tag, KEY=VALUE such as gpu=H100 (repeatable: all must match)")
	fl.BoolVar(&vf.anonymous, "anonymous", false, "pull every image anonymously, as a cluster without pull secrets: images of private projects are red")
	fl.StringArrayVar(&vf.platforms, "platform", nil, "platform an index must carry (repeatable; default linux/amd64)")
	fl.StringVar(&vf.against, "against", "", "signed bundle, inventory.json (with .sig) or receipt to measure drift against")
	fl.StringVar(&vf.report, "report", "", "write the signed evidence report to FILE (JSON) and FILE.html")
	return cmd
}

// request reads every input file. Folders given to --manifests are read
// for *.yaml, *.yml and *.json, sorted.
func (vf *validateFlags) request() (*validationapi.Request, error) {
	req := &validationapi.Request{Report: vf.report != ""}
	req.Platforms = vf.platforms
	req.ProfileIDs, req.ProfileTags, req.Anonymous = vf.profileIDs, vf.profileTags, vf.anonymous
	add := func(kind string, paths []string) error {
		for _, p := range paths {
			files := []string{p}
			if info, err := os.Stat(p); err == nil && info.IsDir() {
				files = nil
				err := filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
					if err != nil {
						return err
					}
					switch strings.ToLower(filepath.Ext(path)) {
					case ".yaml", ".yml", ".json":
						if !d.IsDir() {
							files = append(files, path)
						}
					}
					return nil
				})
				if err != nil {
					return fmt.Errorf("--%s %s: %w", kind, p, err)
				}
				sort.Strings(files)
				if len(files) == 0 {
					return fmt.Errorf("--%s %s: the folder holds no .yaml, .yml or .json file", kind, p)
				}
			}
			for _, file := range files {
				data, err := os.ReadFile(file)
				if err != nil {
					return fmt.Errorf("--%s: %w", kind, err)
				}
				req.Inputs = append(req.Inputs, validate.Input{Kind: kind, Name: file, Data: data})
			}
		}
		return nil
	}
	for _, in := range []struct {
		kind  string
		paths []string
	}{{validate.InputImages, vf.images}, {validate.InputManifests, vf.manifests}, {validate.InputPods, vf.pods},
		{validate.InputCloudInit, vf.cloudInit}, {validate.InputProfiles, vf.profiles}} {
		if err := add(in.kind, in.paths); err != nil {
			return nil, err
		}
	}
	if vf.against != "" {
		a, err := validate.LoadAgainst(vf.against)
		if err != nil {
			return nil, err
		}
		req.Against = a
	}
	return req, nil
}

func writeEvidence(path string, ev *evidence.Evidence) error {
	if ev == nil {
		return errors.New("validate: the appliance sent no evidence report")
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{path, ev.JSON}, {path + ".sig", ev.Signature}, {path + ".html", ev.HTML}, {path + ".html.sig", ev.HTMLSignature}, {path + ".pub", ev.PublicKey}} {
		if err := fsutil.WriteFileAtomic(f.name, f.data, 0o644); err != nil {
			return fmt.Errorf("write evidence: %w", err)
		}
	}
	return nil
}

func printValidation(w io.Writer, res *validate.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GATE\tSTATUS\tSUMMARY")
	for _, g := range res.Gates {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", g.Gate, g.Status, g.Summary)
	}
	_ = tw.Flush()
	for _, g := range res.Gates {
		var shown []validate.Finding
		for _, f := range g.Findings {
			if f.Severity != validate.SeverityInfo || f.Local != "" {
				shown = append(shown, f)
			}
		}
		if len(shown) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", g.Gate)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEVERITY\tWHAT\tWHERE\tPROBLEM\tLOCAL\tACTION")
		for _, f := range shown {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity, f.What, cli.Dash(f.Where), f.Problem, cli.Dash(f.Local), cli.Dash(f.Action))
		}
		_ = tw.Flush()
	}
	if d := res.Drift; d != nil {
		fmt.Fprintf(w, "\ndrift: %d missing, %d extra, %d different\n", d.Missing, d.Extra, d.Different)
		if len(d.Differences) > 0 {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tARTIFACT\tNAME\tEXPECTED\tON THE APPLIANCE\tAGAINST")
			for _, x := range d.Differences {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.Kind, x.Artifact, x.Name, cli.Dash(x.Expected), cli.Dash(x.Actual), x.Against)
			}
			_ = tw.Flush()
		}
	}
	if len(res.Staleness) > 0 {
		fmt.Fprintln(w, "\nstaleness:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ARTIFACT\tVERSION\tREFRESH WHEN\tAGE\tSTALE")
		for _, s := range res.Staleness {
			stale := "no"
			if s.Stale {
				stale = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%dd\t%s\n", s.Artifact, cli.Dash(s.Version), s.Refresh, s.AgeDays, stale)
		}
		_ = tw.Flush()
	}
	if res.OK {
		fmt.Fprintln(w, "\nall gates passed")
	}
}

func (c cmds) rewriteCmd() *cobra.Command {
	var (
		registry, against string
		trusted           []string
	)
	cmd := &cobra.Command{
		Use:   "rewrite --registry HOST[:PORT] [--against INVENTORY --trusted-key KEY] FILE|DIR...",
		Short: "Print manifests with every outside registry reference replaced by the appliance's",
		Long: `Print Kubernetes manifests (YAML, JSON; files or folders) with every image
reference to an outside registry (nvcr.io, docker.io, ...) replaced by the
appliance's: by the signed inventory's source → destination when --against
lists the image, else as bundles land it (the path and tag without the
registry host). What was replaced is listed on standard error. A reference
composed of several keys (the GPU Operator's repository/image/version, a
NIMService's repository/tag) has its repository key rewritten; one that
cannot be (a Helm registry key) is named there for a change by hand.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if registry == "" {
				return &exitError{exitBadInput, errors.New("rewrite: --registry HOST[:PORT] (the appliance's registry address) is required")}
			}
			var inv *bundle.Inventory
			if against != "" {
				a, err := validate.LoadAgainst(against)
				if err != nil {
					return &exitError{exitBadInput, err}
				}
				keys, err := bundle.LoadTrustedKeys(trusted)
				if err != nil {
					return &exitError{exitBadInput, err}
				}
				if inv, err = validate.TrustedInventory(a, keys); err != nil {
					return &exitError{exitBadInput, err}
				}
			}
			m := refs.NewMapper(registry, nil, inv)
			for _, p := range args {
				var vf validateFlags
				vf.manifests = []string{p}
				req, err := vf.request()
				if err != nil {
					return &exitError{exitBadInput, err}
				}
				for _, in := range req.Inputs {
					out, done, err := m.Rewrite(in.Name, in.Data)
					if err != nil {
						return &exitError{exitBadInput, err}
					}
					if len(req.Inputs) > 1 {
						fmt.Fprintf(c.Stdout, "# %s\n", in.Name)
					}
					if _, err := c.Stdout.Write(out); err != nil {
						return err
					}
					if len(out) > 0 && out[len(out)-1] != '\n' {
						fmt.Fprintln(c.Stdout)
					}
					for _, r := range done {
						if r.ByHand {
							fmt.Fprintf(c.Stderr, "%s: %s → %s: %s\n", r.Where, r.Ref, r.Local, r.Note)
						} else {
							fmt.Fprintf(c.Stderr, "%s: %s → %s\n", r.Where, r.Ref, r.Local)
						}
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&registry, "registry", "", "the appliance's registry address, HOST[:PORT]")
	cmd.Flags().StringVar(&against, "against", "", "signed bundle or inventory.json whose sources name the destinations")
	cmd.Flags().StringArrayVar(&trusted, "trusted-key", nil, "public key the --against inventory must be signed by (repeatable)")
	return cmd
}

func (c cmds) evidenceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "evidence", Short: "Check validation evidence reports"}
	var keys []string
	verify := &cobra.Command{
		Use:   "verify FILE [--key receipt.pub]",
		Short: "Check an evidence report's signatures (FILE with FILE.sig, FILE.html with FILE.html.sig)",
		Long: `Check a report written by "appliance validate --report FILE": FILE against
FILE.sig and, when present, FILE.html against FILE.html.sig. With --key (the
appliance's <data-dir>/receipt.pub), the signer must be that key; without,
the key the report names is used and its fingerprint printed, to compare.
An edited report fails. Plain openssl checks it too (docs/validation.md).`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			file := args[0]
			trusted, err := bundle.LoadTrustedKeys(keys)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("evidence verify: %w", err)
			}
			sig, err := os.ReadFile(file + ".sig")
			if err != nil {
				return fmt.Errorf("evidence verify: the signature: %w", err)
			}
			rep, fp, err := evidence.Verify(data, sig, trusted)
			if err != nil {
				return fmt.Errorf("evidence verify %s: %w", file, err)
			}
			checked := []string{file}
			if page, err := os.ReadFile(file + ".html"); err == nil {
				psig, err := os.ReadFile(file + ".html.sig")
				if err != nil {
					return fmt.Errorf("evidence verify: %s.html has no signature: %w", file, err)
				}
				k, _ := bundle.ParsePublicKey("the report's key", []byte(rep.PublicKey))
				if len(trusted) > 0 {
					k = trusted[0]
				}
				if err := evidence.VerifyDocument(page, psig, append(trusted, k)); err != nil {
					return fmt.Errorf("evidence verify %s.html: %w", file, err)
				}
				checked = append(checked, file+".html")
			}
			how := "the key it names (compare with the appliance's receipt.pub)"
			if len(trusted) > 0 {
				how = "the given key"
			}
			outcome := "all gates passed"
			if g := rep.Result.FailedGate(); g != "" {
				outcome = "gate " + g + " failed"
			}
			fmt.Fprintf(c.Stdout, "verified: %s signed by %s, %s\nappliance %s, run %s: %s\n", strings.Join(checked, ", "), fp, how,
				rep.Appliance, rep.Result.Started.Format("2006-01-02T15:04:05Z07:00"), outcome)
			return nil
		},
	}
	verify.Flags().StringArrayVar(&keys, "key", nil, "public key the report must be signed by (the appliance's receipt.pub; repeatable)")
	cmd.AddCommand(verify)
	return cmd
}
