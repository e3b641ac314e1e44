package validate

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/otelcol"
)

// TestAgreesWithDryRun feeds configurations to both Check and the Collector's own DryRun: Check
// must report a problem for every configuration DryRun rejects, and none for those it accepts.
func TestAgreesWithDryRun(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("base has no %q", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	withConnector := replace("service:\n", "connectors:\n  fwd:\nservice:\n")
	cases := map[string]string{
		"good":                     base,
		"good, empty components":   "receivers:\n  tracesonly:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [tracesonly]\n      exporters: [debug]\n",
		"good, connector":          strings.Replace(withConnector, "exporters: [otlp, debug]", "exporters: [fwd]\n    traces/2:\n      receivers: [fwd]\n      exporters: [debug]", 1),
		"good, extension":          replace("service:\n", "extensions:\n  nopext:\nservice:\n  extensions: [nopext]\n"),
		"good, unused component":   replace("  debug:\n", "  debug:\n  otlphttp:\n    endpoint: http://x:4318\n"),
		"good, telemetry":          base + "  telemetry:\n    logs:\n      level: debug\n    metrics:\n      level: none\n",
		"extensions string":        replace("service:\n", "extensions:\n  nopext:\n  nopext/2:\nservice:\n  extensions: nopext,nopext/2\n"),
		"processors string":        replace("processors: [batch]", "processors: batch"),
		"typo key":                 replace("        endpoint: localhost:4317", "        endpiont: localhost:4317"),
		"typo top of component":    replace("    timeout: 1s", "    timout: 1s"),
		"unknown exporter type":    replace("  debug:\n", "  debug:\n  awsxrayy:\n"),
		"unknown receiver type":    replace("  otlp:\n    protocols:", "  otlp2:\n  otlp:\n    protocols:"),
		"logging exporter":         replace("  debug:\n", "  logging:\n"),
		"bad duration":             replace("timeout: 5s", "timeout: 5x"),
		"bad bool":                 replace("timeout: 5s", "timeout: 5s\n    retry_on_failure:\n      enabled: maybe"),
		"bad int":                  replace("    timeout: 1s", "    timeout: 1s\n    send_batch_size: many"),
		"component validate":       replace("    endpoint: collector:4317\n", ""),
		"processor validate":       replace("    timeout: 1s", "    send_batch_size: 10\n    send_batch_max_size: 5"),
		"unused component invalid": replace("  debug:\n", "  debug:\n  otlp/unused:\n"),
		"tls validate":             replace("    timeout: 5s", "    tls:\n      min_version: \"9.9\""),
		"invalid component ID":     replace("  debug:\n", "  debug:\n  debug/:\n"),
		"duplicate component ID":   replace("  debug:\n", "  debug:\n  \" debug\":\n"),
		"component is a scalar":    replace("  debug:\n", "  debug: 3\n"),
		"section is a list":        replace("processors:\n  batch:\n    timeout: 1s\n", "processors: [batch]\n"),
		"undefined exporter":       replace("exporters: [otlp, debug]", "exporters: [otlp, otlp/2]"),
		"undefined receiver":       replace("receivers: [otlp]", "receivers: [otlp, otlp/2]"),
		"undefined processor":      replace("processors: [batch]", "processors: [batch/2]"),
		"no receivers in pipeline": replace("      receivers: [otlp]\n", ""),
		"no exporters in pipeline": replace("      exporters: [otlp, debug]\n", ""),
		"duplicate processor":      replace("processors: [batch]", "processors: [batch, batch]"),
		"bad reference ID":         replace("receivers: [otlp]", "receivers: [\"otlp/\"]"),
		"pipeline list is a map":   replace("receivers: [otlp]", "receivers: {otlp: 1}"),
		"pipeline typo key":        replace("receivers: [otlp]", "receivers: [otlp]\n      exporter: [debug]"),
		"bad pipeline ID":          replace("    traces:\n", "    tracez:\n"),
		"duplicate pipeline ID":    base + "    \" traces\":\n      receivers: [otlp]\n      exporters: [debug]\n",
		"profiles pipeline":        base + "    profiles:\n      receivers: [otlp]\n      exporters: [debug]\n",
		"no pipelines":             replace(base[strings.Index(base, "  pipelines:"):], "  pipelines: {}\n"),
		"no service":               base[:strings.Index(base, "service:")],
		"service is a scalar":      base[:strings.Index(base, "service:")] + "service: 3\n",
		"unknown service key":      base + "  pipeline: {}\n",
		"unknown top-level key":    base + "extension: {}\n",
		"undefined extension":      replace("service:\n", "service:\n  extensions: [nopext]\n"),
		"bad extension ID":         replace("service:\n", "extensions:\n  nopext:\nservice:\n  extensions: [\"nopext/\"]\n"),
		"telemetry typo":           base + "  telemetry:\n    logs:\n      levle: debug\n",
		"telemetry bad level":      base + "  telemetry:\n    logs:\n      level: loud\n",
		"telemetry validate":       base + "  telemetry:\n    metrics:\n      readers: []\n",
		"empty file":               "# nothing\n",
		"no receivers at all":      "exporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      exporters: [debug]\n",
		"no exporters at all":      "receivers:\n  tracesonly:\nservice:\n  pipelines:\n    traces:\n      receivers: [tracesonly]\n",
		"signal not supported":     replace("  otlp:\n    protocols:", "  tracesonly:\n  otlp:\n    protocols:") + "    metrics:\n      receivers: [tracesonly]\n      exporters: [debug]\n",
		"duplicate YAML key":       base + "receivers:\n  tracesonly:\n",
		"creation fails":           strings.Replace(replace("  debug:\n", "  debug:\n  failing:\n"), "exporters: [otlp, debug]", "exporters: [failing]", 1),
		"connector one way":        strings.Replace(withConnector, "exporters: [otlp, debug]", "exporters: [fwd]", 1),
		"connector wrong signal":   strings.Replace(withConnector, "exporters: [otlp, debug]", "exporters: [fwd]\n    logs:\n      receivers: [fwd]\n      exporters: [debug]", 1),
		"connector cycle":          strings.Replace(withConnector, "exporters: [otlp, debug]", "exporters: [fwd]\n    traces/2:\n      receivers: [fwd]\n      processors: [batch]\n      exporters: [fwd]", 1),
		"ambiguous connector":      replace("service:\n", "connectors:\n  otlp:\nservice:\n"),
		"invalid YAML":             base + "  telemetry: [\n",
		"top level is a list":      "- receivers\n",
	}
	yamlCases := map[string]bool{"invalid YAML": true, "duplicate YAML key": true, "top level is a list": true}
	ctx := context.Background()
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			set := settings(writeConfig(t, "config.yaml", text))
			col, err := otelcol.NewCollector(set)
			if err != nil {
				t.Fatal(err)
			}
			dryErr := col.DryRun(ctx)
			probs, err := Check(ctx, set)
			if err != nil {
				t.Fatalf("Check: %v (DryRun: %v)", err, dryErr)
			}
			if dryErr != nil && strings.Contains(dryErr.Error(), "cannot resolve") && !yamlCases[name] {
				t.Fatalf("the case is not a valid YAML mapping: %v", dryErr)
			}
			wantBad := !strings.HasPrefix(name, "good")
			if (dryErr != nil) != wantBad {
				t.Fatalf("DryRun = %v; the case is meant to be %s", dryErr, map[bool]string{true: "rejected", false: "accepted"}[wantBad])
			}
			switch {
			case dryErr != nil && len(probs) == 0:
				t.Errorf("DryRun rejects (%v) but Check finds no problem", dryErr)
			case dryErr == nil && len(probs) > 0:
				t.Errorf("DryRun accepts but Check finds %v", probs)
			}
			t.Logf("DryRun: %v", dryErr)
			for _, p := range probs {
				t.Logf("Check: %s", p)
			}
		})
	}
}
