// Command mkova builds the appliance's OVA (packaging/ova): `make ova`
// runs it as root with the freshly built binary, writing
// dist/appliance-<version>.ova.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/appliance-dev/appliance/packaging/ova"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mkova:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkova", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o ova.Options
	fs.StringVar(&o.Binary, "binary", "bin/appliance", "the appliance binary to install (built with CGO_ENABLED=0)")
	fs.StringVar(&o.Version, "version", "", "the version the OVA is named after")
	fs.StringVar(&o.OutDir, "out", "dist", "where the OVA goes")
	fs.StringVar(&o.WorkDir, "work", "dist/ova-work", "scratch folder (emptied first, removed after)")
	fs.StringVar(&o.CacheDir, "cache", os.Getenv("APPLIANCE_OVA_CACHE"), "keep the debootstrap tree here between builds (APPLIANCE_OVA_CACHE)")
	fs.StringVar(&o.Mirror, "mirror", "http://deb.debian.org/debian", "Debian mirror")
	fs.StringVar(&o.Suite, "suite", "bookworm", "Debian suite")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Version == "" {
		return errors.New("-version is required")
	}
	if os.Geteuid() != 0 {
		return errors.New("the OVA is built as root (debootstrap, chroot, file owners)")
	}
	o.Log = slog.New(slog.NewTextHandler(stderr, nil))
	res, err := ova.Build(ctx, o)
	if err != nil {
		return err
	}
	_ = os.RemoveAll(o.WorkDir)
	_, err = fmt.Fprintf(stdout, "%s (built in %s)\n", res.OVA, res.Took.Round(1e9))
	return err
}
