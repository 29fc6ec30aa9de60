package ova

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
)

// VMDK header facts (VMware's Virtual Disk Format 5.0, "hosted sparse
// extent header"). vSphere refuses a streamOptimized disk whose version is
// below 3 ("sparse VMDK version too old") and guest customization wants a
// ddb.toolsVersion in the descriptor.
const (
	vmdkMagic      = 0x564d444b // "KDMV" little-endian
	vmdkVersion    = 3
	flagCompressed = 1 << 16
	flagMarkers    = 1 << 17
	// toolsVersion 2147483647 is "tools managed by the guest" (open-vm-tools).
	toolsVersion = "2147483647"
	hwVersion    = "14"
)

// ToVMDK converts the raw disk image raw to a streamOptimized VMDK at out
// with qemu-img, then makes its descriptor's content ID (random in
// qemu-img's output) a digest of the image, so that the same image gives
// the same VMDK.
func ToVMDK(ctx context.Context, raw, out string) error {
	opts := "subformat=streamOptimized,adapter_type=lsilogic,hwversion=" + hwVersion + ",toolsversion=" + toolsVersion
	cmd := exec.CommandContext(ctx, "qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", opts, raw, out) //nolint:gosec // G204: the build's own files
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("convert %s to a streamOptimized VMDK: %w: %s", raw, err, msg)
	}
	return fixCID(out)
}

// qemu-img writes the CID without leading zeros.
var cidRE = regexp.MustCompile(`(?m)^CID=[0-9a-f]{1,8}$`)

// fixCID rewrites the CID of out's embedded descriptor in place, with a
// value derived from the rest of the file.
func fixCID(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("vmdk %s: %w", path, err)
	}
	defer f.Close()
	h, desc, descOff, err := readVMDKHeader(f)
	if err != nil {
		return fmt.Errorf("vmdk %s: %w", path, err)
	}
	loc := cidRE.FindIndex(desc)
	if loc == nil {
		return fmt.Errorf("vmdk %s: the descriptor has no CID line", path)
	}
	sum := sha256.New()
	start := int64(h.OverHead) * 512 //nolint:gosec // G115: bounded by readVMDKHeader
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return fmt.Errorf("vmdk %s: %w", path, err)
	}
	if _, err := io.Copy(sum, f); err != nil {
		return fmt.Errorf("vmdk %s: %w", path, err)
	}
	cid := fmt.Sprintf("CID=%08x", binary.BigEndian.Uint32(sum.Sum(nil)[:4])&0x7fffffff|1)
	// The descriptor is NUL-padded to its sectors: rewrite it whole.
	text := bytes.TrimRight(desc, "\x00")
	loc = cidRE.FindIndex(text)
	next := append(append(append([]byte{}, text[:loc[0]]...), cid...), text[loc[1]:]...)
	if len(next) > len(desc) {
		return fmt.Errorf("vmdk %s: no room in the descriptor for the CID", path)
	}
	padded := make([]byte, len(desc))
	copy(padded, next)
	if _, err := f.WriteAt(padded, descOff); err != nil {
		return fmt.Errorf("vmdk %s: %w", path, err)
	}
	return f.Sync()
}

// vmdkHeader is the sparse extent header (512 bytes, little-endian).
type vmdkHeader struct {
	Magic              uint32
	Version            uint32
	Flags              uint32
	Capacity           uint64
	GrainSize          uint64
	DescriptorOffset   uint64
	DescriptorSize     uint64
	NumGTEsPerGT       uint32
	RGDOffset          uint64
	GDOffset           uint64
	OverHead           uint64
	UncleanShutdown    byte
	SingleEndLineChar  byte
	NonEndLineChar     byte
	DoubleEndLineChar1 byte
	DoubleEndLineChar2 byte
	CompressAlgorithm  uint16
}

// VMDKInfo is what the header and the embedded descriptor of a VMDK say.
type VMDKInfo struct {
	Version         uint32
	StreamOptimized bool // compressed grains with markers, and the descriptor says so
	CapacityBytes   int64
	Descriptor      string
}

// ReadVMDKInfo reads a VMDK's header and descriptor.
func ReadVMDKInfo(path string) (VMDKInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return VMDKInfo{}, err
	}
	defer f.Close()
	h, desc, _, err := readVMDKHeader(f)
	if err != nil {
		return VMDKInfo{}, fmt.Errorf("vmdk %s: %w", path, err)
	}
	d := string(bytes.TrimRight(desc, "\x00"))
	return VMDKInfo{
		Version:         h.Version,
		StreamOptimized: h.Flags&flagCompressed != 0 && h.Flags&flagMarkers != 0 && h.CompressAlgorithm == 1 && regexp.MustCompile(`(?m)^createType="streamOptimized"$`).MatchString(d),
		CapacityBytes:   int64(h.Capacity) * 512, //nolint:gosec // G115: bounded by readVMDKHeader
		Descriptor:      d,
	}, nil
}

func readVMDKHeader(f *os.File) (vmdkHeader, []byte, int64, error) {
	var h vmdkHeader
	if err := binary.Read(io.NewSectionReader(f, 0, 512), binary.LittleEndian, &h); err != nil {
		return h, nil, 0, fmt.Errorf("read the header: %w", err)
	}
	if h.Magic != vmdkMagic {
		return h, nil, 0, errors.New("not a sparse VMDK (no KDMV magic)")
	}
	if h.DescriptorOffset == 0 || h.DescriptorSize == 0 || h.DescriptorSize > 2048 {
		return h, nil, 0, errors.New("no embedded descriptor")
	}
	if h.DescriptorOffset > 1<<40 || h.OverHead > 1<<40 || h.Capacity > 1<<50 {
		return h, nil, 0, errors.New("header fields out of range")
	}
	off := int64(h.DescriptorOffset) * 512 //nolint:gosec // G115: bounded just above
	desc := make([]byte, h.DescriptorSize*512)
	if _, err := f.ReadAt(desc, off); err != nil {
		return h, nil, 0, fmt.Errorf("read the descriptor: %w", err)
	}
	return h, desc, off, nil
}
