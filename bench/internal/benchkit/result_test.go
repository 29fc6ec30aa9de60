package benchkit

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestResultRoundTrip(t *testing.T) {
	t.Parallel()
	line := Result("blobpull", "proto", "2", "clients", 8, "target", "docker registry", "mbps", 512.345, "took", 1500*time.Millisecond)
	if want := "RESULT blobpull proto=2 clients=8 target=docker_registry mbps=512.35 took=1.5s"; line != want {
		t.Fatalf("Result = %q, want %q", line, want)
	}
	bench, keys, values, err := ParseResult(line)
	if err != nil {
		t.Fatal(err)
	}
	if bench != "blobpull" || !slices.Equal(keys, []string{"proto", "clients", "target", "mbps", "took"}) || values["mbps"] != "512.35" {
		t.Fatalf("ParseResult = %s %v %v", bench, keys, values)
	}
}

func TestParseResultRejects(t *testing.T) {
	t.Parallel()
	for _, line := range []string{"", "RESULT", "result x a=1", "RESULT x a", "RESULT x A=1", "RESULT x a=1 a=2"} {
		if _, _, _, err := ParseResult(line); err == nil {
			t.Errorf("ParseResult(%q) accepted it", line)
		}
	}
}

func TestResultPanicsOnBadKey(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Fatal("no panic on a key with a space")
		}
	}()
	Result("x", "bad key", 1)
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		in := slices.Clone(tc.in)
		if got := Median(in); got != tc.want || !slices.Equal(in, tc.in) {
			t.Errorf("Median(%v) = %v (input now %v), want %v", tc.in, got, in, tc.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

func TestQuantilesNearestRank(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	q := QuantilesOf(d)
	if q.P50 != 50*time.Millisecond || q.P99 != 99*time.Millisecond || q.Max != 100*time.Millisecond || q.N != 100 {
		t.Fatalf("QuantilesOf = %+v", q)
	}
}

func TestInterleaveRotates(t *testing.T) {
	t.Parallel()
	var order []int
	err := Interleave(t.Context(), 3, 3, 0, func(_, i int) error { order = append(order, i); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 1, 2, 0, 2, 0, 1}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
}

func TestReportMarkdown(t *testing.T) {
	t.Parallel()
	r := &Report{Title: "T", Method: "m", Header: []string{"a", "b"}, Machine: map[string]string{"nproc": "2"}}
	r.Row("x", 1.5)
	md := r.Markdown()
	for _, want := range []string{"| a | b |\n|---|---|\n| x | 1.50 |\n", "- nproc: 2\n"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestDockerRegistryConfigTLS(t *testing.T) {
	t.Parallel()
	c := dockerRegistryConfig(DockerRegistryOptions{Secret: "s", CertFile: "/c", KeyFile: "/k"}, "/st", "127.0.0.1:1")
	for _, want := range []string{"rootdirectory: /st", "addr: 127.0.0.1:1", "certificate: /c", "key: /k", "level: warn"} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
}

func TestParseChallenge(t *testing.T) {
	t.Parallel()
	scheme, p := ParseChallenge(`Bearer realm="https://127.0.0.1:1/service/token",service="appliance",scope="repository:a/b:pull,push"`)
	if scheme != "Bearer" || p["realm"] != "https://127.0.0.1:1/service/token" || p["service"] != "appliance" || p["scope"] != "repository:a/b:pull,push" {
		t.Fatalf("ParseChallenge = %q %v", scheme, p)
	}
}

func TestListFlags(t *testing.T) {
	t.Parallel()
	if got, err := Ints("1, 8", 1, 64); err != nil || !slices.Equal(got, []int{1, 8}) {
		t.Errorf("Ints = %v, %v", got, err)
	}
	if _, err := Ints("0", 1, 64); err == nil {
		t.Error("Ints accepted 0")
	}
	if got, err := SplitList("2,1.1,2", "1.1", "2"); err != nil || !slices.Equal(got, []string{"2", "1.1"}) {
		t.Errorf("SplitList = %v, %v", got, err)
	}
	if _, err := SplitList("3", "1.1", "2"); err == nil {
		t.Error("SplitList accepted 3")
	}
}
