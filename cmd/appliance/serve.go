package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/server"
)

func (c cmds) serveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry, token service and API",
		Long: `Run the appliance. Settings come from flags, APPLIANCE_* environment variables
(APPLIANCE_DATA_DIR, APPLIANCE_HTTPS_ADDR, APPLIANCE_LOG_LEVEL, ...) and an
optional YAML file (--config; see configs/appliance.yaml), in that order of
precedence. The first start on an empty data directory creates the CA, the
server certificate, the token key and the "admin" account, whose password is
printed once and written to <data-dir>/initial-admin-password.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags(), c.Env)
			if err != nil {
				return err
			}
			log := cfg.Log.NewLogger(c.Stderr)
			ctx := cmd.Context()
			srv, err := server.Open(ctx, cfg, log)
			if err != nil {
				return err
			}
			if pw := srv.InitialAdminPassword; pw != "" {
				fmt.Fprintf(c.Stderr, "\nCreated the admin account. Its password is shown only this once:\n\n    admin / %s\n\n"+
					"It is also in %s (mode 0600); change it with `appliance user passwd admin`.\n"+
					"Clients trust this appliance with %s.\n\n",
					pw, filepath.Join(cfg.DataDir, auth.InitialPasswordFile), filepath.Join(cfg.DataDir, "ca.crt"))
			}
			return srv.Run(ctx)
		},
	}
	config.RegisterFlags(cmd.Flags())
	return cmd
}
