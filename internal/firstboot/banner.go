package firstboot

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/appliance-dev/appliance/internal/pki"
)

// BannerFile is the login prompt's part the banner writes.
const BannerFile = "etc/issue.d/appliance.issue"

// BannerInfo is what the console banner shows.
type BannerInfo struct {
	Version string
	// Names are the certificate's configured names and the machine's
	// addresses; the first one is used in the URLs.
	Names []string
}

// WaitForCA waits, at most wait, for the appliance to have written its CA
// certificate into the data directory, and returns it.
func WaitForCA(ctx context.Context, o Options, wait time.Duration) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	path := filepath.Join(o.dataDir(), pki.CACertFile)
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			if block, _ := pem.Decode(data); block != nil {
				cert, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return nil, fmt.Errorf("banner: parse %s: %w", path, err)
				}
				return cert, nil
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("banner: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("banner: the appliance wrote no %s within %s", path, wait)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Fingerprint is a certificate's SHA-256 fingerprint as openssl prints it.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// Banner renders the console banner: the URLs, the CA's fingerprint, and
// where the logs are.
func Banner(info BannerInfo, ca *x509.Certificate) string {
	host := "<address>"
	if len(info.Names) > 0 {
		host = info.Names[0]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nappliance %s: the air-gap registry is running.\n\n", info.Version)
	fmt.Fprintf(&b, "  Registry     https://%s/  (anonymous pull, push as a user)\n", host)
	fmt.Fprintf(&b, "  API          https://%s/api/v1/\n", host)
	fmt.Fprintf(&b, "  CA           http://%s/ca.crt\n", host)
	fmt.Fprintf(&b, "  CA SHA-256   %s\n", Fingerprint(ca))
	if len(info.Names) > 1 {
		fmt.Fprintf(&b, "  Also as      %s\n", strings.Join(info.Names[1:], ", "))
	}
	b.WriteString("  Admin        user admin, the password of the vApp property guestinfo.admin_password\n")
	b.WriteString("  Logs         journalctl -u appliance -u appliance-firstboot\n\n")
	return b.String()
}

// ShowBanner writes the banner to the console and to the login prompt.
func ShowBanner(o Options, text string) error {
	if o.Console != nil {
		_, _ = io.WriteString(o.Console, text)
	}
	// agetty expands backslash escapes in issue files.
	return o.writeFile(o.path(BannerFile), []byte(strings.ReplaceAll(text, `\`, `\\`)), 0o644, false)
}
