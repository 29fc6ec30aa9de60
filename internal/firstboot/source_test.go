package firstboot_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/firstboot"
	"github.com/appliance-dev/appliance/internal/ovfenv"
)

// What stands in for what in TestSourceRead: VMware's guestinfo is read
// through the backdoor RPC of a VMware hypervisor, which cannot run here
// (nor under QEMU), so a shell script stands in for open-vm-tools'
// vmtoolsd. It answers `vmtoolsd --cmd "info-get guestinfo.ovfEnv"` as
// the real one does (services/vmtoolsd/cmdLine.c, ToolsCoreRunCommand):
// the value and a newline on standard output and exit 0 when vCenter set
// the variable; "No value found" on standard error and exit 1 in a
// VMware VM without it (deployed with the ISO transport, or not from the
// OVA); "Unable to send command to VMware hypervisor." and exit 1 outside
// VMware. Mounting a CD needs root and a drive, so a script stands in for
// mount(8) too: the "device" it is given is a folder holding the disc's
// files, copied onto the mount point (a missing folder is an empty drive,
// refused as mount refuses one), and the umount stand-in empties the
// mount point. They are found in PATH, which holds nothing else, by
// firstboot.Exec, the appliance's own Runner (so the subtests take turns:
// PATH belongs to the process).
// The ISO itself, mounted by the real mount(8) in the real guest, is
// what packaging/ova's TestBootOVA boots with.

// vCenterEnv is an OVF environment shaped as vCenter writes it into
// guestinfo.ovfEnv (with its platform and adapter sections).
const vCenterEnv = `<?xml version="1.0" encoding="UTF-8"?>
<Environment
     xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv"
     oe:id=""
     ve:vCenterId="vm-1042">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>8.0.2</Version>
      <Vendor>VMware, Inc.</Vendor>
      <Locale>en</Locale>
   </PlatformSection>
   <PropertySection>
         <Property oe:key="guestinfo.admin_password" oe:value="guestinfo-password-1"/>
         <Property oe:key="guestinfo.hostname" oe:value="from-guestinfo.enclave.example"/>
   </PropertySection>
   <ve:EthernetAdapterSection>
      <ve:Adapter ve:mac="00:50:56:8a:12:34" ve:network="VM Network" ve:unitNumber="7"/>
   </ve:EthernetAdapterSection>
</Environment>`

type vmtoolsd int

const (
	noVmtoolsd   vmtoolsd = iota // open-vm-tools not installed
	withValue                    // a VMware VM deployed with the guestinfo transport
	noValue                      // a VMware VM without guestinfo.ovfEnv
	notVMware                    // any other hypervisor
	malformedEnv                 // guestinfo.ovfEnv set, but not an OVF environment
)

// standIns writes the stand-in vmtoolsd (as kind), mount and umount into
// a folder, and returns it with the file the stand-ins log their calls to.
func standIns(t *testing.T, kind vmtoolsd) (bin, calls string) {
	t.Helper()
	bin = t.TempDir()
	calls = filepath.Join(bin, "calls.log")
	env := filepath.Join(bin, "guestinfo.ovfEnv")
	value := vCenterEnv
	if kind == malformedEnv {
		value = "<Environment><PropertySection>"
	}
	if err := os.WriteFile(env, []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
	answer := map[vmtoolsd]string{
		withValue:    `cat '` + env + `'; echo; exit 0`,
		malformedEnv: `cat '` + env + `'; echo; exit 0`,
		noValue:      `echo "No value found" >&2; exit 1`,
		notVMware:    `echo "Unable to send command to VMware hypervisor." >&2; exit 1`,
	}
	scripts := map[string]string{
		"mount": `echo "mount $*" >> '` + calls + `'
[ "$#" -eq 6 ] && [ "$1" = -t ] && [ "$2" = iso9660 ] && [ "$3" = -o ] || { echo "mount: bad usage" >&2; exit 1; }
[ -d "$5" ] || { echo "mount: $6: no medium found on $5." >&2; exit 32; }
cp -R "$5/." "$6/"
echo "mounted $5" >> '` + calls + `'
`,
		"umount": `echo "umount $*" >> '` + calls + `'
find "$1" -mindepth 1 -delete
`,
	}
	if kind != noVmtoolsd {
		scripts["vmtoolsd"] = `echo "vmtoolsd $*" >> '` + calls + `'
[ "$#" -eq 2 ] && [ "$1" = --cmd ] || { echo "Command line parsing failed" >&2; exit 1; }
[ "$2" = "info-get guestinfo.ovfEnv" ] || { echo "No value found" >&2; exit 1; }
` + answer[kind] + "\n"
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\nPATH=/usr/bin:/bin\n"+body), 0o755); err != nil { //nolint:gosec // G306: an executable stand-in
			t.Fatal(err)
		}
	}
	return bin, calls
}

// disc makes a folder standing for a CD with files on it.
func disc(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSourceRead(t *testing.T) {
	isoProps := good() // hostname registry.enclave.example
	iso := func(t *testing.T) string { return disc(t, map[string][]byte{"ovf-env.xml": ovfenv.Marshal(isoProps)}) }
	emptyDrive := func(t *testing.T) string { return filepath.Join(t.TempDir(), "sr0") }
	for _, tc := range []struct {
		name     string
		vmtoolsd vmtoolsd
		cdroms   func(t *testing.T) []string
		// wantHost is the host name read, "" for an error; wantFrom the
		// source: "guestinfo" or the index of the CD-ROM.
		wantHost  string
		wantFrom  string
		wantErr   error
		wantInErr []string
	}{
		{"guestinfo is preferred over the CD", withValue, func(t *testing.T) []string { return []string{iso(t)} },
			"from-guestinfo.enclave.example", "guestinfo", nil, nil},
		{"a VMware VM without guestinfo.ovfEnv reads the CD", noValue, func(t *testing.T) []string { return []string{iso(t)} },
			"registry.enclave.example", "0", nil, nil},
		{"outside VMware the CD is read", notVMware, func(t *testing.T) []string { return []string{iso(t)} },
			"registry.enclave.example", "0", nil, nil},
		{"without vmtoolsd the CD is read", noVmtoolsd, func(t *testing.T) []string { return []string{iso(t)} },
			"registry.enclave.example", "0", nil, nil},
		{"an empty drive, then the CD", notVMware, func(t *testing.T) []string { return []string{emptyDrive(t), iso(t)} },
			"registry.enclave.example", "1", nil, nil},
		{"neither: not VMware and an empty drive", notVMware, func(t *testing.T) []string { return []string{emptyDrive(t)} },
			"", "", firstboot.ErrNoEnvironment, []string{
				"guestinfo.ovfEnv: vmtoolsd: exit status 1: Unable to send command to VMware hypervisor.",
				"no readable CD (mount: exit status 32: mount: ", "no medium found on"}},
		{"neither: no value and a CD without the file", noValue,
			func(t *testing.T) []string { return []string{disc(t, map[string][]byte{"README": []byte("x")})} },
			"", "", firstboot.ErrNoEnvironment, []string{"guestinfo.ovfEnv: vmtoolsd: exit status 1: No value found", "a CD without ovf-env.xml"}},
		{"neither: no vmtoolsd and no drive", noVmtoolsd, func(*testing.T) []string { return nil },
			"", "", firstboot.ErrNoEnvironment, []string{`guestinfo.ovfEnv: vmtoolsd: exec: "vmtoolsd": executable file not found in $PATH`, "no CD-ROM drive"}},
		{"a malformed guestinfo.ovfEnv is an error, not a reason to read the CD", malformedEnv,
			func(t *testing.T) []string { return []string{iso(t)} },
			"", "", ovfenv.ErrMalformed, []string{"read guestinfo.ovfEnv"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, calls := standIns(t, tc.vmtoolsd)
			t.Setenv("PATH", bin)
			cdroms := tc.cdroms(t)
			mnt := filepath.Join(t.TempDir(), "run", "appliance-ovfenv")
			src := firstboot.Source{
				Run: firstboot.Exec, CDROMs: cdroms, MountDir: mnt, Log: testLog(t),
			}
			props, from, err := src.Read(t.Context())
			log, _ := os.ReadFile(calls)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Read = %v, %q, %v; want %v (calls:\n%s)", props, from, err, tc.wantErr, log)
				}
				for _, w := range tc.wantInErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("the error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v (calls:\n%s)", err, log)
			}
			if props[ovfenv.KeyHostname] != tc.wantHost {
				t.Errorf("host name %q, want %q", props[ovfenv.KeyHostname], tc.wantHost)
			}
			wantFrom := firstboot.GuestinfoKey
			if tc.wantFrom != "guestinfo" {
				i := int(tc.wantFrom[0] - '0')
				wantFrom = cdroms[i] + ":/" + firstboot.EnvFileName
			}
			if from != wantFrom {
				t.Errorf("read from %q, want %q", from, wantFrom)
			}
			mounted := strings.Count("\n"+string(log), "\nmounted ")
			umounts := strings.Count("\n"+string(log), "\numount ")
			switch {
			case tc.wantFrom == "guestinfo" && strings.Contains(string(log), "mount "):
				t.Errorf("guestinfo had the environment, yet a CD was mounted:\n%s", log)
			case tc.wantFrom != "guestinfo" && (mounted != 1 || umounts != 1):
				t.Errorf("%d CDs mounted, %d unmounted, want 1 and 1:\n%s", mounted, umounts, log)
			}
			if entries, err := os.ReadDir(mnt); err == nil && len(entries) != 0 {
				t.Errorf("the CD is still mounted: %v", entries)
			}
		})
	}
}

// testLog writes the journal's lines to the test's log.
func testLog(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(tLog{t}, nil)) }

type tLog struct{ t *testing.T }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
