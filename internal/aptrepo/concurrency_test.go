package aptrepo_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// TestConcurrentChangesAndClients runs adds, removes and rollbacks from
// several goroutines while clients read the repository the way apt does:
// InRelease, then the index it names by hash. Every InRelease must verify
// and every index it names must be there with the hash it says.
func TestConcurrentChangesAndClients(t *testing.T) {
	r := openRepos(t, t.TempDir(), aptrepo.Options{KeepSnapshots: 50}) // the rollbacks go back to the first publish
	defer r.Close()
	ctx := t.Context()
	url := serve(t, r.Handler())
	pub, _ := r.PublicKey()
	keyring, err := openpgp.ReadKeyRing(bytes.NewReader(pub))
	if err != nil {
		t.Fatal(err)
	}
	deb := func(name, version, payload string) aptrepo.Deb {
		return aptrepo.DebBytes(name+".deb", testkit.GoDeb(t, pkg{Name: name, Version: version, Arch: "amd64"}.control(), payload))
	}
	// A first publish, so that clients have something to read from the start.
	first, err := r.Add(ctx, "ubuntu", "noble", "main", []aptrepo.Deb{deb("seed", "1.0", "seed")}, "setup")
	if err != nil {
		t.Fatal(err)
	}

	const writers, rounds = 4, 6
	var (
		wg      sync.WaitGroup
		done    atomic.Bool
		checked atomic.Int64
		errs    = make(chan error, 100)
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				name := fmt.Sprintf("w%d-p%d", w, i)
				comp := []string{"main", "universe"}[i%2]
				if _, err := r.Add(ctx, "ubuntu", "noble", comp, []aptrepo.Deb{deb(name, "1.0", name)}, name); err != nil {
					errs <- fmt.Errorf("add %s: %w", name, err)
					return
				}
				switch i {
				case 2:
					if _, err := r.Remove(ctx, "ubuntu", "noble", name, "", name); err != nil {
						errs <- fmt.Errorf("remove %s: %w", name, err)
						return
					}
				case 4:
					if _, err := r.Rollback(ctx, "ubuntu", "noble", first.ID, name); err != nil {
						errs <- fmt.Errorf("rollback: %w", err)
						return
					}
				}
				if _, err := r.Add(ctx, "debian", fmt.Sprintf("d%d", w), "main", []aptrepo.Deb{deb(name, "1.0", name)}, name); err != nil {
					errs <- fmt.Errorf("add %s elsewhere: %w", name, err)
					return
				}
				if _, err := r.Search(ctx, "w*"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for range 3 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for !done.Load() {
				if err := checkConsistent(url, "ubuntu", "noble", keyring); err != nil {
					errs <- err
					return
				}
				checked.Add(1)
			}
		}()
	}
	wg.Wait()
	done.Store(true)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if checked.Load() == 0 {
		t.Fatal("no client read completed")
	}
	t.Logf("%d consistent client reads during %d changes", checked.Load(), writers*rounds*2)
	h, err := r.History(ctx, "ubuntu", "noble")
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + writers*rounds + writers*2; len(h) != want {
		t.Fatalf("history has %d records, want %d", len(h), want)
	}
}

// checkConsistent reads InRelease, verifies it, and fetches every Packages
// index it names by hash, checking each hash.
func checkConsistent(url, repo, dist string, keyring openpgp.EntityList) error {
	base := url + "/" + repo + "/dists/" + dist + "/"
	body, err := fetch(base + "InRelease")
	if err != nil {
		return err
	}
	blk, _ := clearsign.Decode(body)
	if blk == nil {
		return fmt.Errorf("InRelease is not clear-signed")
	}
	if _, err := blk.VerifySignature(keyring, nil); err != nil {
		return fmt.Errorf("InRelease does not verify: %w", err)
	}
	inSHA256 := false
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(blk.Plaintext))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, " ") {
			inSHA256 = line == "SHA256:"
			continue
		}
		f := strings.Fields(line)
		if !inSHA256 || len(f) != 3 || !strings.HasSuffix(f[2], "/Packages.gz") {
			continue
		}
		dir := f[2][:strings.LastIndex(f[2], "/")]
		data, err := fetch(base + dir + "/by-hash/SHA256/" + f[0])
		if err != nil {
			return fmt.Errorf("%s named by InRelease: %w", f[2], err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != f[0] {
			return fmt.Errorf("%s: hash mismatch", f[2])
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("InRelease names no Packages.gz:\n%s", blk.Plaintext)
	}
	return nil
}

func fetch(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return buf.Bytes(), nil
}
