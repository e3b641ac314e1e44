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

// EnvHandoverEndpoint overrides where the function side's hand-over marks are taken; by
// default HandoverSocketName beside the control socket.
const (
	EnvHandoverEndpoint = "AFTERFLUSH_HANDOVER_ENDPOINT"
	HandoverSocketName  = "handover.sock"
	HandoverPath        = "/v1/handover"
	// Sources of a mark.
	SourceFunction = "function"
	SourceRuntime  = "runtime"
	// How a drain's wait for a mark ended besides a mark.
	handoverTimeout = "timeout"
	handoverStopped = "stopped"
	// The newest marks kept: far more than the invocations a drain can be behind.
	maxMarks = 1024
	// A mark's body is a request id in JSON; anything longer is not one.
	maxHandoverBody = 4 << 10
)

// marks are the hand-overs the function side (or the companion, for a runtime without one)
// said were complete, by request id, and the drains waiting for one.
type marks struct {
	mu      sync.Mutex
	source  map[string]string
	order   []string
	waiters map[string][]chan string
}

func newMarks() *marks {
	return &marks{source: map[string]string{}, waiters: map[string][]chan string{}}
}

// mark records the end of requestID's hand-over; false when it was marked already (the first
// mark counts).
func (m *marks) mark(requestID, source string) bool {
	if source == "" {
		source = SourceFunction
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, seen := m.source[requestID]; seen {
		return false
	}
	m.source[requestID] = source
	m.order = append(m.order, requestID)
	if len(m.order) > maxMarks {
		delete(m.source, m.order[0])
		m.order = m.order[1:]
	}
	for _, w := range m.waiters[requestID] {
		w <- source
	}
	delete(m.waiters, requestID)
	return true
}

// wait returns the source of requestID's mark, or "timeout" / "stopped" when ctx ends or
// stopped closes first.
func (m *marks) wait(ctx context.Context, stopped <-chan struct{}, requestID string) string {
	m.mu.Lock()
	if s, ok := m.source[requestID]; ok {
		m.mu.Unlock()
		return s
	}
	ch := make(chan string, 1)
	m.waiters[requestID] = append(m.waiters[requestID], ch)
	m.mu.Unlock()
	select {
	case s := <-ch:
		return s
	case <-ctx.Done():
	case <-stopped:
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case s := <-ch: // marked meanwhile: the mark wins
		return s
	default:
	}
	ws := m.waiters[requestID]
	for i, w := range ws {
		if w == ch {
			m.waiters[requestID] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(m.waiters[requestID]) == 0 {
		delete(m.waiters, requestID)
	}
	if ctx.Err() != nil {
		return handoverTimeout
	}
	return handoverStopped
}

// handoverSocket is where marks are taken: the environment's endpoint, else beside the
// control socket.
func handoverSocket(getenv func(string) string, controlSocket string) (string, error) {
	if e := getenv(EnvHandoverEndpoint); e != "" {
		path, err := SocketPath(e)
		if err != nil {
			return "", fmt.Errorf("%s: %w", EnvHandoverEndpoint, err)
		}
		return path, nil
	}
	return filepath.Join(filepath.Dir(controlSocket), HandoverSocketName), nil
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
	mux := http.NewServeMux()
	mux.HandleFunc(HandoverPath, func(w http.ResponseWriter, r *http.Request) { handleMark(w, r, h) })
	s := &handoverServer{
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 2 * time.Second,
			ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second},
		socket: socket, done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(ln)
	}()
	return s, nil
}

func handleMark(w http.ResponseWriter, r *http.Request, h *Hub) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHandoverBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, fmt.Sprintf("a hand-over mark is at most %d bytes", maxHandoverBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read the body", http.StatusBadRequest)
		return
	}
	var mark struct {
		RequestID string `json:"requestId"`
	}
	if err := json.Unmarshal(body, &mark); err != nil {
		http.Error(w, `the body must be JSON: {"requestId": "..."}`, http.StatusBadRequest)
		return
	}
	if mark.RequestID == "" {
		http.Error(w, "requestId is missing or empty", http.StatusBadRequest)
		return
	}
	h.Handover(mark.RequestID, SourceFunction)
	w.WriteHeader(http.StatusNoContent)
}

func (s *handoverServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.http.Close()
	}
	<-s.done
	os.Remove(s.socket)
}

// listenUnix listens on socket (mode 0600, in a directory of 0700), replacing a stale one.
func listenUnix(socket, what string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the %s socket's directory: %w", what, err)
	}
	if err := replaceStale(socket); err != nil {
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
