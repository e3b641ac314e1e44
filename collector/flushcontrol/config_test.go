package flushcontrol

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
)

func TestTheDefaultConfigIsValid(t *testing.T) {
	cfg := NewFactory(NewHub(time.Now(), &syncBuffer{}, func(string) string { return "" })).CreateDefaultConfig()
	must(t, componenttest.CheckConfigStruct(cfg))
	must(t, cfg.(*Config).Validate())
}

func TestValidateReportsEveryInvalidFieldAtOnceByItsKey(t *testing.T) {
	// Given a config where every field is wrong.
	cfg := createDefaultConfig()
	cfg.MaxBufferSizeMiB = 0
	cfg.HighWaterMarkPercent = 101
	cfg.MaxRequestSizeMiB = -1
	cfg.MaxRequestItems = -1
	cfg.RetryAfter = -time.Second
	cfg.DefaultDrainTimeout = 0
	cfg.ShutdownTimeout = -time.Second
	cfg.ControlEndpoint = "tcp://localhost:4000"

	// Then Validate names each of them.
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		"max_buffer_size_mib: must be > 0",
		"high_water_mark_percent: must be between 0 and 100",
		"max_request_size_mib: must be > 0",
		"max_request_items: must be >= 0",
		"retry_after: must be >= 0",
		"default_drain_timeout: must be > 0",
		"shutdown_timeout: must be > 0 (it is the time the collector has to send or spill what it holds when stopped)",
		`control_endpoint: "tcp://localhost:4000": only unix:///path endpoints are supported`,
	}
	equalStrings(t, "errors", lines, want)
}

func TestValidateReportsOnlyTheInvalidField(t *testing.T) {
	cases := []struct {
		key  string
		edit func(*Config)
	}{
		{"max_buffer_size_mib", func(c *Config) { c.MaxBufferSizeMiB = -3 }},
		{"high_water_mark_percent", func(c *Config) { c.HighWaterMarkPercent = -1 }},
		{"max_request_size_mib", func(c *Config) { c.MaxRequestSizeMiB = 0 }},
		{"max_request_items", func(c *Config) { c.MaxRequestItems = -5 }},
		{"retry_after", func(c *Config) { c.RetryAfter = -1 }},
		{"default_drain_timeout", func(c *Config) { c.DefaultDrainTimeout = -1 }},
		{"shutdown_timeout", func(c *Config) { c.ShutdownTimeout = -1 }},
		{"control_endpoint", func(c *Config) { c.ControlEndpoint = "unix://relative/control.sock" }},
		{"control_endpoint", func(c *Config) { c.ControlEndpoint = "unix:///" + strings.Repeat("d", 107) }},
	}
	for _, tc := range cases {
		cfg := createDefaultConfig()
		tc.edit(cfg)
		err := cfg.Validate()
		if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.HasPrefix(err.Error(), tc.key+": ") {
			t.Errorf("%s: got %v; want one error naming %s", tc.key, err, tc.key)
		}
	}

	// And the limits themselves are valid.
	cfg := createDefaultConfig()
	cfg.HighWaterMarkPercent, cfg.MaxRequestItems, cfg.RetryAfter = 100, 0, 0
	must(t, cfg.Validate())
	cfg.HighWaterMarkPercent = 0
	must(t, cfg.Validate())
}

func TestSocketPathTakesAbsoluteUnixEndpointsThatFitSockaddrUn(t *testing.T) {
	longest := "/" + strings.Repeat("d", 106) // 107 bytes: sockaddr_un's 108 with the NUL
	for endpoint, want := range map[string]string{
		"unix:///tmp/afterflush/control.sock": "/tmp/afterflush/control.sock",
		"/tmp/afterflush/control.sock":        "/tmp/afterflush/control.sock",
		"unix://" + longest:                   longest,
	} {
		got, err := SocketPath(endpoint)
		if err != nil || got != want {
			t.Errorf("SocketPath(%q) = %q, %v; want %q", endpoint, got, err, want)
		}
	}
	for endpoint, why := range map[string]string{
		"http://localhost/control": "only unix:///path endpoints are supported",
		"unix://tmp/control.sock":  "the socket path must be absolute",
		"control.sock":             "the socket path must be absolute",
		"unix://" + longest + "x":  "longer than 107 bytes",
	} {
		if _, err := SocketPath(endpoint); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("SocketPath(%q): %v; want %q", endpoint, err, why)
		}
	}
}
