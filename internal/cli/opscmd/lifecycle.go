package opscmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c cmds) statusCmd() *cobra.Command {
	var (
		f      cli.ClientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the lifecycle mode (bootstrap, standby, active) with its history, the standby's lag and drift, and the last promotion",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var st opsapi.Status
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/status", nil, &st); err != nil {
				return fmt.Errorf("read status: %w", err)
			}
			if asJSON {
				return printJSON(c.Stdout, st)
			}
			printStatus(c.Stdout, st)
			return nil
		},
	}
	f.Register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(w io.Writer, st opsapi.Status) {
	if st.Writer != "" {
		fmt.Fprintf(w, "role: read-only replica of %s\n", st.Writer)
		fmt.Fprintf(w, "mode: %s (the writer's, which this replica follows)\n", st.Mode)
	} else {
		fmt.Fprintf(w, "mode: %s since %s\n", st.Mode, st.Since.Format(time.RFC3339))
	}
	if st.ReadOnly.ReadOnly {
		fmt.Fprintf(w, "registry: read-only (%s)\n", st.ReadOnly.Reason)
	} else {
		fmt.Fprintln(w, "registry: read-write")
	}
	if p := st.Primary; p != nil {
		projects := "those the appliance holds"
		if len(p.Projects) > 0 {
			projects = strings.Join(p.Projects, ", ")
		}
		fmt.Fprintf(w, "primary: %s (projects: %s; every %s; as %s)\n", p.URL, projects, p.Interval, cli.Dash(p.Username))
	}
	if sb := st.Standby; sb != nil {
		if st.Mode == bootstrap.ModeStandby {
			fmt.Fprintf(w, "lag: %s", time.Duration(sb.LagSeconds*float64(time.Second)).Truncate(time.Second))
		} else {
			fmt.Fprint(w, "following: stopped")
		}
		if !sb.LastCleanSync.IsZero() {
			fmt.Fprintf(w, " (last clean sync %s)", sb.LastCleanSync.Format(time.RFC3339))
		}
		fmt.Fprintln(w)
		if sb.LastError != "" {
			fmt.Fprintf(w, "last sync failed: %s\n", sb.LastError)
		}
		printDrift(w, sb.Drift)
	}
	if lp := st.LastPromotion; lp != nil {
		par := ""
		if lp.ParityOK != nil {
			par = ", parity ok"
			if !*lp.ParityOK {
				par = fmt.Sprintf(", parity NOT reached (%d differences)", lp.Differences)
			}
		}
		fmt.Fprintf(w, "last promotion: %s to %s, %s%s (%s)\n", lp.ID, lp.Target, lp.State, par, lp.Started.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "storage used: %s\n", cli.HumanBytes(st.StorageUsedBytes))
	if len(st.History) > 0 {
		fmt.Fprintln(w, "history:")
		for _, h := range st.History {
			line := fmt.Sprintf("  %s  %s → %s by %s", h.At.Format(time.RFC3339), h.From, h.To, cli.Dash(h.By))
			if h.Primary != "" {
				line += " (primary " + h.Primary + ")"
			}
			if h.Reason != "" {
				line += ": " + h.Reason
			}
			fmt.Fprintln(w, line)
		}
	}
}

func printDrift(w io.Writer, drift []bootstrap.Drift) {
	if len(drift) == 0 {
		fmt.Fprintln(w, "drift: none")
		return
	}
	fmt.Fprintf(w, "drift: %d\n", len(drift))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  REPOSITORY\tTAG\tKIND\tPRIMARY\tSTANDBY\tERROR")
	for _, d := range drift {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", d.Repository, d.Tag, d.Kind, cli.Dash(shortDigest(d.Primary)), cli.Dash(shortDigest(d.Standby)), d.Error)
	}
	_ = tw.Flush()
}

func printSync(w io.Writer, ans opsapi.StandbyAnswer) {
	if sb := ans.Sync; sb != nil {
		fmt.Fprintf(w, "synced with %s: %d repositories, %d tags, %d pulled\n", sb.Primary, sb.Repositories, sb.Tags, len(sb.Pulled))
		for _, p := range sb.Pulled {
			moved := ""
			if p.Previous != "" {
				moved = " (moved from " + shortDigest(p.Previous) + ")"
			}
			fmt.Fprintf(w, "  pulled %s:%s → %s%s as import %s\n", p.Repository, p.Tag, p.Digest, moved, p.ImportID)
		}
		for _, warn := range sb.Warnings {
			fmt.Fprintf(w, "  warning: %s\n", warn)
		}
		printDrift(w, sb.Drift)
	}
	if ans.SyncError != "" {
		fmt.Fprintf(w, "sync failed: %s\n", ans.SyncError)
	}
}

func (c cmds) standbyCmd() *cobra.Command {
	var (
		f        cli.ClientFlags
		primary  targetFlags
		projects []string
		interval time.Duration
		reason   string
		syncNow  bool
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "standby [--primary https://HOST ...] | standby --sync",
		Short: "Make the appliance a read-only standby that follows production (the primary), or sync now",
		Long: `Switch the appliance to standby: read-only for everyone (pushes are refused
with an error naming the primary), while it keeps serving pulls, apt and
files, and follows the primary on a schedule: new and moved tags of the
followed projects are pulled in, verified like an import and recorded in
the import history. Drift in both directions is reported.

The primary is checked (reachable, TLS, credentials) before anything
changes. Without --primary, the appliance returns to following the primary
it followed before (after an activate). With --sync, a standby syncs now.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var ans opsapi.StandbyAnswer
			if syncNow {
				if primary.url != "" || reason != "" {
					return errors.New("--sync takes no other settings")
				}
				if err := cl.DoLong(cmd.Context(), http.MethodPost, "/api/v1/standby/sync", nil, &ans); err != nil {
					return fmt.Errorf("sync: %w", err)
				}
			} else {
				ca, pw, err := primary.read("primary")
				if err != nil {
					return err
				}
				req := opsapi.StandbyRequest{Primary: primary.url, PrimaryCA: ca, PrimaryUsername: primary.user, PrimaryPassword: pw,
					Projects: projects, Reason: reason}
				if interval > 0 {
					req.Interval = interval.String()
				}
				if err := cl.DoLong(cmd.Context(), http.MethodPost, "/api/v1/standby", req, &ans); err != nil {
					return fmt.Errorf("standby: %w", err)
				}
				fmt.Fprintf(c.Stdout, "standby of %s since %s\n", ans.Lifecycle.Primary.URL, ans.Lifecycle.Since.Format(time.RFC3339))
			}
			if asJSON {
				return printJSON(c.Stdout, ans)
			}
			printSync(c.Stdout, ans)
			if ans.SyncError != "" {
				return errors.New("the appliance is a standby, but its sync failed (it retries on schedule)")
			}
			return nil
		},
	}
	f.Register(cmd)
	primary.register(cmd, "primary", "primary registry")
	cmd.Flags().StringSliceVar(&projects, "projects", nil, "projects to follow (default: those the appliance holds)")
	cmd.Flags().DurationVar(&interval, "interval", 0, "time between syncs (default 5m)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	cmd.Flags().BoolVar(&syncNow, "sync", false, "sync with the primary now (a standby only)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (c cmds) activateCmd() *cobra.Command {
	var (
		f      cli.ClientFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:   "activate --reason WHY",
		Short: "Fail over: make a standby writable (recorded with its reason); `appliance standby` returns it to following",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(reason) == "" {
				return errors.New("--reason is required (it is recorded)")
			}
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var st bootstrap.State
			if err := cl.Do(cmd.Context(), http.MethodPost, "/api/v1/activate", opsapi.ActivateRequest{Reason: reason}, &st); err != nil {
				return fmt.Errorf("activate: %w", err)
			}
			fmt.Fprintf(c.Stdout, "active since %s: pushes are accepted\n", st.Since.Format(time.RFC3339))
			return nil
		},
	}
	f.Register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why the standby takes over (recorded)")
	return cmd
}
