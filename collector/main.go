// Command afterflush-collector is the OpenTelemetry Collector with the components of the ADOT
// and upstream Lambda collectors and the flushcontrol processor, which holds what it gets
// until the companion tells it to drain.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/collector/otelcol"

	"github.com/afterflush/afterflush/collector/flushcontrol"
	"github.com/afterflush/afterflush/collector/internal/validate"
)

// Where the ADOT Lambda layer reads its config from, in order.
const (
	envConfigURI   = "OPENTELEMETRY_COLLECTOR_CONFIG_URI"
	envConfigFile  = "OPENTELEMETRY_COLLECTOR_CONFIG_FILE"
	defaultConfig  = "/opt/collector-config/config.yaml"
	exitBadConfig  = 2 // the companion reads it as "config rejected"
	exitOtherError = 1
)

func main() {
	startedAt := time.Now()
	os.Exit(run(startedAt, os.Args[1:]))
}

func run(startedAt time.Time, args []string) int {
	hub := flushcontrol.NewHub(startedAt, os.Stdout, os.Getenv)
	set := collectorSettings(hub, defaultURIs(os.Getenv), os.Getenv)
	root := otelcol.NewCommand(set)
	root.Use = "afterflush-collector"
	runCollector := root.RunE
	root.RunE = func(cmd *cobra.Command, rest []string) error {
		// The Collector names a bad key's path only, one problem at a time: check first, every
		// problem with its file line.
		if problems, err := check(cmd.Context(), set, args); err != nil || len(problems) > 0 {
			return badConfig(problems, err)
		}
		return runCollector(cmd, rest)
	}
	replaceCommand(root, newValidateCommand(set, args))
	root.AddCommand(newCtlCommand())
	root.SilenceErrors = true
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	var bad *configError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &bad):
		fmt.Fprint(os.Stderr, bad.text)
		return bad.exit
	default:
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return exitOtherError
	}
}

// defaultURIs are the config URIs when --config is not given, as the ADOT layer reads them.
func defaultURIs(getenv func(string) string) []string {
	for _, name := range []string{envConfigURI, envConfigFile} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return []string{v}
		}
	}
	return []string{defaultConfig}
}

// configURIs are the --config values in args, or the defaults.
func configURIs(set otelcol.CollectorSettings, args []string) []string {
	var uris []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				uris = append(uris, args[i+1])
				i++
			}
		case strings.HasPrefix(a, "--config="), strings.HasPrefix(a, "-config="):
			uris = append(uris, a[strings.Index(a, "=")+1:])
		}
	}
	if len(uris) == 0 {
		return set.ConfigProviderSettings.ResolverSettings.URIs
	}
	return uris
}

// check validates the config with components of their own: building the pipelines registers
// flushcontrol processors in a hub, and the collector that runs afterwards needs an empty one.
func check(ctx context.Context, set otelcol.CollectorSettings, args []string) ([]validate.Problem, error) {
	uris := configURIs(set, args)
	checking := collectorSettings(flushcontrol.NewHub(time.Now(), io.Discard, os.Getenv), uris, os.Getenv)
	return validate.Check(ctx, checking)
}

// configError is an invalid config: its problems, and the exit status (2 from run, which the
// companion reads as "config rejected"; 1 from validate).
type configError struct {
	text string
	exit int
}

func (e *configError) Error() string { return e.text }

func badConfig(problems []validate.Problem, err error) error {
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "invalid config: %v\n", err)
	}
	if len(problems) > 0 {
		noun := "problems"
		if len(problems) == 1 {
			noun = "problem"
		}
		fmt.Fprintf(&b, "invalid config (%d %s):\n", len(problems), noun)
		for _, p := range problems {
			fmt.Fprintf(&b, "  %s\n", p)
		}
	}
	return &configError{text: b.String(), exit: exitBadConfig}
}

func newValidateCommand(set otelcol.CollectorSettings, args []string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Validates the config without running the collector; lists every problem with its key path and file line",
		RunE: func(cmd *cobra.Command, _ []string) error {
			problems, err := check(cmd.Context(), set, args)
			if err != nil || len(problems) > 0 {
				bad := badConfig(problems, err).(*configError)
				bad.exit = exitOtherError
				return bad
			}
			fmt.Fprintln(cmd.OutOrStdout(), "config is valid")
			return nil
		},
	}
	// Accepted and read by configURIs; declared so that cobra does not refuse them.
	cmd.Flags().StringArray("config", nil, "config URI (path, file:, env:, yaml:, http:, https:, s3:)")
	cmd.Flags().StringArray("set", nil, "ignored by validate")
	cmd.Flags().String("feature-gates", "", "ignored by validate")
	return cmd
}

func replaceCommand(root *cobra.Command, cmd *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() == cmd.Name() {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(cmd)
}
