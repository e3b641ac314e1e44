package flushcontrol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/afterflush/afterflush/collector/internal/controlpb"
)

// controlServer serves FlushControl on a unix socket of mode 0600 in a directory of 0700.
type controlServer struct {
	grpc   *grpc.Server
	socket string
	done   chan struct{}
}

type controlService struct {
	controlpb.UnimplementedFlushControlServer
	hub *Hub
}

func (s *controlService) Drain(ctx context.Context, req *controlpb.DrainRequest) (*controlpb.DrainReply, error) {
	reason := req.GetReason()
	if reason == "" {
		reason = "manual"
	}
	return s.hub.Drain(ctx, reason, req.GetRequestId(), req.GetSpillRemaining()), nil
}

func (s *controlService) Status(context.Context, *controlpb.StatusRequest) (*controlpb.StatusReply, error) {
	return s.hub.Status(), nil
}

func serveControl(socket string, h *Hub) (*controlServer, error) {
	dir := filepath.Dir(socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the control socket's directory: %w", err)
	}
	if err := replaceStale(socket); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on the control socket %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("cannot restrict the control socket: %w", err)
	}
	s := &controlServer{grpc: grpc.NewServer(), socket: socket, done: make(chan struct{})}
	controlpb.RegisterFlushControlServer(s.grpc, &controlService{hub: h})
	go func() {
		defer close(s.done)
		_ = s.grpc.Serve(ln)
	}()
	return s, nil
}

// replaceStale removes a socket file that nobody serves (a dead collector's); a live one is an
// error: two collectors must not share a control endpoint.
func replaceStale(socket string) error {
	info, err := os.Lstat(socket)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if info.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control endpoint %s exists and is not a socket", socket)
	}
	if conn, err := net.DialTimeout("unix", socket, 200*time.Millisecond); err == nil {
		conn.Close()
		return fmt.Errorf("control endpoint %s is served by another collector", socket)
	}
	return os.Remove(socket)
}

func (s *controlServer) stop() {
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(500 * time.Millisecond):
		s.grpc.Stop()
	}
	<-s.done
	os.Remove(s.socket)
}
