// Package turns is how the registry's garbage collection takes turns with
// everything that writes: shared holds for imports, promotions and /v2/
// writes, an exclusive one for gc's mark and sweep.
package turns

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// ErrBusy is returned when garbage collection (or a repair) found no
// moment when nothing was writing, within the time it was given.
var ErrBusy = errors.New("the registry is busy")

// Turns is how garbage collection takes turns with everything that
// writes or relies on content no tag reaches yet: imports (from the first
// byte until their staging repository is gone), promotions, /v2/ writes.
// Those hold it in shared mode for as long as they run; gc waits until
// none does, without keeping new ones out, and then holds it alone while
// it marks and sweeps (seconds), during which they wait.
type Turns struct {
	mu       sync.Mutex
	holders  map[uint64]string // id -> what holds it
	next     uint64
	sweeping bool
	changed  chan struct{} // closed (and replaced) on every change
	one      chan struct{} // one exclusive holder at a time
}

// New returns turns nobody holds.
func New() *Turns {
	return &Turns{holders: map[uint64]string{}, changed: make(chan struct{}), one: make(chan struct{}, 1)}
}

func (t *Turns) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// Hold takes a shared turn, waiting while gc sweeps.
func (t *Turns) Hold(ctx context.Context, who string) (func(), error) {
	t.mu.Lock()
	for t.sweeping {
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for garbage collection to finish: %w", ctx.Err())
		}
		t.mu.Lock()
	}
	t.next++
	id := t.next
	t.holders[id] = who
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.holders, id)
			t.broadcastLocked()
			t.mu.Unlock()
		})
	}, nil
}

// Exclusive waits until nothing holds a turn, then holds it alone. When
// ctx ends first, the error wraps ErrBusy and names the holders.
func (t *Turns) Exclusive(ctx context.Context) (func(), error) {
	select {
	case t.one <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: another garbage collection or repair is running", ErrBusy)
	}
	t.mu.Lock()
	for len(t.holders) > 0 {
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			t.mu.Lock()
			names := t.holderNamesLocked()
			t.mu.Unlock()
			<-t.one
			return nil, fmt.Errorf("%w: no moment without writers came before the wait ended (%w); still running: %s", ErrBusy, ctx.Err(), strings.Join(names, "; "))
		}
		t.mu.Lock()
	}
	t.sweeping = true
	t.broadcastLocked()
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			t.sweeping = false
			t.broadcastLocked()
			t.mu.Unlock()
			<-t.one
		})
	}, nil
}

func (t *Turns) holderNamesLocked() []string {
	out := make([]string, 0, len(t.holders))
	for _, n := range t.holders {
		out = append(out, n)
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("and %d more", len(out)-10))
	}
	return out
}
