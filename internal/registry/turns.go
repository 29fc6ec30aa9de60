package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrBusy is returned when garbage collection (or a repair) found no
// moment when nothing was writing, within the time it was given.
var ErrBusy = errors.New("the registry is busy")

// turns is how garbage collection takes turns with everything that
// writes or relies on content no tag reaches yet: imports (from the first
// byte until their staging repository is gone), promotions, /v2/ writes.
// Those hold it in shared mode for as long as they run; gc waits until
// none does, without keeping new ones out, and then holds it alone while
// it marks and sweeps (seconds), during which they wait.
type turns struct {
	mu       sync.Mutex
	holders  map[uint64]string // id -> what holds it
	next     uint64
	sweeping bool
	changed  chan struct{} // closed (and replaced) on every change
	one      chan struct{} // one exclusive holder at a time
}

func newTurns() *turns {
	return &turns{holders: map[uint64]string{}, changed: make(chan struct{}), one: make(chan struct{}, 1)}
}

func (t *turns) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// Hold takes a shared turn, waiting while gc sweeps.
func (t *turns) Hold(ctx context.Context, who string) (func(), error) {
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
func (t *turns) Exclusive(ctx context.Context) (func(), error) {
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

func (t *turns) holderNamesLocked() []string {
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

// HoldGC keeps garbage collection from sweeping until release is called,
// and waits while a sweep runs. who names the holder in gc's busy error
// ("import 4f2a…", "promotion …"). The importer holds it for a whole
// import, the promoter for a whole promotion, and the registry itself
// for every /v2/ request that writes.
func (r *Registry) HoldGC(ctx context.Context, who string) (release func(), err error) {
	return r.turns.Hold(ctx, who)
}

// holdForWrite holds the turn for one /v2/ write request. It answers
// the request itself (and returns false) when the client left while
// waiting.
func (r *Registry) holdForWrite(w http.ResponseWriter, req *http.Request) (func(), bool) {
	release, err := r.turns.Hold(req.Context(), "registry "+req.Method+" "+req.URL.Path)
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		return nil, false
	}
	return release, true
}

// askedBlobs remembers the blobs clients asked about with HEAD: a client
// that found a blob present goes on to push a manifest naming it, and gc
// must not take the blob away in between, however old it is.
type askedBlobs struct {
	mu   sync.Mutex
	when map[digest.Digest]time.Time
}

// maxAsked bounds the blobs remembered; past it, the oldest half of the
// grace period is forgotten first.
const maxAsked = 100000

// noteHead records a HEAD of a blob.
func (r *Registry) noteHead(req *http.Request) {
	if req.Method != http.MethodHead {
		return
	}
	_, ref, ok := blobPath(req.URL.Path)
	if !ok {
		return
	}
	d, err := digest.Parse(ref)
	if err != nil {
		return
	}
	a := &r.asked
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.when == nil {
		a.when = map[digest.Digest]time.Time{}
	}
	if len(a.when) >= maxAsked {
		for k, t := range a.when {
			if now.Sub(t) > DefaultGrace/2 {
				delete(a.when, k)
			}
		}
	}
	if len(a.when) < maxAsked {
		a.when[d] = now
	}
}

// AskedSince lists the blobs asked about after t.
func (a *askedBlobs) AskedSince(t time.Time) map[digest.Digest]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[digest.Digest]bool{}
	for d, at := range a.when {
		if at.After(t) {
			out[d] = true
		} else {
			delete(a.when, d)
		}
	}
	return out
}
