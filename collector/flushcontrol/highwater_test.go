package flushcontrol

import (
	"context"
	"testing"
	"time"
)

func TestPastTheHighWaterMarkTheCollectorDrainsOnItsOwnOnce(t *testing.T) {
	// Given a ready collector with max_buffer_size_mib 1 and high_water_mark_percent 50, and a
	// next consumer that waits for the test before it answers.
	r := newRig(t)
	release := make(chan struct{})
	next := newNext(t, blockUntil(release)).withStarted()
	tp := r.traces("", r.config(func(c *Config) {
		c.MaxBufferSizeMiB, c.HighWaterMarkPercent, c.RetryAfter = 1, 50, time.Second
	}), next)
	r.hub.markReady()
	ctx := context.Background()

	// When 300 KB are held (under the mark), then nothing happens on its own.
	must(t, tp.ConsumeTraces(ctx, paddedSpans("svc", "a", 300_000)))
	if got := r.messages("high-water mark"); len(got) != 0 {
		t.Fatalf("under the mark: %q", got)
	}

	// When 300 KB more go past it.
	must(t, tp.ConsumeTraces(ctx, paddedSpans("svc", "b", 300_000)))

	// Then an export starts without any Drain call, with what is held.
	<-next.started
	// And more data while it runs starts no second one (it is logged once).
	must(t, tp.ConsumeTraces(ctx, paddedSpans("svc", "c", 300_000)))
	if got := r.messages("past its high-water mark"); len(got) != 1 {
		t.Fatalf("high-water lines %q; want one", got)
	}
	// And a request past the bound meanwhile is refused.
	resourceExhausted(t, tp.ConsumeTraces(ctx, paddedSpans("svc", "d", 300_000)), time.Second)

	// When the export answers and the own drain ends.
	close(release)
	r.hub.bg.Wait()

	// Then a and b were delivered, c is still held, and the drain is logged.
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a", "b"))
	wantCounts(t, "status", r.hub.Status().Traces, 2, 1, 0, nil)
	if got := r.messages("drain (high-water-mark) in "); len(got) != 1 {
		t.Fatalf("own drain lines %q", got)
	}
	if next.callCount() != 1 {
		t.Fatalf("%d exports; want 1", next.callCount())
	}

	// And the companion's next drain still hears of the refusal (it never saw the collector's
	// own drain reply) and sends c.
	reply := r.drain(false)
	equalMap(t, "rejected requests", reply.RejectedRequests, map[string]uint64{"backpressure": 1})
	wantCounts(t, "reply", reply.Traces, 1, 0, 0, nil)

	// And crossing the mark again later starts another one.
	must(t, tp.ConsumeTraces(ctx, paddedSpans("svc", "e", 300_000)))
	must(t, tp.ConsumeTraces(ctx, paddedSpans("svc", "f", 300_000)))
	r.hub.bg.Wait() // the own drain was added to bg before the request was answered
	if got := r.messages("past its high-water mark"); len(got) != 2 {
		t.Fatalf("high-water lines %q; want two, one per crossing", got)
	}
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a", "b", "c", "e", "f"))
}

func TestNoOwnDrainBeforeTheCollectorIsReadyOrWithoutAHighWaterMark(t *testing.T) {
	for name, tc := range map[string]struct {
		ready bool
		pct   int
	}{
		"not ready":              {false, 50},
		"high water mark 0":      {true, 0},
		"at the mark, not above": {true, 100},
	} {
		t.Run(name, func(t *testing.T) {
			// Given a buffer of 1 MiB held to 900 KB.
			r := newRig(t)
			next := newNext(t, succeed)
			tp := r.traces("", r.config(func(c *Config) { c.MaxBufferSizeMiB, c.HighWaterMarkPercent = 1, tc.pct }), next)
			if tc.ready {
				r.hub.markReady()
			}
			for _, n := range []string{"a", "b", "c"} {
				must(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", n, 300_000)))
			}

			// Then no drain was started on its own (the hub logs one before it starts it).
			if got := r.messages("high-water mark"); len(got) != 0 {
				t.Fatalf("own drain: %q", got)
			}
			r.hub.stop()
			if next.callCount() != 0 {
				t.Fatalf("%d exports without a drain", next.callCount())
			}
		})
	}
}
