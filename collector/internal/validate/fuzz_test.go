package validate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCheck feeds arbitrary bytes to Check as a config file: it must never panic, and every
// problem it reports must say where it is (a key path, or the file and a line in it).
func FuzzCheck(f *testing.F) {
	for _, seed := range []string{
		base,
		strings.Replace(base, "endpoint: localhost:4317", "endpiont: localhost:4317", 1),
		"receivers: [otlp]\n",
		"receivers:\n  otlp:\n    protocols:\n      grpc: {endpoint: [1, 2]}\n",
		"a: &x {b: *x}\n",
		"service:\n  pipelines:\n    traces/: {receivers: [otlp], exporters: [debug]}\n",
		"\t\x00\xff: :\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		problems, err := Check(context.Background(), settings(path))
		if err != nil {
			return
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, p := range problems {
			if p.Path == "" && p.Line == 0 && p.Message == "" {
				t.Fatalf("a problem that says nothing: %#v", p)
			}
			if p.Line > lines {
				t.Fatalf("line %d past the file's %d lines: %s", p.Line, lines, p)
			}
			if p.Line > 0 && p.File != path {
				t.Fatalf("a line in another file: %s", p)
			}
		}
	})
}
