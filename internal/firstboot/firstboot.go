// Package firstboot configures the appliance's virtual machine from its
// OVF environment at boot, before the appliance starts: host name, network
// (static or DHCP), NTP servers, the appliance's configuration file (host
// names for the certificate, a supplied certificate), the admin password
// and a supplied CA.
//
// It runs at every boot and changes only what the properties changed.
// Every property is validated (internal/ovfenv) before anything is
// written; a bad one is shown on the console and in the journal, and the
// previous configuration stays as it was. Files are written atomically.
// What belongs to the machine lives on the system disk, which an upgrade
// replaces; what belongs to the appliance (users, CA) lives on the data
// disk, and a replaced system disk does not reset it.
package firstboot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/ovfenv"
	"github.com/appliance-dev/appliance/internal/pki"
)

// Paths on the appliance's machine, relative to Options.Root.
const (
	ConfigFile     = "etc/appliance/appliance.yaml"
	TLSCertFile    = "etc/appliance/tls/server.crt"
	TLSKeyFile     = "etc/appliance/tls/server.key"
	NetworkFile    = "etc/systemd/network/10-appliance.network"
	ChronyFile     = "etc/chrony/sources.d/appliance.sources"
	HostnameFile   = "etc/hostname"
	HostsFile      = "etc/hosts"
	IssueFile      = "etc/issue.d/appliance-firstboot.issue"
	systemRecord   = "etc/appliance/ovfenv-applied.json"
	DefaultDataDir = "var/lib/appliance"
	dataRecord     = "ovfenv-applied.json" // in the data directory
)

// Options says where to apply, and how to reach the machine.
type Options struct {
	// Root is the machine's root directory: "/" on the appliance, a
	// temporary directory in tests.
	Root string
	// DataDir is the appliance's data directory relative to Root
	// (DefaultDataDir when empty).
	DataDir string
	// Owner is the uid and gid that own the data directory's files (the
	// appliance's user); negative leaves ownership alone.
	UID, GID int
	// Console receives what an operator at the console must see; nil
	// discards.
	Console io.Writer
	// Log is the journal.
	Log *slog.Logger
	// SetHostname changes the running kernel's host name; nil skips it.
	SetHostname func(string) error
	// BcryptCost is the cost of the admin password's hash (0: default).
	BcryptCost int
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Result says what Apply changed.
type Result struct {
	// System is true when the machine's files were written.
	System bool
	// Data is true when the admin password or the CA were set.
	Data bool
	// Settings are the applied settings.
	Settings ovfenv.Settings
}

// record is what was last applied, kept as a salted digest so that the
// password is not recoverable from it.
type record struct {
	Salt   string    `json:"salt"`
	Digest string    `json:"digest"`
	At     time.Time `json:"applied_at"`
}

func (o *Options) path(rel string) string { return filepath.Join(o.Root, filepath.FromSlash(rel)) }

func (o *Options) dataDir() string {
	if o.DataDir == "" {
		return o.path(DefaultDataDir)
	}
	return o.path(o.DataDir)
}

func (o *Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// Apply validates props and applies them. On invalid properties it
// changes nothing on the machine, shows every problem on the console
// (and in IssueFile, which the login prompt shows) and returns the
// *ovfenv.Error; the appliance then starts on its previous configuration.
func Apply(ctx context.Context, o Options, props map[string]string) (Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Console == nil {
		o.Console = io.Discard
	}
	s, err := ovfenv.Validate(props)
	if err != nil {
		var verr *ovfenv.Error
		if errors.As(err, &verr) {
			o.reportProblems(verr)
		}
		return Result{}, err
	}
	res := Result{Settings: s}
	sys, err := systemFiles(o, s)
	if err != nil {
		return Result{}, err
	}
	data := dataDigestInput(s)

	// Everything is known and checked; now write, the system part first.
	if changed, err := o.changed(o.path(systemRecord), sysDigestInput(sys)); err != nil {
		return Result{}, err
	} else if changed {
		if err := o.writeSystem(sys, s); err != nil {
			return Result{}, err
		}
		if err := o.writeRecord(o.path(systemRecord), sysDigestInput(sys)); err != nil {
			return Result{}, err
		}
		res.System = true
		o.Log.Info("applied the vApp properties to the machine", "hostname", s.Hostname, "dhcp", s.DHCP(), "address", s.Address.String(), "ntp", strings.Join(s.NTP, ","))
	}
	if changed, err := o.changed(filepath.Join(o.dataDir(), dataRecord), data); err != nil {
		return Result{}, err
	} else if changed {
		if err := o.writeData(ctx, s); err != nil {
			return Result{}, err
		}
		if err := o.writePending(s); err != nil {
			return Result{}, err
		}
		if err := o.writeRecord(filepath.Join(o.dataDir(), dataRecord), data); err != nil {
			return Result{}, err
		}
		res.Data = true
		o.Log.Info("applied the admin password and certificates of the vApp properties", "supplied_ca", s.CACert != nil, "supplied_certificate", s.TLSCert != nil)
	}
	if err := os.Remove(o.path(IssueFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("first boot: remove %s: %w", IssueFile, err)
	}
	if !res.System && !res.Data {
		o.Log.Info("the vApp properties are already applied")
	}
	return res, nil
}

// reportProblems shows why nothing was applied, on the console, at the
// login prompt and in the journal.
func (o *Options) reportProblems(verr *ovfenv.Error) {
	var b strings.Builder
	b.WriteString("\n*** appliance: the vApp properties were NOT applied; the previous configuration is kept.\n")
	for _, p := range verr.Problems {
		fmt.Fprintf(&b, "*** appliance: %s: %s\n", p.Key, p.Message)
		o.Log.Error("invalid vApp property; nothing applied, the previous configuration is kept", "property", p.Key, "problem", p.Message)
	}
	b.WriteString("*** appliance: correct the properties (vCenter: VM > Configure > vApp Options) and restart the VM.\n\n")
	_, _ = io.WriteString(o.Console, b.String())
	issue := strings.ReplaceAll(b.String(), `\`, `\\`)
	if err := os.MkdirAll(filepath.Dir(o.path(IssueFile)), 0o755); err == nil { //nolint:gosec // G301: /etc/issue.d is world-readable
		if err := fsutil.WriteFileAtomic(o.path(IssueFile), []byte(issue), 0o644); err != nil {
			o.Log.Warn("cannot show the problems at the login prompt", "error", err)
		}
	}
}

// changed tells whether the digest of input differs from the record at path.
func (o *Options) changed(path string, input []byte) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("first boot: read %s: %w", path, err)
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		o.Log.Warn("unreadable record of the last applied properties; applying again", "file", path, "error", err)
		return true, nil
	}
	return digest(r.Salt, input) != r.Digest, nil
}

func (o *Options) writeRecord(path string, input []byte) error {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return fmt.Errorf("first boot: %w", err)
	}
	r := record{Salt: hex.EncodeToString(salt), At: o.now().UTC()}
	r.Digest = digest(r.Salt, input)
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("first boot: %w", err)
	}
	if err := o.writeFile(path, data, 0o600, false); err != nil {
		return err
	}
	return nil
}

func digest(salt string, input []byte) string {
	h := sha256.New()
	h.Write([]byte(salt))
	h.Write(input)
	return hex.EncodeToString(h.Sum(nil))
}

// writeFile writes path atomically, creating its folder; owned says the
// appliance's user owns it.
func (o *Options) writeFile(path string, data []byte, perm os.FileMode, owned bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil { //nolint:gosec // G301: folders of /etc, world-readable as on any Debian system
		return fmt.Errorf("first boot: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, data, perm); err != nil {
		return fmt.Errorf("first boot: %w", err)
	}
	if owned && o.UID >= 0 {
		if err := os.Chown(path, o.UID, o.GID); err != nil {
			return fmt.Errorf("first boot: %w", err)
		}
	}
	return nil
}

// writeData sets the admin password in the user store and installs a
// supplied CA, in the data directory.
func (o *Options) writeData(ctx context.Context, s ovfenv.Settings) error {
	dir := o.dataDir()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("first boot: %w", err)
	}
	if s.CACert != nil {
		// The key first: pki refuses a certificate whose key is missing,
		// and a mismatch after a crash here is repaired by the next boot,
		// which applies again because the record is written last.
		if err := o.writeFile(filepath.Join(dir, pki.CAKeyFile), s.CAKey, 0o600, true); err != nil {
			return err
		}
		if err := o.writeFile(filepath.Join(dir, pki.CACertFile), s.CACert, 0o644, true); err != nil {
			return err
		}
	}
	var opts []auth.UsersOption
	if o.BcryptCost > 0 {
		opts = append(opts, auth.WithBcryptCost(o.BcryptCost))
	}
	usersPath := filepath.Join(dir, auth.UsersFile)
	users, err := auth.OpenUsers(usersPath, opts...)
	if err != nil {
		return fmt.Errorf("first boot: %w", err)
	}
	if _, ok := users.Get("admin"); ok {
		err = users.SetPassword(ctx, "admin", s.AdminPassword)
	} else {
		err = users.Add(ctx, "admin", s.AdminPassword, auth.RoleAdmin)
	}
	if err != nil {
		return fmt.Errorf("first boot: %w", err)
	}
	if o.UID >= 0 {
		if err := os.Chown(usersPath, o.UID, o.GID); err != nil {
			return fmt.Errorf("first boot: %w", err)
		}
	}
	// A random first password the appliance printed before is no longer
	// the admin's.
	if err := os.Remove(filepath.Join(dir, auth.InitialPasswordFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("first boot: %w", err)
	}
	return nil
}

// dataDigestInput is what the data record digests.
func dataDigestInput(s ovfenv.Settings) []byte {
	data, _ := json.Marshal([]any{s.AdminPassword, string(s.CACert), string(s.CAKey), s.Mode, s.Primary})
	return data
}
