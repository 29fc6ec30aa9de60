package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
)

// Progress reports bytes sent: a bar redrawn in place on a terminal, plain
// lines elsewhere (logs, CI).
type Progress struct {
	w        io.Writer
	name     string
	total    int64 // -1 when unknown
	done     atomic.Int64
	start    time.Time
	terminal bool
	stop     chan struct{}
	wg       sync.WaitGroup
}

// NewProgress starts reporting total bytes (-1: unknown) of name to w.
func NewProgress(w io.Writer, name string, total int64) *Progress {
	p := &Progress{w: w, name: name, total: total, start: time.Now(), stop: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		p.terminal = isatty.IsTerminal(f.Fd())
	}
	interval := 10 * time.Second
	if p.terminal {
		interval = 200 * time.Millisecond
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.print(false)
			}
		}
	}()
	return p
}

// Reader counts what passes through r.
func (p *Progress) Reader(r io.Reader) io.Reader { return &countingReader{r: r, p: p} }

type countingReader struct {
	r io.Reader
	p *Progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.done.Add(int64(n))
	return n, err
}

// Add counts n more bytes done.
func (p *Progress) Add(n int64) { p.done.Add(n) }

// Finish stops the reporting and prints the final state.
func (p *Progress) Finish() {
	close(p.stop)
	p.wg.Wait()
	p.print(true)
}

func (p *Progress) print(final bool) {
	done := p.done.Load()
	elapsed := time.Since(p.start)
	rate := float64(done) / max(elapsed.Seconds(), 0.001)
	line := fmt.Sprintf("%s  %s", p.name, HumanBytes(done))
	if p.total > 0 {
		frac := float64(done) / float64(p.total)
		eta := "--"
		if rate > 0 && done < p.total {
			eta = time.Duration(float64(p.total-done) / rate * float64(time.Second)).Truncate(time.Second).String()
		}
		if p.terminal {
			width := 30
			filled := min(width, int(frac*float64(width)))
			line = fmt.Sprintf("%s [%s%s] %5.1f%%  %s/%s  %s/s  ETA %s", p.name, strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
				frac*100, HumanBytes(done), HumanBytes(p.total), HumanBytes(int64(rate)), eta)
		} else {
			line = fmt.Sprintf("%s: %s of %s (%.0f%%), %s/s, ETA %s", p.name, HumanBytes(done), HumanBytes(p.total), frac*100, HumanBytes(int64(rate)), eta)
		}
	} else {
		line += fmt.Sprintf(", %s/s", HumanBytes(int64(rate)))
	}
	if p.terminal {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		if final {
			fmt.Fprintln(p.w)
		}
		return
	}
	fmt.Fprintln(p.w, line)
}

// HumanBytes renders n as KiB, MiB, GiB….
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// LiveView redraws a block of lines in place on a terminal; elsewhere
// (logs, CI) it prints the block at most every ten seconds.
type LiveView struct {
	w        io.Writer
	terminal bool
	lines    int
	last     time.Time
}

// NewLiveView redraws blocks of lines on w (in place on a terminal).
func NewLiveView(w io.Writer) *LiveView {
	v := &LiveView{w: w}
	if f, ok := w.(*os.File); ok {
		v.terminal = isatty.IsTerminal(f.Fd())
	}
	return v
}

// Draw replaces the block on screen with lines.
func (v *LiveView) Draw(lines []string) {
	if !v.terminal {
		if time.Since(v.last) < 10*time.Second {
			return
		}
		v.last = time.Now()
		for _, l := range lines {
			fmt.Fprintln(v.w, l)
		}
		return
	}
	var b strings.Builder
	if v.lines > 0 {
		fmt.Fprintf(&b, "\033[%dA", v.lines)
	}
	for _, l := range lines {
		b.WriteString("\r\033[K" + l + "\n")
	}
	// Clear what the last, longer block left below.
	for i := len(lines); i < v.lines; i++ {
		b.WriteString("\r\033[K\n")
	}
	if extra := v.lines - len(lines); extra > 0 {
		fmt.Fprintf(&b, "\033[%dA", extra)
	}
	v.lines = len(lines)
	fmt.Fprint(v.w, b.String())
}

// Done leaves the last block on screen.
func (v *LiveView) Done() { v.lines = 0 }
