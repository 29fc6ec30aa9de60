package turns

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestTurns: holders wait while gc sweeps, gc waits for holders without
// keeping new ones out, and gives up naming them when its wait ends.
func TestTurns(t *testing.T) {
	t.Parallel()
	tu := New()
	ctx := context.Background()
	release, err := tu.Hold(ctx, "import 1")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = tu.Exclusive(short)
	cancel()
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "import 1") {
		t.Fatalf("exclusive while held = %v", err)
	}
	got := make(chan func(), 1)
	go func() {
		rel, err := tu.Exclusive(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	time.Sleep(20 * time.Millisecond)
	// A newcomer is not kept out while gc waits.
	second, err := tu.Hold(ctx, "push")
	if err != nil {
		t.Fatal(err)
	}
	release()
	second()
	exclusive := <-got
	// While gc holds the registry, a holder waits.
	waited := make(chan struct{})
	go func() {
		rel, err := tu.Hold(ctx, "late push")
		if err != nil {
			t.Error(err)
		}
		close(waited)
		rel()
	}()
	select {
	case <-waited:
		t.Fatal("a write went on while gc swept")
	case <-time.After(50 * time.Millisecond):
	}
	exclusive()
	<-waited
}
