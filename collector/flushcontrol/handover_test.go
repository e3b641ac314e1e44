package flushcontrol

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/afterflush/afterflush/collector/internal/controlpb"
)

// awaits reports the request id of every drain as it begins to wait for a mark. Set it before
// the first drain starts.
func (r *rig) awaits() <-chan string {
	ch := make(chan string, 16)
	r.hub.onAwait = func(id string) { ch <- id }
	return ch
}

// awaiting is a drain of requestID that awaits its mark (with o's other options and a 20 s
// deadline), on its own goroutine.
func (r *rig) awaiting(requestID string, o DrainOptions) <-chan *controlpb.DrainReply {
	out := make(chan *controlpb.DrainReply, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		o.Reason, o.RequestID, o.AwaitHandover = "invoke", requestID, true
		out <- r.hub.Drain(ctx, o)
	}()
	return out
}

// received is what ch gives; the bound only keeps a broken test from hanging.
func received[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: nothing within 15 s", what)
		var zero T
		return zero
	}
}

func stillWaiting(t *testing.T, done <-chan *controlpb.DrainReply) {
	t.Helper()
	select {
	case reply := <-done:
		t.Fatalf("the drain ended before the mark: handover %q", reply.Handover)
	default:
	}
}

func wantHandover(t *testing.T, reply *controlpb.DrainReply, ended string) {
	t.Helper()
	if reply.Handover != ended {
		t.Fatalf("handover %q; want %q", reply.Handover, ended)
	}
}

// --- the hub ---------------------------------------------------------------------------------

func TestAMarkMadeBeforeTheDrainIsUsedAtOnceAndASecondMarkChangesNothing(t *testing.T) {
	// Given held spans and r1 marked by the function, then by the runtime.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	if first := r.hub.Handover("r1", ""); !first {
		t.Fatal("the first mark of r1 is not first")
	}
	if first := r.hub.Handover("r1", SourceRuntime); first {
		t.Fatal("the second mark of r1 is first")
	}
	waits := r.awaits()

	// When a drain awaits r1's mark.
	reply := received(t, "drain", r.awaiting("r1", DrainOptions{}))

	// Then it did not wait, the first mark counts, and the spans are exported.
	select {
	case id := <-waits:
		t.Fatalf("the drain waited for %s", id)
	default:
	}
	wantHandover(t, reply, SourceFunction)
	wantCounts(t, "reply", reply.Traces, 1, 0, 0, nil)
	equalStrings(t, "delivered", next.delivered(), prefixed("svc", "a"))
}

func TestADrainWaitsForTheMarkThenExportsWhatCameDuringTheWait(t *testing.T) {
	// Given a held span and a drain awaiting r1's mark.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "before")))
	waits := r.awaits()
	done := r.awaiting("r1", DrainOptions{})
	received(t, "the wait", waits)
	waitingSince := time.Now()

	// When the function's spans arrive, nothing is exported yet.
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "during")))
	stillWaiting(t, done)
	if n := next.callCount(); n != 0 {
		t.Fatalf("%d exports before the mark", n)
	}

	// When the function marks r1.
	markedAt := time.Now()
	if !r.hub.Handover("r1", "") {
		t.Fatal("the mark is not first")
	}
	reply := received(t, "drain", done)
	returned := time.Now()

	// Then both spans are exported, the reply says the function marked it, the wait is its
	// own figure and the duration counts the export only.
	equalStrings(t, "delivered", next.delivered(), prefixed("svc", "before", "during"))
	wantHandover(t, reply, SourceFunction)
	if !reply.Complete {
		t.Fatalf("incomplete: %q", reply.LastError)
	}
	if waited := time.Duration(reply.HandoverWaitUs) * time.Microsecond; waited < markedAt.Sub(waitingSince).Truncate(time.Microsecond) {
		t.Fatalf("handover_wait_us %v; want at least the %v between the wait and the mark", waited, markedAt.Sub(waitingSince))
	}
	if took := time.Duration(reply.DurationUs) * time.Microsecond; took > returned.Sub(markedAt) {
		t.Fatalf("duration_us %v; want at most the %v since the mark", took, returned.Sub(markedAt))
	}
	// And the drain's debug line says how the wait ended.
	var lines []string
	for _, e := range r.logs.FilterLevelExact(zap.DebugLevel).All() {
		if strings.HasPrefix(e.Message, "drain (invoke) r1 after a hand-over wait of ") && strings.Contains(e.Message, " ms (function) in ") {
			lines = append(lines, e.Message)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("drain lines %q; want one naming the wait", lines)
	}
	// And the mark is remembered: a later one is not first.
	if r.hub.Handover("r1", SourceRuntime) {
		t.Fatal("a second mark of r1 is first")
	}
}

func TestTheRuntimesMarkEndsTheWaitToo(t *testing.T) {
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	waits := r.awaits()
	done := r.awaiting("r1", DrainOptions{})
	received(t, "the wait", waits)

	r.hub.Handover("r1", SourceRuntime)

	wantHandover(t, received(t, "drain", done), SourceRuntime)
}

func TestTheWaitEndsAtItsHandoverTimeoutAndExportsWhatIsHeld(t *testing.T) {
	// Given held spans and no mark coming.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))

	// When a drain awaits it for at most 20 ms (its deadline is 20 s).
	reply := received(t, "drain", r.awaiting("never", DrainOptions{HandoverTimeout: 20 * time.Millisecond}))

	// Then the wait ended by its timeout and the spans went anyway.
	wantHandover(t, reply, HandoverTimedOut)
	if waited := time.Duration(reply.HandoverWaitUs) * time.Microsecond; waited < 20*time.Millisecond {
		t.Fatalf("waited %v; want the 20 ms timeout", waited)
	}
	wantCounts(t, "reply", reply.Traces, 1, 0, 0, nil)
	// And an id nobody marked is not remembered.
	if n := len(r.hub.handovers.byID); n != 0 {
		t.Fatalf("%d ids remembered after the wait", n)
	}
}

func TestTheWaitEndsBeforeTheCallersDeadline(t *testing.T) {
	t.Parallel() // waits out a deadline; nothing shared with other tests
	// Given held spans and no mark coming.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))

	// When a drain awaits the mark with a 1 s deadline and no timeout of its own.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	reply := r.hub.Drain(ctx, DrainOptions{Reason: "invoke", RequestID: "never", AwaitHandover: true})

	// Then it ended as a timeout while the caller's context was still alive, in time to export.
	if err := ctx.Err(); err != nil {
		t.Fatalf("the drain returned after the caller's deadline: %v", err)
	}
	wantHandover(t, reply, HandoverTimedOut)
	wantCounts(t, "reply", reply.Traces, 1, 0, 0, nil)
}

func TestACancelledCallEndsTheWaitAsATimeout(t *testing.T) {
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	waits := r.awaits()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *controlpb.DrainReply, 1)
	go func() { done <- r.hub.Drain(ctx, DrainOptions{RequestID: "r1", AwaitHandover: true}) }()
	received(t, "the wait", waits)

	cancel()

	wantHandover(t, received(t, "drain", done), HandoverTimedOut)
}

func TestAWaitingDrainEndsWhenTheCollectorStops(t *testing.T) {
	// Given a drain awaiting a mark, with a span held.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	waits := r.awaits()
	done := r.awaiting("r1", DrainOptions{})
	received(t, "the wait", waits)

	// When the hub stops.
	r.hub.stop()

	// Then the wait ends as stopped and the drain still exports what is held.
	reply := received(t, "drain", done)
	wantHandover(t, reply, HandoverStopped)
	wantCounts(t, "reply", reply.Traces, 1, 0, 0, nil)
}

func TestAWaitingDrainHoldsBackNeitherAnotherDrainNorTheCollectorsOwn(t *testing.T) {
	// Given a ready collector whose buffer of 1 MiB has its high-water mark at 50%, and a
	// drain awaiting r1's mark.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(func(c *Config) { c.MaxBufferSizeMiB, c.HighWaterMarkPercent = 1, 50 }), next)
	r.hub.markReady()
	waits := r.awaits()
	done := r.awaiting("r1", DrainOptions{})
	received(t, "the wait", waits)

	// When another drain comes meanwhile, then it exports at once.
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	wantCounts(t, "the other drain", r.drain(false).Traces, 1, 0, 0, nil)

	// When the buffer goes past its high-water mark, then the collector's own drain runs.
	must(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", "b", 300_000)))
	must(t, tp.ConsumeTraces(context.Background(), paddedSpans("svc", "c", 300_000)))
	r.hub.bg.Wait()
	equalStrings(t, "delivered", next.delivered(), prefixed("svc", "a", "b", "c"))

	// And the waiting drain still waits, until r1 is marked.
	stillWaiting(t, done)
	r.hub.Handover("r1", "")
	reply := received(t, "drain", done)
	wantHandover(t, reply, SourceFunction)
	wantCounts(t, "reply", reply.Traces, 0, 0, 0, nil)
}

func TestMaxDrainBoundsTheExportsOnceTheWaitHasEnded(t *testing.T) {
	// Given a held span whose export answers only when its context ends, and a drain (20 s
	// deadline, max drain 100 ms) awaiting r1's mark.
	r := newRig(t)
	next := newNext(t, blockUntilDone)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	waits := r.awaits()
	called := time.Now()
	done := r.awaiting("r1", DrainOptions{MaxDrain: 100 * time.Millisecond})
	received(t, "the wait", waits)

	// When r1 is marked.
	markedAt := time.Now()
	r.hub.Handover("r1", "")
	reply := received(t, "drain", done)

	// Then the export's deadline was max drain after the wait (less the drain's reserve of 5%),
	// not the caller's, and the span stays held.
	calls := next.allCalls()
	if len(calls) != 1 || !calls[0].hasDeadline {
		t.Fatalf("%d exports; want one with a deadline", len(calls))
	}
	if dl := calls[0].deadline; dl.Before(markedAt.Add(95*time.Millisecond)) || dl.After(called.Add(10*time.Second)) {
		t.Fatalf("export deadline %v after the mark; want max drain (100 ms) after the wait", dl.Sub(markedAt))
	}
	if reply.Complete || !strings.Contains(reply.LastError, "no answer within") {
		t.Fatalf("complete %v, last error %q; want the export cut by max drain", reply.Complete, reply.LastError)
	}
	wantCounts(t, "reply", reply.Traces, 0, 1, 0, nil)
}

func TestAnAwaitingDrainWithoutARequestIDDoesNotWait(t *testing.T) {
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	waits := r.awaits()

	reply := received(t, "drain", r.awaiting("", DrainOptions{}))

	select {
	case id := <-waits:
		t.Fatalf("the drain waited for %q", id)
	default:
	}
	if reply.Handover != "" || reply.HandoverWaitUs != 0 {
		t.Fatalf("handover %q, wait %d µs; want neither", reply.Handover, reply.HandoverWaitUs)
	}
	wantCounts(t, "reply", reply.Traces, 1, 0, 0, nil)
	if r.hub.Handover("", "") {
		t.Fatal("an empty request id was marked")
	}
}

func TestOnlyTheNewestMarksAreRemembered(t *testing.T) {
	// Given one mark more than are remembered.
	r := newRig(t)
	for i := range maxMarks + 1 {
		r.hub.Handover(fmt.Sprint("r", i), "")
	}

	// Then the bound holds; the newest and the second oldest are remembered, the oldest is
	// forgotten and counts as new again.
	if n := len(r.hub.handovers.byID); n != maxMarks {
		t.Fatalf("%d marks remembered; want %d", n, maxMarks)
	}
	for _, id := range []string{fmt.Sprint("r", maxMarks), "r1"} {
		if r.hub.Handover(id, "") {
			t.Fatalf("%s was forgotten", id)
		}
	}
	if !r.hub.Handover("r0", "") {
		t.Fatal("r0, the oldest, is still remembered")
	}
	if n := len(r.hub.handovers.byID); n != maxMarks {
		t.Fatalf("%d marks remembered after r0 again; want %d", n, maxMarks)
	}
}

// --- the hand-over socket --------------------------------------------------------------------

type httpAnswer struct {
	code   int
	header http.Header
	body   string
	close  bool
}

// send writes one raw HTTP/1.1 request on conn and reads its answer from rd.
func send(t *testing.T, conn net.Conn, rd *bufio.Reader, method, path, body string) httpAnswer {
	t.Helper()
	_, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: afterflush\r\nContent-Length: %d\r\n\r\n%s", method, path, len(body), body)
	must(t, err)
	resp, err := http.ReadResponse(rd, nil)
	must(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	must(t, err)
	return httpAnswer{code: resp.StatusCode, header: resp.Header, body: string(data), close: resp.Close}
}

// markSocket starts r's hub on a temporary control socket and returns the hand-over socket
// beside it.
func (r *rig) markSocket(t *testing.T) string {
	t.Helper()
	socket := shortSocket(t)
	must(t, r.start(socket))
	return filepath.Join(filepath.Dir(socket), HandoverSocketName)
}

func TestTheHandoverSocketTakesMarksOnOneKeptAliveConnection(t *testing.T) {
	// Given a started collector.
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	socket := r.markSocket(t)

	// Then its hand-over socket is beside the control socket, only its owner's.
	info, err := os.Stat(socket)
	must(t, err)
	if info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o600 {
		t.Fatalf("hand-over socket mode %v; want a socket of 0600", info.Mode())
	}

	// When the function side marks r1 and r2 on one connection (no Content-Type).
	conn, err := net.Dial("unix", socket)
	must(t, err)
	defer conn.Close()
	rd := bufio.NewReader(conn)
	for _, id := range []string{"r1", "r2"} {
		got := send(t, conn, rd, "POST", HandoverPath, `{"requestId": "`+id+`"}`)

		// Then each is answered 204 without a body, and the connection stays open.
		if got.code != http.StatusNoContent || got.body != "" || got.close {
			t.Fatalf("mark %s: %d %q (close %v); want 204, no body, kept alive", id, got.code, got.body, got.close)
		}
	}
	// And both are marked, by the function.
	for _, id := range []string{"r1", "r2"} {
		if r.hub.Handover(id, SourceRuntime) {
			t.Fatalf("%s was not marked", id)
		}
	}
	wantHandover(t, received(t, "drain", r.awaiting("r2", DrainOptions{})), SourceFunction)

	// When the hub stops, then the socket is gone.
	r.hub.stop()
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("hand-over socket after stop: %v", err)
	}
}

func TestABadMarkGetsItsStatusAndAOneLineReasonAndMarksNothing(t *testing.T) {
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	socket := r.markSocket(t)
	for _, c := range []struct {
		name, method, path, body string
		code                     int
		text                     string
	}{
		{"not JSON", "POST", HandoverPath, `requestId=r1`, 400, `the body must be JSON {"requestId": "..."}: invalid character 'r' looking for beginning of value`},
		{"empty", "POST", HandoverPath, `{"requestId": ""}`, 400, "requestId is missing or empty"},
		{"missing", "POST", HandoverPath, `{"request_id": "r1"}`, 400, "requestId is missing or empty"},
		{"not a string", "POST", HandoverPath, `{"requestId": 7}`, 400, `the body must be JSON {"requestId": "..."}: json: cannot unmarshal number into Go struct field .requestId of type string`},
		{"too large", "POST", HandoverPath, `{"requestId": "` + strings.Repeat("x", maxHandoverBody) + `"}`, 413, "a hand-over mark is at most 4096 bytes"},
		{"GET", "GET", HandoverPath, ``, 405, "/v1/handover takes POST, not GET"},
		{"other path", "POST", "/v1/handover/r1", `{"requestId": "r1"}`, 404, `no such path "/v1/handover/r1"; marks go to POST /v1/handover`},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("unix", socket)
			must(t, err)
			defer conn.Close()
			got := send(t, conn, bufio.NewReader(conn), c.method, c.path, c.body)
			if got.code != c.code || got.body != c.text+"\n" {
				t.Fatalf("%d %q; want %d %q", got.code, got.body, c.code, c.text+"\n")
			}
			if ct := got.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Fatalf("Content-Type %q; want text/plain", ct)
			}
			if c.code == 405 && got.header.Get("Allow") != "POST" {
				t.Fatalf("Allow %q; want POST", got.header.Get("Allow"))
			}
		})
	}
	if n := len(r.hub.handovers.byID); n != 0 {
		t.Fatalf("%d ids marked by bad marks", n)
	}
}

func TestTheHandoverEndpointComesFromTheEnvironment(t *testing.T) {
	// Given AFTERFLUSH_HANDOVER_ENDPOINT in a directory of its own, not yet made.
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	elsewhere := filepath.Join(t.TempDir(), "m", "h.sock")
	r.setenv(EnvHandoverEndpoint, "unix://"+elsewhere)
	control := shortSocket(t)
	must(t, r.start(control))

	// Then marks are taken there, not beside the control socket.
	info, err := os.Stat(elsewhere)
	must(t, err)
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v; want 0600", info.Mode())
	}
	if _, err := os.Lstat(filepath.Join(filepath.Dir(control), HandoverSocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a hand-over socket beside the control socket too: %v", err)
	}

	// And an unusable value fails the start, naming the variable, before anything is served.
	for _, value := range []string{"localhost:4000", "unix://relative/h.sock"} {
		bad := newRig(t)
		bad.setenv(EnvHandoverEndpoint, value)
		control := shortSocket(t)
		err := bad.start(control)
		if err == nil || !strings.HasPrefix(err.Error(), EnvHandoverEndpoint+": ") {
			t.Fatalf("start with %q: %v; want an error naming %s", value, err, EnvHandoverEndpoint)
		}
		if _, err := os.Lstat(control); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the control socket is served after the failed start: %v", err)
		}
	}
}

func TestAStaleHandoverSocketIsReplacedAndAFileInItsPlaceFailsTheStart(t *testing.T) {
	// Given a hand-over socket that nobody serves (a dead collector's).
	control := shortSocket(t)
	socket := filepath.Join(filepath.Dir(control), HandoverSocketName)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	must(t, err)
	ln.SetUnlinkOnClose(false)
	must(t, ln.Close())

	// When a collector starts beside it, then it takes marks there.
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	must(t, r.start(control))
	conn, err := net.Dial("unix", socket)
	must(t, err)
	if got := send(t, conn, bufio.NewReader(conn), "POST", HandoverPath, `{"requestId": "r1"}`); got.code != 204 {
		t.Fatalf("mark on the replaced socket: %d %q", got.code, got.body)
	}
	conn.Close()
	r.hub.stop()

	// Given a file that is not a socket where the hand-over socket goes.
	must(t, os.WriteFile(socket, []byte("keep me"), 0o600))

	// When a collector starts, then it fails, leaves the file alone and serves no control socket.
	again := newRig(t)
	err = again.start(control)
	if err == nil || err.Error() != "hand-over endpoint "+socket+" exists and is not a socket" {
		t.Fatalf("start: %v; want \"hand-over endpoint %s exists and is not a socket\"", err, socket)
	}
	if data, _ := os.ReadFile(socket); string(data) != "keep me" {
		t.Fatalf("the file was changed: %q", data)
	}
	if _, err := os.Lstat(control); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the control socket is served after the failed start: %v", err)
	}
}

// --- gRPC --------------------------------------------------------------------------------------

func TestTheCompanionMarksAndAwaitsHandoversOverGRPC(t *testing.T) {
	// Given a collector with a held span, and the companion's drain awaiting r1 over the socket.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	waits := r.awaits()
	socket := shortSocket(t)
	must(t, r.start(socket))
	client := dial(t, socket)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	done := make(chan *controlpb.DrainReply, 1)
	go func() {
		reply, err := client.Drain(rpcCtx(t), &controlpb.DrainRequest{
			RequestId: "r1", Reason: "invoke", AwaitHandover: true, MaxDrainMs: 5000,
		})
		if err != nil {
			t.Errorf("drain: %v", err)
		}
		done <- reply
	}()
	received(t, "the wait", waits)

	// When the companion marks r1 for its runtime, twice.
	first, err := client.Handover(rpcCtx(t), &controlpb.HandoverRequest{RequestId: "r1", Source: SourceRuntime})
	must(t, err)
	second, err := client.Handover(rpcCtx(t), &controlpb.HandoverRequest{RequestId: "r1"})
	must(t, err)

	// Then only the first counts, and the drain ends with it and exports the span.
	if !first.First || second.First {
		t.Fatalf("first %v, second %v; want true, false", first.First, second.First)
	}
	reply := received(t, "drain", done)
	wantHandover(t, reply, SourceRuntime)
	wantCounts(t, "reply", reply.Traces, 1, 0, 0, nil)

	// And handover_timeout_ms bounds a wait nobody ends.
	timedOut, err := client.Drain(rpcCtx(t), &controlpb.DrainRequest{RequestId: "r2", AwaitHandover: true, HandoverTimeoutMs: 10})
	must(t, err)
	wantHandover(t, timedOut, HandoverTimedOut)

	// And a mark without a request id, or from an unknown source, is refused.
	for _, req := range []*controlpb.HandoverRequest{{}, {RequestId: "r3", Source: "timeout"}} {
		_, err := client.Handover(rpcCtx(t), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("handover %v: %v; want InvalidArgument", req, err)
		}
	}
	if r.hub.Handover("r3", "") != true {
		t.Fatal("the refused mark of r3 was recorded")
	}
}

func TestAHandoverSocketThatCannotBeMadeFailsTheStartSayingWhy(t *testing.T) {
	// A directory that cannot be made: a file stands in its way.
	file := filepath.Join(t.TempDir(), "f")
	must(t, os.WriteFile(file, nil, 0o600))
	r := newRig(t)
	r.setenv(EnvHandoverEndpoint, "unix://"+filepath.Join(file, "h.sock"))
	if err := r.start(shortSocket(t)); err == nil || !strings.HasPrefix(err.Error(), "cannot create the hand-over socket's directory: ") {
		t.Fatalf("start: %v; want \"cannot create the hand-over socket's directory\"", err)
	}

	// A control socket path short enough, whose neighbour handover.sock is too long: the
	// error says which variable places it elsewhere.
	dir := t.TempDir()
	if len(dir) > 90 {
		t.Skipf("the temporary directory %s is too long to build the path", dir)
	}
	dir = filepath.Join(dir, strings.Repeat("d", 97-len(dir)-1))
	long := newRig(t)
	err := long.start(filepath.Join(dir, "c.sock"))
	if err == nil || !strings.HasPrefix(err.Error(), "the hand-over socket beside the control socket: ") || !strings.HasSuffix(err.Error(), "(set "+EnvHandoverEndpoint+")") {
		t.Fatalf("start: %v; want the hand-over socket's path named, and %s", err, EnvHandoverEndpoint)
	}
}
