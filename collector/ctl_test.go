package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/extension/extensiontest"

	"github.com/afterflush/afterflush/collector/flushcontrol"
)

// serving is a hub whose control extension serves a socket in a temporary directory; it
// returns the endpoint.
func serving(t *testing.T) string {
	t.Helper()
	endpoint := "unix://" + filepath.Join(t.TempDir(), "c.sock")
	env := map[string]string{flushcontrol.EnvControlEndpoint: endpoint}
	hub := flushcontrol.NewHub(time.Now(), io.Discard, func(k string) string { return env[k] })
	f := flushcontrol.NewExtensionFactory(hub)
	ext, err := f.Create(context.Background(), extensiontest.NewNopSettings(flushcontrol.Type), f.CreateDefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := ext.Start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ext.Shutdown(context.Background()) })
	return endpoint
}

// ctl runs the ctl command with args and returns its reply, decoded, or its error.
func ctl(t *testing.T, args ...string) (map[string]any, error) {
	t.Helper()
	cmd := newCtlCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		return nil, err
	}
	var reply map[string]any
	if err := json.Unmarshal(out.Bytes(), &reply); err != nil {
		t.Fatalf("ctl %v printed %q: %v", args, out.String(), err)
	}
	return reply, nil
}

func TestCtlMarksAHandoverAndDrainsAfterIt(t *testing.T) {
	endpoint := serving(t)

	// ctl handover marks once: the second mark is not first.
	for _, first := range []bool{true, false} {
		reply, err := ctl(t, "handover", "r1", "--source", "runtime", "--endpoint", endpoint)
		if err != nil || reply["first"] != first {
			t.Fatalf("handover r1: %v, %v; want first %v", reply, err, first)
		}
	}

	// ctl drain --await-handover uses the mark made before it, and times out without one.
	for id, ended := range map[string]string{"r1": "runtime", "r2": "timeout"} {
		reply, err := ctl(t, "drain", "--await-handover", id, "--handover-timeout", "10ms", "--endpoint", endpoint)
		if err != nil || reply["handover"] != ended || reply["complete"] != true {
			t.Fatalf("drain awaiting %s: %v, %v; want handover %q, complete", id, reply, err, ended)
		}
	}

	// And a mark from an unknown source is the collector's refusal.
	if _, err := ctl(t, "handover", "r3", "--source", "timeout", "--endpoint", endpoint); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("handover from source timeout: %v; want InvalidArgument", err)
	}
}

func TestCtlRefusesArgumentsThatDoNotMakeACall(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "ctl takes one of status, drain, handover REQUEST_ID"},
		{[]string{"flush"}, `ctl "flush": want one of status, drain, handover REQUEST_ID`},
		{[]string{"handover"}, "ctl handover takes the request id: ctl handover REQUEST_ID [--source runtime]"},
		{[]string{"status", "extra"}, `ctl status takes no arguments, got ["extra"]`},
		{[]string{"drain", "--handover-timeout", "1s"}, "--handover-timeout: only with --await-handover REQUEST_ID"},
		{[]string{"drain", "--request-id", "a", "--await-handover", "b"}, "--request-id a and --await-handover b name different invocations"},
		{[]string{"drain", "--await-handover", "a", "--handover-timeout", "-1s"}, "--handover-timeout: -1s: must be >= 0"},
	} {
		if _, err := ctl(t, c.args...); err == nil || err.Error() != c.want {
			t.Errorf("ctl %q: %v; want %q", c.args, err, c.want)
		}
	}
}

func TestMillisRoundsToWholeMillisecondsAndKeepsAnyPositiveTime(t *testing.T) {
	for d, want := range map[time.Duration]uint32{0: 0, time.Microsecond: 1, 1499 * time.Microsecond: 1, 1500 * time.Microsecond: 2, 2 * time.Second: 2000} {
		if got, err := millis(d); err != nil || got != want {
			t.Errorf("millis(%v) = %d, %v; want %d", d, got, err, want)
		}
	}
	if _, err := millis(50 * 24 * time.Hour); err == nil {
		t.Error("50 days fit a uint32 of milliseconds")
	}
}
