package flushcontrol

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestProcessorsAnswerAtOnceAndHoldEverythingUntilADrain(t *testing.T) {
	// Given the traces, metrics and logs processors of one component ID.
	r := newRig(t)
	cfg := r.config(nil)
	tn, mn, ln := newNext(t, succeed), newNext(t, succeed), newNext(t, succeed)
	tp, mp, lp := r.traces("", cfg, tn), r.metrics("", cfg, mn), r.logsProc("", cfg, ln)
	ctx := context.Background()

	// When senders hand over requests of every signal.
	must(t, tp.ConsumeTraces(ctx, spans("checkout", "t1", "t2", "t3")))
	must(t, mp.ConsumeMetrics(ctx, points("checkout", "m1", "m2")))
	must(t, lp.ConsumeLogs(ctx, records("checkout", "l1")))
	must(t, tp.ConsumeTraces(ctx, spans("billing", "t4", "t5")))
	must(t, mp.ConsumeMetrics(ctx, points("billing", "m3", "m4")))
	must(t, lp.ConsumeLogs(ctx, records("billing", "l2", "l3")))

	// Then nothing reaches the next consumers, and everything is held and counted accepted.
	for _, f := range []*fakeNext{tn, mn, ln} {
		if n := f.callCount(); n != 0 {
			t.Fatalf("the next consumer was called %d times before any drain", n)
		}
	}
	st := r.hub.Status()
	if st.AcceptedTraces != 5 || st.AcceptedMetrics != 4 || st.AcceptedLogs != 3 {
		t.Fatalf("accepted %d spans, %d points, %d records; want 5, 4, 3", st.AcceptedTraces, st.AcceptedMetrics, st.AcceptedLogs)
	}
	wantCounts(t, "status traces", st.Traces, 0, 5, 0, nil)
	wantCounts(t, "status metrics", st.Metrics, 0, 4, 0, nil)
	wantCounts(t, "status logs", st.Logs, 0, 3, 0, nil)
	if st.Traces.BufferedBytes == 0 || st.Metrics.BufferedBytes == 0 || st.Logs.BufferedBytes == 0 {
		t.Fatalf("buffered bytes: %d, %d, %d; want every signal's serialized size",
			st.Traces.BufferedBytes, st.Metrics.BufferedBytes, st.Logs.BufferedBytes)
	}

	// When the companion drains.
	reply := r.drain(false)

	// Then everything arrives, in order, whole, and the reply's counts are exact.
	equalStrings(t, "spans delivered", tn.delivered(),
		append(prefixed("checkout", "t1", "t2", "t3"), prefixed("billing", "t4", "t5")...))
	equalStrings(t, "points delivered", mn.delivered(),
		append(prefixed("checkout", "m1", "m2"), prefixed("billing", "m3", "m4")...))
	equalStrings(t, "records delivered", ln.delivered(),
		append(prefixed("checkout", "l1"), prefixed("billing", "l2", "l3")...))
	wantCounts(t, "reply traces", reply.Traces, 5, 0, 0, nil)
	wantCounts(t, "reply metrics", reply.Metrics, 4, 0, 0, nil)
	wantCounts(t, "reply logs", reply.Logs, 3, 0, 0, nil)
	if !reply.Complete || reply.LastError != "" {
		t.Fatalf("complete %v, last error %q; want a complete drain without error", reply.Complete, reply.LastError)
	}
	if reply.Traces.BufferedBytes != 0 || reply.Metrics.BufferedBytes != 0 || reply.Logs.BufferedBytes != 0 {
		t.Fatalf("buffered bytes after the drain: %d, %d, %d", reply.Traces.BufferedBytes, reply.Metrics.BufferedBytes, reply.Logs.BufferedBytes)
	}
	st = r.hub.Status()
	wantCounts(t, "status traces after the drain", st.Traces, 5, 0, 0, nil)
	wantCounts(t, "status metrics after the drain", st.Metrics, 4, 0, 0, nil)
	wantCounts(t, "status logs after the drain", st.Logs, 3, 0, 0, nil)

	// And a second drain has nothing to send.
	reply = r.drain(false)
	wantCounts(t, "second reply traces", reply.Traces, 0, 0, 0, nil)
	if calls := tn.callCount() + mn.callCount() + ln.callCount(); calls != 3 {
		t.Fatalf("the next consumers were called %d times in all; want 3 (one coalesced export per signal)", calls)
	}
}

func TestHeldDataDoesNotChangeWhenTheSenderChangesItsRequestAfterward(t *testing.T) {
	// Given a traces processor that accepted a request.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	td := spans("checkout", "t1")
	must(t, tp.ConsumeTraces(context.Background(), td))

	// When the sender changes its request after the answer.
	td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SetName("changed")

	// Then the drain sends what was accepted (which is why the processor can tell the pipeline
	// it does not mutate data).
	r.drain(false)
	equalStrings(t, "spans delivered", next.delivered(), prefixed("checkout", "t1"))
	if tp.Capabilities().MutatesData {
		t.Fatal("the processor says it mutates data")
	}
}

func TestEmptyRequestsAreAnsweredAndNotHeld(t *testing.T) {
	r := newRig(t)
	cfg := r.config(nil)
	tn, mn, ln := newNext(t, succeed), newNext(t, succeed), newNext(t, succeed)
	ctx := context.Background()
	must(t, r.traces("", cfg, tn).ConsumeTraces(ctx, ptrace.NewTraces()))
	must(t, r.metrics("", cfg, mn).ConsumeMetrics(ctx, pmetric.NewMetrics()))
	must(t, r.logsProc("", cfg, ln).ConsumeLogs(ctx, plog.NewLogs()))

	r.drain(false)
	if n := tn.callCount() + mn.callCount() + ln.callCount(); n != 0 {
		t.Fatalf("empty requests caused %d exports", n)
	}
	st := r.hub.Status()
	if st.AcceptedTraces+st.AcceptedMetrics+st.AcceptedLogs != 0 || st.Traces.BufferedBytes != 0 {
		t.Fatalf("empty requests were held: %v", st)
	}
}

func TestAPipelineBuiltAgainReplacesTheEarlierOne(t *testing.T) {
	// Given the traces pipeline of flushcontrol/a built once (a validation), then again for
	// the run with another next consumer and config.
	r := newRig(t)
	validated := newNext(t, succeed)
	r.traces("a", r.config(nil), validated)
	next := newNext(t, succeed)
	runCfg := r.config(func(c *Config) { c.MaxRequestItems = 1 })
	tp := r.traces("a", runCfg, next)
	// And another signal and another ID beside it.
	r.metrics("a", runCfg, newNext(t, succeed))
	r.traces("b", r.config(nil), newNext(t, succeed))

	// When the run's processor holds two requests and is drained.
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "s1")))
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "s2")))
	reply := r.drain(false)

	// Then the run's pipeline, with its config, is the one drained, once.
	equalInts(t, "items per export", next.itemsPerCall(), []int{1, 1})
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "s1", "s2"))
	if n := validated.callCount(); n != 0 {
		t.Fatalf("the replaced pipeline's consumer was called %d times", n)
	}
	wantCounts(t, "reply", reply.Traces, 2, 0, 0, nil)
}

// --- coalescing ------------------------------------------------------------------------------

func TestDrainCoalescesHeldRequestsIntoOneExport(t *testing.T) {
	// Given ten small held requests and no item cap.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	var want []string
	for i := 1; i <= 10; i++ {
		name := seq("s", i, i)[0]
		must(t, tp.ConsumeTraces(context.Background(), spans("svc", name)))
		want = append(want, "svc/"+name)
	}

	// When drained, then they leave as one export, in order.
	reply := r.drain(false)
	equalInts(t, "items per export", next.itemsPerCall(), []int{10})
	equalStrings(t, "spans delivered", next.delivered(), want)
	wantCounts(t, "reply traces", reply.Traces, 10, 0, 0, nil)
}

func TestDrainCoalescesHeldRequestsUpToMaxRequestItems(t *testing.T) {
	// Given max_request_items 4 and five held requests of 2 spans, then one of 5 spans.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(func(c *Config) { c.MaxRequestItems = 4 }), next)
	for i := 0; i < 5; i++ {
		names := seq("s", 2*i+1, 2*i+2)
		must(t, tp.ConsumeTraces(context.Background(), spans("svc", names...)))
	}
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", seq("s", 11, 15)...)))

	// When drained.
	reply := r.drain(false)

	// Then the exports hold at most 4 spans, whole requests each, except that a request larger
	// than the cap goes whole and alone.
	equalInts(t, "items per export", next.itemsPerCall(), []int{4, 4, 2, 5})
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", seq("s", 1, 15)...))
	wantCounts(t, "reply traces", reply.Traces, 15, 0, 0, nil)
}

func TestDrainCoalescesHeldRequestsUpToMaxRequestSize(t *testing.T) {
	// Given max_request_size_mib 1 and three held requests of about 400 KB, then one of 1.5 MB.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(func(c *Config) { c.MaxRequestSizeMiB = 1; c.MaxBufferSizeMiB = 8 }), next)
	for _, name := range []string{"a", "b", "c"} {
		must(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", name, 400_000)))
	}
	must(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", "huge", 1_500_000)))

	// When drained.
	reply := r.drain(false)

	// Then two requests fit one export (800 KB), the third goes alone, and the one over the
	// cap is still sent, whole.
	equalInts(t, "items per export", next.itemsPerCall(), []int{2, 1, 1})
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a", "b", "c", "huge"))
	wantCounts(t, "reply traces", reply.Traces, 4, 0, 0, nil)
	for i, c := range next.allCalls() {
		if size := (&ptrace.ProtoMarshaler{}).TracesSize(c.traces); i < 2 && size > 1<<20 {
			t.Fatalf("export %d is %d bytes, over max_request_size_mib", i, size)
		}
	}
}

// --- backpressure ----------------------------------------------------------------------------

// resourceExhausted checks that err is RESOURCE_EXHAUSTED telling the sender to wait retryAfter.
func resourceExhausted(t *testing.T, err error, retryAfter time.Duration) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		t.Fatalf("got %v; want a gRPC RESOURCE_EXHAUSTED status", err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.RetryInfo); ok {
			if got := info.GetRetryDelay().AsDuration(); got != retryAfter {
				t.Fatalf("RetryInfo.retry_delay %v; want %v", got, retryAfter)
			}
			return
		}
	}
	t.Fatalf("RESOURCE_EXHAUSTED without a RetryInfo: %v", st.Details())
}

func TestPastMaxBufferSizeTheProcessorAnswersResourceExhaustedWithRetryInfo(t *testing.T) {
	// Given max_buffer_size_mib 1, retry_after 7s, and three held requests of 300 KB.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(func(c *Config) { c.MaxBufferSizeMiB = 1; c.RetryAfter = 7 * time.Second }), next)
	ctx := context.Background()
	for _, name := range []string{"a", "b", "c"} {
		must(t, tp.ConsumeTraces(ctx, paddedSpans("svc", name, 300_000)))
	}

	// When a fourth one would go past the bound.
	err := tp.ConsumeTraces(ctx, paddedSpans("svc", "d", 300_000))

	// Then it is refused with RESOURCE_EXHAUSTED and RetryInfo, not held, and counted.
	resourceExhausted(t, err, 7*time.Second)
	st := r.hub.Status()
	if st.AcceptedTraces != 3 || st.Traces.Buffered != 3 {
		t.Fatalf("accepted %d, buffered %d spans; want 3 and 3", st.AcceptedTraces, st.Traces.Buffered)
	}
	if st.Traces.BufferedBytes > 1<<20 {
		t.Fatalf("buffered %d bytes, over the bound", st.Traces.BufferedBytes)
	}
	equalMap(t, "status rejected requests", st.RejectedRequests, map[string]uint64{"backpressure": 1})

	// And the next drain reply reports the refusal, the one after it does not, while the
	// status keeps the total.
	reply := r.drain(false)
	equalMap(t, "first drain's rejected requests", reply.RejectedRequests, map[string]uint64{"backpressure": 1})
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a", "b", "c"))
	reply = r.drain(false)
	equalMap(t, "second drain's rejected requests", reply.RejectedRequests, nil)
	equalMap(t, "status rejected requests after the drains", r.hub.Status().RejectedRequests, map[string]uint64{"backpressure": 1})

	// And once drained, the buffer takes requests again.
	must(t, tp.ConsumeTraces(ctx, paddedSpans("svc", "d", 300_000)))
}

func TestTheBufferBoundIsSharedByTheSignalsOfOneProcessorIDAndNotByAnotherID(t *testing.T) {
	// Given the traces, metrics and logs processors of flushcontrol/a (max 1 MiB), and the
	// metrics processor of flushcontrol/b, and flushcontrol/a's traces holding 900 KB.
	r := newRig(t)
	cfg := r.config(func(c *Config) { c.MaxBufferSizeMiB = 1; c.RetryAfter = time.Second })
	ta := r.traces("a", cfg, newNext(t, succeed))
	ma := r.metrics("a", cfg, newNext(t, succeed))
	la := r.logsProc("a", cfg, newNext(t, succeed))
	mb := r.metrics("b", cfg, newNext(t, succeed))
	ctx := context.Background()
	for _, name := range []string{"a", "b", "c"} {
		must(t, ta.ConsumeTraces(ctx, paddedSpans("svc", name, 300_000)))
	}

	// When metrics and logs of 300 KB arrive at flushcontrol/a, then both are refused.
	resourceExhausted(t, ma.ConsumeMetrics(ctx, paddedPoints("svc", "m", 300_000)), time.Second)
	resourceExhausted(t, la.ConsumeLogs(ctx, paddedRecords("svc", "l", 300_000)), time.Second)

	// And the same at flushcontrol/b is held: its bound is its own.
	must(t, mb.ConsumeMetrics(ctx, paddedPoints("svc", "m", 300_000)))
	// While small requests still fit flushcontrol/a's bound.
	must(t, ma.ConsumeMetrics(ctx, points("svc", "small")))

	st := r.hub.Status()
	equalMap(t, "status rejected requests", st.RejectedRequests, map[string]uint64{"backpressure": 2})
	if st.AcceptedMetrics != 2 || st.AcceptedLogs != 0 || st.AcceptedTraces != 3 {
		t.Fatalf("accepted %d spans, %d points, %d records; want 3, 2, 0", st.AcceptedTraces, st.AcceptedMetrics, st.AcceptedLogs)
	}
}

// --- failures --------------------------------------------------------------------------------

func TestARetryableFailureLeavesTheItemsBufferedFirstInLine(t *testing.T) {
	// Given max_request_items 2, held requests a (2 spans) and b (2 spans), and a next consumer
	// that accepts the first export and fails the second retryably.
	r := newRig(t)
	next := newNext(t, answers(nil, errUnavailable))
	tp := r.traces("", r.config(func(c *Config) { c.MaxRequestItems = 2 }), next)
	ctx := context.Background()
	must(t, tp.ConsumeTraces(ctx, spans("svc", "a1", "a2")))
	must(t, tp.ConsumeTraces(ctx, spans("svc", "b1", "b2")))
	must(t, tp.ConsumeTraces(ctx, spans("svc", "c1")))

	// When drained.
	reply := r.drain(false)

	// Then a is exported; b and c stay buffered (the drain stops at the failure) and the
	// failure is the last error.
	wantCounts(t, "first reply", reply.Traces, 2, 3, 0, nil)
	if reply.Complete || reply.LastError != errUnavailable.Error() {
		t.Fatalf("complete %v, last error %q; want incomplete with %q", reply.Complete, reply.LastError, errUnavailable)
	}
	if got := r.hub.Status().LastExportError; got != errUnavailable.Error() {
		t.Fatalf("status last export error %q", got)
	}
	equalInts(t, "items per export", next.itemsPerCall(), []int{2, 2})

	// When a newer request arrives and the next drain succeeds.
	must(t, tp.ConsumeTraces(ctx, spans("svc", "d1")))
	reply = r.drain(false)

	// Then the kept items go first, before the newer ones.
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a1", "a2", "b1", "b2", "c1", "d1"))
	wantCounts(t, "second reply", reply.Traces, 4, 0, 0, nil)
	if !reply.Complete || reply.LastError != "" {
		t.Fatalf("complete %v, last error %q", reply.Complete, reply.LastError)
	}
	wantCounts(t, "status", r.hub.Status().Traces, 6, 0, 0, nil)
}

func TestAPermanentFailureDropsTheItemsWithItsReason(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		reason string
	}{
		{"http status in the text", consumererror.NewPermanent(errors.New(
			"error exporting items, request to https://backend/v1/traces responded with HTTP Status Code 400, Message=bad span")), "http 400"},
		{"grpc status", consumererror.NewPermanent(status.Error(codes.InvalidArgument, "bad span")), "grpc InvalidArgument"},
		{"neither", consumererror.NewPermanent(errors.New("cannot encode")), "permanent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Given held requests a (2 spans), b (1 span) and c (1 span), max 2 items per
			// export, and a next consumer that refuses the first export for good.
			r := newRig(t)
			next := newNext(t, answers(tc.err))
			tp := r.traces("", r.config(func(c *Config) { c.MaxRequestItems = 2 }), next)
			ctx := context.Background()
			must(t, tp.ConsumeTraces(ctx, spans("svc", "a1", "a2")))
			must(t, tp.ConsumeTraces(ctx, spans("svc", "b1")))
			must(t, tp.ConsumeTraces(ctx, spans("svc", "c1")))

			// When drained.
			reply := r.drain(false)

			// Then a is dropped with the reason, the drain goes on with b and c, and nothing
			// is left: the drain is complete.
			wantCounts(t, "reply", reply.Traces, 2, 0, 0, map[string]uint64{tc.reason: 2})
			equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "b1", "c1"))
			if !reply.Complete || reply.LastError != oneLine(tc.err) {
				t.Fatalf("complete %v, last error %q; want complete with %q", reply.Complete, reply.LastError, oneLine(tc.err))
			}

			// And the drop is in the totals, added up over drains, and never sent again.
			must(t, tp.ConsumeTraces(ctx, spans("svc", "d1", "d2")))
			next.setAnswer(always(tc.err))
			reply = r.drain(false)
			wantCounts(t, "second reply", reply.Traces, 0, 0, 0, map[string]uint64{tc.reason: 2})
			wantCounts(t, "status", r.hub.Status().Traces, 2, 0, 0, map[string]uint64{tc.reason: 4})
			if n := next.callCount(); n != 3 {
				t.Fatalf("%d exports; want 3 (a, b+c, d)", n)
			}
		})
	}
}

func TestAStatusReplyIsASnapshotThatLaterDrainsDoNotChange(t *testing.T) {
	// Given a status taken after 1 span was dropped for good.
	r := newRig(t)
	next := newNext(t, always(consumererror.NewPermanent(errors.New("no"))))
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	r.drain(false)
	before := r.hub.Status()

	// When more is dropped later.
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "b", "c")))
	r.drain(false)

	// Then the earlier reply still says what it said (the gRPC server encodes it after the
	// hub's lock is released), and a new status has the new total.
	equalMap(t, "earlier status", before.Traces.Dropped, map[string]uint64{"permanent": 1})
	equalMap(t, "later status", r.hub.Status().Traces.Dropped, map[string]uint64{"permanent": 3})
}

// --- deadlines -------------------------------------------------------------------------------

func TestADrainReturnsBeforeTheCallersDeadlineWhenTheExportDoesNotAnswer(t *testing.T) {
	t.Parallel() // waits out a deadline; nothing shared with other tests
	// Given held spans and a next consumer that answers only when its context is done.
	r := newRig(t)
	next := newNext(t, blockUntilDone)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a1", "a2")))

	// When the companion drains with a deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	callerDeadline, _ := ctx.Deadline()
	reply := r.hub.Drain(ctx, DrainOptions{Reason: "invoke", RequestID: "req-1"})

	// Then the drain has returned while the caller's context is still alive: the export was
	// given a deadline before the caller's.
	if err := ctx.Err(); err != nil {
		t.Fatalf("the drain returned after the caller's deadline: %v", err)
	}
	calls := next.allCalls()
	if len(calls) != 1 {
		t.Fatalf("%d export calls; want 1", len(calls))
	}
	if !calls[0].hasDeadline || !calls[0].deadline.Before(callerDeadline) {
		t.Fatalf("export deadline %v (set %v); want one before the caller's %v",
			calls[0].deadline, calls[0].hasDeadline, callerDeadline)
	}
	// And the reply says the drain is incomplete, why, and what is still held.
	if reply.Complete {
		t.Fatal("reply.Complete is true; the export did not answer")
	}
	if !strings.Contains(reply.LastError, "no answer within") || !strings.Contains(reply.LastError, "flushcontrol/traces") {
		t.Fatalf("last error %q; want the pipeline and \"no answer within\"", reply.LastError)
	}
	wantCounts(t, "reply", reply.Traces, 0, 2, 0, nil)
	wantCounts(t, "status", r.hub.Status().Traces, 0, 2, 0, nil)

	// And the next drain, answered, delivers them.
	next.setAnswer(succeed)
	reply = r.drain(false)
	wantCounts(t, "second reply", reply.Traces, 2, 0, 0, nil)
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a1", "a2"))
}

func TestADrainWithoutADeadlineIsBoundedByDefaultDrainTimeout(t *testing.T) {
	// Given default_drain_timeout 100ms and a next consumer that answers only when its
	// context is done.
	r := newRig(t)
	next := newNext(t, blockUntilDone)
	tp := r.traces("", r.config(func(c *Config) { c.DefaultDrainTimeout = 100 * time.Millisecond }), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))

	// When drained with a context without deadline.
	began := time.Now()
	reply := r.hub.Drain(context.Background(), DrainOptions{Reason: "manual"})

	// Then the export was bounded by the default drain timeout.
	calls := next.allCalls()
	if len(calls) != 1 || !calls[0].hasDeadline {
		t.Fatalf("export calls %d; want one, with a deadline", len(calls))
	}
	if dl := calls[0].deadline; dl.Before(began) || dl.After(began.Add(100*time.Millisecond)) {
		t.Fatalf("export deadline %v after the drain began; want within default_drain_timeout (100ms)", dl.Sub(began))
	}
	if reply.Complete || !strings.Contains(reply.LastError, "no answer within") {
		t.Fatalf("complete %v, last error %q", reply.Complete, reply.LastError)
	}
	wantCounts(t, "reply", reply.Traces, 0, 1, 0, nil)
}

func TestOnlyOneDrainRunsAtATime(t *testing.T) {
	// Given a drain under way whose export waits for the test.
	r := newRig(t)
	release := make(chan struct{})
	next := newNext(t, blockUntil(release)).withStarted()
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	first := make(chan uint64)
	go func() { first <- r.drain(false).Traces.Exported }()
	<-next.started

	// When a second drain's deadline comes while the first still runs.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	reply := r.hub.Drain(ctx, DrainOptions{Reason: "invoke", RequestID: "req-2"})

	// Then it gives up and says so; the first one finishes its work.
	if reply.Complete || reply.LastError != "another drain was still running at the deadline" {
		t.Fatalf("complete %v, last error %q", reply.Complete, reply.LastError)
	}
	close(release)
	if got := <-first; got != 1 {
		t.Fatalf("the first drain exported %d spans; want 1", got)
	}
	if n := next.callCount(); n != 1 {
		t.Fatalf("%d exports; want 1", n)
	}
}

func TestADrainSendsWhatWasAcceptedBeforeItAndLeavesNewerRequestsForTheNext(t *testing.T) {
	// Given two held requests, one export each, and a next consumer that holds the first
	// export until the test lets it go.
	r := newRig(t)
	release := make(chan struct{})
	next := newNext(t, func(ctx context.Context, call int) error {
		if call == 0 {
			return blockUntil(release)(ctx, call)
		}
		return nil
	}).withStarted()
	tp := r.traces("", r.config(func(c *Config) { c.MaxRequestItems = 1 }), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "b")))
	replies := make(chan uint64, 1)
	go func() { replies <- r.drain(false).Traces.Buffered }()
	<-next.started

	// When a request arrives while the drain runs.
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "c")))
	close(release)

	// Then the drain sends a and b only, and c waits for the next drain.
	if buffered := <-replies; buffered != 1 {
		t.Fatalf("%d spans buffered after the drain; want 1 (c)", buffered)
	}
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a", "b"))
	r.drain(false)
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a", "b", "c"))
}

func TestConcurrentSendersAndDrainsLoseNothingAndKeepEachSendersOrder(t *testing.T) {
	// Given four senders of 50 requests each, and drains running all the while.
	r := newRig(t)
	next := newNext(t, succeed)
	cfg := r.config(nil)
	tp := r.traces("", cfg, next)
	mp := r.metrics("", cfg, newNext(t, succeed))
	const senders, requests = 4, 50
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < requests; i++ {
				if err := tp.ConsumeTraces(context.Background(), spans(fmt.Sprintf("sender%d", s), fmt.Sprintf("%d", i))); err != nil {
					t.Errorf("sender %d request %d: %v", s, i, err)
				}
				if err := mp.ConsumeMetrics(context.Background(), points("svc", "m")); err != nil {
					t.Errorf("sender %d metrics %d: %v", s, i, err)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var exported uint64
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		reply := r.drain(false)
		exported += reply.Traces.Exported
		_ = r.hub.Status()
	}
	exported += r.drain(false).Traces.Exported

	// Then every span arrived exactly once, each sender's in its order.
	if exported != senders*requests {
		t.Fatalf("exported %d spans; want %d", exported, senders*requests)
	}
	seen := map[string]int{}
	for _, key := range next.delivered() {
		svc, n, _ := strings.Cut(key, "/")
		if want := fmt.Sprintf("%d", seen[svc]); n != want {
			t.Fatalf("%s: got span %s; want %s", svc, n, want)
		}
		seen[svc]++
	}
	st := r.hub.Status()
	if st.Traces.Exported != senders*requests || st.Metrics.Exported != senders*requests || st.Traces.Buffered+st.Metrics.Buffered != 0 {
		t.Fatalf("status: exported %d spans and %d points, %d + %d buffered",
			st.Traces.Exported, st.Metrics.Exported, st.Traces.Buffered, st.Metrics.Buffered)
	}
}

// undecodable is held bytes that are no OTLP request (a length-delimited field cut short), as a
// damaged spool could hand back.
var undecodable = []byte("\x0a\x05ab")

func TestAHeldRequestThatCannotBeDecodedIsDroppedAndDoesNotBlockTheOnesAfterIt(t *testing.T) {
	for _, sig := range signals {
		t.Run(sig.String(), func(t *testing.T) {
			// Given an undecodable held request, then a good one, one export each.
			r := newRig(t)
			next := newNext(t, succeed)
			cfg := r.config(func(c *Config) { c.MaxRequestItems = 1 })
			ctx := context.Background()
			var accept func() error
			switch sig {
			case traces:
				tp := r.traces("", cfg, next)
				accept = func() error { return tp.ConsumeTraces(ctx, spans("svc", "good")) }
			case metrics:
				mp := r.metrics("", cfg, next)
				accept = func() error { return mp.ConsumeMetrics(ctx, points("svc", "good")) }
			default:
				lp := r.logsProc("", cfg, next)
				accept = func() error { return lp.ConsumeLogs(ctx, records("svc", "good")) }
			}
			must(t, r.hub.accept(r.hub.pipes["flushcontrol/"+sig.String()], undecodable, 1))
			must(t, accept())

			// When drained (twice: a retryable failure would keep it first in line for ever).
			reply := r.drain(false)
			second := r.drain(false)

			// Then it is dropped for good in the first drain, and the good one is delivered.
			per := map[signal]func() (uint64, map[string]uint64){
				traces:  func() (uint64, map[string]uint64) { return reply.Traces.Exported, reply.Traces.Dropped },
				metrics: func() (uint64, map[string]uint64) { return reply.Metrics.Exported, reply.Metrics.Dropped },
				logs:    func() (uint64, map[string]uint64) { return reply.Logs.Exported, reply.Logs.Dropped },
			}
			exported, dropped := per[sig]()
			if exported != 1 || !reply.Complete || !second.Complete {
				t.Fatalf("exported %d, complete %v then %v (last error %q); want 1, complete", exported, reply.Complete, second.Complete, reply.LastError)
			}
			equalMap(t, "dropped", dropped, map[string]uint64{"permanent": 1})
			equalStrings(t, "delivered", next.delivered(), prefixed("svc", "good"))
			if !strings.Contains(reply.LastError, "decoding held "+sig.String()) {
				t.Fatalf("last error %q", reply.LastError)
			}
		})
	}
}

func TestADrainWhoseDeadlineHasPassedSaysSoWhenNoOtherDrainRuns(t *testing.T) {
	// Given a held span and no drain running.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()

	// When drains come with a deadline already past (repeated: a wrong answer would come at random).
	for i := 0; i < 20; i++ {
		reply := r.hub.Drain(ctx, DrainOptions{Reason: "invoke", RequestID: "late"})

		// Then each says the deadline came first, not that another drain was running.
		if reply.Complete || reply.LastError != "flushcontrol/traces: the drain's deadline came before the export" {
			t.Fatalf("drain %d: complete %v, last error %q", i, reply.Complete, reply.LastError)
		}
		wantCounts(t, "reply", reply.Traces, 0, 1, 0, nil)
	}
	if n := next.callCount(); n != 0 {
		t.Fatalf("%d exports after the deadline", n)
	}
}
