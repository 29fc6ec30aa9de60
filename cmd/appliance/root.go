package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/cli/opscmd"
	"github.com/appliance-dev/appliance/internal/cli/validatecmd"
)

// cmds is the receiver of the commands defined in this package.
type cmds struct{ *cli.CLI }

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer, env []string) *cobra.Command {
	base := &cli.CLI{Stdin: stdin, Stdout: stdout, Stderr: stderr, Env: env}
	c := cmds{base}
	root := &cobra.Command{
		Use:   "appliance",
		Short: "The first registry of an air-gapped data centre, and its cold standby",
		Long: `appliance serves an OCI registry (anonymous pull, authenticated push, TLS from
its own CA) and a JSON API. Run "appliance serve" to start it; the other
commands act on a running appliance through its API.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		c.serveCmd(),
		c.versionCmd(),
		c.userCmd(),
		c.readOnlyCmd(),
		c.projectCmd(),
		c.importCmd(),
		c.importsCmd(),
		c.aptCmd(),
		c.keyCmd(),
		c.bundleCmd(),
		c.receiptCmd(),
		c.firstbootCmd(),
	)
	root.AddCommand(opscmd.Commands(base)...)
	root.AddCommand(validatecmd.Commands(base)...)
	return root
}
