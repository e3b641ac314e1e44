package converter

import (
	"context"
	"testing"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/exporter/otlphttpexporter"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"gopkg.in/yaml.v3"
)

func convert(t *testing.T, src string, env map[string]string) (map[string]any, []string) {
	t.Helper()
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(src), &raw); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	exporters := map[component.Type]exporter.Factory{}
	for _, f := range []exporter.Factory{debugexporter.NewFactory(), otlphttpexporter.NewFactory()} {
		exporters[f.Type()] = f
	}
	factory := NewFactory(Settings{
		Exporters:  exporters,
		Extensions: map[component.Type]bool{component.MustNewType("flushcontrol"): true},
		Getenv:     func(k string) string { return env[k] },
	})
	conv := factory.Create(confmap.ConverterSettings{Logger: zap.New(core)})
	conf := confmap.NewFromStringMap(raw)
	if err := conv.Convert(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range logs.All() {
		lines = append(lines, e.Message)
	}
	return conf.ToStringMap(), lines
}

func get(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func list(v any) []string {
	items, _ := v.([]any)
	out := make([]string, 0, len(items))
	for _, i := range items {
		out = append(out, i.(string))
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ADOT's own Lambda collector config: no processors at all, the telemetry address that the
// Collector of today refuses.
const adotDefault = `
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "localhost:4317"
      http:
        endpoint: "localhost:4318"
exporters:
  debug:
  otlphttp:
    endpoint: http://127.0.0.1:1
    sending_queue:
      enabled: true
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
  telemetry:
    metrics:
      address: localhost:8888
`

func TestAnADOTConfigGetsFlushcontrolInEveryPipelineAndSynchronousExporters(t *testing.T) {
	got, lines := convert(t, adotDefault, nil)
	for _, p := range []string{"traces", "metrics"} {
		if procs := list(get(got, "service", "pipelines", p, "processors")); !equal(procs, []string{"flushcontrol"}) {
			t.Errorf("%s processors = %v, want [flushcontrol]", p, procs)
		}
	}
	for _, e := range []string{"debug", "otlphttp"} {
		if v := get(got, "exporters", e, "sending_queue", "enabled"); v != false {
			t.Errorf("exporters::%s::sending_queue::enabled = %v, want false", e, v)
		}
	}
	if v := get(got, "exporters", "otlphttp", "retry_on_failure", "initial_interval"); v != "100ms" {
		t.Errorf("retry initial_interval = %v", v)
	}
	if v := get(got, "service", "telemetry", "metrics", "address"); v != nil {
		t.Errorf("address kept: %v", v)
	}
	if v := get(got, "service", "telemetry", "metrics", "level"); v != "none" {
		t.Errorf("metrics level = %v, want none", v)
	}
	if exts := list(get(got, "service", "extensions")); !equal(exts, []string{"flushcontrol"}) {
		t.Errorf("service::extensions = %v", exts)
	}
	want := []string{
		"flushcontrol added to pipelines: metrics, traces",
		"batch taken out of pipelines metrics: flushcontrol coalesces what a drain sends (send_batch_max_size is kept as its max_request_items)",
		"sending_queue turned off for exporters debug, otlphttp: a drain waits for each export's answer, before Lambda freezes the environment",
		"service::telemetry::metrics::address (localhost:8888) ignored: the collector's own metrics are off in Lambda",
	}
	if !equal(lines, want) {
		t.Errorf("warnings:\n got %q\nwant %q", lines, want)
	}
}

func TestDecoupleRunsAsFlushcontrolAndBatchLimitIsKept(t *testing.T) {
	got, _ := convert(t, `
processors:
  batch:
    send_batch_max_size: 512
  decouple:
    max_queue_size: 20
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, decouple]
      exporters: [debug]
`, nil)
	if procs := list(get(got, "service", "pipelines", "traces", "processors")); !equal(procs, []string{"flushcontrol"}) {
		t.Errorf("processors = %v", procs)
	}
	if get(got, "processors", "decouple") != nil {
		t.Error("decouple still defined")
	}
	if v := get(got, "processors", "flushcontrol", "max_request_items"); v != 512 {
		t.Errorf("max_request_items = %v (%T)", v, v)
	}
}

func TestASecondPipelineOfOneSignalGetsAFlushcontrolOfItsOwn(t *testing.T) {
	got, _ := convert(t, `
processors:
  flushcontrol:
    max_buffer_size_mib: 4
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
    traces/2:
      receivers: [otlp]
      exporters: [debug]
`, nil)
	if procs := list(get(got, "service", "pipelines", "traces/2", "processors")); !equal(procs, []string{"flushcontrol/traces_2"}) {
		t.Errorf("traces/2 processors = %v", procs)
	}
	if v := get(got, "processors", "flushcontrol/traces_2", "max_buffer_size_mib"); v != 4 {
		t.Errorf("copied config: %v", v)
	}
}

func TestWithoutHoldPipelinesRunWithoutFlushcontrol(t *testing.T) {
	got, lines := convert(t, `
processors:
  flushcontrol:
service:
  pipelines:
    logs:
      receivers: [otlp]
      processors: [flushcontrol]
      exporters: [debug]
`, map[string]string{EnvHold: "false"})
	if procs := list(get(got, "service", "pipelines", "logs", "processors")); len(procs) != 0 {
		t.Errorf("processors = %v", procs)
	}
	if lines[0] != "AFTERFLUSH_HOLD=false: flushcontrol taken out of pipelines logs" {
		t.Errorf("first warning %q", lines[0])
	}
}

func TestABadHoldValueIsOneWarningAndHolds(t *testing.T) {
	got, lines := convert(t, "service:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [debug]\n", map[string]string{EnvHold: "maybe"})
	if lines[0] != `AFTERFLUSH_HOLD="maybe" is not a boolean; holding as by default` {
		t.Errorf("warning %q", lines[0])
	}
	if procs := list(get(got, "service", "pipelines", "logs", "processors")); !equal(procs, []string{"flushcontrol"}) {
		t.Errorf("processors = %v", procs)
	}
}

func TestExtensionsForALongRunningCollectorAreIgnored(t *testing.T) {
	got, lines := convert(t, `
extensions:
  health_check:
  pprof:
service:
  extensions: [health_check, pprof]
  pipelines: {}
`, nil)
	if exts := list(get(got, "service", "extensions")); !equal(exts, []string{"flushcontrol"}) {
		t.Errorf("extensions = %v", exts)
	}
	if get(got, "extensions", "health_check") != nil || get(got, "extensions", "pprof") != nil {
		t.Error("ignored extensions still defined")
	}
	if len(lines) != 2 || lines[0] != "service::extensions: health_check ignored (not needed in Lambda)" {
		t.Errorf("warnings %q", lines)
	}
}

func TestTwoPipelinesOfOneSignalNamingOneFlushcontrolGetOneEach(t *testing.T) {
	got, lines := convert(t, `
processors:
  flushcontrol:
    max_buffer_size_mib: 2
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [flushcontrol]
      exporters: [debug]
    traces/2:
      receivers: [otlp]
      processors: [flushcontrol]
      exporters: [debug]
`, nil)
	if procs := list(get(got, "service", "pipelines", "traces/2", "processors")); !equal(procs, []string{"flushcontrol/traces_2"}) {
		t.Errorf("traces/2 processors = %v", procs)
	}
	if v := get(got, "processors", "flushcontrol/traces_2", "max_buffer_size_mib"); v != 2 {
		t.Errorf("copied config: %v", v)
	}
	if lines[0] != "service::pipelines::traces/2: runs flushcontrol as flushcontrol/traces_2 (a flushcontrol processor holds one traces pipeline)" {
		t.Errorf("warning %q", lines[0])
	}
}

func TestTheLoggingExporterOfOlderADOTConfigsRunsAsDebug(t *testing.T) {
	got, lines := convert(t, `
exporters:
  logging:
    loglevel: debug
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [logging]
`, nil)
	if exps := list(get(got, "service", "pipelines", "traces", "exporters")); !equal(exps, []string{"debug"}) {
		t.Errorf("exporters = %v", exps)
	}
	if v := get(got, "exporters", "debug", "verbosity"); v != "detailed" {
		t.Errorf("verbosity = %v", v)
	}
	if get(got, "exporters", "logging") != nil || get(got, "exporters", "debug", "loglevel") != nil {
		t.Error("logging settings kept")
	}
	if lines[0] != "the logging exporter is the debug exporter now: running logging as debug" {
		t.Errorf("warning %q", lines[0])
	}
}

func TestALoggingExporterBesideADebugOneKeepsItsOwnID(t *testing.T) {
	got, _ := convert(t, `
exporters:
  debug:
  logging:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug, logging]
`, nil)
	if exps := list(get(got, "service", "pipelines", "traces", "exporters")); !equal(exps, []string{"debug", "debug/logging"}) {
		t.Errorf("exporters = %v", exps)
	}
}
