package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/afterflush/afterflush/collector/flushcontrol"
)

// Credentials in the environment, as Lambda gives them: no component may look for others
// (the EC2 metadata service is not on loopback).
func lambdaEnv(t *testing.T) {
	t.Helper()
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	t.Setenv("AWS_REGION", "us-east-1")
}

func settingsFor(uri string) []string { return []string{"validate", "--config", uri} }

func TestConfigsWrittenForTheADOTAndUpstreamLambdaCollectorsAreValidUnchanged(t *testing.T) {
	lambdaEnv(t)
	for _, name := range []string{"adot-default.yaml", "awsemf.yaml", "prometheusremotewrite.yaml", "upstream-processors.yaml"} {
		t.Run(name, func(t *testing.T) {
			set := collectorSettings(flushcontrol.NewHub(time.Now(), io.Discard, os.Getenv), nil, os.Getenv)
			problems, err := check(context.Background(), set, settingsFor(filepath.Join("testdata", name)))
			if err != nil || len(problems) != 0 {
				t.Fatalf("err %v, problems %v", err, problems)
			}
		})
	}
}

func TestTheShippedConfigsAreValid(t *testing.T) {
	lambdaEnv(t)
	t.Setenv("HONEYCOMB_API_KEY", "test-key")
	for _, path := range []string{"../config/collector.yaml", "../config/examples/honeycomb.yaml"} {
		set := collectorSettings(flushcontrol.NewHub(time.Now(), io.Discard, os.Getenv), nil, os.Getenv)
		problems, err := check(context.Background(), set, settingsFor(path))
		if err != nil || len(problems) != 0 {
			t.Fatalf("%s: err %v, problems %v", path, err, problems)
		}
	}
}

func TestABadConfigIsEveryProblemWithItsLineAndExitStatus(t *testing.T) {
	lambdaEnv(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	src := `receivers:
  otlp:
    protocols:
      grpc:
        endpiont: localhost:4317
exporters:
  awsxrayy:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [awsxrayy]
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := captureStderr(t, func() {
		if code := run(time.Now(), []string{"validate", "--config", path}); code != 1 {
			t.Errorf("validate exit %d, want 1", code)
		}
	})
	want := []string{
		"invalid config (2 problems):",
		"  receivers::otlp::protocols::grpc::endpiont (" + path + ":5): unknown key \"endpiont\"",
		"  exporters::awsxrayy (" + path + `:7): unknown exporter type "awsxrayy"; supported: awsemf, awsxray, debug, otlp, otlphttp, prometheusremotewrite`,
	}
	if got := strings.Split(strings.TrimRight(stderr, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
	}
	captureStderr(t, func() {
		if code := run(time.Now(), []string{"--config", path}); code != exitBadConfig {
			t.Errorf("run exit %d, want %d", code, exitBadConfig)
		}
	})
}

func TestTheConfigComesFromTheADOTLayersVariablesInOrder(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if got := defaultURIs(getenv); got[0] != defaultConfig {
		t.Errorf("no variables: %v", got)
	}
	env[envConfigFile] = "/var/task/old.yaml"
	if got := defaultURIs(getenv); got[0] != "/var/task/old.yaml" {
		t.Errorf("FILE: %v", got)
	}
	env[envConfigURI] = "s3://bucket.s3.us-east-1.amazonaws.com/collector.yaml"
	if got := defaultURIs(getenv); got[0] != env[envConfigURI] {
		t.Errorf("URI wins: %v", got)
	}
}

func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	f()
	os.Stderr = saved
	w.Close()
	return <-done
}
