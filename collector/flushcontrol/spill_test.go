package flushcontrol

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// spilled is what the hub wrote to stdout, decoded line by line.
type spilled struct {
	lines                  []string
	spans, points, records []string // keys, in the order written
	traces                 []ptrace.Traces
	metrics                []pmetric.Metrics
	logs                   []plog.Logs
}

// decodeSpill checks that out is OTLP JSON lines, one JSON object per line, and decodes them.
func decodeSpill(t *testing.T, out string) spilled {
	t.Helper()
	var s spilled
	if out == "" {
		return s
	}
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("spilled output does not end with a newline: ...%q", out[max(0, len(out)-40):])
	}
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d is not one JSON object: %v", i+1, err)
		}
		s.lines = append(s.lines, line)
		var keys []string
		var bad string
		switch {
		case obj["resourceSpans"] != nil:
			td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces([]byte(line))
			must(t, err)
			keys, bad = spanKeys(td)
			s.spans = append(s.spans, keys...)
			s.traces = append(s.traces, td)
		case obj["resourceMetrics"] != nil:
			md, err := (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics([]byte(line))
			must(t, err)
			keys, bad = pointKeys(md)
			s.points = append(s.points, keys...)
			s.metrics = append(s.metrics, md)
		case obj["resourceLogs"] != nil:
			ld, err := (&plog.JSONUnmarshaler{}).UnmarshalLogs([]byte(line))
			must(t, err)
			keys, bad = recordKeys(ld)
			s.records = append(s.records, keys...)
			s.logs = append(s.logs, ld)
		default:
			t.Fatalf("line %d is no OTLP export request: %.80s", i+1, line)
		}
		if bad != "" {
			t.Fatalf("line %d: %s", i+1, bad)
		}
	}
	return s
}

func TestSpillWritesWhatIsLeftAsOTLPJSONLinesThatDecodeBackToTheHeldItems(t *testing.T) {
	// Given held traces, metrics and logs, and next consumers that always fail retryably.
	r := newRig(t)
	cfg := r.config(nil)
	tn, mn, ln := newNext(t, always(errUnavailable)), newNext(t, always(errUnavailable)), newNext(t, always(errUnavailable))
	tp, mp, lp := r.traces("", cfg, tn), r.metrics("", cfg, mn), r.logsProc("", cfg, ln)
	ctx := context.Background()
	must(t, tp.ConsumeTraces(ctx, spans("checkout", "t1", "t2")))
	must(t, tp.ConsumeTraces(ctx, spans("billing", "t3")))
	must(t, mp.ConsumeMetrics(ctx, points("checkout", "m1", "m2", "m3")))
	must(t, lp.ConsumeLogs(ctx, records("checkout", "l1", "l2")))
	must(t, lp.ConsumeLogs(ctx, records("billing", "l3")))

	// When the companion drains with spill_remaining.
	reply := r.drain(true)

	// Then every export was tried first, and what is left is on stdout, one OTLP JSON object per
	// line (small held requests of a pipeline share a line), decoding back to exactly the held
	// items, in order.
	if tn.callCount() != 1 || mn.callCount() != 1 || ln.callCount() != 1 {
		t.Fatalf("exports tried: %d, %d, %d; want one per signal", tn.callCount(), mn.callCount(), ln.callCount())
	}
	out := decodeSpill(t, r.stdout.String())
	if len(out.lines) != 3 {
		t.Fatalf("%d spilled lines; want 3 (one per pipeline: its requests fit one maxSpillChunk)", len(out.lines))
	}
	equalStrings(t, "spilled spans", out.spans, append(prefixed("checkout", "t1", "t2"), prefixed("billing", "t3")...))
	equalStrings(t, "spilled points", out.points, prefixed("checkout", "m1", "m2", "m3"))
	equalStrings(t, "spilled records", out.records, append(prefixed("checkout", "l1", "l2"), prefixed("billing", "l3")...))

	// And it is counted as spilled, nothing is left, and the status totals agree.
	wantCounts(t, "reply traces", reply.Traces, 0, 0, 3, nil)
	wantCounts(t, "reply metrics", reply.Metrics, 0, 0, 3, nil)
	wantCounts(t, "reply logs", reply.Logs, 0, 0, 3, nil)
	if reply.LastError != errUnavailable.Error() {
		t.Fatalf("last error %q; want the export failure", reply.LastError)
	}
	st := r.hub.Status()
	wantCounts(t, "status traces", st.Traces, 0, 0, 3, nil)
	wantCounts(t, "status metrics", st.Metrics, 0, 0, 3, nil)
	wantCounts(t, "status logs", st.Logs, 0, 0, 3, nil)
	if st.Traces.BufferedBytes+st.Metrics.BufferedBytes+st.Logs.BufferedBytes != 0 {
		t.Fatal("bytes still buffered after the spill")
	}

	// And a later drain has nothing left to send or spill.
	before := r.stdout.String()
	reply = r.drain(true)
	if r.stdout.String() != before || reply.Traces.Spilled+reply.Metrics.Spilled+reply.Logs.Spilled != 0 {
		t.Fatal("a second spill wrote more")
	}
}

func TestSpillWritesOnlyWhatTheExportsLeft(t *testing.T) {
	// Given two held requests and a next consumer that takes the first and then fails.
	r := newRig(t)
	next := newNext(t, answers(nil, errUnavailable))
	tp := r.traces("", r.config(func(c *Config) { c.MaxRequestItems = 1 }), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "sent")))
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "left")))

	// When drained with spill.
	reply := r.drain(true)

	// Then only the one not exported is on stdout.
	out := decodeSpill(t, r.stdout.String())
	equalStrings(t, "spilled spans", out.spans, prefixed("svc", "left"))
	equalStrings(t, "delivered spans", next.delivered(), prefixed("svc", "sent"))
	wantCounts(t, "reply", reply.Traces, 1, 0, 1, nil)
}

func TestASpilledRequestLargerThanMaxSpillChunkIsSplitIntoLinesOfWholeItems(t *testing.T) {
	const perResource, pad = 30, 4000 // two resources of about 120 KB each: 240 KB in all
	names := func(svc string) []string { return seq(svc+"-", 1, perResource) }
	cases := []struct {
		signal string
		accept func(r *rig, cfg *Config) error
		keys   func(spilled) []string
		parts  func(spilled) []resourceParts
	}{
		{"traces", func(r *rig, cfg *Config) error {
			td := ptrace.NewTraces()
			for _, svc := range []string{"checkout", "billing"} {
				rs := td.ResourceSpans().AppendEmpty()
				rs.Resource().Attributes().PutStr("service.name", svc)
				ss := rs.ScopeSpans().AppendEmpty()
				ss.Scope().SetName("afterflush.test")
				for _, n := range names(svc) {
					addSpan(ss.Spans(), n, pad)
				}
			}
			return r.traces("", cfg, newNext(r.t, always(errUnavailable))).ConsumeTraces(context.Background(), td)
		}, func(s spilled) []string { return s.spans }, tracesParts},
		{"metrics", func(r *rig, cfg *Config) error {
			md := pmetric.NewMetrics()
			for _, svc := range []string{"checkout", "billing"} {
				rm := md.ResourceMetrics().AppendEmpty()
				rm.Resource().Attributes().PutStr("service.name", svc)
				sm := rm.ScopeMetrics().AppendEmpty()
				sm.Scope().SetName("afterflush.test")
				for _, n := range names(svc) {
					addGauge(sm.Metrics(), n, pad)
				}
			}
			return r.metrics("", cfg, newNext(r.t, always(errUnavailable))).ConsumeMetrics(context.Background(), md)
		}, func(s spilled) []string { return s.points }, metricsParts},
		{"logs", func(r *rig, cfg *Config) error {
			ld := plog.NewLogs()
			for _, svc := range []string{"checkout", "billing"} {
				rl := ld.ResourceLogs().AppendEmpty()
				rl.Resource().Attributes().PutStr("service.name", svc)
				sl := rl.ScopeLogs().AppendEmpty()
				sl.Scope().SetName("afterflush.test")
				for _, n := range names(svc) {
					addRecord(sl.LogRecords(), n, pad)
				}
			}
			return r.logsProc("", cfg, newNext(r.t, always(errUnavailable))).ConsumeLogs(context.Background(), ld)
		}, func(s spilled) []string { return s.records }, logsParts},
	}
	for _, tc := range cases {
		t.Run(tc.signal, func(t *testing.T) {
			// Given one held request of 240 KB serialized (over maxSpillChunk, 64 KB) in two
			// resources, and a next consumer that always fails.
			r := newRig(t)
			must(t, tc.accept(r, r.config(nil)))

			// When drained with spill.
			r.drain(true)

			// Then it is on several lines, each under 3x maxSpillChunk, holding whole items
			// with their own resource, all of them, in order.
			out := decodeSpill(t, r.stdout.String())
			if len(out.lines) < 4 {
				t.Fatalf("%d lines; want the 240 KB request split over at least 4", len(out.lines))
			}
			for i, line := range out.lines {
				if len(line) >= 3*maxSpillChunk {
					t.Fatalf("line %d is %d bytes; want under %d", i+1, len(line), 3*maxSpillChunk)
				}
			}
			equalStrings(t, "spilled items", tc.keys(out),
				append(prefixed("checkout", names("checkout")...), prefixed("billing", names("billing")...)...))
			for _, part := range tc.parts(out) {
				if !strings.HasPrefix(part.item, part.service+"-") || part.pad != pad {
					t.Fatalf("item %q under resource %q with a pad of %d bytes; want its own resource and %d",
						part.item, part.service, part.pad, pad)
				}
			}
		})
	}
}

// resourceParts is an item of a spilled line with the resource it was written under.
type resourceParts struct {
	service, item string
	pad           int
}

func tracesParts(s spilled) []resourceParts {
	var out []resourceParts
	for _, td := range s.traces {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			rs := td.ResourceSpans().At(i)
			svc, _ := rs.Resource().Attributes().Get("service.name")
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				for k := 0; k < rs.ScopeSpans().At(j).Spans().Len(); k++ {
					span := rs.ScopeSpans().At(j).Spans().At(k)
					p, _ := span.Attributes().Get("pad")
					out = append(out, resourceParts{svc.Str(), span.Name(), len(p.Str())})
				}
			}
		}
	}
	return out
}

func metricsParts(s spilled) []resourceParts {
	var out []resourceParts
	for _, md := range s.metrics {
		for i := 0; i < md.ResourceMetrics().Len(); i++ {
			rm := md.ResourceMetrics().At(i)
			svc, _ := rm.Resource().Attributes().Get("service.name")
			for j := 0; j < rm.ScopeMetrics().Len(); j++ {
				for k := 0; k < rm.ScopeMetrics().At(j).Metrics().Len(); k++ {
					m := rm.ScopeMetrics().At(j).Metrics().At(k)
					p, _ := m.Gauge().DataPoints().At(0).Attributes().Get("pad")
					out = append(out, resourceParts{svc.Str(), m.Name(), len(p.Str())})
				}
			}
		}
	}
	return out
}

func logsParts(s spilled) []resourceParts {
	var out []resourceParts
	for _, ld := range s.logs {
		for i := 0; i < ld.ResourceLogs().Len(); i++ {
			rl := ld.ResourceLogs().At(i)
			svc, _ := rl.Resource().Attributes().Get("service.name")
			for j := 0; j < rl.ScopeLogs().Len(); j++ {
				for k := 0; k < rl.ScopeLogs().At(j).LogRecords().Len(); k++ {
					lr := rl.ScopeLogs().At(j).LogRecords().At(k)
					p, _ := lr.Attributes().Get("pad")
					out = append(out, resourceParts{svc.Str(), lr.Body().Str(), len(p.Str())})
				}
			}
		}
	}
	return out
}

// --- shutdown --------------------------------------------------------------------------------

func TestShutdownDrainsWithinShutdownTimeoutSpillsTheRestAndRunsOnce(t *testing.T) {
	// Given shutdown_timeout 800ms, held traces whose exporter works, and held metrics and
	// logs whose exporters fail retryably.
	r := newRig(t)
	const shutdownTimeout = 800 * time.Millisecond
	cfg := r.config(func(c *Config) { c.ShutdownTimeout = shutdownTimeout })
	tn, mn, ln := newNext(t, succeed), newNext(t, always(errUnavailable)), newNext(t, always(errUnavailable))
	tp, mp, lp := r.traces("", cfg, tn), r.metrics("", cfg, mn), r.logsProc("", cfg, ln)
	ctx := context.Background()
	must(t, tp.ConsumeTraces(ctx, spans("svc", "t1", "t2")))
	must(t, mp.ConsumeMetrics(ctx, points("svc", "m1")))
	must(t, lp.ConsumeLogs(ctx, records("svc", "l1", "l2", "l3")))

	// When the collector stops: every pipeline's processor is shut down, with a context
	// without deadline.
	began := time.Now()
	for _, p := range []interface{ Shutdown(context.Context) error }{tp, mp, lp} {
		must(t, p.Shutdown(context.Background()))
	}

	// Then one drain ran, its exports bounded by shutdown_timeout.
	for sig, f := range map[string]*fakeNext{"traces": tn, "metrics": mn, "logs": ln} {
		calls := f.allCalls()
		if len(calls) != 1 {
			t.Fatalf("%s: %d exports; want 1 (the shutdown drain runs once)", sig, len(calls))
		}
		if dl := calls[0].deadline; !calls[0].hasDeadline || dl.After(began.Add(shutdownTimeout)) {
			t.Fatalf("%s: export deadline %v after shutdown began (set %v); want within shutdown_timeout", sig, dl.Sub(began), calls[0].hasDeadline)
		}
	}
	equalStrings(t, "spans delivered", tn.delivered(), prefixed("svc", "t1", "t2"))

	// And what was not exported is on stdout, once, and counted spilled.
	out := decodeSpill(t, r.stdout.String())
	if len(out.spans) != 0 {
		t.Fatalf("exported spans were spilled too: %q", out.spans)
	}
	equalStrings(t, "spilled points", out.points, prefixed("svc", "m1"))
	equalStrings(t, "spilled records", out.records, prefixed("svc", "l1", "l2", "l3"))
	st := r.hub.Status()
	wantCounts(t, "status traces", st.Traces, 2, 0, 0, nil)
	wantCounts(t, "status metrics", st.Metrics, 0, 0, 1, nil)
	wantCounts(t, "status logs", st.Logs, 0, 0, 3, nil)
	if got := r.messages("drain (collector-shutdown)"); len(got) != 1 {
		t.Fatalf("shutdown drain logged %d times: %q", len(got), got)
	}
}

func TestShutdownOfAHubWithoutProcessorsDoesNothing(t *testing.T) {
	r := newRig(t)
	r.hub.shutdownDrain(context.Background())
	if out := r.stdout.String(); out != "" {
		t.Fatalf("wrote %q", out)
	}
}

func TestASpillingDrainKeepsTimeToWriteWhatIsLeft(t *testing.T) {
	t.Parallel() // waits out a deadline; nothing shared with other tests
	// Given 1 MB held in one request and a next consumer that answers only when its context
	// is done.
	r := newRig(t)
	next := newNext(t, blockUntilDone)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", "big", 1<<20)))

	// When drained with spill and a deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	callerDeadline, _ := ctx.Deadline()
	reply := r.hub.Drain(ctx, DrainOptions{Reason: "shutdown", Spill: true})

	// Then the export was stopped early enough to write 1 MB (at 20 MB/s, 50 ms) before the
	// drain's own deadline, and the request is spilled, not dropped.
	calls := next.allCalls()
	if len(calls) != 1 || !calls[0].hasDeadline || callerDeadline.Sub(calls[0].deadline) < 50*time.Millisecond {
		t.Fatalf("export calls %d; want one whose deadline leaves the spill 50 ms", len(calls))
	}
	wantCounts(t, "reply", reply.Traces, 0, 0, 1, nil)
	equalStrings(t, "spilled spans", decodeSpill(t, r.stdout.String()).spans, prefixed("svc", "big"))
}

func TestWhatTheDeadlineLeavesNoTimeToSpillIsDroppedAsShutdownDeadline(t *testing.T) {
	// Given held spans and an exporter that ignores its own deadline and answers only after
	// the caller's.
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	next := newNext(t, func(context.Context, int) error {
		<-ctx.Done()
		return errUnavailable
	})
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a", "b")))

	// When drained with spill.
	reply := r.hub.Drain(ctx, DrainOptions{Reason: "shutdown", Spill: true})

	// Then nothing is written and the items are counted dropped, never left unsaid.
	if out := r.stdout.String(); out != "" {
		t.Fatalf("spilled after the deadline: %q", out)
	}
	wantCounts(t, "reply", reply.Traces, 0, 0, 0, map[string]uint64{"shutdown_deadline": 2})
	wantCounts(t, "status", r.hub.Status().Traces, 0, 0, 0, map[string]uint64{"shutdown_deadline": 2})
}

func TestAHeldRequestThatCannotBeSpilledIsDroppedAsSpillFailedAndTheRestIsSpilled(t *testing.T) {
	// Given a good request (larger than maxSpillChunk: spilled on its own) whose export fails
	// retryably, then an undecodable one behind it (one export each: the drain stops at the
	// first).
	r := newRig(t)
	tp := r.traces("", r.config(func(c *Config) { c.MaxRequestItems = 1 }), newNext(t, always(errUnavailable)))
	must(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", "good", maxSpillChunk+1)))
	must(t, r.hub.accept(r.hub.pipes["flushcontrol/traces"], undecodable, 2))

	// When drained with spill.
	reply := r.drain(true)

	// Then the good one is spilled, the other is dropped as spill_failed, with a warning.
	equalStrings(t, "spilled", decodeSpill(t, r.stdout.String()).spans, prefixed("svc", "good"))
	wantCounts(t, "reply", reply.Traces, 0, 0, 1, map[string]uint64{"spill_failed": 2})
	if got := r.messages("cannot spill held traces"); len(got) != 1 {
		t.Fatalf("warnings %q", got)
	}
}

func TestManySmallSpilledRequestsShareLinesThatStayUnderThreeTimesMaxSpillChunk(t *testing.T) {
	// Given 100 held requests of about 2 KB (200 KB in all) whose exports fail.
	r := newRig(t)
	tp := r.traces("", r.config(nil), newNext(t, always(errUnavailable)))
	names := seq("s", 1, 100)
	for _, n := range names {
		must(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", n, 2000)))
	}

	// When drained with spill.
	reply := r.drain(true)

	// Then they are on fewer lines than requests, each under 3x maxSpillChunk, all of them in
	// order.
	out := decodeSpill(t, r.stdout.String())
	if len(out.lines) < 3 || len(out.lines) >= len(names) {
		t.Fatalf("%d lines for 200 KB in 100 requests; want a few, each of about maxSpillChunk", len(out.lines))
	}
	for i, line := range out.lines {
		if len(line) >= 3*maxSpillChunk {
			t.Fatalf("line %d is %d bytes; want under %d", i+1, len(line), 3*maxSpillChunk)
		}
	}
	equalStrings(t, "spilled spans", out.spans, prefixed("svc", names...))
	wantCounts(t, "reply", reply.Traces, 0, 0, 100, nil)
}
