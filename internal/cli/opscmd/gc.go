package opscmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
)

func (c cmds) gcCmd() *cobra.Command {
	var (
		f      cli.ClientFlags
		dryRun bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "gc [--dry-run] [--json]",
		Short: "Remove registry content that no tag reaches, and what refused imports left behind",
		Long: `Remove from the registry the manifests no tag reaches (directly, through an
index, or as a referrer of one that is reached), the blobs only they used, and
what refused or killed imports left: their blobs and staging repositories.
Everything tagged stays, with its index children and referrers, and so does
what was pushed, linked or asked about (HEAD) in the last two hours (a push
whose manifest has not arrived yet).

Pulls go on throughout. gc takes turns with imports, promotions and pushes: it
waits (up to five minutes) for a moment when none is running, then holds the
registry for the seconds it needs to mark and sweep, while writers wait.
--dry-run reports what would go and removes nothing; --json lists every
digest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var rep maintenance.GCReport
			if err := cl.DoLong(cmd.Context(), http.MethodPost, "/api/v1/gc", opsapi.GCRequest{DryRun: dryRun}, &rep); err != nil {
				return fmt.Errorf("gc: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(c.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printGC(c.Stdout, rep)
			return nil
		},
	}
	f.Register(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be removed; remove nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON, with every digest")
	return cmd
}

func printGC(w io.Writer, rep maintenance.GCReport) {
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "%s %s, %s (%s), %s and %s\n", verb, count(rep.Manifests, "manifest", "manifests"),
		count(rep.Blobs, "blob", "blobs"), cli.HumanBytes(rep.Bytes), count(rep.LayerLinks, "layer link", "layer links"),
		count(rep.StagingRepos, "staging repository", "staging repositories"))
	fmt.Fprintf(w, "kept %s (%s), %d of them only for the grace period (%s)\n", count(rep.BlobsKept, "blob", "blobs"),
		cli.HumanBytes(rep.BytesKept), rep.ProtectedByGrace, rep.Grace)
	for _, r := range rep.Removed {
		if r.What == "manifest" {
			fmt.Fprintf(w, "  manifest %s@%s\n", r.Repository, r.Digest)
		}
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}
