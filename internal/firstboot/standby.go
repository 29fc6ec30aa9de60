package firstboot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/ovfenv"
)

// PendingStandbyFile holds the standby the properties ask for until the
// running appliance has become it: the switch goes through the
// appliance's API (which proves the primary reachable first), so it
// happens after the appliance starts, in `appliance firstboot banner`.
const PendingStandbyFile = "etc/appliance/pending-standby.json"

// standbyIssueFile shows a failed switch at the login prompt.
const standbyIssueFile = "etc/issue.d/appliance-standby.issue"

// PendingStandby is the switch to standby still to be made.
type PendingStandby struct {
	URL           string `json:"url"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	CAPEM         string `json:"ca_pem,omitempty"`
	AdminPassword string `json:"admin_password"`
}

// writePending records (mode standby) or forgets (bootstrap) the switch.
func (o *Options) writePending(s ovfenv.Settings) error {
	path := o.path(PendingStandbyFile)
	if s.Mode != "standby" {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("first boot: %w", err)
		}
		return nil
	}
	data, err := json.Marshal(PendingStandby{URL: s.Primary.URL, Username: s.Primary.Username, Password: s.Primary.Password, //nolint:gosec // G117: the pending switch holds the passwords it needs, in a 0600 file deleted once done
		CAPEM: string(s.Primary.CAPEM), AdminPassword: s.AdminPassword})
	if err != nil {
		return fmt.Errorf("first boot: %w", err)
	}
	return o.writeFile(path, data, 0o600, false)
}

// ReadPendingStandby returns the switch to standby still to be made, or
// nil.
func ReadPendingStandby(o Options) (*PendingStandby, error) {
	data, err := os.ReadFile(o.path(PendingStandbyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the pending standby: %w", err)
	}
	var p PendingStandby
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("read the pending standby %s: %w", PendingStandbyFile, err)
	}
	return &p, nil
}

// StandbyDone forgets the pending switch and any problem shown about it.
func StandbyDone(o Options) error {
	for _, rel := range []string{PendingStandbyFile, standbyIssueFile} {
		if err := os.Remove(o.path(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("first boot: %w", err)
		}
	}
	return nil
}

// StandbyFailed shows why the switch to standby failed, on the console
// and at the login prompt; the switch stays pending for the next boot,
// and the appliance serves on in bootstrap mode meanwhile.
func StandbyFailed(o Options, cause error) {
	msg := fmt.Sprintf("\n*** appliance: the standby mode of the vApp properties could not be set; the appliance stays in bootstrap mode: %v\n"+
		"*** appliance: correct guestinfo.primary_* (or the primary) and restart the VM.\n\n", cause)
	if o.Console != nil {
		_, _ = io.WriteString(o.Console, msg)
	}
	if o.Log != nil {
		o.Log.Error("the standby of the vApp properties could not be set; it is tried again at the next boot", "error", cause)
	}
	if err := os.MkdirAll(o.path("etc/issue.d"), 0o755); err == nil { //nolint:gosec // G301: /etc/issue.d is world-readable
		_ = fsutil.WriteFileAtomic(o.path(standbyIssueFile), []byte(strings.ReplaceAll(msg, `\`, `\\`)), 0o644)
	}
}
