package flushcontrol

import (
	"bufio"
	"fmt"
	"io"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// maxSpillChunk bounds the serialized size of the part of a request one spilled line holds:
// its OTLP JSON is about three times larger, which keeps a line well under CloudWatch Logs'
// 256 KB per event.
const maxSpillChunk = 64 << 10

// spillTo writes one held request to w as OTLP JSON lines, split so that no line is far over
// maxSpillChunk; returns the number of items written.
func spillTo(w *bufio.Writer, s signal, data []byte) (int, error) {
	var lines [][]byte
	var items int
	switch s {
	case traces:
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(data)
		if err != nil {
			return 0, err
		}
		items = td.SpanCount()
		for _, part := range splitTraces(td, maxSpillChunk) {
			line, err := (&ptrace.JSONMarshaler{}).MarshalTraces(part)
			if err != nil {
				return 0, err
			}
			lines = append(lines, line)
		}
	case metrics:
		md, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(data)
		if err != nil {
			return 0, err
		}
		items = md.DataPointCount()
		for _, part := range splitMetrics(md, maxSpillChunk) {
			line, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(part)
			if err != nil {
				return 0, err
			}
			lines = append(lines, line)
		}
	default:
		ld, err := (&plog.ProtoUnmarshaler{}).UnmarshalLogs(data)
		if err != nil {
			return 0, err
		}
		items = ld.LogRecordCount()
		for _, part := range splitLogs(ld, maxSpillChunk) {
			line, err := (&plog.JSONMarshaler{}).MarshalLogs(part)
			if err != nil {
				return 0, err
			}
			lines = append(lines, line)
		}
	}
	for _, line := range lines {
		if _, err := w.Write(line); err != nil {
			return 0, err
		}
		if err := w.WriteByte('\n'); err != nil {
			return 0, err
		}
	}
	return items, nil
}

// spillWriter is standard output, written a line at a time.
func spillWriter(out io.Writer) *bufio.Writer { return bufio.NewWriterSize(out, 256<<10) }

// splitTraces cuts td into parts of about maxBytes serialized, each item whole, each part
// carrying its items' resource and scope.
func splitTraces(td ptrace.Traces, maxBytes int) []ptrace.Traces {
	var m ptrace.ProtoMarshaler
	if m.TracesSize(td) <= maxBytes {
		return []ptrace.Traces{td}
	}
	var parts []ptrace.Traces
	cur, size := ptrace.NewTraces(), 0
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			var dst ptrace.SpanSlice
			open := false
			for k := 0; k < ss.Spans().Len(); k++ {
				span := ss.Spans().At(k)
				n := m.SpanSize(span)
				if size > 0 && size+n > maxBytes {
					parts = append(parts, cur)
					cur, size, open = ptrace.NewTraces(), 0, false
				}
				if !open {
					nrs := cur.ResourceSpans().AppendEmpty()
					rs.Resource().CopyTo(nrs.Resource())
					nrs.SetSchemaUrl(rs.SchemaUrl())
					nss := nrs.ScopeSpans().AppendEmpty()
					ss.Scope().CopyTo(nss.Scope())
					nss.SetSchemaUrl(ss.SchemaUrl())
					dst, open = nss.Spans(), true
				}
				span.CopyTo(dst.AppendEmpty())
				size += n
			}
		}
	}
	if size > 0 {
		parts = append(parts, cur)
	}
	return parts
}

// splitMetrics cuts md as splitTraces does, a metric (with all its points) at a time.
func splitMetrics(md pmetric.Metrics, maxBytes int) []pmetric.Metrics {
	var m pmetric.ProtoMarshaler
	if m.MetricsSize(md) <= maxBytes {
		return []pmetric.Metrics{md}
	}
	var parts []pmetric.Metrics
	cur, size := pmetric.NewMetrics(), 0
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		for j := 0; j < rm.ScopeMetrics().Len(); j++ {
			sm := rm.ScopeMetrics().At(j)
			var dst pmetric.MetricSlice
			open := false
			for k := 0; k < sm.Metrics().Len(); k++ {
				metric := sm.Metrics().At(k)
				n := m.MetricSize(metric)
				if size > 0 && size+n > maxBytes {
					parts = append(parts, cur)
					cur, size, open = pmetric.NewMetrics(), 0, false
				}
				if !open {
					nrm := cur.ResourceMetrics().AppendEmpty()
					rm.Resource().CopyTo(nrm.Resource())
					nrm.SetSchemaUrl(rm.SchemaUrl())
					nsm := nrm.ScopeMetrics().AppendEmpty()
					sm.Scope().CopyTo(nsm.Scope())
					nsm.SetSchemaUrl(sm.SchemaUrl())
					dst, open = nsm.Metrics(), true
				}
				metric.CopyTo(dst.AppendEmpty())
				size += n
			}
		}
	}
	if size > 0 {
		parts = append(parts, cur)
	}
	return parts
}

// splitLogs cuts ld as splitTraces does.
func splitLogs(ld plog.Logs, maxBytes int) []plog.Logs {
	var m plog.ProtoMarshaler
	if m.LogsSize(ld) <= maxBytes {
		return []plog.Logs{ld}
	}
	var parts []plog.Logs
	cur, size := plog.NewLogs(), 0
	for i := 0; i < ld.ResourceLogs().Len(); i++ {
		rl := ld.ResourceLogs().At(i)
		for j := 0; j < rl.ScopeLogs().Len(); j++ {
			sl := rl.ScopeLogs().At(j)
			var dst plog.LogRecordSlice
			open := false
			for k := 0; k < sl.LogRecords().Len(); k++ {
				record := sl.LogRecords().At(k)
				n := m.LogRecordSize(record)
				if size > 0 && size+n > maxBytes {
					parts = append(parts, cur)
					cur, size, open = plog.NewLogs(), 0, false
				}
				if !open {
					nrl := cur.ResourceLogs().AppendEmpty()
					rl.Resource().CopyTo(nrl.Resource())
					nrl.SetSchemaUrl(rl.SchemaUrl())
					nsl := nrl.ScopeLogs().AppendEmpty()
					sl.Scope().CopyTo(nsl.Scope())
					nsl.SetSchemaUrl(sl.SchemaUrl())
					dst, open = nsl.LogRecords(), true
				}
				record.CopyTo(dst.AppendEmpty())
				size += n
			}
		}
	}
	if size > 0 {
		parts = append(parts, cur)
	}
	return parts
}

func describeSpillError(s signal, err error) string {
	return fmt.Sprintf("cannot spill held %s: %v", s, err)
}
