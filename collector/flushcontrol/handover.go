package flushcontrol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Where and how the function side marks the end of an invocation's hand-over.
const (
	// EnvHandoverEndpoint overrides where marks are taken (unix:///absolute/path); by
	// default HandoverSocketName in the control socket's directory.
	EnvHandoverEndpoint = "AFTERFLUSH_HANDOVER_ENDPOINT"
	HandoverSocketName  = "handover.sock"
	// HandoverPath takes POST {"requestId": "..."}, answered 204.
	HandoverPath = "/v1/handover"
	// maxHandoverBody: a mark is a request id in JSON; anything longer is not one.
	maxHandoverBody = 4 << 10
)

// Who marks a hand-over, and how a drain's wait for one ends otherwise (DrainReply.handover).
const (
	// SourceFunction: the function side, once its runtime posted the response and its SDK
	// flushed (HTTP on the hand-over socket).
	SourceFunction = "function"
	// SourceRuntime: the companion, for a runtime that finished without the function's mark
	// (not under the layer's wrapper, failed or timed out).
	SourceRuntime = "runtime"
	// HandoverTimedOut: the drain's handover timeout or its deadline came first.
	HandoverTimedOut = "timeout"
	// HandoverStopped: the collector began to stop while the drain waited; nothing more is
	// coming (its receivers stop first).
	HandoverStopped = "stopped"
)

// maxMarks is how many marked request ids are remembered: a mark may come before the drain
// that waits for it, and a second mark of the same id must not count again. Lambda runs one
// invocation at a time per environment, so far fewer would do; the bound keeps a function
// that marks without drains from growing the collector.
const maxMarks = 1024

// handovers are the marks of the newest maxMarks request ids, and the ids drains wait for.
type handovers struct {
	mu    sync.Mutex
	byID  map[string]*mark
	order [maxMarks]string // marked ids, a ring; next is the oldest once it is full
	next  int
}

// mark is one request id's hand-over: marked once source is set and done closed. An
// unmarked one exists only while drains wait for it.
type mark struct {
	source  string
	done    chan struct{}
	waiters int
}

// Handover records that the hand-over of requestID is complete (source SourceFunction
// when empty) and ends every drain's wait for it. Only the first mark of an id counts: a
// later one returns false and changes nothing. An empty requestID marks nothing.
func (h *Hub) Handover(requestID, source string) (first bool) {
	if requestID == "" {
		return false
	}
	if source == "" {
		source = SourceFunction
	}
	hs := &h.handovers
	hs.mu.Lock()
	defer hs.mu.Unlock()
	m := hs.byID[requestID]
	if m != nil && m.source != "" {
		return false
	}
	if m == nil {
		m = &mark{done: make(chan struct{})}
		hs.byID[requestID] = m
	}
	m.source = source
	close(m.done)
	if oldest := hs.order[hs.next]; oldest != "" {
		delete(hs.byID, oldest)
	}
	hs.order[hs.next] = requestID
	hs.next = (hs.next + 1) % maxMarks
	return true
}

// join is requestID's mark for a drain that waits for it; leave undoes it.
func (hs *handovers) join(requestID string) *mark {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	m := hs.byID[requestID]
	if m == nil {
		m = &mark{done: make(chan struct{})}
		hs.byID[requestID] = m
	}
	m.waiters++
	return m
}

// leave ends a drain's wait for m and says who marked it ("" if nobody did yet). An
// unmarked id nobody waits for is forgotten: only marks count towards maxMarks.
func (hs *handovers) leave(requestID string, m *mark) string {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	m.waiters--
	if m.source == "" && m.waiters == 0 && hs.byID[requestID] == m {
		delete(hs.byID, requestID)
	}
	return m.source
}

// handoverWait is how a drain's wait for a mark ended, and how long it took.
type handoverWait struct {
	ended string
	took  time.Duration
}

// describe is the wait for the debug drain line, "" when the drain did not wait.
func (w handoverWait) describe() string {
	if w.ended == "" {
		return ""
	}
	return fmt.Sprintf("after a hand-over wait of %.1f ms (%s) ", float64(w.took.Microseconds())/1000, w.ended)
}

// awaitHandover waits until requestID is marked, timeout (if > 0) passes, ctx ends or the
// collector begins to stop. Without a timeout it ends before ctx's deadline by the drain's
// reserve, so that the reply still reaches the caller in time; every wait has a deadline, the
// default drain timeout when ctx has none.
func (h *Hub) awaitHandover(ctx context.Context, requestID string, timeout time.Duration) handoverWait {
	began := time.Now()
	m := h.handovers.join(requestID)
	limit := h.defaultDrainTimeout()
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		limit = left - drainReserve(left)
	}
	if timeout > 0 {
		limit = min(limit, timeout)
	}
	ended := HandoverTimedOut
	select {
	case <-m.done:
		// Marked before the call: used at once, even with a deadline already past.
	default:
		if h.onAwait != nil {
			h.onAwait(requestID)
		}
		timer := time.NewTimer(limit)
		defer timer.Stop()
		select {
		case <-m.done:
		case <-timer.C:
		case <-ctx.Done():
		case <-h.bgCtx.Done():
			ended = HandoverStopped
		}
	}
	// A mark that came with the timeout counts: it is what the caller waits for.
	if source := h.handovers.leave(requestID, m); source != "" {
		ended = source
	}
	return handoverWait{ended: ended, took: time.Since(began)}
}

// handoverSocket is where marks are taken: the environment's endpoint, else
// HandoverSocketName in the control socket's directory.
func handoverSocket(getenv func(string) string, controlSocket string) (string, error) {
	if e := getenv(EnvHandoverEndpoint); e != "" {
		path, err := SocketPath(e)
		if err != nil {
			return "", fmt.Errorf("%s: %w", EnvHandoverEndpoint, err)
		}
		return path, nil
	}
	path, err := SocketPath(filepath.Join(filepath.Dir(controlSocket), HandoverSocketName))
	if err != nil {
		return "", fmt.Errorf("the hand-over socket beside the control socket: %w (set %s)", err, EnvHandoverEndpoint)
	}
	return path, nil
}

// handoverServer takes the function side's marks: POST /v1/handover {"requestId": "..."} on a
// unix socket of mode 0600 (the function runs as the same user), answered 204.
type handoverServer struct {
	http   *http.Server
	socket string
	done   chan struct{}
}

func serveHandover(socket string, h *Hub) (*handoverServer, error) {
	ln, err := listenUnix(socket, "hand-over")
	if err != nil {
		return nil, err
	}
	s := &handoverServer{
		http: &http.Server{
			Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { takeMark(w, r, h) }),
			ReadHeaderTimeout: 2 * time.Second,
			ReadTimeout:       5 * time.Second,
			WriteTimeout:      5 * time.Second,
			// The function side keeps one connection for every invocation, and the
			// environment is frozen between them: an idle timeout would close it at the thaw,
			// under the next mark. The peer is one local process of the same user.
			IdleTimeout: -1,
		},
		socket: socket, done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(ln)
	}()
	return s, nil
}

// takeMark answers a mark: 204 once recorded (also when the id was marked already: the
// function side has nothing to do about it), else the status and a one-line reason.
func takeMark(w http.ResponseWriter, r *http.Request, h *Hub) {
	if r.URL.Path != HandoverPath {
		http.Error(w, fmt.Sprintf("no such path %q; marks go to POST %s", r.URL.Path, HandoverPath), http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, fmt.Sprintf("%s takes POST, not %s", HandoverPath, r.Method), http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHandoverBody))
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		http.Error(w, fmt.Sprintf("a hand-over mark is at most %d bytes", maxHandoverBody), http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
		http.Error(w, "cannot read the body: "+oneLine(err), http.StatusBadRequest)
		return
	}
	var mark struct {
		RequestID string `json:"requestId"`
	}
	if err := json.Unmarshal(body, &mark); err != nil {
		http.Error(w, `the body must be JSON {"requestId": "..."}: `+oneLine(err), http.StatusBadRequest)
		return
	}
	if mark.RequestID == "" {
		http.Error(w, "requestId is missing or empty", http.StatusBadRequest)
		return
	}
	h.Handover(mark.RequestID, SourceFunction)
	w.WriteHeader(http.StatusNoContent)
}

// stop lets a mark under way finish, briefly, then closes every connection.
func (s *handoverServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.http.Close()
	}
	<-s.done
	os.Remove(s.socket)
}

// listenUnix listens on socket (mode 0600, in a directory of 0700), replacing a stale one;
// what names the socket in errors ("control", "hand-over").
func listenUnix(socket, what string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the %s socket's directory: %w", what, err)
	}
	if err := replaceStale(socket, what); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on the %s socket %s: %w", what, socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("cannot restrict the %s socket: %w", what, err)
	}
	return ln, nil
}
