package flushcontrol

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/processortest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/afterflush/afterflush/collector/internal/controlpb"
)

// ---------------------------------------------------------------------------------------------
// The fake next consumer: it records every call (what it got, the deadline it was given, what it
// answered) and answers what the test programs.

// answer decides what the next consumer says to its call-th call (0-based).
type answer func(ctx context.Context, call int) error

// errUnavailable is a retryable export failure (not consumererror.Permanent).
var errUnavailable = errors.New("backend unavailable: connection refused")

func succeed(context.Context, int) error { return nil }

// always answers err to every call.
func always(err error) answer { return func(context.Context, int) error { return err } }

// answers answers errs in turn, then nil.
func answers(errs ...error) answer {
	return func(_ context.Context, call int) error {
		if call < len(errs) {
			return errs[call]
		}
		return nil
	}
}

// blockUntilDone answers only when the call's context is done, with its error.
func blockUntilDone(ctx context.Context, _ int) error {
	<-ctx.Done()
	return ctx.Err()
}

// blockUntil answers nil once release is closed (or the call's context error first).
func blockUntil(release <-chan struct{}) answer {
	return func(ctx context.Context, _ int) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type call struct {
	keys        []string // what the call carried, see spanKeys/pointKeys/recordKeys
	traces      ptrace.Traces
	metrics     pmetric.Metrics
	logs        plog.Logs
	items       int
	deadline    time.Time
	hasDeadline bool
	err         error
}

type fakeNext struct {
	t       *testing.T
	mu      sync.Mutex
	answer  answer
	calls   []call
	started chan int // when set, receives the index of every call as it begins
}

func newNext(t *testing.T, a answer) *fakeNext { return &fakeNext{t: t, answer: a} }

// withStarted makes the fake announce every call on a channel the test reads.
func (f *fakeNext) withStarted() *fakeNext {
	f.started = make(chan int, 64)
	return f
}

func (f *fakeNext) setAnswer(a answer) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *fakeNext) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (f *fakeNext) consume(ctx context.Context, c call) error {
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, call{}) // reserve the slot: call indexes follow the order of arrival
	a := f.answer
	f.mu.Unlock()
	if f.started != nil {
		f.started <- n
	}
	var err error
	if a != nil {
		err = a(ctx, n)
	}
	c.deadline, c.hasDeadline = ctx.Deadline()
	c.err = err
	f.mu.Lock()
	f.calls[n] = c
	f.mu.Unlock()
	return err
}

func (f *fakeNext) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	keys, bad := spanKeys(td)
	if bad != "" {
		f.t.Errorf("the next consumer got a damaged span: %s", bad)
	}
	return f.consume(ctx, call{keys: keys, traces: td, items: td.SpanCount()})
}

func (f *fakeNext) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	keys, bad := pointKeys(md)
	if bad != "" {
		f.t.Errorf("the next consumer got a damaged metric point: %s", bad)
	}
	return f.consume(ctx, call{keys: keys, metrics: md, items: md.DataPointCount()})
}

func (f *fakeNext) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	keys, bad := recordKeys(ld)
	if bad != "" {
		f.t.Errorf("the next consumer got a damaged log record: %s", bad)
	}
	return f.consume(ctx, call{keys: keys, logs: ld, items: ld.LogRecordCount()})
}

func (f *fakeNext) allCalls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func (f *fakeNext) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// delivered is every item of the calls answered nil, in the order they arrived.
func (f *fakeNext) delivered() []string {
	var out []string
	for _, c := range f.allCalls() {
		if c.err == nil {
			out = append(out, c.keys...)
		}
	}
	return out
}

// itemsPerCall is the number of items of every call, in order.
func (f *fakeNext) itemsPerCall() []int {
	var out []int
	for _, c := range f.allCalls() {
		out = append(out, c.items)
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// Test data: every item carries its resource's service.name, a name, ids derived from the name
// and an attribute repeating the name, so that what arrives can be checked whole.

func idsOf(name string) (pcommon.TraceID, pcommon.SpanID) {
	sum := sha256.Sum256([]byte(name))
	var tid pcommon.TraceID
	var sid pcommon.SpanID
	copy(tid[:], sum[:16])
	copy(sid[:], sum[16:24])
	return tid, sid
}

// spans is one traces request of resource svc with a span per name.
func spans(svc string, names ...string) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", svc)
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("afterflush.test")
	for _, name := range names {
		addSpan(ss.Spans(), name, 0)
	}
	return td
}

func addSpan(dst ptrace.SpanSlice, name string, pad int) {
	span := dst.AppendEmpty()
	tid, sid := idsOf(name)
	span.SetName(name)
	span.SetTraceID(tid)
	span.SetSpanID(sid)
	span.SetKind(ptrace.SpanKindServer)
	span.SetStartTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000))
	span.SetEndTimestamp(pcommon.Timestamp(1_700_000_000_100_000_000))
	span.Attributes().PutStr("name", name)
	if pad > 0 {
		span.Attributes().PutStr("pad", strings.Repeat("x", pad))
	}
}

// paddedSpans is a traces request of one span whose attribute "pad" is pad bytes long.
func paddedSpans(svc, name string, pad int) ptrace.Traces {
	td := spans(svc)
	addSpan(td.ResourceSpans().At(0).ScopeSpans().At(0).Spans(), name, pad)
	return td
}

// spanKeys is "service/name" for every span of td, and what is wrong with a span if its ids
// or attributes do not match its name.
func spanKeys(td ptrace.Traces) (keys []string, bad string) {
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		svc, _ := rs.Resource().Attributes().Get("service.name")
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				span := ss.Spans().At(k)
				tid, sid := idsOf(span.Name())
				attr, _ := span.Attributes().Get("name")
				if span.TraceID() != tid || span.SpanID() != sid || attr.Str() != span.Name() ||
					ss.Scope().Name() != "afterflush.test" || span.Kind() != ptrace.SpanKindServer {
					bad = fmt.Sprintf("span %q: trace id %s, span id %s, name attribute %q, scope %q",
						span.Name(), span.TraceID(), span.SpanID(), attr.Str(), ss.Scope().Name())
				}
				keys = append(keys, svc.Str()+"/"+span.Name())
			}
		}
	}
	return keys, bad
}

// points is one metrics request of resource svc with a gauge of one point per name.
func points(svc string, names ...string) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", svc)
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName("afterflush.test")
	for _, name := range names {
		addGauge(sm.Metrics(), name, 0)
	}
	return md
}

func addGauge(dst pmetric.MetricSlice, name string, pad int) {
	m := dst.AppendEmpty()
	m.SetName(name)
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetIntValue(int64(len(name)))
	dp.SetTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000))
	dp.Attributes().PutStr("name", name)
	if pad > 0 {
		dp.Attributes().PutStr("pad", strings.Repeat("x", pad))
	}
}

func paddedPoints(svc, name string, pad int) pmetric.Metrics {
	md := points(svc)
	addGauge(md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics(), name, pad)
	return md
}

// pointKeys is "service/metric name" for every data point of md.
func pointKeys(md pmetric.Metrics) (keys []string, bad string) {
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		svc, _ := rm.Resource().Attributes().Get("service.name")
		for j := 0; j < rm.ScopeMetrics().Len(); j++ {
			sm := rm.ScopeMetrics().At(j)
			for k := 0; k < sm.Metrics().Len(); k++ {
				m := sm.Metrics().At(k)
				if m.Type() != pmetric.MetricTypeGauge {
					bad = fmt.Sprintf("metric %q is a %s", m.Name(), m.Type())
					continue
				}
				for p := 0; p < m.Gauge().DataPoints().Len(); p++ {
					dp := m.Gauge().DataPoints().At(p)
					attr, _ := dp.Attributes().Get("name")
					if attr.Str() != m.Name() || dp.IntValue() != int64(len(m.Name())) || sm.Scope().Name() != "afterflush.test" {
						bad = fmt.Sprintf("point of %q: name attribute %q, value %d", m.Name(), attr.Str(), dp.IntValue())
					}
					keys = append(keys, svc.Str()+"/"+m.Name())
				}
			}
		}
	}
	return keys, bad
}

// records is one logs request of resource svc with a record per body.
func records(svc string, bodies ...string) plog.Logs {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", svc)
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName("afterflush.test")
	for _, body := range bodies {
		addRecord(sl.LogRecords(), body, 0)
	}
	return ld
}

func addRecord(dst plog.LogRecordSlice, body string, pad int) {
	lr := dst.AppendEmpty()
	tid, sid := idsOf(body)
	lr.Body().SetStr(body)
	lr.SetTraceID(tid)
	lr.SetSpanID(sid)
	lr.SetSeverityNumber(plog.SeverityNumberInfo)
	lr.SetTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000))
	lr.Attributes().PutStr("name", body)
	if pad > 0 {
		lr.Attributes().PutStr("pad", strings.Repeat("x", pad))
	}
}

func paddedRecords(svc, body string, pad int) plog.Logs {
	ld := records(svc)
	addRecord(ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords(), body, pad)
	return ld
}

// recordKeys is "service/body" for every log record of ld.
func recordKeys(ld plog.Logs) (keys []string, bad string) {
	for i := 0; i < ld.ResourceLogs().Len(); i++ {
		rl := ld.ResourceLogs().At(i)
		svc, _ := rl.Resource().Attributes().Get("service.name")
		for j := 0; j < rl.ScopeLogs().Len(); j++ {
			sl := rl.ScopeLogs().At(j)
			for k := 0; k < sl.LogRecords().Len(); k++ {
				lr := sl.LogRecords().At(k)
				body := lr.Body().Str()
				tid, sid := idsOf(body)
				attr, _ := lr.Attributes().Get("name")
				if lr.TraceID() != tid || lr.SpanID() != sid || attr.Str() != body || sl.Scope().Name() != "afterflush.test" {
					bad = fmt.Sprintf("record %q: trace id %s, span id %s, name attribute %q", body, lr.TraceID(), lr.SpanID(), attr.Str())
				}
				keys = append(keys, svc.Str()+"/"+body)
			}
		}
	}
	return keys, bad
}

func prefixed(prefix string, names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + "/" + n
	}
	return out
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// The rig: a hub, its factory, a logger whose lines the test reads, and the hub's stdout.

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type rig struct {
	t       *testing.T
	hub     *Hub
	factory processor.Factory
	stdout  *syncBuffer
	logs    *observer.ObservedLogs
	logger  *zap.Logger
	mu      sync.Mutex
	env     map[string]string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	r := &rig{t: t, stdout: &syncBuffer{}, logs: logs, logger: zap.New(core), env: map[string]string{}}
	r.hub = NewHub(time.Now(), r.stdout, r.getenv)
	r.factory = NewFactory(r.hub)
	t.Cleanup(r.hub.stop)
	return r
}

func (r *rig) getenv(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.env[key]
}

func (r *rig) setenv(key, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.env[key] = value
}

// config is the factory's default config without a spool, changed by edit.
func (r *rig) config(edit func(*Config)) *Config {
	cfg := r.factory.CreateDefaultConfig().(*Config)
	cfg.Spool = false
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

func (r *rig) settings(name string) processor.Settings {
	set := processortest.NewNopSettings(Type)
	set.ID = component.NewID(Type)
	if name != "" {
		set.ID = component.MustNewIDWithName(Type.String(), name)
	}
	set.Logger = r.logger
	return set
}

func (r *rig) traces(name string, cfg *Config, next consumer.Traces) processor.Traces {
	r.t.Helper()
	p, err := r.factory.CreateTraces(context.Background(), r.settings(name), cfg, next)
	if err != nil {
		r.t.Fatalf("creating the traces processor %q: %v", name, err)
	}
	return p
}

func (r *rig) metrics(name string, cfg *Config, next consumer.Metrics) processor.Metrics {
	r.t.Helper()
	p, err := r.factory.CreateMetrics(context.Background(), r.settings(name), cfg, next)
	if err != nil {
		r.t.Fatalf("creating the metrics processor %q: %v", name, err)
	}
	return p
}

func (r *rig) logsProc(name string, cfg *Config, next consumer.Logs) processor.Logs {
	r.t.Helper()
	p, err := r.factory.CreateLogs(context.Background(), r.settings(name), cfg, next)
	if err != nil {
		r.t.Fatalf("creating the logs processor %q: %v", name, err)
	}
	return p
}

// drain is a companion's drain with a generous deadline.
func (r *rig) drain(spill bool) *controlpb.DrainReply {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return r.hub.Drain(ctx, DrainOptions{Reason: "invoke", RequestID: "req-1", Spill: spill})
}

// messages is every line logged at info level or above containing part (the collector's
// default level; the hub's own debug lines are left out).
func (r *rig) messages(part string) []string {
	var out []string
	for _, e := range r.logs.All() {
		if e.Level >= zap.InfoLevel && strings.Contains(e.Message, part) {
			out = append(out, e.Message)
		}
	}
	return out
}

// shortSocket is a socket path in a temporary directory, short enough for sockaddr_un.
func shortSocket(t *testing.T, dirs ...string) string {
	t.Helper()
	path := filepath.Join(append([]string{t.TempDir()}, append(dirs, "c.sock")...)...)
	if len(path) >= 100 {
		t.Fatalf("socket path %s is %d bytes; shorten the test name", path, len(path))
	}
	return path
}

// ---------------------------------------------------------------------------------------------
// Assertions.

func equalStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(got) != len(want) {
		t.Fatalf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func equalInts(t *testing.T, what string, got, want []int) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func equalMap(t *testing.T, what string, got, want map[string]uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
}

// wantCounts checks one signal's counts; dropped nil means none.
func wantCounts(t *testing.T, what string, got *controlpb.SignalCounts, exported, buffered, spilled uint64, dropped map[string]uint64) {
	t.Helper()
	if got.GetExported() != exported || got.GetBuffered() != buffered || got.GetSpilled() != spilled {
		t.Fatalf("%s: exported %d, buffered %d, spilled %d; want exported %d, buffered %d, spilled %d",
			what, got.GetExported(), got.GetBuffered(), got.GetSpilled(), exported, buffered, spilled)
	}
	equalMap(t, what+" dropped", got.GetDropped(), dropped)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// start serves FlushControl on socket (through AFTERFLUSH_CONTROL_ENDPOINT) and opens the
// spool if the first processor has one: what the control extension's Start does.
func (r *rig) start(socket string) error {
	r.setenv(EnvControlEndpoint, "unix://"+socket)
	return r.hub.start(r.logger)
}
