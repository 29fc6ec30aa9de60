// Package cli holds what the appliance's commands share: the process's
// streams and environment (CLI), the flags and API client of every command
// that acts on a running appliance (ClientFlags), progress bars and live
// views, and small formatting helpers. cmd/appliance assembles the command
// tree from it and its sub-packages (opscmd: the lifecycle and maintenance;
// validatecmd: the validation gate).
package cli

import (
	"io"
	"log/slog"
)

// CLI carries the process's streams and environment to every subcommand.
type CLI struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Env            []string
}

// Getenv looks key up in the command's environment.
func (c *CLI) Getenv(key string) string {
	for _, kv := range c.Env {
		if len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '=' {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// Logger logs a client command's progress to stderr.
func (c *CLI) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(c.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Dash is s, or "-" when s is empty (a table's empty cell).
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
