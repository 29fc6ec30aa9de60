package benchkit

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ApplianceOptions says how StartAppliance runs `appliance serve`.
type ApplianceOptions struct {
	// DataDir is the server's --data-dir; its parent must exist.
	DataDir string
	// LogPath is the file that takes the server's output.
	LogPath string
	// Env is the server's environment (see CleanEnv).
	Env []string
	// Args are more flags for `appliance serve`, after the addresses.
	Args []string
	// Ready is the path on the plain HTTP address that answers 200 once
	// the server is up: "/healthz" or "/readyz".
	Ready string
}

// Appliance is an appliance server the benchmark started.
type Appliance struct {
	// Proc is the server's process.
	Proc *Process
	// HTTPSAddr and HTTPAddr are where it listens, "127.0.0.1:port".
	HTTPSAddr, HTTPAddr string
	// Password is the initial admin password.
	Password string
	// Roots trusts the appliance's CA, CAFile (ca.crt in its data folder).
	Roots  *x509.CertPool
	CAFile string
	// Bin is the appliance binary, which is also its command line.
	Bin string
}

// StartAppliance runs bin serve on two free loopback ports, HTTPS and
// plain HTTP, waits up to a minute until o.Ready answers, and reads the
// admin password and the CA the server wrote into its data folder.
func StartAppliance(ctx context.Context, bin string, o ApplianceOptions) (*Appliance, error) {
	httpsAddr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--data-dir", o.DataDir, "--https-addr", httpsAddr, "--http-addr", httpAddr}, o.Args...)
	Logf("appliance: %s %s", bin, strings.Join(args, " "))
	p, err := Start("appliance", o.LogPath, o.Env, bin, args...)
	if err != nil {
		return nil, err
	}
	a := &Appliance{Proc: p, HTTPSAddr: httpsAddr, HTTPAddr: httpAddr, Bin: bin, CAFile: filepath.Join(o.DataDir, "ca.crt")}
	if err := a.ready(ctx, o); err != nil {
		p.Stop()
		return nil, err
	}
	return a, nil
}

// ready waits for the server, then reads its password and CA.
func (a *Appliance) ready(ctx context.Context, o ApplianceOptions) error {
	if err := WaitHTTP(ctx, a.Proc, nil, "http://"+a.HTTPAddr+o.Ready, 60*time.Second); err != nil {
		return fmt.Errorf("appliance: %w", err)
	}
	pw, err := os.ReadFile(filepath.Join(o.DataDir, "initial-admin-password"))
	if err != nil {
		return fmt.Errorf("appliance admin password: %w", err)
	}
	a.Password = strings.TrimSpace(string(pw))
	caPEM, err := os.ReadFile(a.CAFile)
	if err != nil {
		return fmt.Errorf("appliance CA: %w", err)
	}
	a.Roots = x509.NewCertPool()
	if !a.Roots.AppendCertsFromPEM(caPEM) {
		return errors.New("appliance ca.crt holds no certificate")
	}
	return nil
}

// Command is the appliance's command line with args, run as admin against
// this server: APPLIANCE_SERVER and APPLIANCE_CA in a clean environment,
// --username admin --password-stdin and the password on its standard
// input. The caller sets its output and runs it.
func (a *Appliance) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, a.Bin, append(args, "--username", "admin", "--password-stdin")...)
	cmd.Env = append(CleanEnv(), "APPLIANCE_SERVER=https://"+a.HTTPSAddr, "APPLIANCE_CA="+a.CAFile)
	cmd.Stdin = strings.NewReader(a.Password + "\n")
	return cmd
}
