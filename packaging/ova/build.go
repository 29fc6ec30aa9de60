package ova

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/internal/firstboot"
	"github.com/appliance-dev/appliance/internal/ovfenv"
)

//go:embed files
var files embed.FS

// Fixed identities of the disks, so that the same tree gives the same
// images and the boot entry finds its root.
const (
	RootUUID     = "6a7c0e8e-0b7e-4d1c-9a54-2f1d0d5a0001"
	DataUUID     = "6a7c0e8e-0b7e-4d1c-9a54-2f1d0d5a0002"
	hashSeed     = "6a7c0e8e-0b7e-4d1c-9a54-2f1d0d5a0003"
	diskGUID     = "6A7C0E8E-0B7E-4D1C-9A54-2F1D0D5A0004"
	espPartGUID  = "6A7C0E8E-0B7E-4D1C-9A54-2F1D0D5A0005"
	rootPartGUID = "6A7C0E8E-0B7E-4D1C-9A54-2F1D0D5A0006"
	espVolumeID  = "A11A0CE5"
	DataLabel    = "appliance-data"

	espMiB          = 128
	systemDiskBytes = 8 << 30
	// DataDiskBytes is the data disk's capacity; it can be grown in
	// vCenter before or after the first boot (x-systemd.growfs).
	DataDiskBytes = 100 << 30
)

// Packages debootstrap installs besides the minimal base: the kernel, the
// init system and its network and resolver, VMware's tools, NTP, and the
// boot loader's EFI binary (copied onto the ESP).
var Packages = []string{
	"systemd", "systemd-sysv", "udev", "dbus", "systemd-resolved", "linux-image-amd64", "kmod",
	"open-vm-tools", "chrony", "iproute2", "systemd-boot-efi", "ca-certificates",
}

// Options configures a build.
type Options struct {
	// Binary is the appliance binary (CGO_ENABLED=0) to install.
	Binary string
	// Version names the OVA: appliance-<version>.ova.
	Version string
	// OutDir receives the OVA.
	OutDir string
	// WorkDir holds the intermediate trees and images (removed after).
	WorkDir string
	// CacheDir keeps the debootstrap result between builds ("" keeps
	// nothing); its key is the suite, mirror and package list.
	CacheDir string
	// Mirror and Suite are the Debian archive (deb.debian.org, bookworm).
	Mirror, Suite string
	// Epoch is the time stamp of every file (SOURCE_DATE_EPOCH).
	Epoch time.Time
	// Log receives progress.
	Log *slog.Logger
}

// Result is what a build produced.
type Result struct {
	OVA        string
	SystemVMDK string
	DataVMDK   string
	Took       time.Duration
}

// Build builds the OVA. It needs root (debootstrap, chroot, file
// ownership), debootstrap, mkfs.ext4, mkfs.vfat, mtools, sfdisk and
// qemu-img; no loop device, no mount outside debootstrap's own chroot.
func Build(ctx context.Context, o Options) (Result, error) {
	start := time.Now()
	if o.Mirror == "" {
		o.Mirror = "http://deb.debian.org/debian"
	}
	if o.Suite == "" {
		o.Suite = "bookworm"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Epoch.IsZero() {
		o.Epoch = time.Unix(1700000000, 0)
	}
	if o.Binary == "" || o.Version == "" || o.OutDir == "" || o.WorkDir == "" {
		return Result{}, errors.New("build the OVA: Binary, Version, OutDir and WorkDir are required")
	}
	for _, tool := range []string{"debootstrap", "chroot", "mkfs.ext4", "debugfs", "mkfs.vfat", "mmd", "mcopy", "sfdisk", "qemu-img", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Result{}, fmt.Errorf("build the OVA: %s is not installed", tool)
		}
	}
	b := &builder{o: o, root: filepath.Join(o.WorkDir, "rootfs")}
	if err := os.RemoveAll(o.WorkDir); err != nil {
		return Result{}, fmt.Errorf("build the OVA: %w", err)
	}
	if err := os.MkdirAll(o.WorkDir, 0o750); err != nil {
		return Result{}, fmt.Errorf("build the OVA: %w", err)
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"debootstrap", b.debootstrap},
		{"install the appliance", b.customize},
		{"order the tree", b.normalize},
		{"make the system disk", b.systemDisk},
		{"make the data disk", b.dataDisk},
		{"write the OVA", b.writeOVA},
	}
	for _, s := range steps {
		t := time.Now()
		if err := s.fn(ctx); err != nil {
			return Result{}, fmt.Errorf("build the OVA: %s: %w", s.name, err)
		}
		o.Log.Info("ova build step done", "step", s.name, "took", time.Since(t).Round(time.Second))
	}
	b.res.Took = time.Since(start)
	return b.res, nil
}

type builder struct {
	o    Options
	root string
	uid  int
	gid  int
	res  Result
}

func (b *builder) work(name string) string { return filepath.Join(b.o.WorkDir, name) }

func (b *builder) run(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...) //nolint:gosec // G204: the build's own commands
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tail := out.String()
		if len(tail) > 4000 {
			tail = "…" + tail[len(tail)-4000:]
		}
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail)
	}
	return nil
}

func (b *builder) debootstrap(ctx context.Context) error {
	key := sha256.Sum256([]byte(strings.Join(append([]string{b.o.Suite, b.o.Mirror, "minbase"}, Packages...), "\n")))
	cached := ""
	if b.o.CacheDir != "" {
		cached = filepath.Join(b.o.CacheDir, "rootfs-"+hex.EncodeToString(key[:8])+".tar")
		if _, err := os.Stat(cached); err == nil {
			b.o.Log.Info("using the cached debootstrap tree", "file", cached)
			if err := os.MkdirAll(b.root, 0o755); err != nil { //nolint:gosec // G301: the image's root folder
				return err
			}
			return b.run(ctx, nil, "tar", "--numeric-owner", "-xpf", cached, "-C", b.root)
		}
	}
	b.o.Log.Info("debootstrap", "suite", b.o.Suite, "mirror", b.o.Mirror)
	if err := b.run(ctx, nil, "debootstrap", "--variant=minbase", "--include="+strings.Join(Packages, ","), b.o.Suite, b.root, b.o.Mirror); err != nil {
		return err
	}
	// What the image does not need: downloaded packages, indexes, docs.
	for _, p := range []string{"var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"} {
		if err := removeContents(filepath.Join(b.root, p)); err != nil {
			return err
		}
	}
	if cached == "" {
		return nil
	}
	if err := os.MkdirAll(b.o.CacheDir, 0o750); err != nil {
		return err
	}
	tmp := cached + ".tmp"
	if err := b.run(ctx, nil, "tar", "--numeric-owner", "-cpf", tmp, "-C", b.root, "."); err != nil {
		return err
	}
	if err := os.Rename(tmp, cached); err != nil {
		return err
	}
	// Build from the cache's extraction, as every later build does: file
	// systems list a folder's files in the order they were made, and
	// mkfs.ext4 -d copies that order.
	if err := os.RemoveAll(b.root); err != nil {
		return err
	}
	if err := os.MkdirAll(b.root, 0o755); err != nil { //nolint:gosec // G301: the image's root folder
		return err
	}
	return b.run(ctx, nil, "tar", "--numeric-owner", "-xpf", cached, "-C", b.root)
}

// removeContents empties dir, keeping it.
func removeContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// kernelVersion is the one kernel debootstrap installed.
func (b *builder) kernelVersion() (string, error) {
	m, err := filepath.Glob(filepath.Join(b.root, "boot", "vmlinuz-*"))
	if err != nil || len(m) != 1 {
		return "", fmt.Errorf("want exactly one kernel in /boot, found %v", m)
	}
	return strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-"), nil
}

func (b *builder) write(rel string, data []byte, perm os.FileMode) error {
	p := filepath.Join(b.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil { //nolint:gosec // G301: folders of the image tree
		return err
	}
	if err := os.WriteFile(p, data, perm); err != nil { //nolint:gosec // G306,G703: files of the image tree, with their own modes
		return err
	}
	return os.Chmod(p, perm)
}

func (b *builder) symlink(target, rel string) error {
	p := filepath.Join(b.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil { //nolint:gosec // G301: folders of the image tree
		return err
	}
	_ = os.Remove(p)
	return os.Symlink(target, p)
}

// customize installs the appliance and its units into the tree.
func (b *builder) customize(ctx context.Context) error {
	bin, err := os.ReadFile(b.o.Binary)
	if err != nil {
		return err
	}
	if err := b.write("usr/local/bin/appliance", bin, 0o755); err != nil {
		return err
	}
	if err := b.run(ctx, b.epochEnv(), "chroot", b.root, "useradd", "--system", "--user-group", "--home-dir", "/var/lib/appliance",
		"--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "appliance registry", "appliance"); err != nil {
		return err
	}
	if b.uid, b.gid, err = lookupUser(filepath.Join(b.root, "etc", "passwd"), "appliance"); err != nil {
		return err
	}
	units := map[string]string{
		"files/appliance.service":           "etc/systemd/system/appliance.service",
		"files/appliance-firstboot.service": "etc/systemd/system/appliance-firstboot.service",
		"files/appliance-banner.service":    "etc/systemd/system/appliance-banner.service",
		"files/wait-online.conf":            "etc/systemd/system/systemd-networkd-wait-online.service.d/appliance.conf",
		"files/chrony.conf":                 "etc/chrony/chrony.conf",
	}
	// In name order, as everything the build does: some file systems list
	// a folder in the order its files were made (normalize).
	for _, src := range slices.Sorted(maps.Keys(units)) {
		dst := units[src]
		data, err := files.ReadFile(src)
		if err != nil {
			return err
		}
		if err := b.write(dst, data, 0o644); err != nil {
			return err
		}
	}
	factory := ovfenv.Settings{}
	written := map[string]string{
		"etc/fstab": "# The system disk is replaced on upgrade; the data disk stays (docs/ova.md).\n" +
			"UUID=" + RootUUID + "\t/\text4\tdefaults,noatime,errors=remount-ro\t0\t1\n" +
			"LABEL=" + DataLabel + "\t/var/lib/appliance\text4\tdefaults,noatime,nodev,nosuid,x-systemd.growfs\t0\t2\n",
		"etc/hostname":                   "appliance\n",
		"etc/hosts":                      "127.0.0.1\tlocalhost\n127.0.1.1\tappliance\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"etc/machine-id":                 "",
		firstboot.NetworkFile:            "[Match]\nType=ether\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
		firstboot.ChronyFile:             "",
		firstboot.ConfigFile:             string(firstboot.ConfigYAML(factory, "/var/lib/appliance")),
		"etc/issue":                      "Debian GNU/Linux 12 \\n \\l: the appliance (docs/ova.md)\n\n",
		"usr/share/doc/appliance/README": "The appliance: see docs/ova.md of its source, and `appliance --help`.\n",
	}
	for _, rel := range slices.Sorted(maps.Keys(written)) {
		if err := b.write(rel, []byte(written[rel]), 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(b.root, "var/lib/appliance"), 0o750); err != nil {
		return err
	}
	if err := b.symlink("../run/systemd/resolve/stub-resolv.conf", "etc/resolv.conf"); err != nil {
		return err
	}
	// No interactive first-boot questions on the console.
	if err := b.symlink("/dev/null", "etc/systemd/system/systemd-firstboot.service"); err != nil {
		return err
	}
	if err := b.run(ctx, b.epochEnv(), "chroot", b.root, "systemctl", "enable", "systemd-networkd.service", "systemd-networkd-wait-online.service",
		"systemd-resolved.service", "chrony.service", "appliance-firstboot.service", "appliance.service", "appliance-banner.service"); err != nil {
		return err
	}
	// Drivers a VM in vSphere (or QEMU) has no use for.
	kver, err := b.kernelVersion()
	if err != nil {
		return err
	}
	mods := filepath.Join(b.root, "lib/modules", kver, "kernel")
	for _, d := range []string{"drivers/media", "drivers/infiniband", "drivers/iio", "drivers/staging", "drivers/comedi", "drivers/isdn",
		"drivers/atm", "drivers/bluetooth", "drivers/net/wireless", "net/wireless", "net/mac80211", "net/bluetooth", "sound"} {
		if err := os.RemoveAll(filepath.Join(mods, d)); err != nil {
			return err
		}
	}
	return b.run(ctx, b.epochEnv(), "chroot", b.root, "depmod", kver)
}

// epochEnv makes tools that stamp what they write (useradd's last
// password change, for one) use the build's time.
func (b *builder) epochEnv() []string {
	return []string{"SOURCE_DATE_EPOCH=" + strconv.FormatInt(b.o.Epoch.Unix(), 10)}
}

// normalize makes the tree again, every folder's files made in name
// order, so that mkfs.ext4 -d (which copies a folder in the order the host
// lists it) writes the same image on every file system: ext4 lists a
// folder in hash order, but tmpfs, btrfs and XFS list files in the order
// they were made, or in the room deleted names left, and the steps before
// (debootstrap, useradd's lock files named after its process id, systemctl)
// do not make them in a fixed order.
func (b *builder) normalize(ctx context.Context) error {
	archive := b.work("rootfs-sorted.tar")
	if err := b.run(ctx, nil, "tar", "--sort=name", "--numeric-owner", "-cpf", archive, "-C", b.root, "."); err != nil {
		return err
	}
	if err := os.RemoveAll(b.root); err != nil {
		return err
	}
	if err := os.MkdirAll(b.root, 0o755); err != nil { //nolint:gosec // G301: the image's root folder
		return err
	}
	if err := b.run(ctx, nil, "tar", "--numeric-owner", "-xpf", archive, "-C", b.root); err != nil {
		return err
	}
	return os.Remove(archive)
}

// lookupUser reads a user's ids from a passwd file.
func lookupUser(passwd, name string) (int, int, error) {
	data, err := os.ReadFile(passwd)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == name {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err1 != nil || err2 != nil {
				return 0, 0, fmt.Errorf("%s: bad ids for %s", passwd, name)
			}
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("%s: no user %s", passwd, name)
}

// setTimes gives every file of the tree the build's time stamp.
func (b *builder) setTimes(dir string) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return lchtimes(p, b.o.Epoch)
	})
}

// fixInodeTimes sets the change and access times of every inode of img
// to the build's time stamp: mkfs.ext4 -d copies them from the tree,
// where no one can set a change time (and reading a file sets its access
// time).
func (b *builder) fixInodeTimes(ctx context.Context, img string) error {
	stamp := b.o.Epoch.UTC().Format("20060102150405")
	var script strings.Builder
	err := filepath.WalkDir(b.root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(b.root, p)
		if err != nil {
			return err
		}
		if strings.ContainsAny(rel, "\"\n") {
			return fmt.Errorf("a file name debugfs cannot quote: %q", rel)
		}
		for _, field := range []string{"ctime", "atime"} {
			fmt.Fprintf(&script, "sif \"/%s\" %s %s\n", strings.TrimPrefix(rel, "."), field, stamp)
		}
		return nil
	})
	if err != nil {
		return err
	}
	path := b.work("inode-times.debugfs")
	if err := os.WriteFile(path, []byte(script.String()), 0o600); err != nil {
		return err
	}
	// The superblock's write time too.
	return b.run(ctx, []string{"E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(b.o.Epoch.Unix(), 10)}, "debugfs", "-w", "-f", path, img)
}

func (b *builder) systemDisk(ctx context.Context) error {
	kver, err := b.kernelVersion()
	if err != nil {
		return err
	}
	// The ESP: systemd-boot, the kernel and the initramfs.
	esp := b.work("esp.img")
	espDir := b.work("esp")
	cmdline := "root=UUID=" + RootUUID + " ro console=ttyS0,115200 console=tty0 systemd.show_status=auto"
	espFiles := map[string][]byte{
		"loader/loader.conf":            []byte("timeout 0\ndefault appliance.conf\neditor yes\n"),
		"loader/entries/appliance.conf": []byte("title appliance\nlinux /vmlinuz\ninitrd /initrd.img\noptions " + cmdline + "\n"),
	}
	for rel, src := range map[string]string{
		"EFI/BOOT/BOOTX64.EFI": "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
		"vmlinuz":              "boot/vmlinuz-" + kver,
		"initrd.img":           "boot/initrd.img-" + kver,
	} {
		data, err := os.ReadFile(filepath.Join(b.root, src))
		if err != nil {
			return err
		}
		espFiles[rel] = data
	}
	for rel, data := range espFiles {
		p := filepath.Join(espDir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil { //nolint:gosec // G301: folders of the ESP
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil { //nolint:gosec // G306: files of the ESP
			return err
		}
	}
	if err := b.setTimes(espDir); err != nil {
		return err
	}
	if err := b.run(ctx, nil, "mkfs.vfat", "--invariant", "-F", "32", "-i", espVolumeID, "-n", "ESP", "-C", esp, strconv.Itoa(espMiB*1024)); err != nil {
		return err
	}
	mtoolsEnv := []string{"MTOOLS_SKIP_CHECK=1", "SOURCE_DATE_EPOCH=" + strconv.FormatInt(b.o.Epoch.Unix(), 10)}
	for _, dir := range []string{"EFI", "EFI/BOOT", "loader", "loader/entries"} {
		if err := b.run(ctx, mtoolsEnv, "mmd", "-i", esp, "::/"+dir); err != nil {
			return err
		}
	}
	for _, rel := range []string{"EFI/BOOT/BOOTX64.EFI", "loader/loader.conf", "loader/entries/appliance.conf", "vmlinuz", "initrd.img"} {
		if err := b.run(ctx, mtoolsEnv, "mcopy", "-m", "-i", esp, filepath.Join(espDir, rel), "::/"+rel); err != nil {
			return err
		}
	}

	// The root file system, from the tree, owners kept.
	rootImg := b.work("root.img")
	rootBytes := int64(systemDiskBytes) - int64(espMiB+2)<<20
	if err := b.setTimes(b.root); err != nil {
		return err
	}
	e2env := []string{"E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(b.o.Epoch.Unix(), 10), "SOURCE_DATE_EPOCH=" + strconv.FormatInt(b.o.Epoch.Unix(), 10)}
	if err := b.run(ctx, e2env, "mkfs.ext4", "-q", "-F", "-L", "appliance-root", "-U", RootUUID, "-E", "hash_seed="+hashSeed+",lazy_itable_init=1,lazy_journal_init=1",
		"-d", b.root, rootImg, strconv.FormatInt(rootBytes/1024, 10)+"k"); err != nil {
		return err
	}
	if err := b.fixInodeTimes(ctx, rootImg); err != nil {
		return err
	}

	// The disk: GPT with the ESP and the root, written into a file.
	raw := b.work("system.raw")
	if err := createSparse(raw, systemDiskBytes); err != nil {
		return err
	}
	layout := fmt.Sprintf("label: gpt\nlabel-id: %s\nunit: sectors\nfirst-lba: 2048\n\n"+
		"start=2048, size=%d, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=%s, name=\"ESP\"\n"+
		"start=%d, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=%s, name=\"appliance-root\"\n",
		diskGUID, espMiB<<11, espPartGUID, 2048+espMiB<<11, rootBytes/512, rootPartGUID)
	cmd := exec.CommandContext(ctx, "sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw) //nolint:gosec // G204: the build's own image
	cmd.Stdin = strings.NewReader(layout)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sfdisk: %w: %s", err, out)
	}
	if err := copySparseAt(raw, esp, 2048*512); err != nil {
		return err
	}
	if err := copySparseAt(raw, rootImg, int64(2048+espMiB<<11)*512); err != nil {
		return err
	}
	b.res.SystemVMDK = b.work("appliance-system.vmdk")
	if err := ToVMDK(ctx, raw, b.res.SystemVMDK); err != nil {
		return err
	}
	for _, p := range []string{raw, rootImg, esp} {
		_ = os.Remove(p)
	}
	return nil
}

// dataDisk is an empty ext4 file system on the whole disk, owned by the
// appliance's user, labelled for fstab.
func (b *builder) dataDisk(ctx context.Context) error {
	raw := b.work("data.raw")
	if err := createSparse(raw, DataDiskBytes); err != nil {
		return err
	}
	e2env := []string{"E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(b.o.Epoch.Unix(), 10)}
	if err := b.run(ctx, e2env, "mkfs.ext4", "-q", "-F", "-L", DataLabel, "-U", DataUUID, "-m", "0",
		"-E", fmt.Sprintf("hash_seed=%s,lazy_itable_init=1,lazy_journal_init=1,root_owner=%d:%d", hashSeed, b.uid, b.gid), raw); err != nil {
		return err
	}
	b.res.DataVMDK = b.work("appliance-data.vmdk")
	if err := ToVMDK(ctx, raw, b.res.DataVMDK); err != nil {
		return err
	}
	return os.Remove(raw)
}

func (b *builder) writeOVA(context.Context) error {
	var disks []Disk
	var members []Member
	for _, d := range []struct {
		id, path string
		capacity int64
	}{{"system", b.res.SystemVMDK, systemDiskBytes}, {"data", b.res.DataVMDK, DataDiskBytes}} {
		fi, err := os.Stat(d.path)
		if err != nil {
			return err
		}
		populated := fi.Size() * 3 // compressed grains: a rough estimate
		disks = append(disks, Disk{ID: d.id, File: filepath.Base(d.path), Size: fi.Size(), CapacityBytes: d.capacity, PopulatedBytes: min(populated, d.capacity)})
		members = append(members, Member{Name: filepath.Base(d.path), Path: d.path})
	}
	desc, err := OVF(Descriptor{Name: "appliance", Version: b.o.Version, Disks: disks})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(b.o.OutDir, 0o755); err != nil { //nolint:gosec // G301: dist/ is for everyone
		return err
	}
	b.res.OVA = filepath.Join(b.o.OutDir, "appliance-"+b.o.Version+".ova")
	tmp := b.res.OVA + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := WriteOVA(f, "appliance", desc, members, b.o.Epoch); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, b.res.OVA)
}

func createSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// copySparseAt writes src into dst at off, skipping blocks of zeros so
// that dst stays sparse.
func copySparseAt(dst, src string, off int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for pos := int64(0); ; {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off+pos); werr != nil {
				_ = out.Close()
				return werr
			}
		}
		pos += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			_ = out.Close()
			return err
		}
	}
	return out.Close()
}
