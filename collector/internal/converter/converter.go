// Package converter rewrites a collector config written for the ADOT Lambda collector so that
// it runs here unchanged: flushcontrol in every pipeline, synchronous exporters, Lambda-fit
// service telemetry.
package converter

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/exporter"
	"go.uber.org/zap"
)

// EnvHold turns holding off ("false"): pipelines run without flushcontrol and export before
// they answer, as the ADOT collector does (the synchronous baseline).
const EnvHold = "AFTERFLUSH_HOLD"

// The Lambda collectors' processor that flushcontrol stands in for.
const decoupleType = "decouple"

// Extensions that are about a long-running collector; a Lambda config may carry them and the
// distribution does not: dropped with a warning.
var harmlessExtensions = map[string]bool{"health_check": true, "pprof": true, "zpages": true}

// Settings are what the converter needs from main: the exporter and extension factories (to
// learn which settings each exporter has) and the environment.
type Settings struct {
	Exporters  map[component.Type]exporter.Factory
	Extensions map[component.Type]bool
	Getenv     func(string) string
}

// NewFactory is the converter's factory.
func NewFactory(s Settings) confmap.ConverterFactory {
	return confmap.NewConverterFactory(func(set confmap.ConverterSettings) confmap.Converter {
		logger := set.Logger
		if logger == nil {
			logger = zap.NewNop()
		}
		return &converter{s: s, logger: logger}
	})
}

type converter struct {
	s      Settings
	logger *zap.Logger
}

// Convert rewrites conf in place. It never fails on content: what it cannot make sense of is
// left for the config's own validation to report with its key and line.
func (c *converter) Convert(_ context.Context, conf *confmap.Conf) error {
	m := conf.ToStringMap()
	hold, warning := parseHold(c.s.Getenv(EnvHold))
	if warning != "" {
		c.logger.Warn(warning)
	}
	var notes []string
	notes = append(notes, renameLogging(m)...)
	notes = append(notes, c.pipelines(m, hold)...)
	notes = append(notes, c.exporters(m)...)
	notes = append(notes, c.service(m)...)
	for _, n := range notes {
		c.logger.Warn(n)
	}
	for key := range conf.ToStringMap() {
		conf.Delete(key)
	}
	return conf.Merge(confmap.NewFromStringMap(m))
}

func parseHold(v string) (bool, string) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "true", "1", "yes", "on":
		return true, ""
	case "false", "0", "no", "off":
		return false, ""
	}
	return true, fmt.Sprintf("%s=%q is not a boolean; holding as by default", EnvHold, v)
}

func section(m map[string]any, key string) map[string]any {
	if s, ok := m[key].(map[string]any); ok {
		return s
	}
	if m[key] == nil {
		s := map[string]any{}
		m[key] = s
		return s
	}
	return nil
}

func typeOf(id string) string {
	t, _, _ := strings.Cut(id, "/")
	return t
}

func strings_(v any) ([]string, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, v == nil
	}
	out := make([]string, 0, len(list))
	for _, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func anys(list []string) []any {
	out := make([]any, len(list))
	for i, s := range list {
		out[i] = s
	}
	return out
}

// pipelines puts flushcontrol last in every pipeline that lacks it (decouple counts as it),
// and takes batch out: a drain sends everything at once and waits for the answer, which a
// batch processor's timer would hold back. Without hold, both are taken out.
func (c *converter) pipelines(m map[string]any, hold bool) []string {
	service := section(m, "service")
	if service == nil {
		return nil
	}
	pipelines, ok := service["pipelines"].(map[string]any)
	if !ok {
		return nil
	}
	processors := section(m, "processors")
	if processors == nil {
		return nil
	}
	var notes []string
	// decouple/x becomes flushcontrol/x; its own settings mean nothing here.
	for id := range processors {
		if typeOf(id) == decoupleType {
			renamed := "flushcontrol" + strings.TrimPrefix(id, decoupleType)
			if _, taken := processors[renamed]; !taken {
				processors[renamed] = map[string]any{}
			}
			delete(processors, id)
			notes = append(notes, fmt.Sprintf("processors::%s: runs as %s", id, renamed))
		}
	}
	names := make([]string, 0, len(pipelines))
	for name := range pipelines {
		names = append(names, name)
	}
	sort.Strings(names)
	usedBySignal := map[string]map[string]bool{}
	var added, batches, dropped []string
	for _, name := range names {
		p, ok := pipelines[name].(map[string]any)
		if !ok {
			continue
		}
		list, ok := strings_(p["processors"])
		if !ok {
			continue
		}
		signal := typeOf(name)
		if usedBySignal[signal] == nil {
			usedBySignal[signal] = map[string]bool{}
		}
		var kept []string
		has := false
		var batchLimit any
		for _, id := range list {
			switch typeOf(id) {
			case decoupleType:
				id = "flushcontrol" + strings.TrimPrefix(id, decoupleType)
				fallthrough
			case "flushcontrol":
				if !hold {
					dropped = append(dropped, name)
					continue
				}
				has = true
				if usedBySignal[signal][id] {
					// One processor ID holds one pipeline per signal (its place in the spool).
					own := id + "_" + strings.ReplaceAll(name, "/", "_")
					if !strings.Contains(id, "/") {
						own = id + "/" + strings.ReplaceAll(name, "/", "_")
					}
					base, _ := processors[id].(map[string]any)
					processors[own] = copyMap(base)
					notes = append(notes, fmt.Sprintf("service::pipelines::%s: runs %s as %s (a flushcontrol processor holds one %s pipeline)", name, id, own, signal))
					id = own
				}
				usedBySignal[signal][id] = true
			case "batch":
				batches = append(batches, name)
				if cfg, ok := processors[id].(map[string]any); ok && cfg["send_batch_max_size"] != nil {
					batchLimit = cfg["send_batch_max_size"]
				}
				continue
			}
			kept = append(kept, id)
		}
		if hold && !has {
			id := "flushcontrol"
			if usedBySignal[signal][id] {
				// A second pipeline of the signal gets a processor of its own (each pipeline
				// of a processor ID has its own place in the spool).
				id = "flushcontrol/" + strings.ReplaceAll(name, "/", "_")
				base, _ := processors["flushcontrol"].(map[string]any)
				processors[id] = copyMap(base)
			}
			usedBySignal[signal][id] = true
			kept = append(kept, id)
			added = append(added, name)
		}
		for _, id := range kept {
			if typeOf(id) != "flushcontrol" {
				continue
			}
			cfg, _ := processors[id].(map[string]any)
			if cfg == nil {
				cfg = map[string]any{}
				processors[id] = cfg
			}
			// The batch processor's size limit stays the limit of one exported request.
			if _, set := cfg["max_request_items"]; !set && batchLimit != nil {
				cfg["max_request_items"] = batchLimit
			}
		}
		p["processors"] = anys(kept)
	}
	if len(added) > 0 {
		notes = append(notes, "flushcontrol added to pipelines: "+strings.Join(added, ", "))
	}
	if len(batches) > 0 {
		notes = append(notes, "batch taken out of pipelines "+strings.Join(batches, ", ")+
			": flushcontrol coalesces what a drain sends (send_batch_max_size is kept as its max_request_items)")
	}
	if len(dropped) > 0 {
		notes = append(notes, EnvHold+"=false: flushcontrol taken out of pipelines "+strings.Join(dropped, ", "))
	}
	return notes
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// exporters turns every exporter's queue off, so that an export under a drain is done when
// the exporter returns (a queue would answer at once and send later, after the freeze), and
// gives retries intervals that fit in a drain: the exporter helper's defaults (5 s, then up
// to 30 s) would never retry inside a one-second drain.
func (c *converter) exporters(m map[string]any) []string {
	exporters, ok := m["exporters"].(map[string]any)
	if !ok {
		return nil
	}
	ids := make([]string, 0, len(exporters))
	for id := range exporters {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var queued []string
	for _, id := range ids {
		t, err := component.NewType(typeOf(id))
		if err != nil {
			continue
		}
		factory, ok := c.s.Exporters[t]
		if !ok {
			continue
		}
		defaults := confmap.New()
		if err := defaults.Marshal(factory.CreateDefaultConfig()); err != nil {
			continue
		}
		cfg, _ := exporters[id].(map[string]any)
		if cfg == nil {
			if exporters[id] != nil {
				continue
			}
			cfg = map[string]any{}
			exporters[id] = cfg
		}
		for _, queue := range []string{"sending_queue", "remote_write_queue"} {
			if !defaults.IsSet(queue) {
				continue
			}
			q, _ := cfg[queue].(map[string]any)
			if q == nil {
				q = map[string]any{}
			}
			if enabled, set := q["enabled"]; !set || enabled != false {
				queued = append(queued, id)
			}
			q["enabled"] = false
			cfg[queue] = q
		}
		if defaults.IsSet("retry_on_failure") {
			r, _ := cfg["retry_on_failure"].(map[string]any)
			if r == nil {
				r = map[string]any{}
			}
			if _, set := r["initial_interval"]; !set {
				r["initial_interval"] = "100ms"
			}
			if _, set := r["max_interval"]; !set {
				r["max_interval"] = "1s"
			}
			cfg["retry_on_failure"] = r
		}
	}
	if len(queued) == 0 {
		return nil
	}
	return []string{"sending_queue turned off for exporters " + strings.Join(queued, ", ") +
		": a drain waits for each export's answer, before Lambda freezes the environment"}
}

// service adds the control extension, drops extensions this distribution does not carry
// that only matter to a long-running collector, maps the ADOT config's old telemetry
// setting, and turns the Collector's own metrics off unless configured (nobody scrapes
// :8888 inside a Lambda environment). Its logs go out as JSON lines, which the companion
// writes to the function's log in its own format.
func (c *converter) service(m map[string]any) []string {
	var notes []string
	service := section(m, "service")
	if service == nil {
		return nil
	}
	extensions := section(m, "extensions")
	if extensions == nil {
		return nil
	}
	listed, ok := strings_(service["extensions"])
	if !ok {
		return nil
	}
	var kept []string
	for _, id := range listed {
		if harmlessExtensions[typeOf(id)] && !c.hasExtension(typeOf(id)) {
			delete(extensions, id)
			notes = append(notes, fmt.Sprintf("service::extensions: %s ignored (not needed in Lambda)", id))
			continue
		}
		kept = append(kept, id)
	}
	for id := range extensions {
		if harmlessExtensions[typeOf(id)] && !c.hasExtension(typeOf(id)) {
			delete(extensions, id)
		}
	}
	if _, ok := extensions["flushcontrol"]; !ok {
		extensions["flushcontrol"] = map[string]any{}
	}
	has := false
	for _, id := range kept {
		has = has || id == "flushcontrol"
	}
	if !has {
		kept = append(kept, "flushcontrol")
	}
	service["extensions"] = anys(kept)

	telemetry := section(service, "telemetry")
	if telemetry == nil {
		return notes
	}
	if metrics := section(telemetry, "metrics"); metrics != nil {
		if address, ok := metrics["address"]; ok {
			delete(metrics, "address")
			notes = append(notes, fmt.Sprintf("service::telemetry::metrics::address (%v) ignored: the collector's own metrics are off in Lambda", address))
		}
		if _, ok := metrics["readers"]; !ok {
			if level, ok := metrics["level"]; ok && level != "none" {
				notes = append(notes, fmt.Sprintf("service::telemetry::metrics::level (%v) without readers ignored: the collector's own metrics are off in Lambda", level))
			}
			metrics["level"] = "none"
		}
	}
	if logs := section(telemetry, "logs"); logs != nil {
		if _, ok := logs["encoding"]; !ok {
			logs["encoding"] = "json"
		}
	}
	return notes
}

func (c *converter) hasExtension(t string) bool {
	typ, err := component.NewType(t)
	return err == nil && c.s.Extensions[typ]
}

// renameLogging turns the logging exporter, which older ADOT configs name and which the
// Collector replaced by debug, into debug: logging/x becomes debug/x, its loglevel a
// verbosity, and the pipelines name the new ID.
func renameLogging(m map[string]any) []string {
	exporters, ok := m["exporters"].(map[string]any)
	if !ok {
		return nil
	}
	renamed := map[string]string{}
	for id, cfg := range exporters {
		if typeOf(id) != "logging" {
			continue
		}
		to := "debug" + strings.TrimPrefix(id, "logging")
		if _, taken := exporters[to]; taken {
			// A config with both: the logging one keeps its own ID under debug.
			to = "debug/" + strings.ReplaceAll(id, "/", "_")
		}
		if _, taken := exporters[to]; taken {
			continue
		}
		settings, _ := cfg.(map[string]any)
		out := copyMap(settings)
		if level, ok := out["loglevel"]; ok {
			delete(out, "loglevel")
			if _, set := out["verbosity"]; !set {
				out["verbosity"] = map[string]any{"debug": "detailed", "info": "normal"}[fmt.Sprint(level)]
				if out["verbosity"] == nil {
					out["verbosity"] = "basic"
				}
			}
		}
		delete(exporters, id)
		exporters[to] = out
		renamed[id] = to
	}
	if len(renamed) == 0 {
		return nil
	}
	if service, ok := m["service"].(map[string]any); ok {
		if pipelines, ok := service["pipelines"].(map[string]any); ok {
			for _, p := range pipelines {
				pm, _ := p.(map[string]any)
				list, ok := strings_(pm["exporters"])
				if pm == nil || !ok {
					continue
				}
				for i, id := range list {
					if to, ok := renamed[id]; ok {
						list[i] = to
					}
				}
				pm["exporters"] = anys(list)
			}
		}
	}
	ids := make([]string, 0, len(renamed))
	for id := range renamed {
		ids = append(ids, id+" as "+renamed[id])
	}
	sort.Strings(ids)
	return []string{"the logging exporter is the debug exporter now: running " + strings.Join(ids, ", ")}
}
