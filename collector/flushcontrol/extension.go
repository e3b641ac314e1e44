package flushcontrol

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension"
)

// ExtensionConfig is the control extension's configuration: none. Where it serves FlushControl
// comes from the processors' control_endpoint or AFTERFLUSH_CONTROL_ENDPOINT, where it takes
// hand-over marks from AFTERFLUSH_HANDOVER_ENDPOINT (else beside the control socket); the
// config converter adds the extension to every config.
type ExtensionConfig struct{}

// NewExtensionFactory is the factory of the extension that serves FlushControl for h.
func NewExtensionFactory(h *Hub) extension.Factory {
	return extension.NewFactory(Type,
		func() component.Config { return &ExtensionConfig{} },
		func(_ context.Context, set extension.Settings, _ component.Config) (extension.Extension, error) {
			return &controlExtension{hub: h, set: set}, nil
		},
		component.StabilityLevelBeta)
}

type controlExtension struct {
	hub *Hub
	set extension.Settings
}

// Start runs before every pipeline component: the spool is replayed into the processors'
// buffers before any receiver takes new data.
func (e *controlExtension) Start(context.Context, component.Host) error {
	return e.hub.start(e.set.Logger)
}

func (e *controlExtension) Shutdown(context.Context) error {
	e.hub.stop()
	return nil
}

// Ready is called once every pipeline has started (extensioncapabilities.PipelineWatcher).
func (e *controlExtension) Ready() error {
	e.hub.markReady()
	return nil
}

func (e *controlExtension) NotReady() error {
	e.hub.markNotReady()
	return nil
}
