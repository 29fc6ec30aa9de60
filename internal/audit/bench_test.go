package audit_test

import (
	"testing"
	"time"

	"github.com/appliance-dev/appliance/internal/audit"
)

// The cost of an entry: one writer waits for its own fsync each time; many
// writers at once share a write and an fsync (group commit). Run with
//
//	go test -run '^$' -bench . ./internal/audit/
//
// and read entries/s (docs/audit.md gives the figures of one machine).

func entry() audit.Entry {
	return audit.Entry{Actor: "builder", Remote: "10.20.30.40", Action: audit.ActionPushBlob,
		Target:  "nvidia/gpu-operator@sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
		Outcome: audit.OK, Status: 201, Details: map[string]string{"method": "PUT"}}
}

func benchRecord(b *testing.B, parallel bool) {
	l, err := audit.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := entry()
	b.ReportAllocs()
	start := time.Now()
	if parallel {
		b.SetParallelism(16) // 16 × GOMAXPROCS writers, as many pushes at once
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := l.Record(b.Context(), e); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for b.Loop() {
			if err := l.Record(b.Context(), e); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
}

// BenchmarkRecord is one writer: an fsync per entry.
func BenchmarkRecord(b *testing.B) { benchRecord(b, false) }

// BenchmarkRecordParallel is many writers sharing fsyncs.
func BenchmarkRecordParallel(b *testing.B) { benchRecord(b, true) }
