// Package ovfenv reads the OVF environment vCenter hands a virtual machine
// deployed from the appliance's OVA, and turns its vApp properties into
// validated Settings. It also owns the list of those properties: the OVA's
// descriptor (packaging/ova) declares exactly what Properties returns, so
// the form vCenter shows and what first boot accepts cannot drift apart.
//
// Nothing here changes the machine: Parse reads XML, Validate checks every
// property and reports every problem at once. internal/firstboot applies
// the result.
package ovfenv

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// envNS is the namespace of the OVF environment document (DMTF DSP0243).
const envNS = "http://schemas.dmtf.org/ovf/environment/1"

// maxEnvBytes bounds the environment document: a few PEM blobs and short
// strings fit many times over.
const maxEnvBytes = 1 << 20

// ErrMalformed marks an environment document that is not the XML vCenter
// writes.
var ErrMalformed = errors.New("malformed OVF environment")

type environment struct {
	XMLName    xml.Name `xml:"http://schemas.dmtf.org/ovf/environment/1 Environment"`
	Properties []struct {
		Key   string `xml:"http://schemas.dmtf.org/ovf/environment/1 key,attr"`
		Value string `xml:"http://schemas.dmtf.org/ovf/environment/1 value,attr"`
	} `xml:"http://schemas.dmtf.org/ovf/environment/1 PropertySection>Property"`
}

// Parse reads an OVF environment document (what `vmtoolsd --cmd "info-get
// guestinfo.ovfEnv"` prints, or ovf-env.xml on the ISO transport's CD-ROM)
// and returns its properties by key. A key given twice is an error: which
// value was meant cannot be known.
func Parse(r io.Reader) (map[string]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxEnvBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the OVF environment: %w", err)
	}
	if len(data) > maxEnvBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, maxEnvBytes)
	}
	var env environment
	if err := xml.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	props := make(map[string]string, len(env.Properties))
	for _, p := range env.Properties {
		if p.Key == "" {
			return nil, fmt.Errorf("%w: a Property without oe:key", ErrMalformed)
		}
		if _, dup := props[p.Key]; dup {
			return nil, fmt.Errorf("%w: property %s is given twice", ErrMalformed, p.Key)
		}
		props[p.Key] = p.Value
	}
	return props, nil
}

// Marshal writes an OVF environment document holding props, as vCenter
// would (keys sorted). Tests and the OVA's boot test use it to make the
// ovf-env.xml of an ISO transport.
func Marshal(props map[string]string) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<Environment xmlns="` + envNS + `" xmlns:oe="` + envNS + `" oe:id="">` + "\n")
	b.WriteString("  <PropertySection>\n")
	for _, k := range sortedKeys(props) {
		b.WriteString(`    <Property oe:key="`)
		_ = xml.EscapeText(&b, []byte(k))
		b.WriteString(`" oe:value="`)
		_ = xml.EscapeText(&b, []byte(props[k]))
		b.WriteString("\"/>\n")
	}
	b.WriteString("  </PropertySection>\n</Environment>\n")
	return []byte(b.String())
}
