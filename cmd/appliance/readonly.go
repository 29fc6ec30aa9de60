package main

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/registry"
	"github.com/appliance-dev/appliance/internal/server"
)

func (c cmds) readOnlyCmd() *cobra.Command {
	var f cli.ClientFlags
	cmd := &cobra.Command{
		Use:   "readonly",
		Short: "Show or switch the registry's read-only mode (pushes and deletes refused, pulls go on)",
	}
	f.Register(cmd)
	set := func(on bool, reason *string) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var m registry.Mode
			req := server.ReadOnlyRequest{ReadOnly: &on}
			if reason != nil {
				req.Reason = *reason
			}
			if err := cl.Do(cmd.Context(), http.MethodPut, "/api/v1/system/read-only", req, &m); err != nil {
				return fmt.Errorf("set read-only mode: %w", err)
			}
			return printMode(c, m)
		}
	}
	var reason string
	enable := &cobra.Command{Use: "enable", Short: "Refuse pushes and deletes", Args: cobra.NoArgs, RunE: set(true, &reason)}
	enable.Flags().StringVar(&reason, "reason", "", "why, shown to every refused client (e.g. \"cold standby of harbor.example\")")
	disable := &cobra.Command{Use: "disable", Short: "Accept pushes and deletes again", Args: cobra.NoArgs, RunE: set(false, nil)}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the mode",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var m registry.Mode
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/system/read-only", nil, &m); err != nil {
				return fmt.Errorf("read mode: %w", err)
			}
			return printMode(c, m)
		},
	}
	cmd.AddCommand(enable, disable, status)
	return cmd
}

func printMode(c cmds, m registry.Mode) error {
	if !m.ReadOnly {
		_, err := fmt.Fprintln(c.Stdout, "read-write")
		return err
	}
	_, err := fmt.Fprintf(c.Stdout, "read-only since %s: %s\n", m.Since.Format("2006-01-02 15:04:05Z07:00"), m.Reason)
	return err
}
