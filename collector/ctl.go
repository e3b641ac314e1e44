package main

import (
	"context"
	"errors"
	"fmt"
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

// newCtlCommand asks a running collector's FlushControl service and prints the reply as JSON.
func newCtlCommand() *cobra.Command {
	var endpoint, requestID, reason, source string
	var timeout, handoverTimeout time.Duration
	var spill, awaitHandover bool
	cmd := &cobra.Command{
		Use:       "ctl status|drain|handover",
		Short:     "Asks a running collector for its Status, to Drain, or marks a Handover, and prints the reply as JSON",
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"status", "drain", "handover"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoint == "" {
				endpoint = os.Getenv(flushcontrol.EnvControlEndpoint)
			}
			if endpoint == "" {
				endpoint = flushcontrol.DefaultControlEndpoint
			}
			socket, err := flushcontrol.SocketPath(endpoint)
			if err != nil {
				return err
			}
			if _, err := os.Stat(socket); err != nil {
				return fmt.Errorf("no collector serves %s (%w)", endpoint, errors.Unwrap(err))
			}
			conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			client := controlpb.NewFlushControlClient(conn)
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var reply proto.Message
			switch args[0] {
			case "status":
				reply, err = client.Status(ctx, &controlpb.StatusRequest{}, grpc.WaitForReady(true))
			case "handover":
				reply, err = client.Handover(ctx, &controlpb.HandoverRequest{RequestId: requestID, Source: source}, grpc.WaitForReady(true))
			default:
				reply, err = client.Drain(ctx, &controlpb.DrainRequest{
					RequestId: requestID, Reason: reason, SpillRemaining: spill,
					AwaitHandover: awaitHandover, HandoverTimeoutMs: uint32(handoverTimeout.Milliseconds()),
				}, grpc.WaitForReady(true))
			}
			if err != nil {
				return fmt.Errorf("%s at %s: %w", args[0], endpoint, err)
			}
			out, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(reply)
			if err != nil {
				return err
			}
			fmt.Println(string(out))
			return nil
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "control endpoint, unix:///path (default $"+flushcontrol.EnvControlEndpoint+" or "+flushcontrol.DefaultControlEndpoint+")")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "deadline of the call (a drain exports within it)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "drain: the Lambda request id it follows; handover: the one whose hand-over is complete")
	cmd.Flags().BoolVar(&awaitHandover, "await-handover", false, "drain: wait for the hand-over mark of --request-id first")
	cmd.Flags().DurationVar(&handoverTimeout, "handover-timeout", 0, "drain: longest wait for the mark (default: the --timeout)")
	cmd.Flags().StringVar(&source, "source", flushcontrol.SourceFunction, "handover: who marks it, function or runtime")
	cmd.Flags().StringVar(&reason, "reason", "manual", "drain: why")
	cmd.Flags().BoolVar(&spill, "spill", false, "drain: write what is left to standard output as OTLP JSON lines")
	return cmd
}
