package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/audit"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestAuditTrail pushes with skopeo, reads the push back with `appliance
// audit --json`, and proves that `appliance audit --verify` notices an
// entry edited on disk, and, after a restart, entries cut from the end.
func TestAuditTrail(t *testing.T) {
	testkit.Need(t, "skopeo")
	t.Parallel()
	a := startAppliance(t, t.TempDir())
	img, digest := ociLayout(t, 32<<10, 2)
	out, err := pushOCI(t, a, img, "library/app:1.0", "admin:"+a.password)
	mustOK(t, "skopeo push", out, err)
	out, err = pushOCI(t, a, img, "library/app:2.0", "admin:not-the-password")
	mustFail(t, "skopeo push with a wrong password", out, err)
	admin := []string{"--username", "admin", "--password-stdin"}
	stdin := a.password + "\n"

	out, err = a.cli(stdin, append([]string{"audit", "--json", "--since", "1h"}, admin...)...)
	mustOK(t, "appliance audit --json", out, err)
	var tag, refused *audit.Entry
	blobs := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e audit.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit --json printed a line that is not an entry: %q: %v", line, err)
		}
		switch {
		case e.Action == audit.ActionTag && e.Target == "library/app:1.0@"+digest.String():
			tag = &e
		case e.Action == audit.ActionToken && e.Details["user"] == "admin":
			refused = &e
		case e.Action == audit.ActionPushBlob && e.Outcome == audit.OK:
			blobs++
		}
	}
	if tag == nil || tag.Actor != "admin" || tag.Remote != "127.0.0.1" || tag.Outcome != audit.OK || len(tag.Hash) != 64 {
		t.Fatalf("no entry of skopeo's push by admin:\n%s", out)
	}
	if blobs != 3 || refused == nil || refused.Outcome != audit.Refused || refused.Actor != audit.Anonymous {
		t.Fatalf("%d blob entries (want 3), refused push %+v:\n%s", blobs, refused, out)
	}
	out, err = a.cli(stdin, append([]string{"audit", "--action", "registry.tag"}, admin...)...)
	mustOK(t, "appliance audit --action", out, err)
	if !strings.Contains(out, "library/app:1.0@"+digest.String()) || strings.Contains(out, "auth.token") {
		t.Fatalf("audit --action registry.tag:\n%s", out)
	}
	out, err = a.cli(stdin, append([]string{"audit", "--verify"}, admin...)...)
	mustOK(t, "appliance audit --verify", out, err)
	if !strings.Contains(out, "audit trail intact") || !strings.Contains(out, "from the first entry ever written") {
		t.Fatalf("audit --verify of an untouched trail:\n%s", out)
	}
	if out, err := a.cli("", "audit", "--verify"); err == nil {
		t.Fatalf("anonymous audit --verify succeeded:\n%s", out)
	}

	// Someone with a shell edits who pushed.
	path := filepath.Join(a.dataDir, "audit", "audit.jsonl")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	needle := []byte(`"actor":"admin","remote":"127.0.0.1","action":"registry.tag"`)
	if !bytes.Contains(data, needle) {
		t.Fatalf("the tag entry is not in %s as docs/audit.md shows it:\n%s", path, data)
	}
	if err := os.WriteFile(path, bytes.Replace(data, needle, []byte(`"actor":"eve","remote":"127.0.0.1","action":"registry.tag"`), 1), 0o640); err != nil {
		t.Fatal(err)
	}
	out, err = a.cli(stdin, append([]string{"audit", "--verify"}, admin...)...)
	mustFail(t, "appliance audit --verify of an edited trail", out, err, "audit trail BROKEN", "first broken link: [edited]")
	if want := "seq " + seqString(tag.Seq) + " (audit.jsonl line " + seqString(tag.Seq) + ") was changed"; !strings.Contains(out, want) {
		t.Fatalf("audit --verify does not name the edited entry (%q):\n%s", want, out)
	}

	// After a clean stop, the end of the trail is cut; the next start notices.
	a.stop()
	data, _ = os.ReadFile(path)
	lines := bytes.SplitAfter(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if err := os.WriteFile(path, bytes.Join(lines[:len(lines)-1], nil), 0o640); err != nil {
		t.Fatal(err)
	}
	a.start()
	out, err = a.cli(stdin, append([]string{"audit", "--verify", "--json"}, admin...)...)
	mustFail(t, "appliance audit --verify after a cut", out, err, `"kind": "recorded"`, "its end was removed")
}

func seqString(n uint64) string { return strconv.FormatUint(n, 10) }
