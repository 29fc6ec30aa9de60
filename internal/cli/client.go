package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/apiclient"
)

// ClientFlags is the convention every command that acts on a running
// appliance shares: --server, --ca, --username with --password-stdin, or
// APPLIANCE_SERVER, APPLIANCE_CA, APPLIANCE_USERNAME, APPLIANCE_PASSWORD.
type ClientFlags struct {
	server, ca, username string
	passwordStdin        bool
}

const defaultServer = "https://127.0.0.1:8443"

// Register adds the flags to cmd (persistent: its subcommands share them).
func (f *ClientFlags) Register(cmd *cobra.Command) {
	fs := cmd.PersistentFlags()
	fs.StringVar(&f.server, "server", "", "appliance URL (default $APPLIANCE_SERVER or "+defaultServer+")")
	fs.StringVar(&f.ca, "ca", "", "CA certificate to trust (default $APPLIANCE_CA, else ./data/ca.crt when present)")
	fs.StringVar(&f.username, "username", "", "user name (default $APPLIANCE_USERNAME)")
	fs.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from the first line of standard input (default $APPLIANCE_PASSWORD)")
}

// Client builds the API client from flags and environment.
func (c *CLI) Client(f *ClientFlags) (*apiclient.Client, error) {
	o := apiclient.Options{
		Server:   FirstNonEmpty(f.server, c.Getenv("APPLIANCE_SERVER"), defaultServer),
		CAFile:   FirstNonEmpty(f.ca, c.Getenv("APPLIANCE_CA")),
		Username: FirstNonEmpty(f.username, c.Getenv("APPLIANCE_USERNAME")),
		Password: c.Getenv("APPLIANCE_PASSWORD"),
	}
	if o.CAFile == "" {
		dataDir := FirstNonEmpty(c.Getenv("APPLIANCE_DATA_DIR"), "./data")
		if _, err := os.Stat(filepath.Join(dataDir, "ca.crt")); err == nil {
			o.CAFile = filepath.Join(dataDir, "ca.crt")
		}
	}
	if f.passwordStdin {
		if o.Username == "" {
			return nil, errors.New("--password-stdin needs --username (or APPLIANCE_USERNAME)")
		}
		pw, err := ReadLine(c.Stdin)
		if err != nil {
			return nil, fmt.Errorf("read password from standard input: %w", err)
		}
		o.Password = pw
	}
	if o.Username != "" && o.Password == "" {
		return nil, fmt.Errorf("user %q has no password: use --password-stdin or APPLIANCE_PASSWORD", o.Username)
	}
	return apiclient.New(o)
}

// ReadLine reads one line, without its line ending.
func ReadLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty")
	}
	return line, nil
}

// FirstNonEmpty returns the first value that is not empty.
func FirstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// ReadFirstLine reads a secret (a password) from the first line of file.
func ReadFirstLine(file, what string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("read %s: %s is empty", what, file)
	}
	return line, nil
}
