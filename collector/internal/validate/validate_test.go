package validate

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// want is an expected Problem: its path, file line (in config.yaml unless file says otherwise)
// and a part of its message.
type want struct {
	path string
	line int
	msg  string
	file string
}

func checkFile(t *testing.T, text string) []Problem {
	t.Helper()
	probs, err := Check(context.Background(), settings(writeConfig(t, "config.yaml", text)))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return probs
}

func assertProblems(t *testing.T, got []Problem, wants ...want) {
	t.Helper()
	ok := len(got) == len(wants)
	for i := 0; ok && i < len(wants); i++ {
		w, g := wants[i], got[i]
		file := w.file
		if file == "" && w.line > 0 {
			file = "config.yaml"
		}
		// Problems name the file as given (a temporary directory here): compare its base name.
		ok = g.Path == w.path && g.Line == w.line && baseName(g.File) == file && strings.Contains(g.Message, w.msg)
	}
	if ok {
		return
	}
	var b strings.Builder
	for _, g := range got {
		b.WriteString("\n\t" + g.String())
	}
	t.Errorf("got %d problems:%s\nwant %d: %+v", len(got), b.String(), len(wants), wants)
}

// base is a valid configuration; tests add their mistakes to copies of it.
const base = `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: localhost:4317
processors:
  batch:
    timeout: 1s
exporters:
  debug:
  otlp:
    endpoint: collector:4317
    timeout: 5s
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp, debug]
`

func TestGoodConfig(t *testing.T) {
	assertProblems(t, checkFile(t, base))
}

func TestGoodConfigWithEverything(t *testing.T) {
	assertProblems(t, checkFile(t, `receivers:
  otlp:
    protocols:
      grpc:
      http:
        endpoint: localhost:4318
  tracesonly:
processors:
  batch:
exporters:
  debug:
    verbosity: detailed
  otlphttp:
    endpoint: https://collector:4318
    headers:
      x-api-key: secret
connectors:
  fwd:
extensions:
  nopext:
service:
  extensions: [nopext]
  telemetry:
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp, tracesonly]
      exporters: [fwd]
    traces/out:
      receivers: [fwd]
      processors: [batch]
      exporters: [otlphttp]
    logs:
      receivers: [otlp]
      exporters: [debug]
`))
}

func TestTypoKey(t *testing.T) {
	probs := checkFile(t, strings.Replace(base, "        endpoint: localhost:4317", "        endpiont: localhost:4317", 1))
	assertProblems(t, probs, want{"receivers::otlp::protocols::grpc::endpiont", 5, `unknown key "endpiont"`, ""})
	if got, w := probs[0].String(), "receivers::otlp::protocols::grpc::endpiont ("+probs[0].File+":5): unknown key \"endpiont\""; got != w || baseName(probs[0].File) != "config.yaml" {
		t.Errorf("String() = %q, want %q", got, w)
	}
}

func TestTwoComponentsAtOnce(t *testing.T) {
	text := strings.Replace(base, "    timeout: 1s", "    timeout: 1s\n    send_batch_sise: 10", 1)
	text = strings.Replace(text, "    timeout: 5s", "    timeout: 5s\n    retry_on_failure:\n      enabled: maybe", 1)
	assertProblems(t, checkFile(t, text),
		want{"processors::batch::send_batch_sise", 9, `unknown key "send_batch_sise"`, ""},
		want{"exporters::otlp::retry_on_failure::enabled", 16, "expected type 'bool'", ""},
	)
}

func TestSeveralProblemsInOneComponent(t *testing.T) {
	text := strings.Replace(base, "        endpoint: localhost:4317",
		"        endpiont: localhost:4317\n        max_recv_msg_size_mib: lots\n      htttp:", 1)
	assertProblems(t, checkFile(t, text),
		want{"receivers::otlp::protocols::grpc::endpiont", 5, `unknown key "endpiont"`, ""},
		want{"receivers::otlp::protocols::grpc::max_recv_msg_size_mib", 6, "expected type 'int'", ""},
		want{"receivers::otlp::protocols::htttp", 7, `unknown key "htttp"`, ""},
	)
}

func TestUnknownExporterType(t *testing.T) {
	text := strings.Replace(base, "  debug:\n", "  debug:\n  awsxrayy:\n    region: eu-west-1\n", 1)
	assertProblems(t, checkFile(t, text),
		want{"exporters::awsxrayy", 11, `unknown exporter type "awsxrayy"; supported: debug, failing, otlp, otlphttp`, ""})
}

func TestBadDuration(t *testing.T) {
	assertProblems(t, checkFile(t, strings.Replace(base, "timeout: 5s", "timeout: 5 seconds", 1)),
		want{"exporters::otlp::timeout", 13, `time: unknown unit "5 seconds"`, ""})
}

func TestValidateErrorsAreMappedToKeys(t *testing.T) {
	// tls is a field of a squashed struct (clientconfig), which xconfmap names but the file
	// does not have; a config without endpoint fails the exporter's own Validate.
	text := strings.Replace(base, "    timeout: 5s", "    timeout: 5s\n    tls:\n      min_version: \"9.9\"\n  otlp/2:", 1)
	text = strings.Replace(text, "exporters: [otlp, debug]", "exporters: [otlp, otlp/2]", 1)
	assertProblems(t, checkFile(t, text),
		want{"exporters::otlp::tls", 14, `invalid TLS min_version`, ""},
		want{"exporters::otlp/2", 16, `requires a non-empty "endpoint"`, ""},
	)
}

func TestPipelineReferencesUndefinedExporter(t *testing.T) {
	assertProblems(t, checkFile(t, strings.Replace(base, "exporters: [otlp, debug]", "exporters: [otlp, otlp/2]", 1)),
		want{"service::pipelines::traces::exporters", 19, `references exporter "otlp/2" which is not configured`, ""})
}

func TestPipelineWithoutReceivers(t *testing.T) {
	assertProblems(t, checkFile(t, base+"    logs:\n      exporters: [debug]\n"),
		want{"service::pipelines::logs::receivers", 20, "must have at least one receiver", ""})
}

func TestPipelineProblems(t *testing.T) {
	text := base + `    metrics:
      receivers: [tracesonly, otlp/x]
      processors:
        - batch
        - batch
      exporters: [debug]
    tracez: {}
`
	text = strings.Replace(text, "  otlp:\n    protocols:", "  tracesonly:\n  otlp:\n    protocols:", 1)
	assertProblems(t, checkFile(t, text),
		want{"service::pipelines::metrics::receivers", 22, `receiver "tracesonly" does not support metrics`, ""},
		want{"service::pipelines::metrics::receivers", 22, `references receiver "otlp/x" which is not configured`, ""},
		want{"service::pipelines::metrics::processors", 25, `references processor "batch" more than once`, ""},
		want{"service::pipelines::tracez", 27, `invalid pipeline ID`, ""},
	)
}

func TestUnknownTopLevelKey(t *testing.T) {
	assertProblems(t, checkFile(t, base+"extension:\n  nopext:\n"),
		want{"extension", 20, `unknown key "extension"`, ""})
}

func TestServiceExtensionNotConfigured(t *testing.T) {
	text := strings.Replace(base, "service:\n", "extensions:\n  nopext:\nservice:\n  extensions:\n    - nopext\n    - nopext/2\n  pipeline: {}\n", 1)
	assertProblems(t, checkFile(t, text),
		want{"service::extensions", 19, `references extension "nopext/2" which is not configured`, ""},
		want{"service::pipeline", 20, `unknown key "pipeline"`, ""},
	)
}

func TestServiceTelemetry(t *testing.T) {
	assertProblems(t, checkFile(t, base+"  telemetry:\n    logs:\n      levle: debug\n    metrics:\n      level: basic\n      readers: []\n"),
		want{"service::telemetry::logs::levle", 22, `unknown key "levle"`, ""})
	assertProblems(t, checkFile(t, base+"  telemetry:\n    metrics:\n      readers: []\n"),
		want{"service::telemetry", 20, "metrics reader should exist", ""})
}

func TestComponentIDs(t *testing.T) {
	text := strings.Replace(base, "  debug:\n", "  debug:\n  debug/:\n  \" debug \":\n  debug/3: 3\n", 1)
	assertProblems(t, checkFile(t, text),
		want{"exporters::debug/", 11, "invalid exporter ID", ""},
		want{"exporters:: debug ", 12, `duplicate exporter ID: " debug " is the same ID as "debug"`, ""},
		want{"exporters::debug/3", 13, "must be a mapping", ""},
	)
}

func TestWholeConfig(t *testing.T) {
	assertProblems(t, checkFile(t, "# nothing yet\n"),
		want{"", 0, "empty configuration", ""},
		want{"service::pipelines", 0, "at least one pipeline", ""},
	)
	assertProblems(t, checkFile(t, "receivers:\n  tracesonly:\nservice:\n  pipelines: {}\n"),
		want{"exporters", 0, "no exporter is configured", ""},
		want{"service::pipelines", 4, "at least one pipeline", ""},
	)
}

func TestConnectorUsedOneWay(t *testing.T) {
	text := strings.Replace(base, "service:\n", "connectors:\n  fwd:\nservice:\n", 1)
	text = strings.Replace(text, "exporters: [otlp, debug]", "exporters: [otlp, fwd]", 1)
	assertProblems(t, checkFile(t, text),
		want{"connectors::fwd", 15, `connector "fwd" used as exporter in [traces] pipeline but not used in any supported receiver pipeline`, ""})
}

func TestComponentCreationFails(t *testing.T) {
	text := strings.Replace(base, "  debug:\n", "  debug:\n  failing:\n", 1)
	text = strings.Replace(text, "exporters: [otlp, debug]", "exporters: [otlp, failing]", 1)
	assertProblems(t, checkFile(t, text),
		want{"exporters::failing", 11, `failed to create "failing" exporter for data type "traces": no credentials`, ""})
}

func TestGraphProblemsBesideOthers(t *testing.T) {
	// The pipeline build stops at its first error; pipelines are built apart so that one
	// pipeline's problem does not hide another's.
	text := strings.Replace(base, "  debug:\n", "  debug:\n  failing:\n", 1)
	text = strings.Replace(text, "exporters: [otlp, debug]", "exporters: [otlp, otlp/2]", 1)
	text += "    traces/2:\n      receivers: [otlp]\n      exporters: [failing]\n"
	assertProblems(t, checkFile(t, text),
		want{"exporters::failing", 11, `failed to create "failing" exporter`, ""},
		want{"service::pipelines::traces::exporters", 20, `references exporter "otlp/2" which is not configured`, ""},
	)
}

func TestYAMLSyntaxError(t *testing.T) {
	assertProblems(t, checkFile(t, base+"  telemetry: [\n"),
		want{"", 20, "invalid YAML: did not find expected node content", ""})
	assertProblems(t, checkFile(t, "- receivers\n"),
		want{"", 1, "must be a mapping, not a list", ""})
}

func TestEnvURI(t *testing.T) {
	t.Setenv("VALIDATE_TEST_CONFIG", strings.Replace(base, "timeout: 5s", "timeout: 5 seconds\n    foo: 1", 1))
	probs, err := Check(context.Background(), settings("env:VALIDATE_TEST_CONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	assertProblems(t, probs,
		want{"exporters::otlp::foo", 0, `unknown key "foo"`, ""},
		want{"exporters::otlp::timeout", 0, "time: unknown unit", ""},
	)
	if got, w := probs[0].String(), "exporters::otlp::foo: unknown key \"foo\""; got != w {
		t.Errorf("String() = %q, want %q", got, w)
	}
}

func TestMergedFilesAndYAMLURI(t *testing.T) {
	first := writeConfig(t, "base.yaml", base)
	second := writeConfig(t, "override.yaml", `exporters:
  otlp:
    timeout: soon
receivers:
  otlp:
    protocols:
      grpc:
        endpiont: x
`)
	probs, err := Check(context.Background(), settings(first, "file:"+second, "yaml:processors::batch::timeout: later"))
	if err != nil {
		t.Fatal(err)
	}
	assertProblems(t, probs,
		// Only base.yaml has processors::batch::timeout; the yaml: URI sets its value.
		want{"processors::batch::timeout", 8, `time: invalid duration "later"`, "base.yaml"},
		want{"exporters::otlp::timeout", 3, `time: invalid duration "soon"`, "override.yaml"},
		want{"receivers::otlp::protocols::grpc::endpiont", 8, `unknown key "endpiont"`, "override.yaml"},
	)
}

func TestResolveFailures(t *testing.T) {
	ctx := context.Background()
	if _, err := Check(ctx, settings(t.TempDir()+"/missing.yaml")); err == nil || !strings.Contains(err.Error(), "cannot resolve") {
		t.Errorf("missing file: err = %v", err)
	}
	if _, err := Check(ctx, settings("s3://bucket/config.yaml")); err == nil || !strings.Contains(err.Error(), "unsupported scheme") {
		t.Errorf("unsupported scheme: err = %v", err)
	}
}

func TestProblemString(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{"a::b", "c.yaml", 3, "bad"}, "a::b (c.yaml:3): bad"},
		{Problem{"a::b", "", 0, "bad"}, "a::b: bad"},
		{Problem{"", "c.yaml", 3, "bad"}, "c.yaml:3: bad"},
		{Problem{"", "", 0, "bad"}, "bad"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func baseName(p string) string {
	if p == "" {
		return ""
	}
	return filepath.Base(p)
}
