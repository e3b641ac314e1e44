package validate

import (
	"strings"
	"testing"
)

func TestLocate(t *testing.T) {
	first := writeConfig(t, "a.yaml", `x: &defaults
  timeout: 1s
  list:
    - one
    - two
receivers:
  otlp:
    <<: *defaults
    own: 1
exporters:
  debug:
`)
	second := writeConfig(t, "b.yaml", `exporters:
  debug:
    verbosity: detailed
`)
	idx := newLineIndex([]string{first, "file:" + second, "env:X", "yaml:a::b: c"})
	for _, tc := range []struct {
		path string
		file string
		line int
	}{
		{"receivers::otlp::own", "a.yaml", 9},
		{"receivers::otlp::timeout", "a.yaml", 2}, // merged in from the anchor
		{"receivers::otlp::list::1", "a.yaml", 5},
		{"receivers::otlp::list::7", "a.yaml", 3}, // no such item: its list
		{"receivers::otlp::missing::deeper", "a.yaml", 7},
		{"exporters::debug", "b.yaml", 2}, // the last file that has it
		{"exporters::debug::verbosity", "b.yaml", 3},
		{"exporters::debug::other", "b.yaml", 2},
		{"processors", "", 0},
		{"", "", 0},
	} {
		var path []string
		if tc.path != "" {
			path = strings.Split(tc.path, "::")
		}
		_, file, line := idx.locate(path)
		if baseName(file) != tc.file || line != tc.line {
			t.Errorf("locate(%q) = %s:%d, want %s:%d", tc.path, file, line, tc.file, tc.line)
		}
	}
}

func TestFilePath(t *testing.T) {
	for uri, want := range map[string]string{
		"/etc/otel/config.yaml":      "/etc/otel/config.yaml",
		"config.yaml":                "config.yaml",
		"file:/etc/otel/config.yaml": "/etc/otel/config.yaml",
		"file:./a/../config.yaml":    "config.yaml",
		`C:\otel\config.yaml`:        `C:\otel\config.yaml`,
		"env:CONFIG":                 "",
		"yaml:a::b: c":               "",
		"s3://bucket/config.yaml":    "",
	} {
		got, ok := filePath(uri)
		if got != want || ok != (want != "") {
			t.Errorf("filePath(%q) = %q, %v; want %q", uri, got, ok, want)
		}
	}
}
