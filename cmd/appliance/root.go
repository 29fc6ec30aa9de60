package main

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// cli carries the process's streams and environment to every subcommand.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	env            []string
}

func (c *cli) getenv(key string) string {
	for _, kv := range c.env {
		if len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '=' {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// logger logs a client command's progress to stderr.
func (c *cli) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer, env []string) *cobra.Command {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, env: env}
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
		c.statusCmd(),
		c.promoteCmd(),
		c.promotionsCmd(),
		c.standbyCmd(),
		c.activateCmd(),
		c.supervisorCmd(),
		c.fsckCmd(),
		c.gcCmd(),
		c.auditCmd(),
		c.validateCmd(),
		c.rewriteCmd(),
		c.evidenceCmd(),
	)
	return root
}
