package aptrepo_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/testkit"
)

// smallDebs makes n small valid packages in Go (goDeb): dpkg-deb takes
// about 40 ms a package, which would make the setup longer than the
// benchmark. TestGoDebIsValid shows dpkg-deb accepts what goDeb makes.
func smallDebs(b testing.TB, prefix string, n int) ([]aptrepo.Deb, int64) {
	debs := make([]aptrepo.Deb, n)
	var total int64
	for i := range n {
		name := fmt.Sprintf("%s%04d", prefix, i)
		arch := "amd64"
		if i%10 == 0 {
			arch = "all"
		}
		data := testkit.GoDeb(b, pkg{Name: name, Version: "1.0-1", Arch: arch, Depends: "libc6 (>= 2.36)"}.control(), name)
		debs[i] = aptrepo.DebBytes(name+".deb", data)
		total += int64(len(data))
	}
	return debs, total
}

// BenchmarkPublish1000 measures one publish of 1,000 small packages: each
// op is an Add of 1,000 .debs into a new distribution (read, hash, parse,
// check, import into the pool — deduplicated after the first op — then
// aptly's publish of Packages, Packages.gz, by-hash, Release, InRelease and
// Release.gpg, fsync and the switch).
func BenchmarkPublish1000(b *testing.B) {
	r := openRepos(b, b.TempDir(), aptrepo.Options{})
	defer r.Close()
	debs, total := smallDebs(b, "bench", 1000)
	b.SetBytes(total)
	i := 0
	for b.Loop() {
		if _, err := r.Add(b.Context(), "bench", fmt.Sprintf("d%d", i), "main", debs, "bench"); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(i), "ms/publish")
}

// BenchmarkAddOneTo1000 measures the publish that follows a one-package
// change to a distribution of 1,000 packages: every index is written anew.
func BenchmarkAddOneTo1000(b *testing.B) {
	r := openRepos(b, b.TempDir(), aptrepo.Options{})
	defer r.Close()
	debs, _ := smallDebs(b, "base", 1000)
	if _, err := r.Add(b.Context(), "bench", "noble", "main", debs, "bench"); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("extra%06d", i)
		d := aptrepo.DebBytes(name+".deb", testkit.GoDeb(b, pkg{Name: name, Version: "1.0", Arch: "amd64"}.control(), name))
		if _, err := r.Add(b.Context(), "bench", "noble", "main", []aptrepo.Deb{d}, "bench"); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(i), "ms/publish")
}

// TestGoDebIsValid shows that dpkg-deb reads the packages goDeb makes.
func TestGoDebIsValid(t *testing.T) {
	testkit.Need(t, "dpkg-deb")
	p := filepath.Join(t.TempDir(), "x.deb")
	if err := os.WriteFile(p, testkit.GoDeb(t, pkg{Name: "gotest", Version: "1.0", Arch: "all"}.control(), "hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--info", p}, {"--contents", p}, {"--field", p, "Package"}} {
		if out, err := exec.Command("dpkg-deb", args...).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb %v: %v\n%s", args, err, out)
		}
	}
}
