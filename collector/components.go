package main

import (
	"github.com/open-telemetry/opentelemetry-collector-contrib/confmap/provider/s3provider"
	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/awsemfexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/awsxrayexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/prometheusremotewriteexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/basicauthextension"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/sigv4authextension"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/attributesprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/filterprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/probabilisticsamplerprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/resourceprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/spanprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/transformprocessor"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/httpprovider"
	"go.opentelemetry.io/collector/confmap/provider/httpsprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/exporter/otlphttpexporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/processor/memorylimiterprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"

	"github.com/afterflush/afterflush/collector/flushcontrol"
	"github.com/afterflush/afterflush/collector/internal/converter"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// components are every factory of the distribution, in one place: what ADOT's Lambda
// collector ships, what upstream Lambda's ships, and flushcontrol.
func components(hub *flushcontrol.Hub) (otelcol.Factories, error) {
	var errs []error
	receivers, err := otelcol.MakeFactoryMap[receiver.Factory](
		otlpreceiver.NewFactory(),
	)
	errs = append(errs, err)
	processors, err := otelcol.MakeFactoryMap[processor.Factory](
		flushcontrol.NewFactory(hub),
		attributesprocessor.NewFactory(),
		batchprocessor.NewFactory(),
		filterprocessor.NewFactory(),
		memorylimiterprocessor.NewFactory(),
		probabilisticsamplerprocessor.NewFactory(),
		resourceprocessor.NewFactory(),
		spanprocessor.NewFactory(),
		transformprocessor.NewFactory(),
	)
	errs = append(errs, err)
	exporters, err := otelcol.MakeFactoryMap[exporter.Factory](
		awsemfexporter.NewFactory(),
		awsxrayexporter.NewFactory(),
		debugexporter.NewFactory(),
		otlpexporter.NewFactory(),
		otlphttpexporter.NewFactory(),
		prometheusremotewriteexporter.NewFactory(),
	)
	errs = append(errs, err)
	extensions, err := otelcol.MakeFactoryMap[extension.Factory](
		flushcontrol.NewExtensionFactory(hub),
		basicauthextension.NewFactory(),
		sigv4authextension.NewFactory(),
	)
	errs = append(errs, err)
	for _, e := range errs {
		if e != nil {
			return otelcol.Factories{}, e
		}
	}
	return otelcol.Factories{
		Receivers:  receivers,
		Processors: processors,
		Exporters:  exporters,
		Extensions: extensions,
	}, nil
}

// collectorSettings are the Collector's settings: the components, the config providers of
// the ADOT layer's OPENTELEMETRY_COLLECTOR_CONFIG_URI schemes, and the converter.
func collectorSettings(hub *flushcontrol.Hub, uris []string, getenv func(string) string) otelcol.CollectorSettings {
	factories := func() (otelcol.Factories, error) { return components(hub) }
	// The factories hold no state until a pipeline is built: a second set serves the converter.
	known, err := components(hub)
	extensionTypes := map[component.Type]bool{}
	if err == nil {
		for t := range known.Extensions {
			extensionTypes[t] = true
		}
	}
	return otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "afterflush-collector",
			Description: "afterflush collector: the OpenTelemetry Collector for AWS Lambda, exporting after the response",
			Version:     version,
		},
		Factories: factories,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				URIs:          uris,
				DefaultScheme: "env",
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(),
					envprovider.NewFactory(),
					yamlprovider.NewFactory(),
					httpprovider.NewFactory(),
					httpsprovider.NewFactory(),
					s3provider.NewFactory(),
				},
				ConverterFactories: []confmap.ConverterFactory{
					converter.NewFactory(converter.Settings{
						Exporters:  known.Exporters,
						Extensions: extensionTypes,
						Getenv:     getenv,
					}),
				},
			},
		},
	}
}
