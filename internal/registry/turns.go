package registry

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/appliance-dev/appliance/internal/registry/turns"
	"github.com/opencontainers/go-digest"
)

// ErrBusy is returned when garbage collection (or a repair) found no
// moment when nothing was writing, within the time it was given.
var ErrBusy = turns.ErrBusy

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
