package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/afterflush/afterflush/collector/flushcontrol"
	"github.com/afterflush/afterflush/collector/internal/controlpb"
)

// ctlFlags are the ctl command's flags; each names the call it applies to.
type ctlFlags struct {
	endpoint, requestID, reason, source, awaitHandover string
	timeout, handoverTimeout                           time.Duration
	spill                                              bool
}

// newCtlCommand asks a running collector's FlushControl service and prints the reply as JSON.
func newCtlCommand() *cobra.Command {
	var f ctlFlags
	cmd := &cobra.Command{
		Use:       "ctl status | drain | handover REQUEST_ID",
		Short:     "Asks a running collector for its Status, to Drain, or marks a request id's Handover, and prints the reply as JSON",
		Args:      ctlArgs,
		ValidArgs: []string{"status", "drain", "handover"},
		RunE: func(cmd *cobra.Command, args []string) error {
			request, err := f.request(args)
			if err != nil {
				return err
			}
			reply, err := f.call(cmd.Context(), request)
			if err != nil {
				return err
			}
			out, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(reply)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(out))
			return nil
		},
	}
	cmd.Flags().StringVar(&f.endpoint, "endpoint", "", "control endpoint, unix:///path (default $"+flushcontrol.EnvControlEndpoint+" or "+flushcontrol.DefaultControlEndpoint+")")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Second, "deadline of the call (a drain waits and exports within it)")
	cmd.Flags().StringVar(&f.requestID, "request-id", "", "drain: the Lambda request id it follows")
	cmd.Flags().StringVar(&f.reason, "reason", "manual", "drain: why")
	cmd.Flags().BoolVar(&f.spill, "spill", false, "drain: write what is left to standard output as OTLP JSON lines")
	cmd.Flags().StringVar(&f.awaitHandover, "await-handover", "", "drain: first wait for the hand-over mark of this request id")
	cmd.Flags().DurationVar(&f.handoverTimeout, "handover-timeout", 0, "drain: longest wait for the mark (default: as long as --timeout allows)")
	cmd.Flags().StringVar(&f.source, "source", flushcontrol.SourceFunction, "handover: who marks it, "+flushcontrol.SourceFunction+" or "+flushcontrol.SourceRuntime)
	return cmd
}

// ctlArgs: status and drain stand alone, handover takes the request id.
func ctlArgs(_ *cobra.Command, args []string) error {
	if len(args) == 0 {
		return errors.New("ctl takes one of status, drain, handover REQUEST_ID")
	}
	want := 1
	switch args[0] {
	case "status", "drain":
	case "handover":
		want = 2
	default:
		return fmt.Errorf("ctl %q: want one of status, drain, handover REQUEST_ID", args[0])
	}
	if len(args) != want {
		if want == 2 {
			return errors.New("ctl handover takes the request id: ctl handover REQUEST_ID [--source runtime]")
		}
		return fmt.Errorf("ctl %s takes no arguments, got %q", args[0], args[1:])
	}
	return nil
}

// request is the call args and the flags ask for.
func (f *ctlFlags) request(args []string) (proto.Message, error) {
	switch args[0] {
	case "status":
		return &controlpb.StatusRequest{}, nil
	case "handover":
		return &controlpb.HandoverRequest{RequestId: args[1], Source: f.source}, nil
	}
	req := &controlpb.DrainRequest{RequestId: f.requestID, Reason: f.reason, SpillRemaining: f.spill}
	if f.awaitHandover == "" {
		if f.handoverTimeout != 0 {
			return nil, errors.New("--handover-timeout: only with --await-handover REQUEST_ID")
		}
		return req, nil
	}
	if f.requestID != "" && f.requestID != f.awaitHandover {
		return nil, fmt.Errorf("--request-id %s and --await-handover %s name different invocations", f.requestID, f.awaitHandover)
	}
	ms, err := millis(f.handoverTimeout)
	if err != nil {
		return nil, fmt.Errorf("--handover-timeout: %w", err)
	}
	req.RequestId, req.AwaitHandover, req.HandoverTimeoutMs = f.awaitHandover, true, ms
	return req, nil
}

// millis is d in whole milliseconds for a uint32 field, at least 1 for any positive d (0 means
// "no bound" on the wire).
func millis(d time.Duration) (uint32, error) {
	switch {
	case d < 0:
		return 0, fmt.Errorf("%v: must be >= 0", d)
	case d == 0:
		return 0, nil
	case d > math.MaxUint32*time.Millisecond:
		return 0, fmt.Errorf("%v: must be at most %v", d, math.MaxUint32*time.Millisecond)
	}
	return uint32(max((d+time.Millisecond/2)/time.Millisecond, 1)), nil
}

// call sends request to the control endpoint within --timeout.
func (f *ctlFlags) call(ctx context.Context, request proto.Message) (proto.Message, error) {
	endpoint := f.endpoint
	if endpoint == "" {
		endpoint = os.Getenv(flushcontrol.EnvControlEndpoint)
	}
	if endpoint == "" {
		endpoint = flushcontrol.DefaultControlEndpoint
	}
	socket, err := flushcontrol.SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(socket); err != nil {
		return nil, fmt.Errorf("no collector serves %s (%w)", endpoint, errors.Unwrap(err))
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := controlpb.NewFlushControlClient(conn)
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var reply proto.Message
	var name string
	switch req := request.(type) {
	case *controlpb.StatusRequest:
		name = "status"
		reply, err = client.Status(ctx, req, grpc.WaitForReady(true))
	case *controlpb.HandoverRequest:
		name = "handover"
		reply, err = client.Handover(ctx, req, grpc.WaitForReady(true))
	case *controlpb.DrainRequest:
		name = "drain"
		reply, err = client.Drain(ctx, req, grpc.WaitForReady(true))
	}
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", name, endpoint, err)
	}
	return reply, nil
}
