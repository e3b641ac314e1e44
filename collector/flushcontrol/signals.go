package flushcontrol

import (
	"context"
	"fmt"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// signal is one of the three OTLP signals; entries are held as serialized OTLP export
// requests, so that holding costs their wire size and coalescing is concatenation (repeated
// fields of protobuf messages concatenate into one valid message).
type signal int

const (
	traces signal = iota
	metrics
	logs
)

var signals = [...]signal{traces, metrics, logs}

func (s signal) String() string { return [...]string{"traces", "metrics", "logs"}[s] }

// noun names the signal's items as the companion and the tests read them.
func (s signal) noun() string { return [...]string{"spans", "metric points", "log records"}[s] }

// spoolCode is the signal's code in spool records (kept from the first spool format).
func (s signal) spoolCode() byte { return byte(s) + 1 }

func signalOfSpoolCode(code byte) (signal, bool) {
	if code < 1 || code > 3 {
		return 0, false
	}
	return signal(code - 1), true
}

// sender sends one decoded request to the pipeline's next consumer.
type sender func(ctx context.Context, data []byte) error

func tracesSender(next consumer.Traces) sender {
	var u ptrace.ProtoUnmarshaler
	return func(ctx context.Context, data []byte) error {
		td, err := u.UnmarshalTraces(data)
		if err != nil {
			return consumererror.NewPermanent(fmt.Errorf("decoding held traces: %w", err)) // would fail again
		}
		return next.ConsumeTraces(ctx, td)
	}
}

func metricsSender(next consumer.Metrics) sender {
	var u pmetric.ProtoUnmarshaler
	return func(ctx context.Context, data []byte) error {
		md, err := u.UnmarshalMetrics(data)
		if err != nil {
			return consumererror.NewPermanent(fmt.Errorf("decoding held metrics: %w", err)) // would fail again
		}
		return next.ConsumeMetrics(ctx, md)
	}
}

func logsSender(next consumer.Logs) sender {
	var u plog.ProtoUnmarshaler
	return func(ctx context.Context, data []byte) error {
		ld, err := u.UnmarshalLogs(data)
		if err != nil {
			return consumererror.NewPermanent(fmt.Errorf("decoding held logs: %w", err)) // would fail again
		}
		return next.ConsumeLogs(ctx, ld)
	}
}

// countItems decodes a serialized request and counts its items (spool replay only).
func countItems(s signal, data []byte) (int, error) {
	// On an error the decoded value is empty (nil inside): counting it would panic.
	switch s {
	case traces:
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(data)
		if err != nil {
			return 0, err
		}
		return td.SpanCount(), nil
	case metrics:
		md, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(data)
		if err != nil {
			return 0, err
		}
		return md.DataPointCount(), nil
	default:
		ld, err := (&plog.ProtoUnmarshaler{}).UnmarshalLogs(data)
		if err != nil {
			return 0, err
		}
		return ld.LogRecordCount(), nil
	}
}
