package opscmd

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
)

// vcenterFlags say how the appliance reaches vCenter.
type vcenterFlags struct {
	url, user, passwordFile, caFile, thumbprint, supervisor string
}

func (v *vcenterFlags) register(cmd *cobra.Command) {
	fs := cmd.PersistentFlags()
	fs.StringVar(&v.url, "vcenter", "", "vCenter URL, https://vcenter.example")
	fs.StringVar(&v.user, "vcenter-user", "", "vCenter SSO user, such as administrator@vsphere.local")
	fs.StringVar(&v.passwordFile, "vcenter-password-file", "", "file holding the vCenter password (first line)")
	fs.StringVar(&v.caFile, "vcenter-ca", "", "CA certificate (PEM) of vCenter's TLS certificate")
	fs.StringVar(&v.thumbprint, "vcenter-thumbprint", "", "or: vCenter's certificate thumbprint (SHA-256 or SHA-1, colon-separated hex)")
	fs.StringVar(&v.supervisor, "supervisor", "", "id of the Supervisor to hand over to")
}

func (v *vcenterFlags) request() (opsapi.VCenterRequest, error) {
	r := opsapi.VCenterRequest{URL: v.url, Username: v.user, Thumbprint: v.thumbprint, Supervisor: v.supervisor}
	if v.url == "" || v.supervisor == "" {
		return r, errors.New("--vcenter and --supervisor are required")
	}
	if v.passwordFile == "" {
		return r, errors.New("--vcenter-password-file is required")
	}
	pw, err := cli.ReadFirstLine(v.passwordFile, "--vcenter-password-file")
	if err != nil {
		return r, err
	}
	r.Password = pw
	if v.caFile != "" {
		data, err := os.ReadFile(v.caFile)
		if err != nil {
			return r, fmt.Errorf("--vcenter-ca: %w", err)
		}
		r.CA = string(data)
	}
	return r, nil
}

func readOptional(file, what string) (string, error) {
	if file == "" {
		return "", nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return string(data), nil
}

func (c cmds) supervisorCmd() *cobra.Command {
	var (
		f  cli.ClientFlags
		vc vcenterFlags
	)
	cmd := &cobra.Command{
		Use:   "supervisor",
		Short: "Hand the appliance over to a vSphere Supervisor: registry, Supervisor Services, re-point to Harbor",
		Long: `Register the appliance with a vSphere Supervisor (vCenter 8.0.3+ / VCF 9) as a
container image registry trusted with the appliance's CA; register the Carvel
Package in an imported imgpkg bundle as a Supervisor Service pulling from the
appliance, and install it; after the promotion, re-point it at production
Harbor and make Harbor the Supervisor's default registry. vCenter credentials
are used for the calls and never kept or logged.`,
	}
	f.Register(cmd)
	vc.register(cmd)

	var (
		hostname, name, pullUser, pullPasswordFile string
		port                                       int
		makeDefault                                bool
	)
	registry := &cobra.Command{
		Use:   "registry",
		Short: "Register the appliance as a container image registry of the Supervisor",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := vc.request()
			if err != nil {
				return err
			}
			req := opsapi.SupervisorRegistryRequest{VCenter: v, Hostname: hostname, Port: port, Name: name, Default: makeDefault, Username: pullUser}
			if pullUser != "" {
				if req.Password, err = cli.ReadFirstLine(pullPasswordFile, "--pull-password-file"); err != nil {
					return err
				}
			}
			return c.supervisorCall(cmd, &f, "/api/v1/supervisor/registry", req)
		},
	}
	registry.Flags().StringVar(&hostname, "hostname", "", "name the Supervisor reaches the appliance by (one its certificate carries; default: the first configured)")
	registry.Flags().IntVar(&port, "port", 0, "port the Supervisor reaches the appliance on (default: its HTTPS port)")
	registry.Flags().StringVar(&name, "name", "", "registry name in vCenter (default: the host name)")
	registry.Flags().BoolVar(&makeDefault, "default", false, "make the appliance the Supervisor's default registry")
	registry.Flags().StringVar(&pullUser, "pull-user", "", "user the Supervisor pulls with (public projects need none)")
	registry.Flags().StringVar(&pullPasswordFile, "pull-password-file", "", "file holding that user's password")

	var (
		bundle, configFile string
		install            bool
	)
	service := &cobra.Command{
		Use:   "service --bundle REPOSITORY:TAG",
		Short: "Register (and --install) the Carvel Package of an imported imgpkg bundle as a Supervisor Service pulling from the appliance",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := vc.request()
			if err != nil {
				return err
			}
			if bundle == "" {
				return errors.New("--bundle is required")
			}
			cfg, err := readOptional(configFile, "--config")
			if err != nil {
				return err
			}
			return c.supervisorCall(cmd, &f, "/api/v1/supervisor/services", opsapi.SupervisorServiceRequest{VCenter: v, Bundle: bundle,
				Hostname: hostname, Port: port, Install: install, Config: cfg})
		},
	}
	service.Flags().StringVar(&bundle, "bundle", "", "the imgpkg bundle in the appliance: REPOSITORY:TAG or REPOSITORY@DIGEST")
	service.Flags().BoolVar(&install, "install", false, "install and activate the service on the Supervisor")
	service.Flags().StringVar(&configFile, "config", "", "YAML configuration of the service, for the install")
	service.Flags().StringVar(&hostname, "hostname", "", "name the Supervisor reaches the appliance by (default: the first configured)")
	service.Flags().IntVar(&port, "port", 0, "port the Supervisor reaches the appliance on (default: its HTTPS port)")

	var (
		harbor, harborCA, repointConfig string
		reinstall                       bool
	)
	repoint := &cobra.Command{
		Use:   "repoint --bundle REPOSITORY:TAG --harbor https://HOST --harbor-ca FILE",
		Short: "After the promotion: re-point the bundle's Supervisor Service at production Harbor and make Harbor the default registry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := vc.request()
			if err != nil {
				return err
			}
			if bundle == "" || harbor == "" || harborCA == "" {
				return errors.New("--bundle, --harbor and --harbor-ca are required")
			}
			ca, err := readOptional(harborCA, "--harbor-ca")
			if err != nil {
				return err
			}
			cfg, err := readOptional(repointConfig, "--config")
			if err != nil {
				return err
			}
			req := opsapi.SupervisorRepointRequest{VCenter: v, Bundle: bundle, Harbor: harbor, HarborCA: ca, Username: pullUser, Reinstall: reinstall, Config: cfg}
			if pullUser != "" {
				if req.Password, err = cli.ReadFirstLine(pullPasswordFile, "--pull-password-file"); err != nil {
					return err
				}
			}
			return c.supervisorCall(cmd, &f, "/api/v1/supervisor/repoint", req)
		},
	}
	repoint.Flags().StringVar(&bundle, "bundle", "", "the imgpkg bundle in the appliance: REPOSITORY:TAG or REPOSITORY@DIGEST")
	repoint.Flags().StringVar(&harbor, "harbor", "", "production Harbor's URL, as promoted to")
	repoint.Flags().StringVar(&harborCA, "harbor-ca", "", "CA certificate (PEM) of Harbor's TLS certificate, for the Supervisor to trust")
	repoint.Flags().StringVar(&pullUser, "pull-user", "", "user the Supervisor pulls from Harbor with (a robot account; public projects need none)")
	repoint.Flags().StringVar(&pullPasswordFile, "pull-password-file", "", "file holding that user's password")
	repoint.Flags().BoolVar(&reinstall, "reinstall", false, "if the Supervisor runs the version, uninstall, re-point and install it again (its workloads restart)")
	repoint.Flags().StringVar(&repointConfig, "config", "", "YAML configuration of the service, for a reinstall")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show what the appliance registered with the Supervisor",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var st bootstrap.SupervisorState
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/supervisor", nil, &st); err != nil {
				return fmt.Errorf("read the supervisor hand-over: %w", err)
			}
			printSupervisor(c.Stdout, st)
			return nil
		},
	}
	cmd.AddCommand(registry, service, repoint, status)
	return cmd
}

func (c cmds) supervisorCall(cmd *cobra.Command, f *cli.ClientFlags, path string, req any) error {
	cl, err := c.Client(f)
	if err != nil {
		return err
	}
	var st bootstrap.SupervisorState
	if err := cl.DoLong(cmd.Context(), http.MethodPost, path, req, &st); err != nil {
		return fmt.Errorf("supervisor %s: %w", cmd.Name(), err)
	}
	printSupervisor(c.Stdout, st)
	return nil
}

func printSupervisor(w io.Writer, st bootstrap.SupervisorState) {
	if st.VCenter == "" {
		fmt.Fprintln(w, "not handed over to a Supervisor yet")
		return
	}
	fmt.Fprintf(w, "vCenter %s, Supervisor %s\n", st.VCenter, st.Supervisor)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGISTRY\tHOST\tROLE\tDEFAULT")
	for _, r := range st.Registries {
		fmt.Fprintf(tw, "%s\t%s:%d\t%s\t%t\n", r.ID, r.Hostname, r.Port, r.Role, r.Default)
	}
	_ = tw.Flush()
	if len(st.Services) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tVERSION\tINSTALLED\tIMAGE")
		for _, s := range st.Services {
			fmt.Fprintf(tw, "%s\t%s\t%t\t%s\n", s.ID, s.Version, s.Installed, s.Image)
		}
		_ = tw.Flush()
	}
	for _, e := range st.History {
		fmt.Fprintf(w, "  %s  %s by %s: %s\n", e.At.Format(time.RFC3339), e.Action, e.By, e.Detail)
	}
}
