package opscmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/apiclient"
	"github.com/appliance-dev/appliance/internal/bootstrap/promote"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/server"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
)

// targetFlags say how to reach another registry: a promotion target, or
// a standby's primary.
type targetFlags struct {
	url, caFile, user, passwordFile string
}

func (t *targetFlags) register(cmd *cobra.Command, name, what string) {
	fs := cmd.Flags()
	fs.StringVar(&t.url, name, "", what+" URL, https://HOST[:PORT]")
	fs.StringVar(&t.caFile, name+"-ca", "", "CA certificate (PEM) that signs the "+what+"'s TLS certificate")
	fs.StringVar(&t.user, name+"-user", "", what+" user name (a Harbor robot account works too)")
	fs.StringVar(&t.passwordFile, name+"-password-file", "", "file holding the "+what+" password (first line)")
}

// read loads the CA and password files.
func (t *targetFlags) read(name string) (ca, password string, err error) {
	if t.caFile != "" {
		data, err := os.ReadFile(t.caFile)
		if err != nil {
			return "", "", fmt.Errorf("--%s-ca: %w", name, err)
		}
		ca = string(data)
	}
	if (t.user == "") != (t.passwordFile == "") {
		return "", "", fmt.Errorf("--%s-user and --%s-password-file go together", name, name)
	}
	if t.passwordFile != "" {
		if password, err = cli.ReadFirstLine(t.passwordFile, "--"+name+"-password-file"); err != nil {
			return "", "", err
		}
	}
	return ca, password, nil
}

func (c cmds) promoteCmd() *cobra.Command {
	var (
		f        cli.ClientFlags
		target   targetFlags
		projects []string
		all      bool
		dryRun   bool
		parallel int
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "promote --target https://HOST (--projects P,... | --all)",
		Short: "Push the appliance's content into production Harbor (or any OCI registry) and prove parity",
		Long: `Push repositories with every tag, index and child manifest, cosign and imgpkg
tags and referrers into another registry, byte for byte. The appliance reads
the blobs from its own storage. Against Harbor, missing projects are created
with the appliance's visibility (public or private); a project that exists
with the other visibility is reported, never changed.

Everything that can be checked is checked before the first byte moves
(reachability, TLS, credentials, push rights, project names, read-only mode)
and every problem is listed at once. A re-run after a failure pushes only
what is missing. The promotion ends with a parity report of every tag and
referrer on both sides; any difference makes the command fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if target.url == "" {
				return errors.New("--target is required")
			}
			ca, pw, err := target.read("target")
			if err != nil {
				return err
			}
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			req := opsapi.PromoteRequest{Target: target.url, TargetCA: ca, TargetUsername: target.user, TargetPassword: pw,
				Projects: projects, All: all, DryRun: dryRun, Parallel: parallel}
			var rec promote.Promotion
			var failure server.PromotionFailure
			err = cl.DoLongFailure(cmd.Context(), http.MethodPost, "/api/v1/promotions", req, &rec, &failure)
			if err != nil {
				if failure.Promotion != nil {
					c.printPromotion(*failure.Promotion, asJSON)
				}
				return fmt.Errorf("promote: %w", err)
			}
			if !dryRun {
				rec, err = c.follow(cmd.Context(), cl, rec)
				if err != nil {
					return err
				}
			}
			c.printPromotion(rec, asJSON)
			switch rec.State {
			case promote.StateSucceeded, promote.StatePlanned:
				return nil
			}
			return fmt.Errorf("promotion %s %s: %s", rec.ID, rec.State, rec.Error)
		},
	}
	f.Register(cmd)
	target.register(cmd, "target", "target registry")
	cmd.Flags().StringSliceVar(&projects, "projects", nil, "projects to promote (comma-separated)")
	cmd.Flags().BoolVar(&all, "all", false, "promote every project the appliance holds")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check and print the plan with sizes; push nothing")
	cmd.Flags().IntVar(&parallel, "parallel", 4, "blobs pushed at once")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the promotion record (plan, progress, parity) as JSON")
	return cmd
}

// follow polls a running promotion, drawing its progress on stderr, until
// it ends. Interrupting the command cancels the promotion (a re-run resumes).
func (c cmds) follow(ctx context.Context, cl *apiclient.Client, rec promote.Promotion) (promote.Promotion, error) {
	view := cli.NewLiveView(c.Stderr)
	// A cheap GET: polled often so the command ends when the promotion
	// does (the view itself prints at most every ten seconds off a terminal).
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	path := "/api/v1/promotions/" + url.PathEscape(rec.ID)
	for rec.State == promote.StateRunning {
		view.Draw(progressLines(rec))
		select {
		case <-ctx.Done():
			// Ask the appliance to stop, with a context of its own.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = cl.Do(cctx, http.MethodPost, path+"/cancel", nil, &rec)
			view.Done()
			return rec, fmt.Errorf("promotion %s canceled; run it again to resume", rec.ID)
		case <-t.C:
		}
		var next promote.Promotion
		if err := cl.Do(ctx, http.MethodGet, path, nil, &next); err != nil {
			if ctx.Err() != nil {
				continue
			}
			view.Done()
			return rec, fmt.Errorf("follow promotion %s: %w", rec.ID, err)
		}
		rec = next
	}
	view.Draw(progressLines(rec))
	view.Done()
	return rec, nil
}

func progressLines(rec promote.Promotion) []string {
	p := rec.Progress
	lines := []string{fmt.Sprintf("promote → %s: %s", rec.Target, p.Phase)}
	lines = append(lines, bar("blobs", p.BytesDone, p.BytesTotal, fmt.Sprintf("%d/%d blobs, %s of %s", p.BlobsDone, p.BlobsTotal, cli.HumanBytes(p.BytesDone), cli.HumanBytes(p.BytesTotal))))
	lines = append(lines, fmt.Sprintf("  manifests %d/%d  tags %d/%d", p.ManifestsDone, p.ManifestsTotal, p.TagsDone, p.TagsTotal))
	for _, a := range p.Active {
		lines = append(lines, bar("  "+a.Repository+"@"+shortDigest(a.Digest), a.Done, a.Size, cli.HumanBytes(a.Done)+" of "+cli.HumanBytes(a.Size)))
	}
	return lines
}

func bar(name string, done, total int64, detail string) string {
	const width = 24
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	filled := min(width, int(frac*width))
	return fmt.Sprintf("%s [%s%s] %5.1f%%  %s", name, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), frac*100, detail)
}

func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return d
}

// printPromotion prints a promotion as tables (or JSON): the problems or
// the plan, then the parity report.
func (c cmds) printPromotion(rec promote.Promotion, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(c.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rec)
		return
	}
	w := c.Stdout
	kind := rec.TargetKind
	if kind == "harbor" && rec.TargetVersion != "" {
		kind += " " + rec.TargetVersion
	}
	fmt.Fprintf(w, "promotion %s to %s (%s) by %s: %s\n", rec.ID, rec.Target, cli.Dash(kind), rec.By, rec.State)
	for _, p := range rec.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	for _, warn := range rec.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
	if rec.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", rec.Error)
	}
	if pl := rec.Plan; pl != nil && (rec.DryRun || rec.Parity == nil) {
		printPlan(w, pl)
	}
	if rec.Parity != nil {
		printParity(w, rec.Parity)
	}
}

func printPlan(w io.Writer, pl *promote.Plan) {
	if len(pl.Projects) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PROJECT\tAPPLIANCE\tON TARGET")
		for _, p := range pl.Projects {
			on := p.Action
			if p.TargetPublic != nil {
				on += " (" + visibilityWord(*p.TargetPublic) + ")"
			} else if p.Action == "create" {
				on += " (" + visibilityWord(p.Public) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, visibilityWord(p.Public), on)
		}
		_ = tw.Flush()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAGS NEW/MOVED/SAME\tBLOBS TO PUSH\tBYTES TO PUSH\tPRESENT\tMANIFESTS TO PUSH\tREFERRERS")
	for _, r := range pl.Repositories {
		var create, move, same int
		for _, t := range r.Tags {
			switch t.Action {
			case "create":
				create++
			case "move":
				move++
			default:
				same++
			}
		}
		fmt.Fprintf(tw, "%s\t%d/%d/%d\t%d\t%s\t%s\t%d\t%d\n", r.Name, create, move, same, r.BlobsToPush, cli.HumanBytes(r.BytesToPush),
			cli.HumanBytes(r.BytesPresent), r.ManifestsToPush, r.Referrers)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "total: %d blobs (%s) to push, %d present (%s); %d manifests to push, %d present; %d tags to set, %d already right; %d referrers\n",
		pl.BlobsToPush, cli.HumanBytes(pl.BytesToPush), pl.BlobsPresent, cli.HumanBytes(pl.BytesPresent), pl.ManifestsToPush, pl.ManifestsPresent,
		pl.TagsToSet, pl.TagsSame, pl.Referrers)
}

func printParity(w io.Writer, p *promote.Parity) {
	verdict := "OK"
	if !p.OK {
		verdict = fmt.Sprintf("%d DIFFERENCE(S)", p.Differences)
	}
	tags, refs := 0, 0
	for _, r := range p.Repositories {
		tags += len(r.Tags)
		refs += len(r.Referrers)
	}
	fmt.Fprintf(w, "parity with %s at %s: %s (%d repositories, %d tags, %d referrers)\n", p.Target, p.Checked.Format(time.RFC3339), verdict, len(p.Repositories), tags, refs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAG / REFERRER\tAPPLIANCE\tTARGET\tSTATUS")
	for _, r := range p.Repositories {
		for _, t := range r.Tags {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, t.Tag, t.Source, cli.Dash(t.Target), t.Status)
		}
		for _, ref := range r.Referrers {
			fmt.Fprintf(tw, "%s\treferrer of %s\t%s\t%s\t%s\n", r.Repository, shortDigest(ref.Subject), ref.Digest, ifSame(ref.Status, ref.Digest), ref.Status)
		}
		if len(r.OnlyOnTarget) > 0 {
			fmt.Fprintf(tw, "%s\t(only on the target: %s)\t\t\t\n", r.Repository, strings.Join(r.OnlyOnTarget, ", "))
		}
	}
	_ = tw.Flush()
}

func ifSame(status, d string) string {
	if status == promote.ParitySame {
		return d
	}
	return "-"
}

func visibilityWord(public bool) string {
	if public {
		return "public"
	}
	return "private"
}

func (c cmds) promotionsCmd() *cobra.Command {
	var (
		f      cli.ClientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "promotions [ID|latest]",
		Short: "List the promotions, or show one with its plan and parity report",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				var rec promote.Promotion
				if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/promotions/"+url.PathEscape(args[0]), nil, &rec); err != nil {
					return fmt.Errorf("show promotion %s: %w", args[0], err)
				}
				c.printPromotion(rec, asJSON)
				if rec.Parity != nil && !rec.Parity.OK {
					return fmt.Errorf("promotion %s: parity not reached (%d differences)", rec.ID, rec.Parity.Differences)
				}
				return nil
			}
			var recs []promote.Promotion
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/promotions", nil, &recs); err != nil {
				return fmt.Errorf("list promotions: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(c.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(recs)
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTARTED\tBY\tTARGET\tSTATE\tPARITY\tPUSHED")
			for _, r := range recs {
				par := "-"
				if r.Parity != nil {
					par = "ok"
					if !r.Parity.OK {
						par = fmt.Sprintf("%d differences", r.Parity.Differences)
					}
				}
				state := r.State
				if r.DryRun {
					state += " (dry run)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Started.Format("2006-01-02 15:04"), r.By, r.Target, state, par, cli.HumanBytes(r.Progress.BytesDone))
			}
			return tw.Flush()
		},
	}
	f.Register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
