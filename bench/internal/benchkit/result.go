package benchkit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The machine-readable line every benchmark prints, one per cell:
//
//	RESULT <bench> <key>=<value> <key>=<value> …
//
// <bench> is the program's name (blobpull, manifests, import, …). Keys are
// lower case letters, digits and underscores, in the order the program
// gives them; cell keys (target, proto, clients, size_mib, …) come first,
// then figures. Values hold no space; a float is written with two
// decimals (mbps=512.34), a ratio to its anchor is named ratio_… and a
// memory peak …_mib. A line names one cell, so a script can grep
// '^RESULT import ' and split on spaces and "=".

// Result formats one RESULT line (without the newline) from key, value
// pairs. It panics on an odd count or a key of other characters: both
// are the program's mistake, not the run's.
func Result(bench string, kv ...any) string {
	if len(kv)%2 != 0 {
		panic("benchkit.Result: odd number of key/value arguments")
	}
	var b strings.Builder
	b.WriteString("RESULT " + bench)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok || !validKey(k) {
			panic(fmt.Sprintf("benchkit.Result: bad key %v", kv[i]))
		}
		b.WriteString(" " + k + "=" + formatValue(kv[i+1]))
	}
	return b.String()
}

// PrintResult writes Result(bench, kv...) and a newline to standard output.
func PrintResult(bench string, kv ...any) {
	fmt.Println(Result(bench, kv...))
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}

func formatValue(v any) string {
	var s string
	switch x := v.(type) {
	case float64:
		s = strconv.FormatFloat(x, 'f', 2, 64)
	case float32:
		s = strconv.FormatFloat(float64(x), 'f', 2, 32)
	case time.Duration:
		s = x.String()
	default:
		s = fmt.Sprint(x)
	}
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(s, " ", "_")
}

// ParseResult splits a RESULT line into its benchmark and its pairs; it is
// the reference reader of the format (keys in order in keys).
func ParseResult(line string) (bench string, keys []string, values map[string]string, err error) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "RESULT" {
		return "", nil, nil, errors.New("not a RESULT line")
	}
	values = map[string]string{}
	for _, kv := range f[2:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !validKey(k) {
			return "", nil, nil, fmt.Errorf("RESULT line: bad pair %q", kv)
		}
		if _, dup := values[k]; dup {
			return "", nil, nil, fmt.Errorf("RESULT line: key %q twice", k)
		}
		keys = append(keys, k)
		values[k] = v
	}
	return f[1], keys, values, nil
}

// Report is the short Markdown report of a run: a title, the method in a
// few lines, one table, notes, and the machine's facts.
type Report struct {
	Title  string
	Method string
	Header []string
	Rows   [][]string
	Notes  []string
	// Machine is what Machine returned.
	Machine map[string]string
	// Command reproduces the run.
	Command string
}

// Row appends a table row, each cell formatted with fmt.Sprint (a float64
// with two decimals).
func (r *Report) Row(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		if f, ok := c.(float64); ok {
			row[i] = strconv.FormatFloat(f, 'f', 2, 64)
		} else {
			row[i] = fmt.Sprint(c)
		}
	}
	r.Rows = append(r.Rows, row)
}

// Note appends a line under the table.
func (r *Report) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s (%s)\n\n%s\n\n", r.Title, time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(r.Method))
	if len(r.Header) > 0 {
		fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(r.Header, " | "), strings.Repeat("---|", len(r.Header)))
		for _, row := range r.Rows {
			fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
		}
		b.WriteString("\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
	}
	if r.Command != "" {
		fmt.Fprintf(&b, "Reproduce: `%s`\n\n", r.Command)
	}
	fmt.Fprintf(&b, "## Machine\n\n%s", MachineList(r.Machine))
	return b.String()
}

// Write prints the report to w and writes it to path (when set).
func (r *Report) Write(w io.Writer, path string) error {
	md := r.Markdown()
	_, _ = io.WriteString(w, md)
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil { //nolint:gosec // a report
		return fmt.Errorf("write the report: %w", err)
	}
	Logf("report: %s", path)
	return nil
}

// Flags are the flags every benchmark has.
type Flags struct {
	// Appliance is the binary under test (make build: bin/appliance).
	Appliance string
	// Out is where the report goes.
	Out string
	// Smoke asks for the smallest run that exercises every step.
	Smoke bool
	// Rounds of every measurement, interleaved; the report gives medians.
	Rounds int
	// Keep keeps the work folder.
	Keep bool
	// QuietWait bounds each wait for a quiet machine.
	QuietWait time.Duration
	// Timeout bounds the whole run.
	Timeout time.Duration
}

// CommonFlags registers the common flags on flag.CommandLine for the
// benchmark name, with its defaults for -rounds and -timeout.
func CommonFlags(name string, rounds int, timeout time.Duration) *Flags {
	f := &Flags{}
	flag.StringVar(&f.Appliance, "appliance", "bin/appliance", "appliance binary under test (make build)")
	flag.StringVar(&f.Out, "out", DefaultOut(name), "write the Markdown report here")
	flag.BoolVar(&f.Smoke, "smoke", false, "smoke size: the smallest run that exercises every step (1 round unless -rounds is given)")
	flag.IntVar(&f.Rounds, "rounds", rounds, "rounds of every measurement, interleaved (the report gives medians)")
	flag.BoolVar(&f.Keep, "keep", false, "keep the work folder")
	flag.DurationVar(&f.QuietWait, "quiet-wait", time.Minute, "before each measurement, wait up to this long for a quiet machine")
	flag.DurationVar(&f.Timeout, "timeout", timeout, "hard limit for the whole run")
	return f
}

// Parse parses the command line; with -smoke and no -rounds it sets one
// round and a short quiet wait.
func (f *Flags) Parse() {
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if f.Smoke && !set["rounds"] {
		f.Rounds = 1
	}
	if f.Smoke && !set["quiet-wait"] {
		f.QuietWait = 5 * time.Second
	}
}

// Reproduce is the command line that repeats this run of the benchmark
// name from the repository's root.
func Reproduce(name string) string {
	return strings.TrimSpace("go run ./bench/" + name + " " + strings.Join(os.Args[1:], " "))
}

// DefaultOut is ${TMPDIR:-/tmp}/<name>-<UTC time>.md.
func DefaultOut(name string) string {
	return filepath.Join(os.TempDir(), name+"-"+time.Now().UTC().Format("20060102T150405Z")+".md")
}

// Main runs run with a context that ends on SIGINT, SIGTERM or after
// timeout, and exits 1 with the error, prefixed by name, if it fails.
func Main(name string, timeout time.Duration, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	err := run(ctx)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Interleave runs rounds rounds over n contestants: in round r, do(r, i)
// for every i, starting with i = r mod n, so no contestant always goes
// first. It waits up to quiet for a quiet machine before each call and
// stops at the first error.
func Interleave(ctx context.Context, rounds, n int, quiet time.Duration, do func(round, i int) error) error {
	for r := range rounds {
		for k := range n {
			if err := ctx.Err(); err != nil {
				return err
			}
			WaitQuiet(ctx, quiet)
			if err := do(r, (k+r)%n); err != nil {
				return err
			}
		}
	}
	return nil
}

// Ratio is a/b, or 0 when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Ints parses a comma-separated flag of integers, each from lo to hi.
func Ints(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q is not a number from %d to %d", f, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}

// Floats formats v with format, comma-separated: a report's "every round".
func Floats(v []float64, format string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, ", ")
}
