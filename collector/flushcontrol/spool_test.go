package flushcontrol

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// segmentFiles is the names of the spool segments in dir, sorted.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".seg") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// crashCopy is what a crashed collector leaves: its segments as they are on disk now, before
// any later ack, in a directory nobody has locked.
func crashCopy(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "spool")
	must(t, os.MkdirAll(to, 0o700))
	for _, name := range segmentFiles(t, from) {
		data, err := os.ReadFile(filepath.Join(from, name))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(to, name), data, 0o600))
	}
	return to
}

func spoolConfig(r *rig, dir string) *Config {
	return r.config(func(c *Config) { c.Spool = true; c.SpoolDirectory = dir })
}

func TestAHubStartedAfterACrashReplaysWhatWasAcceptedAndNotSent(t *testing.T) {
	// Given a collector with a spool whose traces and logs pipelines accepted a (then drained
	// and sent), then b, c and some logs.
	first := newRig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	cfg := spoolConfig(first, dir)
	tp := first.traces("s", cfg, newNext(t, succeed))
	lp := first.logsProc("s", cfg, newNext(t, succeed))
	must(t, first.start(shortSocket(t)))
	ctx := context.Background()
	must(t, tp.ConsumeTraces(ctx, spans("svc", "a1")))
	if reply := first.drain(false); reply.Traces.Exported != 1 {
		t.Fatalf("first drain exported %d spans", reply.Traces.Exported)
	}
	must(t, tp.ConsumeTraces(ctx, spans("svc", "b1", "b2", "b3")))
	must(t, tp.ConsumeTraces(ctx, spans("svc", "c1")))
	must(t, lp.ConsumeLogs(ctx, records("svc", "l1", "l2")))

	// When it crashes, and a collector with the same traces pipeline (and no logs pipeline)
	// starts on what it left.
	left := crashCopy(t, dir)
	second := newRig(t)
	next := newNext(t, succeed)
	second.traces("s", spoolConfig(second, left), next)
	must(t, second.start(shortSocket(t)))

	// Then b and c are held again, in order, and a is not (it was acknowledged).
	equalStrings(t, "replay log", second.messages("replayed from the spool"),
		[]string{"replayed from the spool: 4 spans, 0 metric points, 0 log records"})
	equalStrings(t, "lost log", second.messages("dropped from the spool"),
		[]string{"dropped from the spool, no pipeline takes them now: 0 spans, 0 metric points, 2 log records"})
	st := second.hub.Status()
	if st.AcceptedTraces != 4 || st.Traces.Buffered != 4 || st.Traces.BufferedBytes == 0 {
		t.Fatalf("accepted %d, buffered %d spans (%d bytes); want 4 and 4", st.AcceptedTraces, st.Traces.Buffered, st.Traces.BufferedBytes)
	}
	// And the logs nobody takes are counted dropped.
	wantCounts(t, "status logs", st.Logs, 0, 0, 0, map[string]uint64{"no_pipeline_after_restart": 2})
	if n := next.callCount(); n != 0 {
		t.Fatalf("%d exports before any drain", n)
	}

	// And a drain delivers them.
	reply := second.drain(false)
	wantCounts(t, "reply", reply.Traces, 4, 0, 0, nil)
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "b1", "b2", "b3", "c1"))

	// And once all of it is sent and the collector stops, nothing is left to replay.
	second.hub.stop()
	if files := segmentFiles(t, left); len(files) != 0 {
		t.Fatalf("segments left after everything was sent: %v", files)
	}
	third := newRig(t)
	third.traces("s", spoolConfig(third, left), newNext(t, succeed))
	must(t, third.start(shortSocket(t)))
	if got := third.messages("from the spool"); len(got) != 0 {
		t.Fatalf("a third collector found %q", got)
	}
	if st := third.hub.Status(); st.Traces.Buffered != 0 {
		t.Fatalf("a third collector holds %d spans", st.Traces.Buffered)
	}
}

func TestReplayedRequestsSurviveASecondCrash(t *testing.T) {
	// Given a collector that replayed b from a crashed one's spool.
	first := newRig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	tp := first.traces("", spoolConfig(first, dir), newNext(t, succeed))
	mp := first.metrics("", spoolConfig(first, dir), newNext(t, succeed))
	must(t, first.start(shortSocket(t)))
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "b1")))
	must(t, mp.ConsumeMetrics(context.Background(), points("svc", "m1", "m2")))
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "b2")))

	second := newRig(t)
	left := crashCopy(t, dir)
	second.traces("", spoolConfig(second, left), newNext(t, succeed))
	second.metrics("", spoolConfig(second, left), newNext(t, succeed))
	must(t, second.start(shortSocket(t)))

	// When it crashes too before any drain, and a third one starts on what it left.
	third := newRig(t)
	tn, mn := newNext(t, succeed), newNext(t, succeed)
	leftAgain := crashCopy(t, left)
	third.traces("", spoolConfig(third, leftAgain), tn)
	third.metrics("", spoolConfig(third, leftAgain), mn)
	must(t, third.start(shortSocket(t)))

	// Then the third one holds and delivers the same, in order.
	equalStrings(t, "replay log", third.messages("replayed"),
		[]string{"replayed from the spool: 2 spans, 2 metric points, 0 log records"})
	third.drain(false)
	equalStrings(t, "spans", tn.delivered(), prefixed("svc", "b1", "b2"))
	equalStrings(t, "points", mn.delivered(), prefixed("svc", "m1", "m2"))
}

func TestASpoolDirectoryHeldByALiveCollectorCannotBeOpenedByAnother(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	sp, _, err := openSpool(dir, 1<<20)
	must(t, err)

	// When a second spool opens the same directory, then it is refused.
	if _, _, err := openSpool(dir, 1<<20); err == nil || !strings.Contains(err.Error(), "is in use by another collector") {
		t.Fatalf("second openSpool: %v; want \"in use by another collector\"", err)
	}
	// And once the first one is closed, it opens.
	sp.close(true)
	again, _, err := openSpool(dir, 1<<20)
	must(t, err)
	again.close(true)
}

func TestASecondHubOnALockedSpoolRunsWithoutASpoolAndSaysSo(t *testing.T) {
	// Given a live collector with a spool.
	first := newRig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	first.traces("", spoolConfig(first, dir), newNext(t, succeed))
	must(t, first.start(shortSocket(t)))

	// When a second one starts on the same spool directory (on its own socket).
	second := newRig(t)
	next := newNext(t, succeed)
	tp := second.traces("", spoolConfig(second, dir), next)
	must(t, second.start(shortSocket(t)))

	// Then it warns and works without a spool: it writes nothing into the first one's.
	if got := second.messages("continuing without a spool"); len(got) != 1 || !strings.Contains(got[0], "in use by another collector") {
		t.Fatalf("warnings: %q", got)
	}
	before := segmentFiles(t, dir)
	sizes := map[string]int64{}
	for _, name := range before {
		info, err := os.Stat(filepath.Join(dir, name))
		must(t, err)
		sizes[name] = info.Size()
	}
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	for _, name := range segmentFiles(t, dir) {
		info, err := os.Stat(filepath.Join(dir, name))
		must(t, err)
		if info.Size() != sizes[name] {
			t.Fatalf("the second collector wrote into the first one's spool (%s)", name)
		}
	}
	second.drain(false)
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a"))
}

func TestAnAckedRequestIsNotReplayedAfterTheSegmentHoldingItsAckIsRemoved(t *testing.T) {
	// Given a spool whose first segment holds a logs request still held (1) and a traces
	// request (2) that was then sent and acknowledged, while a later segment filled up with a
	// third request (3), also sent since.
	dir := filepath.Join(t.TempDir(), "spool")
	sp, _, err := openSpool(dir, 64<<20)
	must(t, err)
	defer sp.close(false)
	must(t, sp.append(1, "flushcontrol/logs", logs, 1, bytes.Repeat([]byte{1}, 600<<10)))
	must(t, sp.append(2, "flushcontrol/traces", traces, 1, bytes.Repeat([]byte{2}, 600<<10))) // fills segment 0
	sp.ack(2)
	must(t, sp.append(3, "flushcontrol/traces", traces, 1, bytes.Repeat([]byte{3}, 1100<<10))) // fills segment 1
	sp.ack(3)

	// When the collector crashes and a new one opens what is left.
	replay, found, err := openSpool(crashCopy(t, dir), 64<<20)
	must(t, err)
	defer replay.close(true)

	// Then only request 1 is replayed: 2 and 3 were acknowledged.
	var seqs []uint64
	for _, rec := range found {
		seqs = append(seqs, rec.seq)
	}
	if len(seqs) != 1 || seqs[0] != 1 {
		t.Fatalf("replayed requests %v; want only [1]", seqs)
	}
}

func TestTheSpoolRemovesSegmentsWhoseRequestsAreAllAcknowledged(t *testing.T) {
	// Given requests over three segments.
	dir := filepath.Join(t.TempDir(), "spool")
	sp, _, err := openSpool(dir, 64<<20)
	must(t, err)
	defer sp.close(false)
	for i := uint64(1); i <= 5; i++ {
		must(t, sp.append(i, "flushcontrol/traces", traces, 1, bytes.Repeat([]byte{byte(i)}, 600<<10)))
	}
	if files := segmentFiles(t, dir); len(files) != 3 {
		t.Fatalf("segments %v; want 3", files)
	}

	// When all but the last are acknowledged, then only the current segment is left.
	for i := uint64(1); i <= 4; i++ {
		sp.ack(i)
	}
	equalStrings(t, "segments", segmentFiles(t, dir), []string{"00000002.seg"})

	// And a crash now replays only the last.
	replay, found, err := openSpool(crashCopy(t, dir), 64<<20)
	must(t, err)
	defer replay.close(true)
	if len(found) != 1 || found[0].seq != 5 || len(found[0].payload) != 600<<10 || found[0].payload[0] != 5 {
		t.Fatalf("replayed %d requests; want request 5 whole", len(found))
	}
}

func TestASpoolOutOfRoomRefusesTheRequestWithBackpressure(t *testing.T) {
	// Given a spool with room for one request of 600 bytes.
	dir := filepath.Join(t.TempDir(), "spool")
	sp, _, err := openSpool(dir, 1000)
	must(t, err)
	defer sp.close(true)
	must(t, sp.append(1, "k", traces, 1, make([]byte, 600)))

	// When a second one would go past it, then it is refused as full.
	err = sp.append(2, "k", traces, 1, make([]byte, 600))
	if err == nil || !strings.Contains(err.Error(), "spool full") {
		t.Fatalf("append past the bound: %v", err)
	}

	// And a collector whose spool is out of room answers the sender RESOURCE_EXHAUSTED, holds
	// nothing and counts the refusal.
	r := newRig(t)
	tp := r.traces("", r.config(func(c *Config) {
		c.Spool, c.SpoolDirectory, c.RetryAfter = true, filepath.Join(t.TempDir(), "spool"), 3*time.Second
	}), newNext(t, succeed))
	must(t, r.start(shortSocket(t)))
	r.hub.spool.mu.Lock()
	r.hub.spool.maxBytes = 100
	r.hub.spool.mu.Unlock()
	resourceExhausted(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", "a", 200)), 3*time.Second)
	st := r.hub.Status()
	if st.Traces.Buffered != 0 || st.AcceptedTraces != 0 {
		t.Fatalf("held %d spans, accepted %d; want none", st.Traces.Buffered, st.AcceptedTraces)
	}
	equalMap(t, "rejected requests", st.RejectedRequests, map[string]uint64{"backpressure": 1})
}

// --- readSegment -----------------------------------------------------------------------------

type rec struct {
	kind    byte
	code    byte
	key     string
	items   uint32
	seq     uint64
	payload []byte
}

var sampleRecords = []rec{
	{recordData, traces.spoolCode(), "flushcontrol/traces", 3, 1, []byte("\x0a\x03abc")},
	{recordData, metrics.spoolCode(), "flushcontrol/2/metrics", 1, 2, []byte{}},
	{recordAck, 0, "", 0, 1, nil},
	{recordData, logs.spoolCode(), "flushcontrol/logs", 70000, 1 << 40, bytes.Repeat([]byte{0xff}, 300)},
	{recordAck, 0, "", 0, 2, nil},
}

// segment is the records encoded one after another, with each record's end offset.
func segment(recs []rec) ([]byte, []int) {
	var out []byte
	var ends []int
	for _, r := range recs {
		out = append(out, encodeRecord(r.kind, r.code, r.key, r.items, r.seq, r.payload)...)
		ends = append(ends, len(out))
	}
	return out, ends
}

func sameRecord(t *testing.T, i int, got spoolRecord, want rec) {
	t.Helper()
	if got.kind != want.kind || got.key != want.key || got.items != want.items || got.seq != want.seq {
		t.Fatalf("record %d: kind %d key %q items %d seq %d; want kind %d key %q items %d seq %d",
			i, got.kind, got.key, got.items, got.seq, want.kind, want.key, want.items, want.seq)
	}
	if want.kind == recordData {
		if got.signal.spoolCode() != want.code || !bytes.Equal(got.payload, want.payload) {
			t.Fatalf("record %d: signal %s payload %q; want code %d payload %q", i, got.signal, got.payload, want.code, want.payload)
		}
	} else if got.payload != nil {
		t.Fatalf("ack record %d has a payload", i)
	}
}

func TestReadSegmentReadsBackEncodedRecords(t *testing.T) {
	data, _ := segment(sampleRecords)
	got := readSegment(data)
	if len(got) != len(sampleRecords) {
		t.Fatalf("%d records; want %d", len(got), len(sampleRecords))
	}
	for i := range got {
		sameRecord(t, i, got[i], sampleRecords[i])
	}
}

func TestReadSegmentStopsAtATornTailWithTheWholeRecordsBeforeIt(t *testing.T) {
	data, ends := segment(sampleRecords)
	for cut := 0; cut <= len(data); cut++ {
		// Given the segment cut at every offset (a crash mid-write).
		torn := append([]byte(nil), data[:cut]...)

		// Then readSegment returns exactly the records that end before the cut.
		got := readSegment(torn)
		whole := sort.SearchInts(ends, cut+1)
		if len(got) != whole {
			t.Fatalf("cut at %d: %d records; want %d", cut, len(got), whole)
		}
		for i := range got {
			sameRecord(t, i, got[i], sampleRecords[i])
		}
	}
}

func TestReadSegmentStopsAtAForeignOrDamagedRecord(t *testing.T) {
	data, ends := segment(sampleRecords[:2])
	for name, tail := range map[string][]byte{
		"garbage":      []byte("this is not a spool record, not at all"),
		"unknown kind": encodeRecord(9, 1, "k", 1, 3, []byte("x")),
		"unknown code": encodeRecord(recordData, 7, "k", 1, 3, []byte("x")),
		"no code":      encodeRecord(recordData, 0, "k", 1, 3, []byte("x")),
		"huge length": func() []byte {
			b := encodeRecord(recordData, 1, "k", 1, 3, []byte("x"))
			binary.LittleEndian.PutUint32(b[12:16], 0xffffffff)
			return b
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			got := readSegment(append(append(append([]byte(nil), data...), tail...), encodeRecord(recordAck, 0, "", 0, 1, nil)...))
			if len(got) != len(ends) {
				t.Fatalf("%d records; want the %d before the damage", len(got), len(ends))
			}
		})
	}
}

// FuzzReadSegment: whatever the bytes, readSegment does not panic, and every record it returns
// is the bytes where it stands: the records follow one another from the start, every data
// record's payload lies inside the input and re-encodes to exactly the bytes it was read from.
func FuzzReadSegment(f *testing.F) {
	whole, ends := segment(sampleRecords)
	f.Add(whole)
	for _, end := range ends {
		f.Add(whole[:end])
		f.Add(whole[:end-1])
	}
	f.Add(whole[:spoolHeaderSize-1])
	f.Add([]byte{})
	f.Add([]byte(spoolMagic))
	f.Add([]byte("AFS1AFS1AFS1AFS1AFS1AFS1AFS1AFS1"))
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Add(append(append([]byte(nil), whole...), "trailing garbage"...))
	huge := encodeRecord(recordData, 1, "k", 1, 1, []byte("x"))
	binary.LittleEndian.PutUint16(huge[6:8], 0xffff)
	f.Add(huge)

	f.Fuzz(func(t *testing.T, data []byte) {
		recs := readSegment(data)
		off := 0
		for i, r := range recs {
			if off+spoolHeaderSize > len(data) || string(data[off:off+4]) != spoolMagic {
				t.Fatalf("record %d at %d: no header there", i, off)
			}
			keyLen := int(binary.LittleEndian.Uint16(data[off+6 : off+8]))
			size := int(binary.LittleEndian.Uint32(data[off+12 : off+16]))
			start := off + spoolHeaderSize + keyLen
			end := start + size
			if end > len(data) {
				t.Fatalf("record %d ends at %d, past the input (%d bytes)", i, end, len(data))
			}
			if r.key != string(data[off+spoolHeaderSize:start]) || r.kind != data[off+4] ||
				r.seq != binary.LittleEndian.Uint64(data[off+16:off+24]) || r.items != binary.LittleEndian.Uint32(data[off+8:off+12]) {
				t.Fatalf("record %d does not match its header", i)
			}
			switch r.kind {
			case recordData:
				if len(r.payload) != size || (size > 0 && &r.payload[0] != &data[start]) {
					t.Fatalf("record %d: payload of %d bytes is not the input's bytes %d..%d", i, len(r.payload), start, end)
				}
				again := encodeRecord(recordData, r.signal.spoolCode(), r.key, r.items, r.seq, r.payload)
				if !bytes.Equal(again, data[off:end]) {
					t.Fatalf("record %d re-encodes to other bytes", i)
				}
			case recordAck:
				if r.payload != nil {
					t.Fatalf("ack record %d has a payload", i)
				}
			default:
				t.Fatalf("record %d of kind %d", i, r.kind)
			}
			off = end
		}
		// And what follows the records is not a whole record.
		if more := readSegment(data[off:]); len(more) != 0 {
			t.Fatalf("readSegment stopped at %d before %d more records", off, len(more))
		}
	})
}

func TestRequestsSentDroppedOrSpilledAreNotReplayed(t *testing.T) {
	// Given a collector with a spool that sent a, dropped b for good and spilled c.
	r := newRig(t)
	dir := filepath.Join(t.TempDir(), "spool")
	next := newNext(t, answers(nil, consumererror.NewPermanent(errors.New("bad")), errUnavailable, errUnavailable))
	tp := r.traces("", r.config(func(c *Config) { c.Spool, c.SpoolDirectory, c.MaxRequestItems = true, dir, 1 }), next)
	must(t, r.start(shortSocket(t)))
	for _, n := range []string{"a", "b", "c"} {
		must(t, tp.ConsumeTraces(context.Background(), spans("svc", n)))
	}
	reply := r.drain(true)
	wantCounts(t, "reply", reply.Traces, 1, 0, 1, map[string]uint64{"permanent": 1})

	// When it crashes, then a new collector replays nothing.
	after := newRig(t)
	after.traces("", spoolConfig(after, crashCopy(t, dir)), newNext(t, succeed))
	must(t, after.start(shortSocket(t)))
	if got := after.messages("from the spool"); len(got) != 0 {
		t.Fatalf("replayed: %q", got)
	}
}

func TestACollectorWhoseSpoolCannotBeWrittenGoesOnWithoutItAndSaysSoOnce(t *testing.T) {
	// Given a collector whose spool file can no longer be written (a disk error).
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", spoolConfig(r, filepath.Join(t.TempDir(), "spool")), next)
	must(t, r.start(shortSocket(t)))
	r.hub.spool.mu.Lock()
	r.hub.spool.file.Close()
	r.hub.spool.mu.Unlock()

	// When senders hand over requests, then they are held and sent all the same, and the
	// collector warns once.
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "b")))
	if got := r.messages("cannot write the spool"); len(got) != 1 || !strings.Contains(got[0], "continuing without it") {
		t.Fatalf("warnings %q; want one", got)
	}
	r.drain(false)
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a", "b"))
}

func TestADamagedSpoolRecordIsDroppedAtReplayAndTheOthersAreReplayed(t *testing.T) {
	// Given a spool left with a good request, a damaged one (it does not decode) and another
	// good one.
	dir := filepath.Join(t.TempDir(), "spool")
	must(t, os.MkdirAll(dir, 0o700))
	good := func(names ...string) []byte {
		data, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(spans("svc", names...))
		must(t, err)
		return data
	}
	var seg []byte
	seg = append(seg, encodeRecord(recordData, traces.spoolCode(), "flushcontrol/traces", 1, 1, good("a"))...)
	seg = append(seg, encodeRecord(recordData, traces.spoolCode(), "flushcontrol/traces", 3, 2, undecodable)...)
	seg = append(seg, encodeRecord(recordData, traces.spoolCode(), "flushcontrol/traces", 2, 3, good("b1", "b2"))...)
	must(t, os.WriteFile(filepath.Join(dir, "00000000.seg"), seg, 0o600))

	// When a collector starts on it.
	r := newRig(t)
	next := newNext(t, succeed)
	r.traces("", spoolConfig(r, dir), next)
	must(t, r.start(shortSocket(t)))

	// Then the good ones are held and the damaged one is dropped, counted and logged.
	equalStrings(t, "replay log", r.messages("from the spool"), []string{
		"replayed from the spool: 3 spans, 0 metric points, 0 log records",
		"dropped from the spool, damaged: 3 spans, 0 metric points, 0 log records",
	})
	wantCounts(t, "status", r.hub.Status().Traces, 0, 3, 0, map[string]uint64{"spool_damaged": 3})

	// And the good ones go out together, in order.
	reply := r.drain(false)
	equalStrings(t, "delivered", next.delivered(), prefixed("svc", "a", "b1", "b2"))
	equalInts(t, "items per export", next.itemsPerCall(), []int{3})
	if !reply.Complete {
		t.Fatalf("incomplete: %q", reply.LastError)
	}
}

func TestCountItemsCountsADecodableRequestAndRefusesAnUndecodableOne(t *testing.T) {
	td, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(spans("svc", "a", "b"))
	must(t, err)
	md, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(points("svc", "m1", "m2", "m3"))
	must(t, err)
	ld, err := (&plog.ProtoMarshaler{}).MarshalLogs(records("svc", "l1"))
	must(t, err)
	for sig, tc := range map[signal]struct {
		data []byte
		want int
	}{traces: {td, 2}, metrics: {md, 3}, logs: {ld, 1}} {
		if n, err := countItems(sig, tc.data); err != nil || n != tc.want {
			t.Errorf("%s: %d, %v; want %d", sig, n, err, tc.want)
		}
		if n, err := countItems(sig, undecodable); err == nil || n != 0 {
			t.Errorf("%s undecodable: %d, %v; want an error", sig, n, err)
		}
	}
}
