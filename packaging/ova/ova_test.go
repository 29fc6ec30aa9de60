package ova_test

// What stands in for vCenter: govmomi's simulator (vcsim), which imports
// an OVA through ovf/importer, the path `govc import.ova` takes, with
// property and network mapping. It does not check SHA-256 manifests nor
// disk contents, so the test checks the manifest itself and runs
// `qemu-img check` on every disk; the boot test boots them.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/ovf/importer"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/appliance-dev/appliance/internal/ovfenv"
	"github.com/appliance-dev/appliance/internal/testkit"
	"github.com/appliance-dev/appliance/packaging/ova"
)

// smallOVA writes an OVA whose two disks are small raw images turned into
// streamOptimized VMDKs by the build's own conversion.
func smallOVA(t *testing.T) string {
	t.Helper()
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	var disks []ova.Disk
	var files []ova.Member
	for i, id := range []string{"system", "data"} {
		raw := filepath.Join(dir, id+".raw")
		if err := os.WriteFile(raw, []byte(strings.Repeat(fmt.Sprintf("%s disk %d\n", id, i), 100000)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(raw, 64<<20); err != nil {
			t.Fatal(err)
		}
		vmdk := filepath.Join(dir, "appliance-"+id+".vmdk")
		if err := ova.ToVMDK(t.Context(), raw, vmdk); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(vmdk)
		if err != nil {
			t.Fatal(err)
		}
		disks = append(disks, ova.Disk{ID: id, File: filepath.Base(vmdk), Size: fi.Size(), CapacityBytes: 64 << 20, PopulatedBytes: 1 << 20})
		files = append(files, ova.Member{Name: filepath.Base(vmdk), Path: vmdk})
	}
	desc, err := ova.OVF(ova.Descriptor{Name: "appliance", Version: "v0.0.0-test", Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "appliance-test.ova")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ova.WriteOVA(f, "appliance", desc, files, time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSmallOVA(t *testing.T) {
	t.Parallel()
	path := smallOVA(t)
	CheckOVA(t, path)
	ImportIntoSimulator(t, path)
}

// TestToVMDKIsReproducible: the same raw image gives the same VMDK bytes
// (qemu-img's random content ID is replaced by a digest).
func TestToVMDKIsReproducible(t *testing.T) {
	t.Parallel()
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "d.raw")
	if err := os.WriteFile(raw, []byte(strings.Repeat("reproducible\n", 50000)), 0o644); err != nil {
		t.Fatal(err)
	}
	var sums []string
	for _, sub := range []string{"a", "b"} {
		// The descriptor names the file: the same name in two folders.
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, sub, "disk.vmdk")
		if err := ova.ToVMDK(t.Context(), raw, out); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, fileSHA256(t, out))
	}
	if sums[0] != sums[1] {
		t.Fatalf("two conversions of one image differ: %s and %s", sums[0], sums[1])
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CheckOVA checks an OVA as vSphere will: a tar with the .ovf first and
// the .mf second, every manifest line `SHA256(name)= hex` matching its
// member, the descriptor parsing with govmomi and declaring the hardware
// and every property, and every disk a streamOptimized VMDK of version 3
// that `qemu-img check` accepts. It returns the descriptor.
func CheckOVA(t *testing.T, path string) *ovf.Envelope {
	t.Helper()
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	sums := map[string]string{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Format != tar.FormatUSTAR && hdr.Format != tar.FormatUnknown {
			t.Errorf("%s: tar format %v, want USTAR", hdr.Name, hdr.Format)
		}
		names = append(names, hdr.Name)
		out, err := os.Create(filepath.Join(dir, hdr.Name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(out, h), tr); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
		sums[hdr.Name] = hex.EncodeToString(h.Sum(nil))
	}
	if len(names) < 4 || names[0] != "appliance.ovf" || names[1] != "appliance.mf" {
		t.Fatalf("OVA members %v: want appliance.ovf first, then appliance.mf, then the disks", names)
	}
	mf, err := os.ReadFile(filepath.Join(dir, "appliance.mf"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^SHA256\(([^)]+)\)= ([0-9a-f]{64})$`)
	listed := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(string(mf), "\n"), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("manifest line %q is not `SHA256(name)= hex`", l)
		}
		if sums[m[1]] != m[2] {
			t.Errorf("manifest: %s is %s, the OVA's member %s", m[1], m[2], sums[m[1]])
		}
		listed[m[1]] = true
	}
	for _, n := range names[1:] {
		if n != "appliance.mf" && !listed[n] {
			t.Errorf("manifest does not list %s", n)
		}
	}
	if !listed["appliance.ovf"] {
		t.Error("manifest does not list the descriptor")
	}

	data, err := os.ReadFile(filepath.Join(dir, "appliance.ovf"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := ovf.Unmarshal(strings.NewReader(string(data)))
	if err != nil {
		t.Fatalf("ovf.Unmarshal: %v", err)
	}
	vs := env.VirtualSystem
	if vs == nil || len(vs.Product) != 1 || len(vs.VirtualHardware) != 1 {
		t.Fatalf("descriptor: want one VirtualSystem with one ProductSection and one VirtualHardwareSection: %+v", vs)
	}
	props := map[string]ovf.Property{}
	var categories []string
	for _, it := range vs.Product[0].Items {
		if it.Category != nil {
			categories = append(categories, *it.Category)
		}
	}
	for _, p := range vs.Product[0].Property {
		props[p.Key] = p
	}
	for _, want := range ovfenv.Properties() {
		p, ok := props[want.Key]
		switch {
		case !ok:
			t.Errorf("the descriptor lacks the property %s", want.Key)
		case p.Label == nil || *p.Label != want.Label || p.Description == nil || *p.Description != want.Description:
			t.Errorf("property %s: label or description differ", want.Key)
		case (p.Password != nil && *p.Password) != want.Password:
			t.Errorf("property %s: password=%v, want %v", want.Key, p.Password != nil && *p.Password, want.Password)
		case p.UserConfigurable == nil || !*p.UserConfigurable:
			t.Errorf("property %s is not user-configurable", want.Key)
		}
	}
	wantCategories := map[string]bool{}
	for _, p := range ovfenv.Properties() {
		wantCategories[p.Category] = true
	}
	if len(props) != len(ovfenv.Properties()) || len(categories) != len(wantCategories) {
		t.Errorf("descriptor: %d properties in %d categories %v, want %d in %d", len(props), len(categories), categories, len(ovfenv.Properties()), len(wantCategories))
	}
	hw := vs.VirtualHardware[0]
	if hw.Transport == nil || !strings.Contains(*hw.Transport, "com.vmware.guestInfo") || !strings.Contains(*hw.Transport, "iso") {
		t.Errorf("transport %v: want com.vmware.guestInfo and iso", hw.Transport)
	}
	var cpus, mem uint
	var nics, disks int
	for _, it := range hw.Item {
		switch uint16(*it.ResourceType) {
		case 3:
			cpus = *it.VirtualQuantity
		case 4:
			mem = *it.VirtualQuantity
		case 10:
			nics++
			if it.ResourceSubType == nil || *it.ResourceSubType != "VmxNet3" || len(it.Connection) != 1 || it.Connection[0] != ova.NetworkName {
				t.Errorf("network adapter %+v: want VmxNet3 on %q", it, ova.NetworkName)
			}
		case 17:
			disks++
		}
	}
	if cpus != 2 || mem != 4096 || nics != 1 || disks != 2 {
		t.Errorf("hardware: %d vCPU, %d MiB, %d adapters, %d disks; want 2, 4096, 1, 2", cpus, mem, nics, disks)
	}
	efi := false
	for _, c := range hw.Config {
		efi = efi || (c.Key == "firmware" && c.Value == "efi")
	}
	if !efi {
		t.Error("the descriptor does not ask for UEFI firmware")
	}
	spec, err := env.ToConfigSpec()
	if err != nil {
		t.Fatalf("govmomi's ToConfigSpec: %v", err)
	}
	if spec.Firmware != "efi" || spec.NumCPUs != 2 || spec.MemoryMB != 4096 {
		t.Errorf("govmomi's config spec of the descriptor: firmware %q, %d vCPU, %d MiB; want efi, 2, 4096", spec.Firmware, spec.NumCPUs, spec.MemoryMB)
	}
	if env.Disk == nil || len(env.Disk.Disks) != 2 || len(env.References) != 2 {
		t.Fatalf("descriptor: want two disks and two files: %+v", env.Disk)
	}
	for i, d := range env.Disk.Disks {
		ref := env.References[i]
		if d.FileRef == nil || *d.FileRef != ref.ID || d.Format == nil || !strings.HasSuffix(*d.Format, "#streamOptimized") {
			t.Errorf("disk %s: file %v, format %v", d.DiskID, d.FileRef, d.Format)
		}
		vmdk := filepath.Join(dir, ref.Href)
		fi, err := os.Stat(vmdk)
		if err != nil {
			t.Fatalf("disk %s: %v", ref.Href, err)
		}
		if uint(fi.Size()) != ref.Size {
			t.Errorf("%s: ovf:size %d, file %d bytes", ref.Href, ref.Size, fi.Size())
		}
		info, err := ova.ReadVMDKInfo(vmdk)
		if err != nil {
			t.Fatal(err)
		}
		if info.Version != 3 || !info.StreamOptimized || fmt.Sprint(info.CapacityBytes) != d.Capacity ||
			!strings.Contains(info.Descriptor, `ddb.toolsVersion = "2147483647"`) || !strings.Contains(info.Descriptor, `ddb.virtualHWVersion = "14"`) {
			t.Errorf("%s: %+v; want a version 3 streamOptimized VMDK of %s bytes with ddb.toolsVersion and ddb.virtualHWVersion", ref.Href, info, d.Capacity)
		}
		if out, err := exec.CommandContext(t.Context(), "qemu-img", "check", "-f", "vmdk", vmdk).CombinedOutput(); err != nil {
			t.Errorf("qemu-img check %s: %v\n%s", ref.Href, err, out)
		}
	}
	return env
}

// ImportIntoSimulator imports the OVA into govmomi's simulator as `govc
// import.ova` does, with every property set and the network mapped onto a
// distributed port group, and checks the virtual machine it made.
func ImportIntoSimulator(t *testing.T, path string) {
	t.Helper()
	want := map[string]string{
		ovfenv.KeyHostname: "registry.enclave.example", ovfenv.KeyIP: "10.0.0.10", ovfenv.KeyNetmask: "24",
		ovfenv.KeyGateway: "10.0.0.1", ovfenv.KeyPassword: "imported-password", ovfenv.KeyNTP: "10.0.0.4",
	}
	model := simulator.VPX()
	defer model.Remove()
	err := model.Run(func(ctx context.Context, c *vim25.Client) error {
		finder := find.NewFinder(c)
		dc, err := finder.DefaultDatacenter(ctx)
		if err != nil {
			return err
		}
		finder.SetDatacenter(dc)
		ds, err := finder.DefaultDatastore(ctx)
		if err != nil {
			return err
		}
		pool, err := finder.ResourcePool(ctx, "DC0_C0/Resources")
		if err != nil {
			return err
		}
		folders, err := dc.Folders(ctx)
		if err != nil {
			return err
		}
		imp := importer.Importer{
			Client: c, Finder: finder, Datacenter: dc, Datastore: ds, ResourcePool: pool, Folder: folders.VmFolder,
			Archive: &importer.TapeArchive{Path: path, Opener: importer.Opener{Client: c}},
			Log:     func(string) (int, error) { return 0, nil },
		}
		name := "appliance-imported"
		opts := importer.Options{Name: &name, DiskProvisioning: "thin", NetworkMapping: []importer.Network{{Name: ova.NetworkName, Network: "DC0_DVPG0"}}}
		for k, v := range want {
			opts.PropertyMapping = append(opts.PropertyMapping, importer.Property{KeyValue: importer.KeyValue{Key: k, Value: v}})
		}
		ref, err := imp.Import(ctx, "*.ovf", opts)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		var vm mo.VirtualMachine
		if err := object.NewVirtualMachine(c, *ref).Properties(ctx, *ref, []string{"config", "network"}, &vm); err != nil {
			return err
		}
		cfg := vm.Config
		// The simulator ignores the descriptor's vmw:Config (firmware);
		// CheckOVA checks it through govmomi's own ToConfigSpec.
		if cfg.Hardware.NumCPU != 2 || cfg.Hardware.MemoryMB != 4096 {
			t.Errorf("imported VM: %d vCPU, %d MiB", cfg.Hardware.NumCPU, cfg.Hardware.MemoryMB)
		}
		if cfg.VAppConfig == nil {
			return fmt.Errorf("the imported VM has no vApp configuration")
		}
		got := map[string]string{}
		// (The simulator files every property under the last category;
		// CheckOVA checks the categories in the descriptor.)
		for _, p := range cfg.VAppConfig.GetVmConfigInfo().Property {
			got[p.Id] = p.Value
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("imported vApp property %s = %q, want %q", k, got[k], v)
			}
		}
		for _, p := range ovfenv.Properties() {
			if _, ok := got[p.Key]; !ok {
				t.Errorf("the imported VM lacks the property %s", p.Key)
			}
		}
		nets := object.VirtualDeviceList(cfg.Hardware.Device).SelectByType((*types.VirtualVmxnet3)(nil))
		if len(nets) != 1 {
			return fmt.Errorf("imported VM: %d vmxnet3 adapters, want 1", len(nets))
		}
		backing, ok := nets[0].(*types.VirtualVmxnet3).Backing.(*types.VirtualEthernetCardDistributedVirtualPortBackingInfo)
		if !ok {
			return fmt.Errorf("the adapter is not on the distributed port group DC0_DVPG0: %T", nets[0].(*types.VirtualVmxnet3).Backing)
		}
		pg := object.NewDistributedVirtualPortgroup(c, types.ManagedObjectReference{Type: "DistributedVirtualPortgroup", Value: backing.Port.PortgroupKey})
		pgName, err := pg.ObjectName(ctx)
		if err != nil || pgName != "DC0_DVPG0" {
			t.Errorf("the adapter is on %q (%v), want DC0_DVPG0", pgName, err)
		}
		if disks := object.VirtualDeviceList(cfg.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)); len(disks) != 2 {
			t.Errorf("imported VM: %d disks, want 2", len(disks))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
