package flushcontrol

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
)

// Type is the processor's (and the control extension's) type name.
var Type = component.MustNewType("flushcontrol")

// NewFactory is the flushcontrol processor's factory; its processors hold what they get in
// h until a drain.
func NewFactory(h *Hub) processor.Factory {
	return processor.NewFactory(Type,
		func() component.Config { return createDefaultConfig() },
		processor.WithTraces(func(_ context.Context, set processor.Settings, cfg component.Config, next consumer.Traces) (processor.Traces, error) {
			p, err := h.register(set.ID, cfg.(*Config), traces, tracesSender(next), set.Logger)
			if err != nil {
				return nil, err
			}
			return &tracesProcessor{held{h, p}}, nil
		}, component.StabilityLevelBeta),
		processor.WithMetrics(func(_ context.Context, set processor.Settings, cfg component.Config, next consumer.Metrics) (processor.Metrics, error) {
			p, err := h.register(set.ID, cfg.(*Config), metrics, metricsSender(next), set.Logger)
			if err != nil {
				return nil, err
			}
			return &metricsProcessor{held{h, p}}, nil
		}, component.StabilityLevelBeta),
		processor.WithLogs(func(_ context.Context, set processor.Settings, cfg component.Config, next consumer.Logs) (processor.Logs, error) {
			p, err := h.register(set.ID, cfg.(*Config), logs, logsSender(next), set.Logger)
			if err != nil {
				return nil, err
			}
			return &logsProcessor{held{h, p}}, nil
		}, component.StabilityLevelBeta),
	)
}

// held is the part the three signals' processors share.
type held struct {
	hub  *Hub
	pipe *pipe
}

func (held) Start(context.Context, component.Host) error { return nil }

// Shutdown drains and spills everything held (the collector is stopping; the receivers have
// already stopped). The first pipeline to stop does it for all of them.
func (p held) Shutdown(ctx context.Context) error {
	p.hub.shutdownDrain(ctx)
	return nil
}

// The data is serialized at once: held bytes cost their wire size, cannot change under us,
// and go to the spool as they are.
func (held) Capabilities() consumer.Capabilities { return consumer.Capabilities{MutatesData: false} }

type tracesProcessor struct{ held }

func (p *tracesProcessor) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	n := td.SpanCount()
	if n == 0 {
		return nil
	}
	data, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return err
	}
	return p.hub.accept(p.pipe, data, n)
}

type metricsProcessor struct{ held }

func (p *metricsProcessor) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	n := md.DataPointCount()
	if n == 0 {
		return nil
	}
	data, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
	if err != nil {
		return err
	}
	return p.hub.accept(p.pipe, data, n)
}

type logsProcessor struct{ held }

func (p *logsProcessor) ConsumeLogs(_ context.Context, ld plog.Logs) error {
	n := ld.LogRecordCount()
	if n == 0 {
		return nil
	}
	data, err := (&plog.ProtoMarshaler{}).MarshalLogs(ld)
	if err != nil {
		return err
	}
	return p.hub.accept(p.pipe, data, n)
}
