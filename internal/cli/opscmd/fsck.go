package opscmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/maintenance"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
)

func (c cmds) fsckCmd() *cobra.Command {
	var (
		f      cli.ClientFlags
		repair bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "fsck [--repair] [--json]",
		Short: "Check every blob, manifest, tag, file, apt package and import record the appliance holds",
		Long: `Check the appliance's storage and report every problem, with the repository
and digest (or file) it concerns: every registry blob against its digest
(sha256, sha512), every manifest's config, layers (non-distributable ones may
be absent), index children and subject, every tag (it names a stored
manifest) and link, the import history (every record parses, none is left
running), the file store's files against their sums, and every .deb of the
apt pools against the sums the published Packages files give.

It changes nothing, unless --repair: that removes what is provably broken in
the registry, and only that (a blob whose bytes do not hash to its name, a
tag that names a missing manifest, a dangling link), says what it removed,
and looks again. What then lacks content is to be imported again.

Pulls, pushes and imports go on while it runs. The exit status is non-zero
when a problem remains.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var rep maintenance.FsckReport
			if err := cl.DoLong(cmd.Context(), http.MethodPost, "/api/v1/fsck", opsapi.FsckRequest{Repair: repair}, &rep); err != nil {
				return fmt.Errorf("fsck: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(c.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printFsck(c.Stdout, rep)
			}
			if !rep.OK {
				if rep.Repair {
					return fmt.Errorf("fsck: %s after the repair", count(len(rep.Remaining), "problem remains", "problems remain"))
				}
				return fmt.Errorf("fsck: %s", count(len(rep.Problems), "problem", "problems"))
			}
			return nil
		},
	}
	f.Register(cmd)
	cmd.Flags().BoolVar(&repair, "repair", false, "remove what is provably broken in the registry (corrupt blobs, tags naming a missing manifest, dangling links)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printFsck(w io.Writer, rep maintenance.FsckReport) {
	k := rep.Checked
	fmt.Fprintf(w, "checked %s (%s, %s), %s (%s), %s (%s), %s (%s) in %s, %s in %s\n",
		count(k.Repositories, "repository", "repositories"), count(k.Manifests, "manifest", "manifests"), count(k.Tags, "tag", "tags"),
		count(k.Blobs, "blob", "blobs"), cli.HumanBytes(k.BlobBytes), count(k.Files, "file", "files"), cli.HumanBytes(k.FileBytes),
		count(k.Packages, "apt package", "apt packages"), cli.HumanBytes(k.PackageBytes), count(k.AptPublishes, "publish", "publishes"),
		count(k.Imports, "import record", "import records"), rep.Finished.Sub(rep.Started).Round(10*time.Millisecond))
	problems := func(title string, ps []maintenance.Problem) {
		if len(ps) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "AREA\tKIND\tREPOSITORY\tDIGEST / TAG / FILE\tREPAIRABLE\tDETAIL")
		for _, p := range ps {
			what := p.Digest
			switch {
			case p.File != "":
				what = p.File
			case p.Tag != "":
				what = p.Tag + " → " + cli.Dash(p.Digest)
			}
			rep := "no"
			if p.Repairable {
				rep = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Area, p.Kind, cli.Dash(p.Repository), cli.Dash(what), rep, p.Detail)
		}
		_ = tw.Flush()
	}
	if rep.Repair {
		problems("problems found", rep.Problems)
		if len(rep.Removed) > 0 {
			fmt.Fprintln(w, "\nremoved:")
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WHAT\tREPOSITORY\tDIGEST / TAG\tSIZE\tWHY")
			for _, r := range rep.Removed {
				what := r.Digest
				if r.Tag != "" {
					what = r.Tag + " → " + cli.Dash(r.Digest)
				}
				size := "-"
				if r.Size > 0 {
					size = cli.HumanBytes(r.Size)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.What, cli.Dash(r.Repository), what, size, r.Reason)
			}
			_ = tw.Flush()
		}
		problems("remaining", rep.Remaining)
	} else {
		problems("problems", rep.Problems)
	}
	problems("warnings (states that may be intended; they do not fail fsck)", rep.Warnings)
	switch {
	case rep.OK && len(rep.Removed) > 0:
		fmt.Fprintf(w, "\nrepaired: %d removed, nothing remains\n", len(rep.Removed))
	case rep.OK:
		fmt.Fprintln(w, "\nno problems")
	case !rep.Repair && repairable(rep.Problems):
		fmt.Fprintln(w, "\nrun with --repair to remove what is marked repairable")
	}
}

func repairable(ps []maintenance.Problem) bool {
	for _, p := range ps {
		if p.Repairable {
			return true
		}
	}
	return false
}

// count is n and the noun that goes with it.
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
