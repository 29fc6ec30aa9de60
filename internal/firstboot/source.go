package firstboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/appliance-dev/appliance/internal/ovfenv"
)

// ErrNoEnvironment says that no OVF environment was found: the VM was not
// deployed from the OVA by vCenter (or runs elsewhere). Nothing is applied.
var ErrNoEnvironment = errors.New("no OVF environment (neither guestinfo.ovfEnv nor ovf-env.xml on a CD-ROM)")

// Runner runs a command and returns its standard output. exec.Command in
// the appliance; the boot test runs the real thing.
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
// further.
func (s Source) Read(ctx context.Context) (map[string]string, string, error) {
	if out, err := s.Run(ctx, "vmtoolsd", "--cmd", "info-get guestinfo.ovfEnv"); err == nil && len(bytes.TrimSpace(out)) > 0 {
		props, err := ovfenv.Parse(bytes.NewReader(out))
		if err != nil {
			return nil, "guestinfo.ovfEnv", fmt.Errorf("read guestinfo.ovfEnv: %w", err)
		}
		return props, "guestinfo.ovfEnv", nil
	} else if err != nil {
		s.Log.Debug("no OVF environment in guestinfo", "error", err)
	}
	for _, dev := range s.CDROMs {
		props, err := s.readCDROM(ctx, dev)
		switch {
		case errors.Is(err, ErrNoEnvironment):
			continue
		case err != nil:
			return nil, dev, err
		}
		return props, dev + ":/" + EnvFileName, nil
	}
	return nil, "", ErrNoEnvironment
}

func (s Source) readCDROM(ctx context.Context, dev string) (map[string]string, error) {
	if err := os.MkdirAll(s.MountDir, 0o700); err != nil {
		return nil, fmt.Errorf("read %s: %w", dev, err)
	}
	if _, err := s.Run(ctx, "mount", "-t", "iso9660", "-o", "ro,nodev,nosuid,noexec", dev, s.MountDir); err != nil {
		s.Log.Debug("no readable CD in the drive", "device", dev, "error", err)
		return nil, ErrNoEnvironment
	}
	defer func() {
		if _, err := s.Run(context.WithoutCancel(ctx), "umount", s.MountDir); err != nil {
			s.Log.Warn("cannot unmount the OVF environment's CD", "device", dev, "error", err)
		}
	}()
	return ReadEnvDir(s.MountDir)
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
