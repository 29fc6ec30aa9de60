package main

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

// clientFlags is the convention every command that acts on a running
// appliance shares: --server, --ca, --username with --password-stdin, or
// APPLIANCE_SERVER, APPLIANCE_CA, APPLIANCE_USERNAME, APPLIANCE_PASSWORD.
type clientFlags struct {
	server, ca, username string
	passwordStdin        bool
}

const defaultServer = "https://127.0.0.1:8443"

func (f *clientFlags) register(cmd *cobra.Command) {
	fs := cmd.PersistentFlags()
	fs.StringVar(&f.server, "server", "", "appliance URL (default $APPLIANCE_SERVER or "+defaultServer+")")
	fs.StringVar(&f.ca, "ca", "", "CA certificate to trust (default $APPLIANCE_CA, else ./data/ca.crt when present)")
	fs.StringVar(&f.username, "username", "", "user name (default $APPLIANCE_USERNAME)")
	fs.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from the first line of standard input (default $APPLIANCE_PASSWORD)")
}

// client builds the API client from flags and environment.
func (c *cli) client(f *clientFlags) (*apiclient.Client, error) {
	o := apiclient.Options{
		Server:   firstNonEmpty(f.server, c.getenv("APPLIANCE_SERVER"), defaultServer),
		CAFile:   firstNonEmpty(f.ca, c.getenv("APPLIANCE_CA")),
		Username: firstNonEmpty(f.username, c.getenv("APPLIANCE_USERNAME")),
		Password: c.getenv("APPLIANCE_PASSWORD"),
	}
	if o.CAFile == "" {
		dataDir := firstNonEmpty(c.getenv("APPLIANCE_DATA_DIR"), "./data")
		if _, err := os.Stat(filepath.Join(dataDir, "ca.crt")); err == nil {
			o.CAFile = filepath.Join(dataDir, "ca.crt")
		}
	}
	if f.passwordStdin {
		if o.Username == "" {
			return nil, errors.New("--password-stdin needs --username (or APPLIANCE_USERNAME)")
		}
		pw, err := readLine(c.stdin)
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

// readLine reads one line, without its line ending.
func readLine(r io.Reader) (string, error) {
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

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// readFirstLine reads a secret (a password) from the first line of file.
func readFirstLine(file, what string) (string, error) {
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
