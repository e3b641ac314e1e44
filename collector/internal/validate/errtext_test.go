package validate

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/xconfmap"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
)

func issueStrings(issues []issue) []string {
	out := make([]string, len(issues))
	for i, is := range issues {
		out[i] = strings.Join(is.path, "::") + ": " + is.msg
	}
	slices.Sort(out)
	return out
}

func unmarshal(t *testing.T, f component.Factory, raw map[string]any) (component.Config, error) {
	t.Helper()
	cfg := f.CreateDefaultConfig()
	return cfg, confmap.NewFromStringMap(raw).Unmarshal(&cfg)
}

// otlpTypos has problems at three levels of nested decodes: the otlp receiver's protocols are
// configoptional values, each unmarshalled by a decode of its own.
var otlpTypos = map[string]any{
	"protocols": map[string]any{
		"grpc": map[string]any{"endpiont": "x", "foo": 1, "keepalive": map[string]any{
			"server_parameters": map[string]any{"time": "soon"},
		}},
		"http": map[string]any{"bar": 1},
	},
	"zzz": 1,
}

func TestDecodeIssues(t *testing.T) {
	_, err := unmarshal(t, otlpreceiver.NewFactory(), otlpTypos)
	if err == nil {
		t.Fatal("no error")
	}
	got := issueStrings(decodeIssues(err))
	want := []string{
		"protocols::grpc::endpiont: unknown key \"endpiont\"",
		"protocols::grpc::foo: unknown key \"foo\"",
		"protocols::grpc::keepalive::server_parameters::time: time: invalid duration",
		"protocols::http::bar: unknown key \"bar\"",
		"zzz: unknown key \"zzz\"",
	}
	if !slices.Equal(got, want) {
		t.Errorf("decodeIssues(%q)\n got %q\nwant %q", err, got, want)
	}
}

func TestDecodeIssuesFromText(t *testing.T) {
	// A chain flattened to text: a flat list is still split by key.
	_, err := unmarshal(t, otlpexporter.NewFactory(), map[string]any{
		"timeout": "5x", "retry_on_failure": map[string]any{"enabled": 1}, "endpoit": "x",
	})
	got := issueStrings(decodeIssues(fmt.Errorf("cannot read it: %v", err)))
	want := []string{
		"endpoit: cannot read it: unknown key \"endpoit\"",
		"retry_on_failure::enabled: cannot read it: expected type 'bool', got unconvertible type 'int'",
		"timeout: cannot read it: time: unknown unit",
	}
	if !slices.Equal(got, want) {
		t.Errorf("decodeIssues(%q)\n got %q\nwant %q", err, got, want)
	}

	// A nested list does not show where it ends: it stays whole, at the path that is certain.
	_, err = unmarshal(t, otlpreceiver.NewFactory(), otlpTypos)
	flat := errors.New(err.Error())
	issues := decodeIssues(flat)
	if len(issues) != 1 || issues[0].path != nil || issues[0].msg != err.Error() {
		t.Errorf("decodeIssues(%q) = %q", err, issueStrings(issues))
	}
}

func TestDecodeIssuesThroughWrappers(t *testing.T) {
	_, err := unmarshal(t, otlpreceiver.NewFactory(), otlpTypos)
	got := issueStrings(decodeIssues(fmt.Errorf("cannot unmarshal: %w", err)))
	if len(got) != 5 || got[0] != "protocols::grpc::endpiont: cannot unmarshal: unknown key \"endpiont\"" {
		t.Errorf("got %q", got)
	}
}

func TestValidateIssues(t *testing.T) {
	cfg, err := unmarshal(t, otlpreceiver.NewFactory(), map[string]any{"protocols": map[string]any{
		"grpc": map[string]any{"tls": map[string]any{"min_version": "9.9"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = xconfmap.Validate(cfg)
	got := issueStrings(validateIssues(err, cfg))
	// xconfmap says protocols::grpc: tls: config: (config is a squashed struct).
	want := []string{
		`protocols::grpc::tls: TLS configuration must include both certificate and key for server connections`,
		`protocols::grpc::tls: invalid TLS min_version: unsupported TLS version: "9.9"`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("validateIssues(%q)\n got %q\nwant %q", err, got, want)
	}
}

func TestKeyPath(t *testing.T) {
	exp := reflect.TypeOf(otlpexporter.NewFactory().CreateDefaultConfig())
	rcv := reflect.TypeOf(otlpreceiver.NewFactory().CreateDefaultConfig())
	for _, tc := range []struct {
		t    reflect.Type
		in   string
		want string
	}{
		{exp, "clientconfig::tls::config", "tls"},
		{exp, "clientconfig::headers::x-key", "headers::x-key"},
		{exp, "sending_queue", "sending_queue"},
		{exp, "nosuchfield::x", "nosuchfield::x"},
		{rcv, "protocols::grpc::keepalive::server_parameters", "protocols::grpc::keepalive::server_parameters"},
		{rcv, "protocols::http::cors::allowed_origins::0", "protocols::http::cors::allowed_origins::0"},
	} {
		if got := strings.Join(keyPath(tc.t, strings.Split(tc.in, "::")), "::"); got != tc.want {
			t.Errorf("keyPath(%v, %q) = %q, want %q", tc.t, tc.in, got, tc.want)
		}
	}
}

func TestSplitName(t *testing.T) {
	for in, want := range map[string][]string{
		"":                   nil,
		"timeout":            {"timeout"},
		"protocols.grpc":     {"protocols", "grpc"},
		"[a]":                {"a"},
		"headers[x.key]":     {"headers", "x.key"},
		"actions[0].key":     {"actions", "0", "key"},
		"pipelines[traces].": {"pipelines", "traces"},
		"broken[x":           {"broken", "[x"},
	} {
		if got := splitName(in); !slices.Equal(got, want) {
			t.Errorf("splitName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLeadingPath(t *testing.T) {
	path, msg := leadingPath(nil, `service::pipelines::traces: references exporter "x" which is not configured`)
	if strings.Join(path, "::") != "service::pipelines::traces" || msg != `references exporter "x" which is not configured` {
		t.Errorf("got %q, %q", path, msg)
	}
	if path, msg = leadingPath(nil, "empty configuration file"); path != nil || msg != "empty configuration file" {
		t.Errorf("got %q, %q", path, msg)
	}
	if path, _ = leadingPath(nil, "invalid TLS min_version: x"); path != nil {
		t.Errorf("got %q", path)
	}
}
