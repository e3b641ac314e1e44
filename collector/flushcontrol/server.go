package flushcontrol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	return s.hub.Drain(ctx, DrainOptions{
		Reason: reason, RequestID: req.GetRequestId(), Spill: req.GetSpillRemaining(),
		AwaitHandover:   req.GetAwaitHandover(),
		HandoverTimeout: time.Duration(req.GetHandoverTimeoutMs()) * time.Millisecond,
		MaxDrain:        time.Duration(req.GetMaxDrainMs()) * time.Millisecond,
	}), nil
}

// Handover is the companion's mark, for a runtime that finished without the function's.
func (s *controlService) Handover(_ context.Context, req *controlpb.HandoverRequest) (*controlpb.HandoverReply, error) {
	if req.GetRequestId() == "" {
		return nil, status.Error(codes.InvalidArgument, "request_id is empty")
	}
	switch req.GetSource() {
	case "", SourceFunction, SourceRuntime:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "source %q: must be %q or %q (empty is %q)",
			req.GetSource(), SourceFunction, SourceRuntime, SourceFunction)
	}
	return &controlpb.HandoverReply{First: s.hub.Handover(req.GetRequestId(), req.GetSource())}, nil
}

func (s *controlService) Status(context.Context, *controlpb.StatusRequest) (*controlpb.StatusReply, error) {
	return s.hub.Status(), nil
}

func serveControl(socket string, h *Hub) (*controlServer, error) {
	ln, err := listenUnix(socket, "control")
	if err != nil {
		return nil, err
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
// error: two collectors must not share an endpoint. what names it in errors.
func replaceStale(socket, what string) error {
	info, err := os.Lstat(socket)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if info.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s endpoint %s exists and is not a socket", what, socket)
	}
	if conn, err := net.DialTimeout("unix", socket, 200*time.Millisecond); err == nil {
		conn.Close()
		return fmt.Errorf("%s endpoint %s is served by another collector", what, socket)
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
