package validate

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/xconfmap"
	"go.opentelemetry.io/collector/featuregate"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/pipeline"
	"go.opentelemetry.io/collector/pipeline/xpipeline"
	"go.opentelemetry.io/collector/service"
	svcextensions "go.opentelemetry.io/collector/service/extensions"
	"go.opentelemetry.io/collector/service/pipelines"
)

// serviceResult is what the service section holds once it is checked.
type serviceResult struct {
	telemetry  component.Config // nil when it does not unmarshal or validate
	extensions svcextensions.Config
	pipelines  []*pipe
	// complete is false when some pipeline's lists are unknown (a bad ID, a value that does not
	// unmarshal): then which pipelines share a connector is unknown too.
	complete bool
}

// pipe is one pipeline whose ID is valid.
type pipe struct {
	key   string
	id    pipeline.ID
	cfg   *pipelines.PipelineConfig // nil when it does not unmarshal
	clean bool                      // no problem in it nor in a component it references
}

var serviceKeys = []string{"extensions", "pipelines", "telemetry"}

// profilesGateID is the feature gate the service checks before it accepts a profiles pipeline;
// the gate itself is not exported.
const profilesGateID = "service.profilesSupport"

func allowNoPipelines() bool { return pipelines.AllowNoPipelines.IsEnabled() }

func profilesEnabled() bool {
	enabled := false
	featuregate.GlobalRegistry().VisitAll(func(g *featuregate.Gate) {
		if g.ID() == profilesGateID {
			enabled = g.IsEnabled()
		}
	})
	return enabled
}

func (c *checker) checkService(conf *confmap.Conf) {
	c.service.complete = true
	sub, err := conf.Sub(serviceKey)
	if err != nil {
		c.service.complete = false
		c.add([]string{serviceKey}, "must be a mapping with telemetry, extensions and pipelines")
		return
	}
	for _, k := range sortedKeys(sub.ToStringMap()) {
		if !slices.Contains(serviceKeys, k) {
			c.add([]string{serviceKey, k}, unknownKey(k))
		}
	}
	c.checkTelemetry(sub)
	c.checkServiceExtensions(sub)
	c.checkPipelines(sub)
}

// checkTelemetry unmarshals the telemetry section into the telemetry factory's default config,
// which is what the Collector does with it before anything else.
func (c *checker) checkTelemetry(sub *confmap.Conf) {
	path := []string{serviceKey, "telemetry"}
	tsub, err := sub.Sub("telemetry")
	if err != nil {
		c.add(path, "must be a mapping")
		return
	}
	cfg := c.factories.Telemetry.CreateDefaultConfig()
	if err := tsub.Unmarshal(&cfg); err != nil {
		c.addIssues(path, withValues(tsub, decodeIssues(err)))
		return
	}
	if err := xconfmap.Validate(cfg); err != nil {
		c.addIssues(path, validateIssues(err, cfg))
		return
	}
	c.service.telemetry = cfg
}

func (c *checker) checkServiceExtensions(sub *confmap.Conf) {
	var s struct {
		Extensions svcextensions.Config `mapstructure:"extensions"`
	}
	if err := sub.Unmarshal(&s, confmap.WithIgnoreUnused()); err != nil {
		c.addIssues([]string{serviceKey}, decodeIssues(err))
		return
	}
	path := []string{serviceKey, "extensions"}
	for i, id := range s.Extensions {
		if _, ok := c.ids[extensions.key][id]; !ok {
			c.addAt(path, join(path, []string{strconv.Itoa(i)}),
				fmt.Sprintf("references extension %q which is not configured", id))
		}
	}
	c.service.extensions = s.Extensions
}

func (c *checker) checkPipelines(sub *confmap.Conf) {
	ppath := []string{serviceKey, "pipelines"}
	psub, err := sub.Sub("pipelines")
	if err != nil {
		c.service.complete = false
		c.add(ppath, "must be a mapping of pipeline IDs to pipelines")
		return
	}
	keys := oddLast(sortedKeys(psub.ToStringMap()), func() *pipeline.ID { return new(pipeline.ID) })
	if len(keys) == 0 && !allowNoPipelines() {
		c.add(ppath, "service must have at least one pipeline")
	}
	seen := map[pipeline.ID]string{}
	for _, key := range keys {
		path := join(ppath, []string{key})
		var id pipeline.ID
		if err := id.UnmarshalText([]byte(key)); err != nil {
			c.service.complete = false
			c.add(path, fmt.Sprintf("invalid pipeline ID: %v", err))
			continue
		}
		if prev, dup := seen[id]; dup {
			c.service.complete = false
			c.add(path, fmt.Sprintf("duplicate pipeline ID: %q is the same ID as %q", key, prev))
			continue
		}
		seen[id] = key

		p := &pipe{key: key, id: id}
		c.service.pipelines = append(c.service.pipelines, p)
		before := len(c.found)
		if id.Signal() == xpipeline.SignalProfiles && !profilesEnabled() {
			c.add(path, fmt.Sprintf("the profiles signal is at alpha level: it needs the %q feature gate", profilesGateID))
		}
		pcsub, err := psub.Sub(key)
		if err != nil {
			c.service.complete = false
			c.add(path, "must be a mapping with receivers, processors and exporters")
			continue
		}
		pc := &pipelines.PipelineConfig{}
		if err := pcsub.Unmarshal(pc); err != nil {
			c.service.complete = false
			c.addIssues(path, decodeIssues(err))
			continue
		}
		p.cfg = pc
		c.checkPipeline(p, path)
		p.clean = len(c.found) == before && c.refsClean(pc)
	}
}

// checkPipeline checks one pipeline's lists: what PipelineConfig.Validate and Config.Validate
// check, and whether each component supports the pipeline's signal, which the Collector only
// finds when it builds the pipelines.
func (c *checker) checkPipeline(p *pipe, path []string) {
	pc := p.cfg
	if len(pc.Receivers) == 0 {
		c.add(join(path, []string{"receivers"}), "must have at least one receiver")
	}
	if len(pc.Exporters) == 0 {
		c.add(join(path, []string{"exporters"}), "must have at least one exporter")
	}
	seen := map[component.ID]bool{}
	for i, id := range pc.Processors {
		if seen[id] {
			lp := join(path, []string{"processors"})
			c.addAt(lp, join(lp, []string{strconv.Itoa(i)}), fmt.Sprintf("references processor %q more than once", id))
		}
		seen[id] = true
	}
	c.checkRefs(p, path, "receivers", "receiver", pc.Receivers, receivers)
	c.checkRefs(p, path, "processors", "processor", pc.Processors, processors)
	c.checkRefs(p, path, "exporters", "exporter", pc.Exporters, exporters)
}

func (c *checker) checkRefs(p *pipe, path []string, list, noun string, ids []component.ID, own section) {
	lp := join(path, []string{list})
	for i, id := range ids {
		item := join(lp, []string{strconv.Itoa(i)})
		s, ok := c.refSection(id, own)
		if !ok {
			c.addAt(lp, item, fmt.Sprintf("references %s %q which is not configured", noun, id))
			continue
		}
		if s == connectors {
			continue // whether a connector fits is a matter of two pipelines: checkGraphs
		}
		if f := c.factoriesOf[s.key][id.Type()]; f != nil && !supports(f, p.id.Signal()) {
			c.addAt(lp, item, fmt.Sprintf("%s %q does not support %s", s.noun, id, p.id.Signal()))
		}
	}
}

// refSection tells which section a pipeline's reference names. As in the Collector, a connector
// wins over a receiver or exporter of the same ID (which is a problem of its own).
func (c *checker) refSection(id component.ID, own section) (section, bool) {
	if own != processors {
		if _, ok := c.ids[connectors.key][id]; ok {
			return connectors, true
		}
	}
	_, ok := c.ids[own.key][id]
	return own, ok
}

func (c *checker) refsClean(pc *pipelines.PipelineConfig) bool {
	for _, ref := range []struct {
		ids []component.ID
		own section
	}{{pc.Receivers, receivers}, {pc.Processors, processors}, {pc.Exporters, exporters}} {
		for _, id := range ref.ids {
			s, ok := c.refSection(id, ref.own)
			if !ok {
				return false
			}
			if _, ok := c.cfgs[s.key][id]; !ok {
				return false
			}
		}
	}
	return true
}

type (
	tracesStability interface {
		TracesStability() component.StabilityLevel
	}
	metricsStability interface {
		MetricsStability() component.StabilityLevel
	}
	logsStability interface {
		LogsStability() component.StabilityLevel
	}
	profilesStability interface {
		ProfilesStability() component.StabilityLevel
	}
)

// supports reports whether factory f creates components for signal s; receiver, processor and
// exporter factories all say so by a stability level per signal.
func supports(f component.Factory, s pipeline.Signal) bool {
	level := component.StabilityLevelUndefined
	switch s {
	case pipeline.SignalTraces:
		if x, ok := f.(tracesStability); ok {
			level = x.TracesStability()
		}
	case pipeline.SignalMetrics:
		if x, ok := f.(metricsStability); ok {
			level = x.MetricsStability()
		}
	case pipeline.SignalLogs:
		if x, ok := f.(logsStability); ok {
			level = x.LogsStability()
		}
	case xpipeline.SignalProfiles:
		if x, ok := f.(profilesStability); ok {
			level = x.ProfilesStability()
		}
	default:
		return true // a signal unknown here: the pipeline build judges it
	}
	return level != component.StabilityLevelUndefined
}

// checkGraphs builds the pipelines as DryRun does (creating, not starting, every component), to
// find what only that finds: connectors that do not fit, cycles, components whose factory
// refuses their config. The build stops at its first error, so it is done per group of
// pipelines joined by connectors, and only for groups with no problem found so far.
func (c *checker) checkGraphs(ctx context.Context) {
	var ps []*pipe
	for _, p := range c.service.pipelines {
		if p.cfg != nil {
			ps = append(ps, p)
		}
	}
	parent := make([]int, len(ps))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		if parent[i] != i {
			parent[i] = find(parent[i])
		}
		return parent[i]
	}
	usesConnector := make([]bool, len(ps))
	firstUser := map[component.ID]int{}
	for i, p := range ps {
		for _, id := range slices.Concat(p.cfg.Receivers, p.cfg.Exporters) {
			if _, ok := c.ids[connectors.key][id]; !ok {
				continue
			}
			usesConnector[i] = true
			if j, ok := firstUser[id]; ok {
				parent[find(i)] = find(j)
			} else {
				firstUser[id] = i
			}
		}
	}
	groups := map[int][]int{}
	var roots []int
	for i := range ps {
		r := find(i)
		if _, ok := groups[r]; !ok {
			roots = append(roots, r)
		}
		groups[r] = append(groups[r], i)
	}
	for _, r := range roots {
		members := make([]*pipe, 0, len(groups[r]))
		ok := true
		for _, i := range groups[r] {
			// A connector's other pipelines may be among those whose lists are unknown.
			ok = ok && ps[i].clean && (c.service.complete || !usesConnector[i])
			members = append(members, ps[i])
		}
		if ok {
			c.buildGraph(ctx, members)
		}
	}
}

func (c *checker) buildGraph(ctx context.Context, members []*pipe) {
	cfg := pipelines.Config{}
	for _, p := range members {
		cfg[p.id] = p.cfg
	}
	if err := service.Validate(ctx, c.serviceSettings(), service.Config{Pipelines: cfg}); err != nil {
		c.addGraph(err, members)
	}
}

func (c *checker) serviceSettings() service.Settings {
	return service.Settings{
		BuildInfo:           c.set.BuildInfo,
		ReceiversConfigs:    c.cfgs[receivers.key],
		ReceiversFactories:  c.factories.Receivers,
		ProcessorsConfigs:   c.cfgs[processors.key],
		ProcessorsFactories: c.factories.Processors,
		ExportersConfigs:    c.cfgs[exporters.key],
		ExportersFactories:  c.factories.Exporters,
		ConnectorsConfigs:   c.cfgs[connectors.key],
		ConnectorsFactories: c.factories.Connectors,
		TelemetryFactory:    c.factories.Telemetry,
	}
}

var (
	createFailed  = regexp.MustCompile(`^failed to create "([^"]+)" (receiver|exporter|processor)\b`)
	connectorUsed = regexp.MustCompile(`^connector "([^"]+)" used as `)
)

// addGraph reports an error of the pipeline build at the component it names, if it names one,
// else at the pipeline (or the pipelines) built.
func (c *checker) addGraph(err error, members []*pipe) {
	msg := strings.TrimPrefix(err.Error(), "failed to build pipelines: ")
	path := []string{serviceKey, "pipelines"}
	if len(members) == 1 {
		path = append(path, members[0].key)
	}
	if m := createFailed.FindStringSubmatch(msg); m != nil {
		path = c.componentPath(section{m[2] + "s", m[2]}, m[1], path)
	} else if m := connectorUsed.FindStringSubmatch(msg); m != nil {
		path = c.componentPath(connectors, m[1], path)
	}
	c.add(path, msg)
}

// componentPath returns the key path of the component named id in s, or def if there is none.
func (c *checker) componentPath(s section, id string, def []string) []string {
	var cid component.ID
	if err := cid.UnmarshalText([]byte(id)); err != nil {
		return def
	}
	key, ok := c.ids[s.key][cid]
	if !ok {
		return def
	}
	return []string{s.key, key}
}

// backstop runs, on a configuration with no problem found, what DryRun runs on the whole, so
// that nothing DryRun rejects passes even if the checks above miss it.
func (c *checker) backstop(ctx context.Context) {
	all := pipelines.Config{}
	var members []*pipe
	for _, p := range c.service.pipelines {
		all[p.id] = p.cfg
		members = append(members, p)
	}
	full := &otelcol.Config{
		Receivers:  c.cfgs[receivers.key],
		Processors: c.cfgs[processors.key],
		Exporters:  c.cfgs[exporters.key],
		Connectors: c.cfgs[connectors.key],
		Extensions: c.cfgs[extensions.key],
		Service: service.Config{
			Telemetry:  c.service.telemetry,
			Extensions: c.service.extensions,
			Pipelines:  all,
		},
	}
	if err := xconfmap.Validate(full); err != nil {
		for _, is := range validateIssues(err, full) {
			path, msg := leadingPath(is.path, is.msg)
			c.add(path, msg)
		}
		return
	}
	if err := service.Validate(ctx, c.serviceSettings(), service.Config{Pipelines: all}); err != nil {
		c.addGraph(err, members)
	}
}

var pathPrefix = regexp.MustCompile(`(?s)^([a-z]+(?:::[^\s:]+)*): (.+)$`)

// leadingPath reads the key path otelcol.Config.Validate writes at the start of its messages.
func leadingPath(path []string, msg string) ([]string, string) {
	if len(path) > 0 {
		return path, msg
	}
	m := pathPrefix.FindStringSubmatch(msg)
	if m == nil {
		return nil, msg
	}
	segs := strings.Split(m[1], confmap.KeyDelimiter)
	if segs[0] != serviceKey && !slices.ContainsFunc(sections, func(s section) bool { return s.key == segs[0] }) {
		return nil, msg
	}
	return segs, m[2]
}
