package validate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/exporter/otlphttpexporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
)

// Test-only factories for what the module has no real component of: an extension, a connector,
// a receiver that supports traces only, and an exporter whose factory refuses to create it.
var (
	extType       = component.MustNewType("nopext")
	connType      = component.MustNewType("fwd")
	tracesOnlyRcv = component.MustNewType("tracesonly")
	failingExp    = component.MustNewType("failing")
)

type emptyConfig struct{}

func testFactories() (otelcol.Factories, error) {
	var f otelcol.Factories
	var err error
	if f.Receivers, err = otelcol.MakeFactoryMap(
		otlpreceiver.NewFactory(),
		receiver.NewFactory(tracesOnlyRcv, func() component.Config { return &emptyConfig{} },
			receiver.WithTraces(func(context.Context, receiver.Settings, component.Config, consumer.Traces) (receiver.Traces, error) {
				return nopComponent{}, nil
			}, component.StabilityLevelAlpha)),
	); err != nil {
		return f, err
	}
	if f.Processors, err = otelcol.MakeFactoryMap(batchprocessor.NewFactory()); err != nil {
		return f, err
	}
	if f.Exporters, err = otelcol.MakeFactoryMap(
		debugexporter.NewFactory(), otlpexporter.NewFactory(), otlphttpexporter.NewFactory(),
		exporter.NewFactory(failingExp, func() component.Config { return &emptyConfig{} },
			exporter.WithTraces(func(context.Context, exporter.Settings, component.Config) (exporter.Traces, error) {
				return nil, errors.New("no credentials")
			}, component.StabilityLevelAlpha)),
	); err != nil {
		return f, err
	}
	if f.Extensions, err = otelcol.MakeFactoryMap(
		extension.NewFactory(extType, func() component.Config { return &emptyConfig{} },
			func(context.Context, extension.Settings, component.Config) (extension.Extension, error) {
				return nopComponent{}, nil
			}, component.StabilityLevelAlpha),
	); err != nil {
		return f, err
	}
	f.Connectors, err = otelcol.MakeFactoryMap(
		connector.NewFactory(connType, func() component.Config { return &emptyConfig{} },
			connector.WithTracesToTraces(func(_ context.Context, _ connector.Settings, _ component.Config, next consumer.Traces) (connector.Traces, error) {
				return fwdConnector{Traces: next}, nil
			}, component.StabilityLevelAlpha)),
	)
	return f, err
}

type nopComponent struct {
	component.StartFunc
	component.ShutdownFunc
}

// fwdConnector passes traces on to the next consumer.
type fwdConnector struct {
	nopComponent
	consumer.Traces
}

func settings(uris ...string) otelcol.CollectorSettings {
	return otelcol.CollectorSettings{
		Factories: testFactories,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				URIs: uris,
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(), envprovider.NewFactory(), yamlprovider.NewFactory(),
				},
				DefaultScheme: "env",
			},
		},
	}
}

// writeConfig writes text into a file named name in a fresh directory and returns its path.
func writeConfig(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
