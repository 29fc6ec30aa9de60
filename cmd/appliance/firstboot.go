package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/appliance-dev/appliance/internal/apiclient"
	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/firstboot"
	"github.com/appliance-dev/appliance/internal/ovfenv"
	"github.com/appliance-dev/appliance/internal/server/opsapi"
	"github.com/appliance-dev/appliance/internal/version"
)

// consoles are where first boot shows what an operator must see: the
// system console (the VM's screen) and the first serial port, when either
// is there.
var consoles = []string{"/dev/console", "/dev/ttyS0"}

func (c cmds) firstbootCmd() *cobra.Command {
	var (
		root, envFile, userName string
		console                 bool
	)
	cmd := &cobra.Command{
		Use:   "firstboot",
		Short: "Apply the OVA's vApp properties to this machine (run by appliance-firstboot.service)",
		Long: `Read the OVF environment (VMware guestinfo through vmtoolsd, or ovf-env.xml
on a CD-ROM), validate every property, and apply host name, network, NTP,
the appliance's configuration, the admin password and a supplied
certificate or CA. It runs at every boot and changes only what the
properties changed. A bad property changes nothing: the problems are
shown on the console and at the login prompt, logged, and the appliance
starts on its previous configuration. See docs/ova.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			o, err := c.firstbootOptions(root, userName, console)
			if err != nil {
				return err
			}
			if _, err := firstboot.OwnData(o); err != nil {
				return fmt.Errorf("firstboot: %w", err)
			}
			var props map[string]string
			where := envFile
			if envFile != "" {
				f, err := os.Open(envFile)
				if err != nil {
					return fmt.Errorf("firstboot: %w", err)
				}
				defer f.Close()
				if props, err = ovfenv.Parse(f); err != nil {
					return fmt.Errorf("firstboot: %s: %w", envFile, err)
				}
			} else {
				cdroms, _ := filepath.Glob(filepath.Join(root, "dev", "sr[0-9]*"))
				src := firstboot.Source{Run: firstboot.Exec, CDROMs: cdroms, MountDir: filepath.Join(root, "run", "appliance-ovfenv"), Log: o.Log}
				props, where, err = src.Read(ctx)
				if errors.Is(err, firstboot.ErrNoEnvironment) {
					o.Log.Info("no OVF environment; the configuration stays as it is", "looked_at", append([]string{firstboot.GuestinfoKey}, cdroms...), "found", err.Error())
					return nil
				}
				if err != nil {
					fmt.Fprintf(o.Console, "\n*** appliance: the OVF environment cannot be read; the previous configuration is kept: %v\n\n", err)
					return fmt.Errorf("firstboot: %w", err)
				}
			}
			o.Log.Info("read the OVF environment", "source", where, "properties", len(props))
			if _, err := firstboot.Apply(ctx, o, props); err != nil {
				return fmt.Errorf("firstboot: %w", err)
			}
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&root, "root", "/", "the machine's root directory")
	cmd.Flags().StringVar(&envFile, "env-file", "", "read the OVF environment from this file instead of guestinfo or a CD-ROM")
	cmd.PersistentFlags().StringVar(&userName, "user", "appliance", "the user the appliance runs as, who owns its data (empty: leave ownership)")
	cmd.PersistentFlags().BoolVar(&console, "console", true, "also show problems on "+fmt.Sprint(consoles))
	cmd.AddCommand(c.bannerCmd(&root, &userName, &console))
	return cmd
}

func (c cmds) bannerCmd(root, userName *string, console *bool) *cobra.Command {
	var (
		wait   time.Duration
		server string
	)
	cmd := &cobra.Command{
		Use:   "banner",
		Short: "Show the appliance's URLs and CA fingerprint on the console and at the login prompt",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := c.firstbootOptions(*root, *userName, *console)
			if err != nil {
				return err
			}
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			config.RegisterFlags(fs)
			if err := fs.Parse([]string{"--config", filepath.Join(*root, firstboot.ConfigFile)}); err != nil {
				return err
			}
			cfg, err := config.Load(fs, nil)
			if err != nil {
				return fmt.Errorf("banner: %w", err)
			}
			o.DataDir = cfg.DataDir
			ca, err := firstboot.WaitForCA(cmd.Context(), o, wait)
			if err != nil {
				return err
			}
			if err := completeStandby(cmd.Context(), o, *root, cfg, server, wait); err != nil {
				return err
			}
			names := slices.Clone(cfg.Hostnames)
			for _, a := range machineAddresses() {
				if !slices.Contains(names, a) {
					names = append(names, a)
				}
			}
			return firstboot.ShowBanner(o, firstboot.Banner(firstboot.BannerInfo{Version: version.Get().Version, Names: names}, ca))
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 3*time.Minute, "how long to wait for the appliance's CA")
	cmd.Flags().StringVar(&server, "server", "", "the appliance's API (default: https://127.0.0.1 on the configuration's HTTPS port)")
	return cmd
}

// completeStandby makes the running appliance the standby the properties
// ask for, through its API as admin, if that is still pending. A failure
// is shown and the switch stays pending; the banner still shows.
//
// The appliance service counts as started once it runs, before it listens,
// and its CA is already on the data disk at any boot but the first: so the
// switch waits, at most wait, for the API to answer.
func completeStandby(ctx context.Context, o firstboot.Options, root string, cfg config.Config, server string, wait time.Duration) error {
	p, err := firstboot.ReadPendingStandby(o)
	if err != nil || p == nil {
		return err
	}
	if server == "" {
		_, port, err := net.SplitHostPort(cfg.HTTPSAddr)
		if err != nil {
			return fmt.Errorf("banner: https_addr %q: %w", cfg.HTTPSAddr, err)
		}
		server = "https://127.0.0.1:" + port
	}
	caFile := filepath.Join(root, cfg.DataDir, "ca.crt")
	if cfg.TLS.CertFile != "" {
		// Go trusts a supplied leaf found among the roots.
		caFile = filepath.Join(root, cfg.TLS.CertFile)
	}
	cl, err := apiclient.New(apiclient.Options{Server: server, CAFile: caFile, Username: "admin", Password: p.AdminPassword})
	if err != nil {
		return fmt.Errorf("banner: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		var st opsapi.Status
		err := cl.Do(ctx, http.MethodGet, "/api/v1/status", nil, &st)
		if err == nil || time.Now().After(deadline) {
			break
		}
		o.Log.Debug("waiting for the appliance's API", "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	req := opsapi.StandbyRequest{Primary: p.URL, PrimaryCA: p.CAPEM, PrimaryUsername: p.Username, PrimaryPassword: p.Password,
		Reason: "vApp property guestinfo.mode=standby"}
	var ans opsapi.StandbyAnswer
	if err := cl.DoLong(ctx, http.MethodPost, "/api/v1/standby", req, &ans); err != nil {
		firstboot.StandbyFailed(o, err)
		return nil
	}
	o.Log.Info("the appliance is the standby the vApp properties ask for", "primary", p.URL, "mode", ans.Lifecycle.Mode, "sync_error", ans.SyncError)
	return firstboot.StandbyDone(o)
}

// firstbootOptions finds the appliance's user and the consoles.
func (c cmds) firstbootOptions(root, userName string, console bool) (firstboot.Options, error) {
	o := firstboot.Options{Root: root, UID: -1, GID: -1, Log: slog.New(slog.NewTextHandler(c.Stderr, nil)), Console: io.Discard}
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			return o, fmt.Errorf("firstboot: the appliance's user: %w", err)
		}
		o.UID, _ = strconv.Atoi(u.Uid)
		o.GID, _ = strconv.Atoi(u.Gid)
	}
	if root == "/" {
		o.SetHostname = func(h string) error { return syscall.Sethostname([]byte(h)) }
	}
	if console {
		o.Console = consoleWriter{paths: consoles}
	}
	return o, nil
}

// consoleWriter writes to each console with CRLF line ends, opening it
// for each write: the banner runs while the gettys start, and systemd
// hangs a terminal up before starting agetty on it (TTYVHangup=yes),
// which would silence a descriptor opened earlier. A console that cannot
// be opened or has nothing behind it (a VM without a serial port still
// has /dev/ttyS0) is skipped.
type consoleWriter struct{ paths []string }

func (w consoleWriter) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p)+8)
	for _, b := range p {
		if b == '\n' {
			out = append(out, '\r')
		}
		out = append(out, b)
	}
	for _, path := range w.paths {
		f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		_, _ = f.Write(out)
		_ = f.Close()
	}
	return len(p), nil
}

// machineAddresses are the machine's global unicast addresses.
func machineAddresses() []string {
	var out []string
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
			out = append(out, ipn.IP.String())
		}
	}
	return out
}
