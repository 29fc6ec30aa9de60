package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

var errKilled = errors.New("killed")

// TestGCStoppedAtEveryStep stops gc at each step of its sweep in turn, as
// a kill would: after every stop the store is consistent (Check finds
// nothing wrong, every tag pulls), and a gc run to the end finishes the
// work, with the same result as one never stopped.
func TestGCStoppedAtEveryStep(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	garbage := func() {
		t.Helper()
		for i := range 2 {
			s.push("p/app", fmt.Sprintf("v%d", i))
			s.push("p/app", fmt.Sprintf("v%d", i)) // the tag moves: the first is an orphan
		}
		s.putBlob(StagingProject+"/killed", []byte("staged"))
	}
	garbage()
	s.push("p/kept", "v1")
	later := time.Now().Add(3 * time.Hour)
	plan, err := s.GC(ctx, GCOptions{DryRun: true, Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Manifests != 2 || plan.Blobs != 7 || plan.StagingRepos != 1 {
		t.Fatalf("plan = %+v", plan)
	}
	for stop := 1; ; stop++ {
		n := 0
		s.stopAt = func(step string) error {
			if n++; n == stop {
				return fmt.Errorf("%w after: %s", errKilled, step)
			}
			return nil
		}
		_, err := s.GC(ctx, GCOptions{Now: later})
		s.stopAt = nil
		rep, cerr := s.Check(ctx, CheckOptions{})
		if cerr != nil {
			t.Fatal(cerr)
		}
		if len(rep.Problems) != 0 || len(rep.Warnings) != 0 {
			t.Fatalf("gc stopped at step %d (%v) left: %+v %+v", stop, err, rep.Problems, rep.Warnings)
		}
		for _, ref := range [][2]string{{"p/app", "v0"}, {"p/app", "v1"}, {"p/kept", "v1"}} {
			if err := s.pull(ref[0], ref[1]); err != nil {
				t.Fatalf("after a stop at step %d: %s:%s: %v", stop, ref[0], ref[1], err)
			}
		}
		if err == nil {
			break // ran to the end: every step has been a stopping point
		}
		if !errors.Is(err, errKilled) {
			t.Fatal(err)
		}
		// A restart and a whole gc finish the work.
		if _, err := s.GC(ctx, GCOptions{Now: later}); err != nil {
			t.Fatal(err)
		}
		total, err := s.GC(ctx, GCOptions{DryRun: true, Now: later})
		if err != nil || len(total.Removed) != 0 {
			t.Fatalf("after the finishing gc, still to remove: %+v (%v)", total.Removed, err)
		}
		garbage() // for the next stopping point
		if stop > 200 {
			t.Fatal("gc never ran to the end")
		}
	}
}
