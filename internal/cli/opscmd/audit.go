package opscmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/audit"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/server"
)

func (c cmds) auditCmd() *cobra.Command {
	var (
		f                                           cli.ClientFlags
		since, until, actor, action, target, result string
		limit                                       int
		asJSON, verify                              bool
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit trail (every write: who, from where, when, how it ended), or check its hash chain",
		Long: `Show the audit trail of a running appliance, newest first: pushes, deletes and
tag moves, imports, promotions, mode changes, user and project changes, and
refused attempts. It needs an admin. --json prints one entry per line, as
the appliance stores them. --verify checks the hash chain over every
segment instead, names the first broken link (an edited, removed or
reordered entry, a cut file, a missing segment) and fails when there is one.
See docs/audit.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			if verify {
				var rep audit.Report
				if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/audit/verify", nil, &rep); err != nil {
					return fmt.Errorf("verify the audit trail: %w", err)
				}
				if asJSON {
					if err := printJSON(c.Stdout, rep); err != nil {
						return err
					}
				} else {
					printReport(c.Stdout, rep)
				}
				if !rep.OK {
					return fmt.Errorf("the audit trail's chain is broken: %s", rep.Problems[0].Message)
				}
				return nil
			}
			q := url.Values{}
			for k, v := range map[string]string{"since": since, "until": until, "actor": actor, "action": action, "target": target, "outcome": result} {
				if v != "" {
					q.Set(k, v)
				}
			}
			q.Set("limit", strconv.Itoa(limit))
			var ans server.AuditAnswer
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/audit?"+q.Encode(), nil, &ans); err != nil {
				return fmt.Errorf("read the audit trail: %w", err)
			}
			if asJSON {
				if err := printLines(c.Stdout, ans.Entries); err != nil {
					return err
				}
			} else if err := printEntries(c.Stdout, ans.Entries); err != nil {
				return err
			}
			if ans.More {
				fmt.Fprintf(c.Stderr, "more entries match: raise --limit (now %d) or narrow the filters\n", limit)
			}
			return nil
		},
	}
	f.Register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&since, "since", "", "entries at or after a time (2026-11-01T12:00:00Z) or a duration back from now (24h)")
	fl.StringVar(&until, "until", "", "entries before a time or a duration back from now")
	fl.StringVar(&actor, "actor", "", "entries of one user (or anonymous, standby, appliance)")
	fl.StringVar(&action, "action", "", "entries whose action starts with this (registry., user.add, promotion)")
	fl.StringVar(&target, "target", "", "entries whose target contains this (a repository, a tag, a user)")
	fl.StringVar(&result, "outcome", "", "ok, refused or failed")
	fl.IntVar(&limit, "limit", 100, "at most this many entries, newest first (up to 10000)")
	fl.BoolVar(&asJSON, "json", false, "print one JSON entry per line (with --verify: the report)")
	fl.BoolVar(&verify, "verify", false, "check the hash chain instead; fails when it is broken")
	return cmd
}

// printLines prints entries as JSON lines, the form the appliance keeps.
func printLines(w io.Writer, entries []audit.Entry) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}

func printEntries(w io.Writer, entries []audit.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tFROM\tACTION\tTARGET\tOUTCOME")
	for _, e := range entries {
		outcome := string(e.Outcome)
		if e.Status != 0 {
			outcome += " " + strconv.Itoa(e.Status)
		}
		if e.Reason != "" {
			outcome += ": " + e.Reason
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Actor, cli.Dash(e.Remote), e.Action, cli.Dash(e.Target), outcome)
	}
	return tw.Flush()
}

func printReport(w io.Writer, rep audit.Report) {
	state := "intact"
	if !rep.OK {
		state = "BROKEN"
	}
	fmt.Fprintf(w, "audit trail %s: %d entries (seq %d–%d) in %d files\n", state, rep.Entries, rep.FirstSeq, rep.LastSeq, len(rep.Files))
	fmt.Fprintf(w, "head: seq %d, hash %s\n", rep.Head.Seq, rep.Head.Hash)
	switch a := rep.Anchor; {
	case a == nil:
	case a.Genesis:
		fmt.Fprintln(w, "chain: from the first entry ever written")
	case a.PrunedBy != 0:
		fmt.Fprintf(w, "chain: from seq %d in %s (older segments removed by keep_segments, as seq %d records; prev %s)\n", a.Seq, a.File, a.PrunedBy, a.Prev)
	default:
		fmt.Fprintf(w, "chain: from seq %d in %s, with nothing to vouch for what came before\n", a.Seq, a.File)
	}
	for i, p := range rep.Problems {
		lead := "  "
		if i == 0 {
			lead = "first broken link: "
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s[%s] %s\n", lead, p.Kind, p.Message)
	}
}
