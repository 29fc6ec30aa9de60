// Package ova builds the appliance's OVA: a minimal Debian system from
// Debian's packages (debootstrap) with the appliance as a hardened systemd
// service, a data disk of its own, the OVF descriptor whose ProductSection
// declares the vApp properties internal/ovfenv reads at boot, the SHA-256
// manifest, and the tar with the descriptor first. Everything is built
// from files, without loop devices or mounts (mkfs.ext4 -d, mtools,
// sfdisk on an image file), so that it builds as root on a plain machine.
// packaging/ova/mkova is its command; `make ova` runs it.
package ova

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/appliance-dev/appliance/internal/ovfenv"
)

// Hardware of the virtual machine.
const (
	CPUs      = 2
	MemoryMiB = 4096
	// NetworkName is the OVF network the adapter connects to; an import
	// maps it onto a port group.
	NetworkName = "VM Network"
	// streamOptimized is the disk format vSphere imports.
	streamOptimized = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
)

// Disk is one disk of the OVA, as the descriptor names it.
type Disk struct {
	// ID is the diskId: "system" or "data".
	ID string
	// File is the VMDK's name inside the OVA.
	File string
	// Size is the VMDK file's size in bytes.
	Size int64
	// CapacityBytes is the virtual disk's size.
	CapacityBytes int64
	// PopulatedBytes estimates the data the disk holds.
	PopulatedBytes int64
}

// Descriptor is what the OVF descriptor says besides the disks.
type Descriptor struct {
	Name    string // the virtual system's name: "appliance"
	Version string
	Disks   []Disk // system first
}

var descriptorTmpl = template.Must(template.New("ovf").Funcs(template.FuncMap{
	"x":   xmlEscape,
	"add": func(a, b int) int { return a + b },
}).Parse(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
{{- range $i, $d := .Disks}}
    <File ovf:id="file{{add $i 1}}" ovf:href="{{x $d.File}}" ovf:size="{{$d.Size}}"/>
{{- end}}
  </References>
  <DiskSection>
    <Info>Virtual disks: the system (replaced on upgrade) and the data, mounted at /var/lib/appliance</Info>
{{- range $i, $d := .Disks}}
    <Disk ovf:diskId="{{$d.ID}}" ovf:fileRef="file{{add $i 1}}" ovf:capacity="{{$d.CapacityBytes}}" ovf:capacityAllocationUnits="byte" ovf:populatedSize="{{$d.PopulatedBytes}}" ovf:format="{{$.Format}}"/>
{{- end}}
  </DiskSection>
  <NetworkSection>
    <Info>The network the registry serves on</Info>
    <Network ovf:name="{{.Network}}">
      <Description>The network of the registry's clients</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{{x .Name}}">
    <Info>The air-gap registry appliance</Info>
    <Name>{{x .Name}}</Name>
    <AnnotationSection>
      <Info>About this appliance</Info>
      <Annotation>appliance {{x .Version}}: the first registry of an air-gapped data centre, and its cold standby. Fill in the properties (an admin password is required), power on, and it serves HTTPS on 443. See docs/ova.md.</Annotation>
    </AnnotationSection>
    <ProductSection ovf:required="false">
      <Info>Configuration of the appliance, applied at every boot</Info>
      <Product>appliance</Product>
      <Vendor>appliance</Vendor>
      <Version>{{x .Version}}</Version>
      <FullVersion>{{x .Version}}</FullVersion>
{{- $cat := ""}}
{{- range .Properties}}
{{- if ne .Category $cat}}{{$cat = .Category}}
      <Category>{{x .Category}}</Category>
{{- end}}
      <Property ovf:key="{{x .Key}}" ovf:type="{{.Type}}"{{if .Qualifiers}} ovf:qualifiers="{{x .Qualifiers}}"{{end}} ovf:userConfigurable="true" ovf:value="{{x .Default}}"{{if .Password}} ovf:password="true"{{end}}>
        <Label>{{x .Label}}</Label>
        <Description>{{x .Description}}</Description>
      </Property>
{{- end}}
    </ProductSection>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian12_64Guest">
      <Info>Debian GNU/Linux 12 (64-bit)</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo iso">
      <Info>{{.CPUs}} vCPU, {{.MemoryMiB}} MiB, vmxnet3, paravirtual SCSI, UEFI</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{{x .Name}}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{{.CPUs}} virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{{.CPUs}}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory size</rasd:Description>
        <rasd:ElementName>{{.MemoryMiB}} MiB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{{.MemoryMiB}}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>IDE controller</rasd:Description>
        <rasd:ElementName>IDE controller 0</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:Description>CD-ROM of the OVF environment's iso transport</rasd:Description>
        <rasd:ElementName>CD-ROM 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:Parent>4</rasd:Parent>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
{{- range $i, $d := .Disks}}
      <Item>
        <rasd:AddressOnParent>{{$i}}</rasd:AddressOnParent>
        <rasd:Description>The {{$d.ID}} disk</rasd:Description>
        <rasd:ElementName>Hard disk {{add $i 1}} ({{$d.ID}})</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/{{$d.ID}}</rasd:HostResource>
        <rasd:InstanceID>{{add $i 6}}</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
{{- end}}
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{{.Network}}</rasd:Connection>
        <rasd:Description>VMXNET3 Ethernet adapter on "{{.Network}}"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>{{add (len .Disks) 6}}</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="true"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`))

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// OVF renders the descriptor. govmomi cannot write one (its Envelope.Write
// drops the ovf: prefixes), so it comes from a template; the tests parse
// it back with govmomi and import it into its simulator.
func OVF(d Descriptor) ([]byte, error) {
	if len(d.Disks) == 0 || d.Disks[0].ID != "system" {
		return nil, fmt.Errorf("ovf: the first disk must be the system disk")
	}
	var b bytes.Buffer
	err := descriptorTmpl.Execute(&b, map[string]any{
		"Name": d.Name, "Version": d.Version, "Disks": d.Disks,
		"Format": streamOptimized, "Network": NetworkName,
		"CPUs": CPUs, "MemoryMiB": MemoryMiB, "Properties": ovfenv.Properties(),
	})
	if err != nil {
		return nil, fmt.Errorf("ovf: %w", err)
	}
	return b.Bytes(), nil
}

// Member is one file of the OVA.
type Member struct {
	Name string
	Path string // on disk; Data when empty
	Data []byte
}

func (m Member) open() (io.ReadCloser, int64, error) {
	if m.Path == "" {
		return io.NopCloser(bytes.NewReader(m.Data)), int64(len(m.Data)), nil
	}
	f, err := os.Open(m.Path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// Manifest returns the .mf of members: one `SHA256(name)= hex` line each.
func Manifest(members []Member) ([]byte, error) {
	var b bytes.Buffer
	for _, m := range members {
		r, _, err := m.open()
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		h := sha256.New()
		_, err = io.Copy(h, r)
		_ = r.Close()
		if err != nil {
			return nil, fmt.Errorf("manifest: %s: %w", m.Name, err)
		}
		fmt.Fprintf(&b, "SHA256(%s)= %s\n", m.Name, hex.EncodeToString(h.Sum(nil)))
	}
	return b.Bytes(), nil
}

// WriteOVA writes the OVA to w: a USTAR tar holding the descriptor first
// (name.ovf), then the manifest (name.mf), then the files in the order of
// the descriptor's References. Headers carry mtime, with no owner names,
// so that the same members make the same tar.
func WriteOVA(w io.Writer, name string, descriptor []byte, files []Member, mtime time.Time) error {
	members := append([]Member{{Name: name + ".ovf", Data: descriptor}}, files...)
	mf, err := Manifest(members)
	if err != nil {
		return err
	}
	members = append([]Member{members[0], {Name: name + ".mf", Data: mf}}, files...)
	tw := tar.NewWriter(w)
	for _, m := range members {
		r, size, err := m.open()
		if err != nil {
			return fmt.Errorf("write the OVA: %w", err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: m.Name, Size: size, Mode: 0o644, ModTime: mtime.UTC().Truncate(time.Second), Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			_ = r.Close()
			return fmt.Errorf("write the OVA: %s: %w", m.Name, err)
		}
		_, err = io.Copy(tw, r)
		_ = r.Close()
		if err != nil {
			return fmt.Errorf("write the OVA: %s: %w", m.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write the OVA: %w", err)
	}
	return nil
}
