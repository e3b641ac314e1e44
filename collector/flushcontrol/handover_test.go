package flushcontrol

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/afterflush/afterflush/collector/internal/controlpb"
)

// awaiting is a drain that waits for requestID's mark, started on its own goroutine.
func awaiting(r *rig, requestID string, o DrainOptions) <-chan *controlpb.DrainReply {
	out := make(chan *controlpb.DrainReply, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		o.Reason, o.RequestID, o.AwaitHandover = "invoke", requestID, true
		out <- r.hub.DrainWith(ctx, o)
	}()
	return out
}

// waitingFor blocks until a drain waits for requestID's mark.
func waitingFor(t *testing.T, h *Hub, requestID string) {
	t.Helper()
	give := time.Now().Add(10 * time.Second)
	for {
		h.marks.mu.Lock()
		n := len(h.marks.waiters[requestID])
		h.marks.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(give) {
			t.Fatalf("no drain waits for %s", requestID)
		}
		time.Sleep(time.Millisecond)
	}
}

func receive(t *testing.T, ch <-chan *controlpb.DrainReply) *controlpb.DrainReply {
	t.Helper()
	select {
	case reply := <-ch:
		return reply
	case <-time.After(15 * time.Second):
		t.Fatal("the drain did not end")
		return nil
	}
}

func TestADrainWaitsForTheMarkAndExportsWhatCameMeanwhile(t *testing.T) {
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "before")))
	// Given a drain waiting for r1's hand-over
	done := awaiting(r, "r1", DrainOptions{})
	waitingFor(t, r.hub, "r1")
	// When the function's data arrives, then its mark
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "during")))
	if next.callCount() != 0 {
		t.Fatal("exported before the mark")
	}
	if !r.hub.Handover("r1", "") {
		t.Fatal("the first mark is not first")
	}
	// Then the drain exports both, and says the function marked it
	reply := receive(t, done)
	equalStrings(t, "delivered", next.delivered(), []string{"svc/before", "svc/during"})
	if reply.GetHandover() != SourceFunction || !reply.GetComplete() {
		t.Fatalf("handover %q complete %v; want function, true", reply.GetHandover(), reply.GetComplete())
	}
	if reply.GetHandoverWaitUs() == 0 {
		t.Fatal("no wait time")
	}
}

func TestAMarkMadeBeforeTheDrainIsUsedAtOnceAndASecondMarkChangesNothing(t *testing.T) {
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	if !r.hub.Handover("r1", SourceFunction) || r.hub.Handover("r1", SourceRuntime) {
		t.Fatal("want first true, then false")
	}
	reply := receive(t, awaiting(r, "r1", DrainOptions{}))
	if reply.GetHandover() != SourceFunction {
		t.Fatalf("handover %q; want the first mark's source", reply.GetHandover())
	}
	equalStrings(t, "delivered", next.delivered(), []string{"svc/a"})
}

func TestTheRuntimesMarkEndsTheWaitToo(t *testing.T) {
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	done := awaiting(r, "r1", DrainOptions{})
	waitingFor(t, r.hub, "r1")
	r.hub.Handover("r1", SourceRuntime)
	if got := receive(t, done).GetHandover(); got != SourceRuntime {
		t.Fatalf("handover %q; want runtime", got)
	}
}

func TestTheWaitEndsAtItsTimeoutAndAtTheDeadline(t *testing.T) {
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	// A timeout of its own: the drain then exports what is held
	reply := receive(t, awaiting(r, "never", DrainOptions{HandoverTimeout: 20 * time.Millisecond}))
	if reply.GetHandover() != handoverTimeout {
		t.Fatalf("handover %q; want timeout", reply.GetHandover())
	}
	equalStrings(t, "delivered", next.delivered(), []string{"svc/a"})
	// The call's deadline
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	reply = r.hub.DrainWith(ctx, DrainOptions{RequestID: "never", AwaitHandover: true})
	if reply.GetHandover() != handoverTimeout {
		t.Fatalf("handover %q; want timeout", reply.GetHandover())
	}
	// And no waiter is left behind
	if n := len(r.hub.marks.waiters); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

func TestAWaitingDrainEndsWhenTheHubStops(t *testing.T) {
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	done := awaiting(r, "r1", DrainOptions{})
	waitingFor(t, r.hub, "r1")
	r.hub.stop()
	if got := receive(t, done).GetHandover(); got != handoverStopped {
		t.Fatalf("handover %q; want stopped", got)
	}
}

func TestAWaitingDrainHoldsNoOtherDrainBack(t *testing.T) {
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	done := awaiting(r, "r1", DrainOptions{})
	waitingFor(t, r.hub, "r1")
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	// A drain without a wait goes on meanwhile
	reply := r.drain(false)
	wantCounts(t, "traces", reply.GetTraces(), 1, 0, 0, nil)
	r.hub.Handover("r1", "")
	receive(t, done)
}

func TestMaxDrainBoundsTheExportsAfterTheWait(t *testing.T) {
	r := newRig(t)
	next := newNext(t, blockUntilDone)
	tp := r.traces("", r.config(nil), next)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	r.hub.Handover("r1", "")
	began := time.Now()
	reply := receive(t, awaiting(r, "r1", DrainOptions{MaxDrain: 50 * time.Millisecond}))
	// The call's deadline is 20 s: only MaxDrain can have ended the hanging export
	if time.Since(began) > 10*time.Second || reply.GetComplete() {
		t.Fatalf("complete %v after %v; want an incomplete drain cut by max_drain", reply.GetComplete(), time.Since(began))
	}
	wantCounts(t, "traces", reply.GetTraces(), 0, 1, 0, nil)
}

func TestTheNewestMarksAreKept(t *testing.T) {
	m := newMarks()
	for i := range maxMarks + 1 {
		m.mark(fmt.Sprint("r", i), "")
	}
	if _, kept := m.source["r0"]; kept || len(m.source) != maxMarks || len(m.order) != maxMarks {
		t.Fatalf("kept %d marks (r0 kept: %v); want the newest %d", len(m.source), kept, maxMarks)
	}
	if !m.mark("r0", "") {
		t.Fatal("a forgotten id is new again")
	}
}

// post sends a raw HTTP/1.1 request on conn and returns the status and body.
func post(t *testing.T, conn net.Conn, rd *bufio.Reader, method, path, body string) (int, string) {
	t.Helper()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: afterflush\r\nContent-Length: %d\r\n\r\n%s", method, path, len(body), body)
	resp, err := http.ReadResponse(rd, nil)
	must(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, strings.TrimSpace(string(data))
}

func TestTheHandoverSocketTakesMarksOverHTTP(t *testing.T) {
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	socket := shortSocket(t)
	must(t, r.start(socket))
	handover := filepath.Join(filepath.Dir(socket), HandoverSocketName)
	info, err := os.Stat(handover)
	must(t, err)
	if info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o600 {
		t.Fatalf("hand-over socket mode %v; want a socket of 0600", info.Mode())
	}
	conn, err := net.Dial("unix", handover)
	must(t, err)
	defer conn.Close()
	rd := bufio.NewReader(conn)
	// Two marks on one kept-alive connection
	for _, id := range []string{"r1", "r2"} {
		if code, body := post(t, conn, rd, "POST", HandoverPath, `{"requestId": "`+id+`"}`); code != 204 || body != "" {
			t.Fatalf("mark %s: %d %q; want 204 and no body", id, code, body)
		}
	}
	for _, id := range []string{"r1", "r2"} {
		if r.hub.Handover(id, "") {
			t.Fatalf("%s was not marked", id)
		}
	}
	cases := []struct {
		method, path, body string
		code               int
		text               string
	}{
		{"POST", HandoverPath, `not json`, 400, `the body must be JSON: {"requestId": "..."}`},
		{"POST", HandoverPath, `{"requestId": ""}`, 400, "requestId is missing or empty"},
		{"POST", HandoverPath, `{}`, 400, "requestId is missing or empty"},
		{"POST", HandoverPath, `{"requestId": "` + strings.Repeat("x", maxHandoverBody) + `"}`, 413, "a hand-over mark is at most 4096 bytes"},
		{"GET", HandoverPath, ``, 405, "only POST"},
		{"POST", "/v1/other", `{}`, 404, "404 page not found"},
	}
	for _, c := range cases {
		conn, err := net.Dial("unix", handover)
		must(t, err)
		code, text := post(t, conn, bufio.NewReader(conn), c.method, c.path, c.body)
		conn.Close()
		if code != c.code || text != c.text {
			t.Fatalf("%s %s %.20q: %d %q; want %d %q", c.method, c.path, c.body, code, text, c.code, c.text)
		}
	}
	// And the socket goes with the hub
	r.hub.stop()
	if _, err := os.Stat(handover); !os.IsNotExist(err) {
		t.Fatalf("hand-over socket left behind: %v", err)
	}
}

func TestTheHandoverEndpointComesFromTheEnvironment(t *testing.T) {
	r := newRig(t)
	r.traces("", r.config(nil), newNext(t, succeed))
	elsewhere := filepath.Join(t.TempDir(), "h.sock")
	r.setenv(EnvHandoverEndpoint, "unix://"+elsewhere)
	must(t, r.start(shortSocket(t)))
	if _, err := os.Stat(elsewhere); err != nil {
		t.Fatal(err)
	}
	bad := newRig(t)
	bad.setenv(EnvHandoverEndpoint, "localhost:1")
	err := bad.start(shortSocket(t))
	if err == nil || !strings.HasPrefix(err.Error(), EnvHandoverEndpoint+": ") {
		t.Fatalf("start: %v; want an error naming %s", err, EnvHandoverEndpoint)
	}
}

func TestHandoverOverGRPC(t *testing.T) {
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	socket := shortSocket(t)
	must(t, r.start(socket))
	client := dial(t, socket)
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))
	done := make(chan *controlpb.DrainReply, 1)
	go func() {
		reply, err := client.Drain(rpcCtx(t), &controlpb.DrainRequest{RequestId: "r1", Reason: "invoke", AwaitHandover: true, MaxDrainMs: 5000})
		if err != nil {
			t.Error(err)
		}
		done <- reply
	}()
	waitingFor(t, r.hub, "r1")
	reply, err := client.Handover(rpcCtx(t), &controlpb.HandoverRequest{RequestId: "r1", Source: SourceRuntime})
	must(t, err)
	if !reply.GetFirst() {
		t.Fatal("first mark not first")
	}
	drained := receive(t, done)
	if drained.GetHandover() != SourceRuntime {
		t.Fatalf("handover %q", drained.GetHandover())
	}
	wantCounts(t, "traces", drained.GetTraces(), 1, 0, 0, nil)
	_, err = client.Handover(rpcCtx(t), &controlpb.HandoverRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty request id: %v; want InvalidArgument", err)
	}
}
