// Package validatecmd is the validation gate's commands: validate (the
// gates, run by the appliance), rewrite (manifests with outside
// references replaced) and evidence verify.
package validatecmd

import (
	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/cli"
)

type cmds struct{ *cli.CLI }

// Commands returns the commands, in the order help lists them.
func Commands(c *cli.CLI) []*cobra.Command {
	x := cmds{c}
	return []*cobra.Command{x.validateCmd(), x.rewriteCmd(), x.evidenceCmd()}
}
