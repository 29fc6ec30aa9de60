// Command appliance is the air-gap registry appliance: `appliance serve`
// runs the registry, token service and API; the other subcommands act on a
// running appliance through its API. main only turns signals into a
// cancelled context and calls run.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, "appliance:", err)
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

// run executes one command line.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, env []string) error {
	root := newRootCmd(stdin, stdout, stderr, env)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
