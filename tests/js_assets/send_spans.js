'use strict';
// Sends spans with the OpenTelemetry JS SDK to a collector, COUNT over each of http/json,
// http/protobuf and grpc (one tracer provider per exporter, a simple span processor: one
// export per span), then prints one JSON line: what it sent and what each export returned.
// Exits 1 when an export did not succeed.
//
// Usage: node send_spans.js HTTP_BASE_URL GRPC_HOST:PORT COUNT
// (with NODE_PATH naming the node_modules that tests/js_assets/package.json installs)

const { BasicTracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { OTLPTraceExporter: JsonExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { OTLPTraceExporter: ProtobufExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { OTLPTraceExporter: GrpcExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');

const SUCCESS = 0; // ExportResultCode.SUCCESS

// Passes every batch to the SDK's exporter and keeps what it answered.
class Recording {
  constructor(inner) {
    this.inner = inner;
    this.results = [];
  }

  export(spans, done) {
    this.inner.export(spans, (result) => {
      this.results.push({ code: result.code, spans: spans.length,
                          error: result.error ? String(result.error) : null });
      done(result);
    });
  }

  forceFlush() {
    return this.inner.forceFlush();
  }

  shutdown() {
    return this.inner.shutdown();
  }
}

async function main() {
  const [httpBase, grpcEndpoint, countText] = process.argv.slice(2);
  const count = Number(countText);
  const senders = [
    ['http/json', new JsonExporter({ url: `${httpBase}/v1/traces`, timeoutMillis: 10000 })],
    ['http/protobuf', new ProtobufExporter({ url: `${httpBase}/v1/traces`, timeoutMillis: 10000 })],
    ['grpc', new GrpcExporter({ url: `http://${grpcEndpoint}`, timeoutMillis: 10000 })],
  ];
  const sent = [];
  const results = {};
  for (const [protocol, exporter] of senders) {
    const recording = new Recording(exporter);
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'checkout-js' }),
      spanProcessors: [new SimpleSpanProcessor(recording)],
    });
    const tracer = provider.getTracer('afterflush-test', '1.0.0');
    for (let i = 0; i < count; i++) {
      const name = `${protocol}-${i}`;
      const span = tracer.startSpan(name, {
        attributes: { 'payment.id': name, 'sender.protocol': protocol, attempt: i, retried: false },
      });
      const context = span.spanContext();
      span.end();
      sent.push({ protocol, name, trace_id: context.traceId, span_id: context.spanId });
    }
    await provider.forceFlush();
    await provider.shutdown();
    results[protocol] = recording.results;
    if (recording.results.length === 0 || recording.results.some((r) => r.code !== SUCCESS)) {
      process.exitCode = 1;
    }
  }
  process.stdout.write(`${JSON.stringify({ sent, results })}\n`);
}

main().catch((error) => {
  process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
