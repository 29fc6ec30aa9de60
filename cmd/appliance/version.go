package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/version"
)

func (c cmds) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := version.Get()
			_, err := fmt.Fprintf(c.Stdout, "appliance %s\ncommit: %s\ngo: %s\n", v.Version, v.Commit, v.GoVersion)
			return err
		},
	}
}
