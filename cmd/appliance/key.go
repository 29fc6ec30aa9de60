package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/bundle"
)

func (c cmds) keyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the keys that sign transfer bundles",
	}
	var priv, pub string
	gen := &cobra.Command{
		Use:   "generate --private FILE --public FILE",
		Short: "Generate an ECDSA P-256 key pair (the public key in the PEM form cosign reads)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if priv == "" || pub == "" {
				return errors.New("give both --private and --public")
			}
			if err := bundle.GenerateKey(priv, pub); err != nil {
				return err
			}
			s, err := bundle.LoadSigner(priv)
			if err != nil {
				return err
			}
			pemBytes, err := s.PublicKey()
			if err != nil {
				return err
			}
			k, err := bundle.ParsePublicKey(pub, pemBytes)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.Stdout, "wrote %s (keep it on the connected side, mode 0600) and %s (give it to the enclave's trust.keys)\nfingerprint sha256:%s\n", priv, pub, k.Fingerprint())
			return err
		},
	}
	gen.Flags().StringVar(&priv, "private", "", "where to write the private key")
	gen.Flags().StringVar(&pub, "public", "", "where to write the public key")
	cmd.AddCommand(gen)
	return cmd
}
