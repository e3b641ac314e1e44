package flushcontrol

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// DefaultControlEndpoint is where the collector serves FlushControl unless the config or
// AFTERFLUSH_CONTROL_ENDPOINT names another place.
const DefaultControlEndpoint = "unix:///tmp/afterflush/control.sock"

// Config is the flushcontrol processor's configuration. Processors that share a component ID
// share one buffer bound.
type Config struct {
	// MaxBufferSizeMiB bounds the serialized bytes held for every pipeline of this processor
	// ID together; past it the receivers answer RESOURCE_EXHAUSTED / 429. Must be > 0.
	MaxBufferSizeMiB int `mapstructure:"max_buffer_size_mib"`
	// HighWaterMarkPercent of the bound above which the collector exports on its own, without
	// waiting for a Drain; 0 means never.
	HighWaterMarkPercent int `mapstructure:"high_water_mark_percent"`
	// MaxRequestSizeMiB caps one coalesced export; a single accepted request larger than it is
	// still sent whole. Must be > 0.
	MaxRequestSizeMiB int `mapstructure:"max_request_size_mib"`
	// MaxRequestItems caps the items of one coalesced export (the batch processor's
	// send_batch_max_size is carried here); 0 means no cap.
	MaxRequestItems int `mapstructure:"max_request_items"`
	// RetryAfter is what a refused sender is told to wait (Retry-After / RetryInfo).
	RetryAfter time.Duration `mapstructure:"retry_after"`
	// DefaultDrainTimeout bounds a drain whose caller set no deadline, and the collector's own
	// drains past the high-water mark.
	DefaultDrainTimeout time.Duration `mapstructure:"default_drain_timeout"`
	// ShutdownTimeout bounds the drain when the collector is stopped (SIGTERM); what it leaves
	// is spilled to standard output.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// ControlEndpoint is the unix socket of the FlushControl service
	// (AFTERFLUSH_CONTROL_ENDPOINT wins over it).
	ControlEndpoint string `mapstructure:"control_endpoint"`
	// Spool writes every accepted request to a write-ahead spool, so that a collector started
	// after a crash sends what this one had acknowledged.
	Spool bool `mapstructure:"spool"`
	// SpoolDirectory defaults to "spool" beside the control socket.
	SpoolDirectory string `mapstructure:"spool_directory"`
}

func createDefaultConfig() *Config {
	return &Config{
		MaxBufferSizeMiB:     16,
		HighWaterMarkPercent: 80,
		MaxRequestSizeMiB:    3,
		RetryAfter:           time.Second,
		DefaultDrainTimeout:  5 * time.Second,
		ShutdownTimeout:      1500 * time.Millisecond,
		ControlEndpoint:      DefaultControlEndpoint,
		Spool:                true,
	}
}

// Validate checks every field and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxBufferSizeMiB <= 0 {
		errs = append(errs, errors.New("max_buffer_size_mib: must be > 0"))
	}
	if c.HighWaterMarkPercent < 0 || c.HighWaterMarkPercent > 100 {
		errs = append(errs, errors.New("high_water_mark_percent: must be between 0 and 100"))
	}
	if c.MaxRequestSizeMiB <= 0 {
		errs = append(errs, errors.New("max_request_size_mib: must be > 0"))
	}
	if c.MaxRequestItems < 0 {
		errs = append(errs, errors.New("max_request_items: must be >= 0"))
	}
	if c.RetryAfter < 0 {
		errs = append(errs, errors.New("retry_after: must be >= 0"))
	}
	if c.DefaultDrainTimeout <= 0 {
		errs = append(errs, errors.New("default_drain_timeout: must be > 0"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("shutdown_timeout: must be > 0 (it is the time the collector has to send or spill what it holds when stopped)"))
	}
	if _, err := SocketPath(c.ControlEndpoint); err != nil {
		errs = append(errs, fmt.Errorf("control_endpoint: %w", err))
	}
	return errors.Join(errs...)
}

func (c *Config) bufferBytes() int64 { return int64(c.MaxBufferSizeMiB) << 20 }

func (c *Config) requestBytes() int { return c.MaxRequestSizeMiB << 20 }

// SocketPath is the file of a unix:// endpoint (a bare absolute path is taken as one too).
func SocketPath(endpoint string) (string, error) {
	path := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		path = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("%q: only unix:///path endpoints are supported", endpoint)
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%q: the socket path must be absolute", endpoint)
	}
	// sockaddr_un holds 108 bytes with the terminating NUL.
	if len(path) > 107 {
		return "", fmt.Errorf("%q: the socket path is longer than 107 bytes", endpoint)
	}
	return path, nil
}
