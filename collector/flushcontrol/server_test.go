package flushcontrol

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/afterflush/afterflush/collector/internal/controlpb"
)

// dial is a FlushControl client of the socket, closed when the test ends (before the hub
// stops: cleanups run last-in first-out).
func dial(t *testing.T, socket string) controlpb.FlushControlClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	return controlpb.NewFlushControlClient(conn)
}

func rpcCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTheControlServerAnswersStatusAndDrainOnItsUnixSocket(t *testing.T) {
	// Given a collector with held spans whose control socket is in a directory not yet made.
	r := newRig(t)
	next := newNext(t, succeed)
	tp := r.traces("", r.config(nil), next)
	socket := shortSocket(t, "run")
	must(t, r.start(socket))
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a1", "a2")))

	// Then the socket is only its owner's, in a directory only its owner enters.
	info, err := os.Stat(socket)
	must(t, err)
	if info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v; want a socket of 0600", info.Mode())
	}
	dirInfo, err := os.Stat(filepath.Dir(socket))
	must(t, err)
	if dirInfo.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory mode %v; want 0700", dirInfo.Mode().Perm())
	}

	// And Status says what is held, and that the collector is not ready until every pipeline
	// has started.
	client := dial(t, socket)
	st, err := client.Status(rpcCtx(t), &controlpb.StatusRequest{})
	must(t, err)
	if st.Ready || st.Pid != uint32(os.Getpid()) || st.Traces.GetBuffered() != 2 || st.AcceptedTraces != 2 {
		t.Fatalf("status: ready %v pid %d buffered %d accepted %d; want not ready, pid %d, 2 and 2",
			st.Ready, st.Pid, st.Traces.GetBuffered(), st.AcceptedTraces, os.Getpid())
	}
	r.hub.markReady()
	st, err = client.Status(rpcCtx(t), &controlpb.StatusRequest{})
	must(t, err)
	if !st.Ready {
		t.Fatal("not ready after markReady")
	}
	if got := r.messages("ready in "); len(got) != 1 {
		t.Fatalf("ready lines %q", got)
	}

	// When the companion drains over the socket.
	reply, err := client.Drain(rpcCtx(t), &controlpb.DrainRequest{RequestId: "req-9"})
	must(t, err)

	// Then the spans are delivered and the reply counts them.
	wantCounts(t, "reply", reply.Traces, 2, 0, 0, nil)
	if !reply.Complete {
		t.Fatalf("incomplete drain: %q", reply.LastError)
	}
	equalStrings(t, "spans delivered", next.delivered(), prefixed("svc", "a1", "a2"))
	var drainLines []string
	for _, e := range r.logs.FilterLevelExact(zap.DebugLevel).All() {
		if strings.HasPrefix(e.Message, "drain (manual) req-9 in ") {
			drainLines = append(drainLines, e.Message)
		}
	}
	if len(drainLines) != 1 {
		t.Fatalf("drain lines %q; want one for the manual drain of req-9", drainLines)
	}

	// And NotReady shows.
	r.hub.markNotReady()
	st, err = client.Status(rpcCtx(t), &controlpb.StatusRequest{})
	must(t, err)
	if st.Ready {
		t.Fatal("ready after markNotReady")
	}

	// When the hub stops, then the socket is gone.
	r.hub.stop()
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after stop: %v", err)
	}
}

func TestASecondCollectorCannotServeALiveControlEndpoint(t *testing.T) {
	// Given a collector serving its control socket.
	first := newRig(t)
	socket := shortSocket(t)
	must(t, first.start(socket))

	// When a second one starts on the same endpoint, then it fails and says why.
	second := newRig(t)
	err := second.start(socket)
	if err == nil || !strings.Contains(err.Error(), "served by another collector") {
		t.Fatalf("second start: %v; want \"served by another collector\"", err)
	}

	// And stopping it leaves the first one's socket alone.
	second.hub.stop()
	if _, err := dial(t, socket).Status(rpcCtx(t), &controlpb.StatusRequest{}); err != nil {
		t.Fatalf("the first collector no longer answers: %v", err)
	}
}

func TestAStaleControlSocketIsReplaced(t *testing.T) {
	// Given a socket file that nobody serves (a dead collector's).
	socket := shortSocket(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	must(t, err)
	ln.SetUnlinkOnClose(false)
	must(t, ln.Close())
	if info, err := os.Lstat(socket); err != nil || info.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket to start from: %v", err)
	}

	// When a collector starts on it, then it serves there.
	r := newRig(t)
	must(t, r.start(socket))
	if _, err := dial(t, socket).Status(rpcCtx(t), &controlpb.StatusRequest{}); err != nil {
		t.Fatalf("status on the replaced socket: %v", err)
	}
}

func TestAControlEndpointThatIsNotASocketIsNotTouched(t *testing.T) {
	socket := shortSocket(t)
	must(t, os.WriteFile(socket, []byte("keep me"), 0o600))

	r := newRig(t)
	err := r.start(socket)
	if err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Fatalf("start: %v; want \"exists and is not a socket\"", err)
	}
	if data, _ := os.ReadFile(socket); string(data) != "keep me" {
		t.Fatalf("the file was changed: %q", data)
	}
}

func TestTheControlEndpointIsTheEnvironmentsElseTheFirstProcessorsSetting(t *testing.T) {
	fromConfig, fromEnv := shortSocket(t), shortSocket(t)

	// Given processors flushcontrol/b and flushcontrol/a whose settings differ, and no
	// environment: flushcontrol/a's setting serves.
	r := newRig(t)
	r.traces("b", r.config(func(c *Config) { c.ControlEndpoint = "unix://" + fromEnv }), newNext(t, succeed))
	r.traces("a", r.config(func(c *Config) { c.ControlEndpoint = "unix://" + fromConfig }), newNext(t, succeed))
	must(t, r.hub.start(r.logger))
	if _, err := os.Lstat(fromConfig); err != nil {
		t.Fatalf("not served at flushcontrol/a's control_endpoint: %v", err)
	}
	r.hub.stop()

	// Given the environment names another socket, it wins.
	e := newRig(t)
	e.traces("", e.config(func(c *Config) { c.ControlEndpoint = "unix://" + fromConfig }), newNext(t, succeed))
	must(t, e.start(fromEnv))
	if _, err := os.Lstat(fromEnv); err != nil {
		t.Fatalf("not served at %s: %v", EnvControlEndpoint, err)
	}
	if _, err := os.Lstat(fromConfig); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("served at the config's endpoint too: %v", err)
	}

	// And an unusable environment value fails the start, naming the variable.
	bad := newRig(t)
	bad.setenv(EnvControlEndpoint, "tcp://127.0.0.1:4000")
	if err := bad.hub.start(bad.logger); err == nil || !strings.Contains(err.Error(), EnvControlEndpoint) {
		t.Fatalf("start with a tcp endpoint: %v", err)
	}
}

func TestStatusCountsUptimeFromTheProcessStart(t *testing.T) {
	h := NewHub(time.Now().Add(-time.Hour), &syncBuffer{}, func(string) string { return "" })
	t.Cleanup(h.stop)
	if up := h.Status().UptimeMs; up < 3_600_000 || up > 3_600_000+600_000 {
		t.Fatalf("uptime %d ms; want an hour", up)
	}
}

func TestTheControlExtensionStartsAndStopsTheHub(t *testing.T) {
	// Given the extension of a hub whose first processor names the socket.
	r := newRig(t)
	socket := shortSocket(t)
	r.traces("", r.config(func(c *Config) { c.ControlEndpoint = "unix://" + socket }), newNext(t, succeed))
	f := NewExtensionFactory(r.hub)
	set := extensionSettings(r)
	ext, err := f.Create(context.Background(), set, f.CreateDefaultConfig())
	must(t, err)

	// When started, then FlushControl is served; Ready and NotReady reach the status.
	must(t, ext.Start(context.Background(), nil))
	client := dial(t, socket)
	must(t, ext.(interface{ Ready() error }).Ready())
	st, err := client.Status(rpcCtx(t), &controlpb.StatusRequest{})
	must(t, err)
	if !st.Ready {
		t.Fatal("not ready after the extension's Ready")
	}
	must(t, ext.(interface{ NotReady() error }).NotReady())
	if r.hub.Status().Ready {
		t.Fatal("ready after the extension's NotReady")
	}

	// When shut down, then the socket is gone.
	must(t, ext.Shutdown(context.Background()))
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Shutdown: %v", err)
	}
}

func extensionSettings(r *rig) extension.Settings {
	set := extensiontest.NewNopSettings(Type)
	set.Logger = r.logger
	return set
}

func TestADrainOverTheSocketAnswersBeforeTheClientsDeadlineWhenTheExportHangs(t *testing.T) {
	t.Parallel() // waits out a deadline; nothing shared with other tests
	// Given held spans whose export never answers before its context ends.
	r := newRig(t)
	tp := r.traces("", r.config(nil), newNext(t, blockUntilDone))
	socket := shortSocket(t)
	must(t, r.start(socket))
	must(t, tp.ConsumeTraces(context.Background(), spans("svc", "a")))

	// When the companion drains with a 1 s deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	reply, err := dial(t, socket).Drain(ctx, &controlpb.DrainRequest{Reason: "invoke", RequestId: "req-1"})

	// Then it gets a reply, not DEADLINE_EXCEEDED, saying the drain is incomplete.
	if err != nil {
		t.Fatalf("drain: %v; want a reply within the deadline", err)
	}
	if reply.Complete || reply.Traces.Buffered != 1 || !strings.Contains(reply.LastError, "no answer within") {
		t.Fatalf("complete %v, buffered %d, last error %q", reply.Complete, reply.Traces.Buffered, reply.LastError)
	}
}
