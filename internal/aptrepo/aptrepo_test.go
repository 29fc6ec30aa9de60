package aptrepo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/testkit"
)

func TestOpenMakesTheKeyOnceAndReusesIt(t *testing.T) {
	dir := filepath.Join(sharedKeys(t), "..") // made by a first Open
	fi, err := os.Stat(filepath.Join(dir, "keys", "secring.gpg"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("secring.gpg has mode %v, want 0600", fi.Mode().Perm())
	}
	// A copy of that folder opens with the same key.
	r, _ := newRepos(t)
	bin, arm := r.PublicKey()
	want, err := os.ReadFile(filepath.Join(dir, "keys", "pubring.gpg"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bin, want) {
		t.Fatal("PublicKey differs from the key made by the first Open")
	}
	if !bytes.HasPrefix(arm, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")) || !bytes.Contains(arm, []byte("\n=")) {
		t.Fatalf("armored key lacks its header or CRC24 line:\n%s", arm)
	}
}

func TestOpenRefusesABadKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(keys string) error
		wantErr error
		wantIn  string
	}{
		{"corrupt secret keyring", func(keys string) error {
			return os.WriteFile(filepath.Join(keys, "secring.gpg"), []byte("not a key"), 0o600)
		}, aptrepo.ErrCorruptKey, "secring.gpg"},
		{"truncated secret keyring", func(keys string) error {
			b, err := os.ReadFile(filepath.Join(keys, "secring.gpg"))
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(keys, "secring.gpg"), b[:len(b)/2], 0o600)
		}, aptrepo.ErrCorruptKey, "secring.gpg"},
		{"secret keyring gone", func(keys string) error {
			return os.Remove(filepath.Join(keys, "secring.gpg"))
		}, aptrepo.ErrMissingKey, "secring.gpg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, dir := newRepos(t)
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(filepath.Join(dir, "keys")); err != nil {
				t.Fatal(err)
			}
			_, err := aptrepo.Open(t.Context(), aptrepo.Options{Dir: dir})
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), filepath.Join(dir, "keys", tc.wantIn)) {
				t.Fatalf("Open = %v, want %v naming %s", err, tc.wantErr, tc.wantIn)
			}
		})
	}
}

func TestOpenRefusesBadOptions(t *testing.T) {
	for _, o := range []aptrepo.Options{{}, {Dir: t.TempDir(), KeepSnapshots: -1}, {Dir: t.TempDir(), KeepSnapshots: 5000}, {Dir: t.TempDir(), MaxDebSize: -1}} {
		if _, err := aptrepo.Open(t.Context(), o); !errors.Is(err, aptrepo.ErrInvalid) {
			t.Errorf("Open(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

func TestOpenTwice(t *testing.T) {
	_, dir := newRepos(t)
	staged := filepath.Join(dir, "tmp", "add-in-progress")
	if err := os.MkdirAll(staged, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := aptrepo.Open(t.Context(), aptrepo.Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "db")) {
		t.Fatalf("a second Open of an open directory = %v, want an error naming its database", err)
	}
	if _, err := os.Stat(staged); err != nil {
		t.Fatalf("the refused Open touched the first one's staging space: %v", err)
	}
}

// published is what a client sees of repo/dist: the InRelease bytes (nil
// when there is none) and the package list.
func published(t *testing.T, r *aptrepo.Repos, url, repo, dist string) ([]byte, []aptrepo.Package) {
	t.Helper()
	resp, err := http.Get(url + "/" + repo + "/dists/" + dist + "/InRelease")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		body = nil
	}
	pkgs, err := r.Packages(t.Context(), repo, dist)
	if err != nil && !errors.Is(err, aptrepo.ErrNotFound) {
		t.Fatal(err)
	}
	return body, pkgs
}

func TestAddRefuses(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	debDir := t.TempDir()
	good := buildDeb(t, debDir, pkg{Name: "good", Version: "1.0", Arch: "amd64"})
	goodBytes, _ := os.ReadFile(good)
	other := buildDeb(t, t.TempDir(), pkg{Name: "good", Version: "1.0", Arch: "amd64", Payload: "rebuilt"}) // same name+version+arch, other content
	otherDist := buildDeb(t, t.TempDir(), pkg{Name: "shared", Version: "1.0", Arch: "amd64", Payload: "other build"})
	ctl := pkg{Name: "fine", Version: "1.0", Arch: "amd64"}.control()

	for _, tc := range []struct {
		name      string
		repo      string
		component string
		debs      []aptrepo.Deb
		opts      aptrepo.Options
		wantErr   error
		wantFile  string // the file the error must name
		wantIn    string // and a word of the problem
	}{
		{"a text file", "", "", []aptrepo.Deb{aptrepo.DebBytes("notes.txt", []byte("hello\n"))}, aptrepo.Options{}, aptrepo.ErrNotDeb, "notes.txt", "ar archive"},
		{"an empty file", "", "", []aptrepo.Deb{aptrepo.DebBytes("empty.deb", nil)}, aptrepo.Options{}, aptrepo.ErrNotDeb, "empty.deb", "ar archive"},
		{"a gzip named .deb", "", "", []aptrepo.Deb{aptrepo.DebBytes("fake.deb", []byte("\x1f\x8b\x08\x00\x00\x00\x00\x00"))}, aptrepo.Options{}, aptrepo.ErrNotDeb, "fake.deb", "ar archive"},
		{"an ar archive that is not a deb", "", "", []aptrepo.Deb{aptrepo.DebBytes("lib.deb", testkit.ArArchive([][2][]byte{{[]byte("foo.o"), []byte("x")}}))}, aptrepo.Options{}, aptrepo.ErrNotDeb, "lib.deb", "debian-binary"},
		{"a deb of format 3", "", "", []aptrepo.Deb{aptrepo.DebBytes("v3.deb", testkit.ArArchive([][2][]byte{{[]byte("debian-binary"), []byte("3.0\n")}}))}, aptrepo.Options{}, aptrepo.ErrNotDeb, "v3.deb", "format"},
		{"a truncated deb", "", "", []aptrepo.Deb{aptrepo.DebBytes("half.deb", goodBytes[:len(goodBytes)/2])}, aptrepo.Options{}, aptrepo.ErrNotDeb, "half.deb", "size"},
		{"a deb without data", "", "", []aptrepo.Deb{aptrepo.DebBytes("nodata.deb", testkit.ArArchive([][2][]byte{{[]byte("debian-binary"), []byte("2.0\n")}, {[]byte("control.tar.gz"), testkit.TarGz(t, map[string]string{"./control": ctl})}}))}, aptrepo.Options{}, aptrepo.ErrNotDeb, "nodata.deb", "data.tar"},
		{"a control file that is not one", "", "", []aptrepo.Deb{aptrepo.DebBytes("garbage.deb", testkit.GoDeb(t, "this is not a control file\n", "x"))}, aptrepo.Options{}, aptrepo.ErrBadControl, "garbage.deb", "malformed"},
		{"no Version", "", "", []aptrepo.Deb{aptrepo.DebBytes("nover.deb", testkit.GoDeb(t, "Package: nover\nArchitecture: amd64\nDescription: x\n", "x"))}, aptrepo.Options{}, aptrepo.ErrBadControl, "nover.deb", "Version"},
		{"no Architecture", "", "", []aptrepo.Deb{aptrepo.DebBytes("noarch.deb", testkit.GoDeb(t, "Package: noarch\nVersion: 1\nDescription: x\n", "x"))}, aptrepo.Options{}, aptrepo.ErrBadControl, "noarch.deb", "Architecture"},
		{"a one-letter name", "", "", []aptrepo.Deb{aptrepo.DebBytes("a.deb", testkit.GoDeb(t, "Package: a\nVersion: 1\nArchitecture: amd64\n", "x"))}, aptrepo.Options{}, aptrepo.ErrBadControl, "a.deb", "package name"},
		{"an upper-case name", "", "", []aptrepo.Deb{aptrepo.DebBytes("up.deb", testkit.GoDeb(t, "Package: Upper\nVersion: 1\nArchitecture: amd64\n", "x"))}, aptrepo.Options{}, aptrepo.ErrBadControl, "up.deb", "package name"},
		{"a bad version", "", "", []aptrepo.Deb{aptrepo.DebBytes("ver.deb", testkit.GoDeb(t, "Package: ver\nVersion: 1.0 beta\nArchitecture: amd64\n", "x"))}, aptrepo.Options{}, aptrepo.ErrBadControl, "ver.deb", "version"},
		{"architecture source", "", "", []aptrepo.Deb{aptrepo.DebBytes("src.deb", testkit.GoDeb(t, "Package: src\nVersion: 1\nArchitecture: source\n", "x"))}, aptrepo.Options{}, aptrepo.ErrBadControl, "src.deb", "architecture"},
		{"a Source that climbs out of the pool", "", "", []aptrepo.Deb{aptrepo.DebBytes("climb.deb", testkit.GoDeb(t, "Package: climb\nSource: ../../../keys\nVersion: 1\nArchitecture: amd64\n", "x"))}, aptrepo.Options{}, aptrepo.ErrBadControl, "climb.deb", "Source"},
		{"no control file in control.tar", "", "", []aptrepo.Deb{aptrepo.DebBytes("noctl.deb", noControlDeb(t))}, aptrepo.Options{}, aptrepo.ErrBadControl, "noctl.deb", "control"},
		{"a corrupt control.tar.gz", "", "", []aptrepo.Deb{aptrepo.DebBytes("badgz.deb", testkit.ArArchive([][2][]byte{{[]byte("debian-binary"), []byte("2.0\n")}, {[]byte("control.tar.gz"), []byte("not gzip")}, {[]byte("data.tar.gz"), []byte("x")}}))}, aptrepo.Options{}, aptrepo.ErrBadControl, "badgz.deb", "gzip"},
		{"the same package with other content", "", "", debFiles(other), aptrepo.Options{}, aptrepo.ErrConflict, other, "good_1.0_amd64"},
		{"the same package with other content in another distribution", "", "", debFiles(otherDist), aptrepo.Options{}, aptrepo.ErrConflict, otherDist, "ubuntu/jammy"},
		{"two builds of one version in one request", "", "universe", []aptrepo.Deb{aptrepo.DebBytes("one.deb", testkit.GoDeb(t, ctl, "1")), aptrepo.DebBytes("two.deb", testkit.GoDeb(t, ctl, "2"))}, aptrepo.Options{}, aptrepo.ErrConflict, "two.deb", "one.deb"},
		{"one bad file among good ones", "", "", []aptrepo.Deb{aptrepo.DebBytes("fine.deb", testkit.GoDeb(t, ctl, "1")), aptrepo.DebBytes("bad.deb", []byte("junk"))}, aptrepo.Options{}, aptrepo.ErrNotDeb, "bad.deb", ""},
		{"too large", "", "", debFiles(good), aptrepo.Options{MaxDebSize: 100}, aptrepo.ErrTooLarge, good, "100 bytes"},
		{"a file that cannot be read", "", "", []aptrepo.Deb{{Name: "gone.deb", Open: func() (io.ReadCloser, error) { return nil, os.ErrNotExist }}}, aptrepo.Options{}, os.ErrNotExist, "gone.deb", ""},
		{"no files", "", "", nil, aptrepo.Options{}, aptrepo.ErrInvalid, "", "no package files"},
		{"a repository name with a slash", "ub/untu", "", debFiles(good), aptrepo.Options{}, aptrepo.ErrInvalid, "", "repository"},
		{"a component named pool", "", "pool", debFiles(good), aptrepo.Options{}, aptrepo.ErrInvalid, "", "component"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := openRepos(t, dir, tc.opts)
			defer r.Close()
			url := serve(t, r.Handler())
			ctx := t.Context()
			if _, err := r.Add(ctx, "ubuntu", "noble", "main", debFiles(good), "setup"); err != nil && !errors.Is(err, aptrepo.ErrTooLarge) {
				t.Fatal(err)
			}
			if _, err := r.Add(ctx, "ubuntu", "jammy", "main", []aptrepo.Deb{aptrepo.DebBytes("shared.deb", testkit.GoDeb(t, pkg{Name: "shared", Version: "1.0", Arch: "amd64"}.control(), "jammy build"))}, "setup"); err != nil && !errors.Is(err, aptrepo.ErrTooLarge) {
				t.Fatal(err)
			}
			beforeRel, beforePkgs := published(t, r, url, "ubuntu", "noble")
			beforeHist, _ := r.History(ctx, "ubuntu", "noble")

			repo, comp := cmpOr(tc.repo, "ubuntu"), cmpOr(tc.component, "main")
			_, err := r.Add(ctx, repo, "noble", comp, tc.debs, "mallory")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Add = %v, want %v", err, tc.wantErr)
			}
			var e *aptrepo.Error
			if !errors.As(err, &e) || e.File != tc.wantFile {
				t.Fatalf("Add = %#v, want an *Error naming %q", err, tc.wantFile)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("Add = %q, want it to say %q", err, tc.wantIn)
			}
			if strings.Contains(err.Error(), filepath.Join(dir, "tmp")) {
				t.Fatalf("the error names the staging copy: %v", err)
			}
			afterRel, afterPkgs := published(t, r, url, "ubuntu", "noble")
			afterHist, _ := r.History(ctx, "ubuntu", "noble")
			if !bytes.Equal(beforeRel, afterRel) || !slices.Equal(beforePkgs, afterPkgs) || len(beforeHist) != len(afterHist) {
				t.Fatalf("a refused Add changed the published repository")
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
				t.Fatalf("staging space not cleaned: %v", ents)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// noControlDeb is a .deb whose control.tar.gz has no control file.
func noControlDeb(t *testing.T) []byte {
	return testkit.ArArchive([][2][]byte{
		{[]byte("debian-binary"), []byte("2.0\n")},
		{[]byte("control.tar.gz"), testkit.TarGz(t, map[string]string{"./md5sums": ""})},
		{[]byte("data.tar.gz"), testkit.TarGz(t, map[string]string{"./x": "x"})},
	})
}

func TestAddSameContentAgainIsANoOp(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	r, _ := newRepos(t)
	deb := buildDeb(t, t.TempDir(), pkg{Name: "same", Version: "1.0", Arch: "amd64"})
	first, err := r.Add(t.Context(), "ubuntu", "noble", "main", debFiles(deb), "alice")
	if err != nil {
		t.Fatal(err)
	}
	again, err := r.Add(t.Context(), "ubuntu", "noble", "main", debFiles(deb, deb), "bob")
	if err != nil {
		t.Fatalf("adding the same file again: %v", err)
	}
	if again.ID != first.ID || !again.Current {
		t.Fatalf("adding the same file again published %+v, want the current publish %s", again, first.ID)
	}
	h, _ := r.History(t.Context(), "ubuntu", "noble")
	if len(h) != 1 {
		t.Fatalf("history has %d records, want 1", len(h))
	}
	// The same file in another component or distribution is fine.
	if _, err := r.Add(t.Context(), "ubuntu", "noble", "universe", debFiles(deb), "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add(t.Context(), "ubuntu", "jammy", "main", debFiles(deb), "bob"); err != nil {
		t.Fatal(err)
	}
}

func TestPackagesListSearchHistory(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	r, _ := newRepos(t)
	url := serve(t, r.Handler())
	ctx := t.Context()
	dd := t.TempDir()
	c1 := buildDeb(t, dd, pkg{Name: "charlie", Version: "1.0", Arch: "amd64", Depends: "bravo (>= 1.0), libc6"})
	c2 := buildDeb(t, dd, pkg{Name: "charlie", Version: "1:0.5", Arch: "amd64"})
	b := buildDeb(t, dd, pkg{Name: "bravo", Version: "1.0", Arch: "arm64"})
	d := buildDeb(t, dd, pkg{Name: "delta-doc", Version: "2.0~rc1", Arch: "all"})

	p1, err := r.Add(ctx, "ubuntu", "noble", "main", debFiles(c1, b), "alice")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := r.Add(ctx, "ubuntu", "noble", "universe", debFiles(d), "bob")
	if err != nil {
		t.Fatal(err)
	}
	p3, err := r.Add(ctx, "debian", "bookworm", "main", debFiles(c2, d), "carol")
	if err != nil {
		t.Fatal(err)
	}
	p4, err := r.Remove(ctx, "ubuntu", "noble", "bravo", "", "dave")
	if err != nil {
		t.Fatal(err)
	}
	p5, err := r.Rollback(ctx, "ubuntu", "noble", p2.ID, "erin")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Packages", func(t *testing.T) {
		pkgs, err := r.Packages(ctx, "ubuntu", "noble")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range pkgs {
			names = append(names, p.Name+"_"+p.Version+"_"+p.Architecture+"/"+p.Component)
		}
		want := []string{"bravo_1.0_arm64/main", "charlie_1.0_amd64/main", "delta-doc_2.0~rc1_all/universe"}
		if !slices.Equal(names, want) {
			t.Fatalf("Packages = %v, want %v", names, want)
		}
		c := pkgs[1]
		data, _ := os.ReadFile(c1)
		sum := sha256.Sum256(data)
		if c.SHA256 != hex.EncodeToString(sum[:]) || c.Size != int64(len(data)) || c.Depends != "bravo (>= 1.0), libc6" ||
			c.Filename != "pool/main/c/charlie/charlie_1.0_amd64.deb" || c.Repo != "ubuntu" || c.Dist != "noble" {
			t.Fatalf("Packages()[1] = %+v", c)
		}
		if got := get(t, url+"/ubuntu/"+c.Filename); !bytes.Equal(got, data) {
			t.Fatal("the served file differs from the added one")
		}
		if _, err := r.Packages(ctx, "ubuntu", "nope"); !errors.Is(err, aptrepo.ErrNotFound) {
			t.Fatalf("Packages of an unknown distribution = %v", err)
		}
	})

	t.Run("epoch", func(t *testing.T) {
		pkgs, _ := r.Packages(ctx, "debian", "bookworm")
		if pkgs[0].Version != "1:0.5" || pkgs[0].Filename != "pool/main/c/charlie/charlie_0.5_amd64.deb" {
			t.Fatalf("a package with an epoch: %+v", pkgs[0])
		}
	})

	t.Run("List", func(t *testing.T) {
		got, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Name != "debian" || got[1].Name != "ubuntu" {
			t.Fatalf("List = %+v", got)
		}
		noble := got[1].Dists[0]
		want := aptrepo.DistInfo{Name: "noble", Components: []aptrepo.ComponentInfo{{Name: "main", Packages: 2}, {Name: "universe", Packages: 1}},
			Architectures: []string{"amd64", "arm64"}, Packages: 3, Current: p5.ID, Updated: p5.Time}
		if noble.Name != want.Name || !slices.Equal(noble.Components, want.Components) || !slices.Equal(noble.Architectures, want.Architectures) ||
			noble.Packages != want.Packages || noble.Current != want.Current || !noble.Updated.Equal(want.Updated) {
			t.Fatalf("List noble = %+v, want %+v", noble, want)
		}
		if bw := got[0].Dists[0]; !slices.Equal(bw.Architectures, []string{"amd64"}) || bw.Current != p3.ID {
			t.Fatalf("List bookworm = %+v", bw)
		}
	})

	t.Run("Search", func(t *testing.T) {
		for _, tc := range []struct {
			query string
			want  []string
		}{
			{"arli", []string{"debian/bookworm charlie 1:0.5", "ubuntu/noble charlie 1.0"}},
			{"d*", []string{"debian/bookworm delta-doc 2.0~rc1", "ubuntu/noble delta-doc 2.0~rc1"}},
			{"?ravo", []string{"ubuntu/noble bravo 1.0"}},
			{"zulu", nil},
		} {
			got, err := r.Search(ctx, tc.query)
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, p := range got {
				s = append(s, p.Repo+"/"+p.Dist+" "+p.Name+" "+p.Version)
			}
			if !slices.Equal(s, tc.want) {
				t.Errorf("Search(%q) = %v, want %v", tc.query, s, tc.want)
			}
		}
		if _, err := r.Search(ctx, "[z"); !errors.Is(err, aptrepo.ErrInvalid) {
			t.Errorf("Search of a bad pattern = %v", err)
		}
	})

	t.Run("History", func(t *testing.T) {
		h, err := r.History(ctx, "ubuntu", "noble")
		if err != nil {
			t.Fatal(err)
		}
		type rec struct {
			id, action, by string
			packages       int
			current, kept  bool
		}
		var got []rec
		for _, p := range h {
			got = append(got, rec{p.ID, p.Action, p.By, p.Packages, p.Current, p.Kept})
			if len(p.Snapshots) != len(p.Components) || p.Repo != "ubuntu" || p.Dist != "noble" || p.Time.IsZero() {
				t.Errorf("record %+v", p)
			}
			for comp, s := range p.Snapshots {
				if s != "ubuntu/noble/"+comp+"@"+p.ID {
					t.Errorf("snapshot name %q", s)
				}
			}
		}
		want := []rec{
			{p5.ID, "rollback", "erin", 3, true, true},
			{p4.ID, "remove", "dave", 2, false, true},
			{p2.ID, "add", "bob", 3, false, true},
			{p1.ID, "add", "alice", 2, false, true},
		}
		if !slices.Equal(got, want) {
			t.Fatalf("History = %+v\nwant %+v", got, want)
		}
		if h[0].RollbackTo != p2.ID || !slices.Equal(h[0].Changes, []string{"+bravo_1.0_arm64 (main)"}) {
			t.Fatalf("rollback record: %+v", h[0])
		}
		if !slices.Equal(h[1].Changes, []string{"-bravo_1.0_arm64 (main)"}) {
			t.Fatalf("remove record: %+v", h[1])
		}
	})

	t.Run("Remove", func(t *testing.T) {
		for _, tc := range []struct{ pkg, version string }{{"charlie", "9.9"}, {"zulu", ""}} {
			if _, err := r.Remove(ctx, "ubuntu", "noble", tc.pkg, tc.version, "x"); !errors.Is(err, aptrepo.ErrNotFound) {
				t.Errorf("Remove(%s %s) = %v, want ErrNotFound", tc.pkg, tc.version, err)
			}
		}
		if _, err := r.Remove(ctx, "ubuntu", "focal", "charlie", "", "x"); !errors.Is(err, aptrepo.ErrNotFound) {
			t.Errorf("Remove from an unknown distribution = %v", err)
		}
		p, err := r.Remove(ctx, "ubuntu", "noble", "charlie", "1.0", "x")
		if err != nil {
			t.Fatal(err)
		}
		if p.Packages != 2 || p.Components["main"] != 1 {
			t.Fatalf("after Remove: %+v", p)
		}
	})

	t.Run("Rollback refusals", func(t *testing.T) {
		if _, err := r.Rollback(ctx, "ubuntu", "noble", "nope", "x"); !errors.Is(err, aptrepo.ErrNotFound) {
			t.Errorf("Rollback to an unknown id = %v", err)
		}
		cur, _ := r.History(ctx, "ubuntu", "noble")
		p, err := r.Rollback(ctx, "ubuntu", "noble", cur[0].ID, "x")
		if err != nil || p.ID != cur[0].ID {
			t.Errorf("Rollback to the current publish = %+v, %v; want a no-op", p, err)
		}
	})
}

func TestRetention(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	dir := t.TempDir()
	r := openRepos(t, dir, aptrepo.Options{KeepSnapshots: 3})
	defer r.Close()
	ctx := t.Context()
	dd := t.TempDir()
	var ids []string
	for i, v := range []string{"1", "2", "3", "4", "5"} {
		deb := buildDeb(t, dd, pkg{Name: "pkg" + v, Version: "1.0", Arch: "amd64"})
		p, err := r.Add(ctx, "ubuntu", "noble", "main", debFiles(deb), "alice")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
		if i == 0 {
			// pkg1 leaves with the second publish: once both publishes
			// that hold it are dropped, its file goes too.
			if _, err := r.Remove(ctx, "ubuntu", "noble", "pkg1", "", "alice"); err != nil {
				t.Fatal(err)
			}
		}
	}
	h, _ := r.History(ctx, "ubuntu", "noble")
	if len(h) != 6 {
		t.Fatalf("history has %d records, want 6", len(h))
	}
	kept := 0
	for _, p := range h {
		if p.Kept {
			kept++
		}
	}
	if kept != 3 || !h[0].Kept || !h[2].Kept || h[3].Kept {
		t.Fatalf("kept %d publishes: %+v", kept, h)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "public"))
	if len(ents) != 3 {
		t.Fatalf("public holds %d trees, want 3", len(ents))
	}
	if _, err := r.Rollback(ctx, "ubuntu", "noble", ids[0], "x"); !errors.Is(err, aptrepo.ErrNotAvailable) {
		t.Fatalf("Rollback to a dropped publish = %v, want ErrNotAvailable", err)
	}
	pool := poolFiles(dir)
	if len(pool) != 4 || slices.ContainsFunc(pool, func(s string) bool { return strings.Contains(s, "pkg1_") }) {
		t.Fatalf("pool holds %v, want pkg2…pkg5", pool)
	}
	// The oldest kept publish still rolls back.
	if _, err := r.Rollback(ctx, "ubuntu", "noble", h[2].ID, "x"); err != nil {
		t.Fatal(err)
	}
}

func TestPersistence(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	dir := t.TempDir()
	r := openRepos(t, dir, aptrepo.Options{})
	ctx := t.Context()
	dd := t.TempDir()
	if _, err := r.Add(ctx, "ubuntu", "noble", "main", debFiles(buildDeb(t, dd, pkg{Name: "one", Version: "1.0", Arch: "amd64"})), "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add(ctx, "ubuntu", "noble", "main", debFiles(buildDeb(t, dd, pkg{Name: "two", Version: "1.0", Arch: "amd64"})), "b"); err != nil {
		t.Fatal(err)
	}
	url := serve(t, r.Handler())
	rel := get(t, url+"/ubuntu/dists/noble/InRelease")
	list, _ := r.List(ctx)
	hist, _ := r.History(ctx, "ubuntu", "noble")
	pkgs, _ := r.Packages(ctx, "ubuntu", "noble")
	key, _ := r.PublicKey()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.List(ctx); !errors.Is(err, aptrepo.ErrClosed) {
		t.Fatalf("List after Close = %v", err)
	}

	r2, err := aptrepo.Open(ctx, aptrepo.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	url2 := serve(t, r2.Handler())
	if got := get(t, url2+"/ubuntu/dists/noble/InRelease"); !bytes.Equal(got, rel) {
		t.Fatal("InRelease differs after reopen")
	}
	list2, _ := r2.List(ctx)
	hist2, _ := r2.History(ctx, "ubuntu", "noble")
	pkgs2, _ := r2.Packages(ctx, "ubuntu", "noble")
	key2, _ := r2.PublicKey()
	if len(list2) != 1 || list2[0].Dists[0].Current != list[0].Dists[0].Current || len(hist2) != len(hist) || !slices.Equal(pkgs2, pkgs) || !bytes.Equal(key, key2) {
		t.Fatalf("state differs after reopen:\n%+v\n%+v", list, list2)
	}
	// And it goes on from there.
	if _, err := r2.Rollback(ctx, "ubuntu", "noble", hist[1].ID, "c"); err != nil {
		t.Fatal(err)
	}
	if p, _ := r2.Packages(ctx, "ubuntu", "noble"); len(p) != 1 || p[0].Name != "one" {
		t.Fatalf("after rollback: %+v", p)
	}
}

// TestCrashBeforeTheSwitch puts state.json back as it was before an Add,
// as if the process died after publishing but before switching: the next
// Open removes what that publish made and serves what it served before.
func TestCrashBeforeTheSwitch(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	dir := t.TempDir()
	r := openRepos(t, dir, aptrepo.Options{})
	ctx := t.Context()
	dd := t.TempDir()
	if _, err := r.Add(ctx, "ubuntu", "noble", "main", debFiles(buildDeb(t, dd, pkg{Name: "one", Version: "1.0", Arch: "amd64"})), "a"); err != nil {
		t.Fatal(err)
	}
	url := serve(t, r.Handler())
	rel := get(t, url+"/ubuntu/dists/noble/InRelease")
	saved, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add(ctx, "ubuntu", "noble", "main", debFiles(buildDeb(t, dd, pkg{Name: "two", Version: "1.0", Arch: "amd64"})), "b"); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), saved, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp", "add-123"), 0o700); err != nil {
		t.Fatal(err)
	}

	r2, err := aptrepo.Open(ctx, aptrepo.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	url2 := serve(t, r2.Handler())
	if got := get(t, url2+"/ubuntu/dists/noble/InRelease"); !bytes.Equal(got, rel) {
		t.Fatal("after recovery the InRelease is not the one switched in")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "public")); len(ents) != 1 {
		t.Fatalf("public holds %d trees, want 1", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp holds %v", ents)
	}
	pool := poolFiles(dir)
	if len(pool) != 1 || !strings.HasSuffix(pool[0], "one_1.0_amd64.deb") {
		t.Fatalf("pool holds %v, want only one_1.0", pool)
	}
	// The package of the lost publish can be added again.
	if _, err := r2.Add(ctx, "ubuntu", "noble", "main", debFiles(filepath.Join(dd, "two_1.0_amd64.deb")), "b"); err != nil {
		t.Fatal(err)
	}
}

func TestHandler(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	r, _ := newRepos(t)
	if _, err := r.Add(t.Context(), "ubuntu", "noble", "main", debFiles(buildDeb(t, t.TempDir(), pkg{Name: "one", Version: "1.0", Arch: "amd64"})), "a"); err != nil {
		t.Fatal(err)
	}
	url := serve(t, r.Handler())
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/ubuntu/dists/noble/InRelease", 200},
		{"HEAD", "/ubuntu/dists/noble/Release", 200},
		{"GET", "/ubuntu/dists/noble/main/binary-amd64/Packages.gz", 200},
		{"GET", "/ubuntu/pool/main/o/one/one_1.0_amd64.deb", 200},
		{"POST", "/ubuntu/dists/noble/InRelease", 405},
		{"DELETE", "/ubuntu/pool/main/o/one/one_1.0_amd64.deb", 405},
		{"GET", "/ubuntu/dists/noble/", 404},
		{"GET", "/ubuntu/dists/noble/main", 404},
		{"GET", "/ubuntu/dists/jammy/InRelease", 404},
		{"GET", "/debian/dists/noble/InRelease", 404},
		{"GET", "/ubuntu/keys/secring.gpg", 404},
		{"GET", "/ubuntu/dists/noble/../../../keys/secring.gpg", 404},
		{"GET", "/ubuntu/pool/%2e%2e/%2e%2e/keys/secring.gpg", 404},
		{"GET", "/ubuntu/dists/noble/main/binary-amd64/by-hash/SHA256/Packages.gz", 404}, // aptly's symlink, out of the tree
		{"GET", "/", 404},
	} {
		req, _ := http.NewRequestWithContext(context.Background(), tc.method, url+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url + "/ubuntu/dists/noble/InRelease")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after Close: %d", resp.StatusCode)
	}
}

func TestCancelledContext(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	r, _ := newRepos(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := r.Add(ctx, "ubuntu", "noble", "main", debFiles(buildDeb(t, t.TempDir(), pkg{Name: "one", Version: "1.0", Arch: "amd64"})), "a")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Add with a cancelled context = %v", err)
	}
	if l, _ := r.List(t.Context()); len(l) != 0 {
		t.Fatalf("something was published: %+v", l)
	}
}

// poolFiles lists the names of the package files in the repository's pool.
func poolFiles(dir string) []string {
	var pool []string
	_ = filepath.WalkDir(filepath.Join(dir, "pool"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			pool = append(pool, filepath.Base(p))
		}
		return nil
	})
	return pool
}
