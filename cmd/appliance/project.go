package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/server"
)

func (c cmds) projectCmd() *cobra.Command {
	var f cli.ClientFlags
	cmd := &cobra.Command{
		Use:   "project",
		Short: "List projects and set their visibility (public: anonymous pull; private: credentials needed)",
	}
	f.Register(cmd)
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List projects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var ps []auth.Project
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/projects", nil, &ps); err != nil {
				return fmt.Errorf("list projects: %w", err)
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROJECT\tVISIBILITY\tSET BY")
			for _, p := range ps {
				vis := "private"
				if p.Public {
					vis = "public"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, vis, p.Source)
			}
			return tw.Flush()
		},
	}
	var public, private bool
	set := &cobra.Command{
		Use:   "set NAME (--public | --private)",
		Short: "Set a project's visibility",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if public == private {
				return errors.New("give exactly one of --public or --private")
			}
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var p auth.Project
			if err := cl.Do(cmd.Context(), http.MethodPut, "/api/v1/projects/"+url.PathEscape(args[0]), server.ProjectRequest{Public: &public}, &p); err != nil {
				return fmt.Errorf("set project %s: %w", args[0], err)
			}
			vis := "private"
			if p.Public {
				vis = "public"
			}
			_, err = fmt.Fprintf(c.Stdout, "project %s is %s\n", p.Name, vis)
			return err
		},
	}
	set.Flags().BoolVar(&public, "public", false, "anonymous pull allowed")
	set.Flags().BoolVar(&private, "private", false, "credentials needed to pull")
	cmd.AddCommand(ls, set)
	return cmd
}
