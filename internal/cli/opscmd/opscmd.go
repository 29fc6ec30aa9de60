// Package opscmd is the commands an operator drives the appliance-wide
// machinery with, through the API: status, promote and promotions,
// standby and activate, the Supervisor hand-over, fsck, gc and the audit
// trail.
package opscmd

import (
	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/cli"
)

type cmds struct{ *cli.CLI }

// Commands returns the commands, in the order help lists them.
func Commands(c *cli.CLI) []*cobra.Command {
	x := cmds{c}
	return []*cobra.Command{
		x.statusCmd(), x.promoteCmd(), x.promotionsCmd(), x.standbyCmd(), x.activateCmd(),
		x.supervisorCmd(), x.fsckCmd(), x.gcCmd(), x.auditCmd(),
	}
}
