package firstboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/internal/ovfenv"
)

// ErrNoEnvironment says that no OVF environment was found: the VM was not
// deployed from the OVA by vCenter (or runs elsewhere). Nothing is applied.
var ErrNoEnvironment = errors.New("no OVF environment (neither guestinfo.ovfEnv nor ovf-env.xml on a CD-ROM)")

// absent says why one place holds no OVF environment.
type absent string

func (a absent) Error() string { return string(a) }

// GuestinfoKey is the guestinfo variable vSphere's com.vmware.guestInfo
// transport puts the OVF environment in.
const GuestinfoKey = "guestinfo.ovfEnv"

// Runner runs a command and returns its standard output: Exec in the
// appliance.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// EnvFileName is the OVF environment's file on the ISO transport's CD-ROM.
const EnvFileName = "ovf-env.xml"

// Source reads the OVF environment where vSphere puts it.
type Source struct {
	// Run runs vmtoolsd, mount and umount.
	Run Runner
	// CDROMs are the CD-ROM devices to look at (e.g. /dev/sr*).
	CDROMs []string
	// MountDir is an empty folder to mount a CD-ROM on.
	MountDir string
	// Log is the journal.
	Log *slog.Logger
}

// Read returns the environment's properties and where they came from:
// first VMware's guestinfo (the com.vmware.guestInfo transport, through
// vmtoolsd), then ovf-env.xml on each CD-ROM (the iso transport). A
// document that is there but malformed is an error, not a reason to look
// further. Without any, the error wraps ErrNoEnvironment and says what
// each place answered.
func (s Source) Read(ctx context.Context) (map[string]string, string, error) {
	var looked []string
	out, err := s.Run(ctx, "vmtoolsd", "--cmd", "info-get "+GuestinfoKey)
	switch {
	case err != nil:
		// vmtoolsd exits 1 with "No value found" in a VMware VM deployed
		// without the guestinfo transport, and with "Unable to send
		// command to VMware hypervisor." anywhere else.
		s.Log.Info("no OVF environment in guestinfo", "error", err)
		looked = append(looked, fmt.Sprintf("%s: %v", GuestinfoKey, err))
	case len(bytes.TrimSpace(out)) == 0:
		looked = append(looked, GuestinfoKey+": empty")
	default:
		props, err := ovfenv.Parse(bytes.NewReader(out))
		if err != nil {
			return nil, GuestinfoKey, fmt.Errorf("read %s: %w", GuestinfoKey, err)
		}
		return props, GuestinfoKey, nil
	}
	for _, dev := range s.CDROMs {
		props, err := s.readCDROM(ctx, dev)
		var why absent
		switch {
		case errors.As(err, &why):
			looked = append(looked, fmt.Sprintf("%s: %s", dev, why))
			continue
		case err != nil:
			return nil, dev, err
		}
		return props, dev + ":/" + EnvFileName, nil
	}
	if len(s.CDROMs) == 0 {
		looked = append(looked, "no CD-ROM drive")
	}
	return nil, "", fmt.Errorf("%w: %s", ErrNoEnvironment, strings.Join(looked, "; "))
}

// readCDROM mounts dev and reads its ovf-env.xml; an empty drive or a CD
// without the file is an absent error saying which.
func (s Source) readCDROM(ctx context.Context, dev string) (map[string]string, error) {
	if err := os.MkdirAll(s.MountDir, 0o700); err != nil {
		return nil, fmt.Errorf("read %s: %w", dev, err)
	}
	if _, err := s.Run(ctx, "mount", "-t", "iso9660", "-o", "ro,nodev,nosuid,noexec", dev, s.MountDir); err != nil {
		s.Log.Debug("no readable CD in the drive", "device", dev, "error", err)
		return nil, absent(fmt.Sprintf("no readable CD (%v)", err))
	}
	defer func() {
		if _, err := s.Run(context.WithoutCancel(ctx), "umount", s.MountDir); err != nil {
			s.Log.Warn("cannot unmount the OVF environment's CD", "device", dev, "error", err)
		}
	}()
	props, err := ReadEnvDir(s.MountDir)
	if errors.Is(err, ErrNoEnvironment) {
		return nil, absent("a CD without " + EnvFileName)
	}
	return props, err
}

// Exec is the Runner of the appliance: it runs name (looked up in PATH)
// for at most 30 seconds and returns its standard output; a failure
// carries the command's standard error.
func Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output() //nolint:gosec // G204: fixed commands of first boot
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(bytes.TrimSpace(ee.Stderr)) > 0 {
			return out, fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(ee.Stderr))
		}
		return out, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// ReadEnvDir reads ovf-env.xml from dir, a mounted CD (names are matched
// without case, and without the ";1" of a plain ISO 9660 name).
func ReadEnvDir(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		name := strings.TrimSuffix(strings.ToLower(e.Name()), ";1")
		if name != EnvFileName || !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", EnvFileName, err)
		}
		defer f.Close()
		props, err := ovfenv.Parse(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", EnvFileName, err)
		}
		return props, nil
	}
	return nil, ErrNoEnvironment
}
