// Package validate checks a Collector configuration the way the Collector would load it, but
// reports every problem at once, each with its key path and the file line it comes from.
package validate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/xconfmap"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

// Problem is one thing wrong with a config: its key path (segments joined by "::"), where it is
// (file base name and 1-based line, 0 when unknown) and what is wrong.
//
// Path is "" for a problem of the configuration as a whole (e.g. a file that is not YAML).
// File and Line are set together, from the last file (in merge order) that has the deepest
// key of the path; for a problem about a list item, Line is the item's line.
type Problem struct {
	Path    string
	File    string
	Line    int
	Message string
}

// String renders "path (file:line): message", "path: message" without a line, and, for a
// problem without a path, "file:line: message" or just the message.
func (p Problem) String() string {
	switch {
	case p.Path != "" && p.Line > 0:
		return fmt.Sprintf("%s (%s:%d): %s", p.Path, p.File, p.Line, p.Message)
	case p.Path != "":
		return p.Path + ": " + p.Message
	case p.Line > 0:
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Message)
	default:
		return p.Message
	}
}

// Check resolves the configuration named by set.ConfigProviderSettings.ResolverSettings as the
// Collector would, checks every component and the service section against the factories of
// set.Factories(), and returns every problem at once: sorted by file (in merge order, problems
// without a line first), then line, then path.
//
// err is non-nil, and the problems nil, when there is no configuration to check: the factories
// fail, the resolver settings are invalid (no URIs, an unsupported scheme), or resolving fails
// (a file cannot be read, an expansion or converter fails). The exception is a file that is
// not YAML, or whose top level is not a mapping: that is a Problem with Path "" and the file's
// line. A failure to shut the providers down is returned as err along with the problems.
//
// Whatever otelcol.Collector.DryRun rejects, Check reports as at least one problem.
func Check(ctx context.Context, set otelcol.CollectorSettings) (problems []Problem, err error) {
	if set.Factories == nil {
		return nil, errors.New("validate: CollectorSettings.Factories is nil")
	}
	factories, err := set.Factories()
	if err != nil {
		return nil, fmt.Errorf("failed to initialize factories: %w", err)
	}
	if factories.Telemetry == nil {
		factories.Telemetry = otelconftelemetry.NewFactory()
	}

	rs := set.ConfigProviderSettings.ResolverSettings
	resolver, err := confmap.NewResolver(rs)
	if err != nil {
		return nil, fmt.Errorf("cannot create the configuration resolver: %w", err)
	}
	defer func() {
		if serr := resolver.Shutdown(ctx); serr != nil && err == nil {
			err = fmt.Errorf("cannot shut the configuration providers down: %w", serr)
		}
	}()

	lines := newLineIndex(rs.URIs)
	conf, err := resolver.Resolve(ctx)
	if err != nil {
		if bad := lines.badFiles(); len(bad) > 0 {
			return bad, nil
		}
		return nil, fmt.Errorf("cannot resolve the configuration: %w", err)
	}

	c := newChecker(set, factories, lines)
	c.check(ctx, conf)
	return c.result(), nil
}

// located is a Problem with the merge-order rank of its file, for sorting.
type located struct {
	Problem
	rank int
}

func (c *checker) add(path []string, msg string) {
	c.addAt(path, path, msg)
}

// addAt adds a problem at path, located by linePath (a list item under path, say).
func (c *checker) addAt(path, linePath []string, msg string) {
	rank, file, line := c.lines.locate(linePath)
	c.found = append(c.found, located{
		Problem: Problem{Path: strings.Join(path, confmap.KeyDelimiter), File: file, Line: line, Message: msg},
		rank:    rank,
	})
}

func (c *checker) addIssues(prefix []string, issues []issue) {
	for _, is := range issues {
		c.add(join(prefix, is.path), is.msg)
	}
}

func (c *checker) result() []Problem {
	slices.SortStableFunc(c.found, func(a, b located) int {
		return cmp.Or(
			cmp.Compare(a.rank, b.rank),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Message, b.Message),
		)
	})
	// xconfmap reports a squashed struct's error once per level, which maps to the same key.
	c.found = slices.CompactFunc(c.found, func(a, b located) bool { return a.Problem == b.Problem })
	out := make([]Problem, len(c.found))
	for i, f := range c.found {
		out[i] = f.Problem
	}
	return out
}

// section is one of the component sections of the configuration.
type section struct {
	key  string // "receivers"
	noun string // "receiver"
}

var (
	receivers  = section{"receivers", "receiver"}
	processors = section{"processors", "processor"}
	exporters  = section{"exporters", "exporter"}
	connectors = section{"connectors", "connector"}
	extensions = section{"extensions", "extension"}

	sections = []section{receivers, processors, exporters, connectors, extensions}
)

const serviceKey = "service"

type checker struct {
	set       otelcol.CollectorSettings
	factories otelcol.Factories
	lines     *lineIndex
	found     []located

	// factoriesOf maps a section key to its factories.
	factoriesOf map[string]map[component.Type]component.Factory
	// ids maps a section key to its valid component IDs and the key each was written as.
	ids map[string]map[component.ID]string
	// cfgs maps a section key to the configs that unmarshal and validate.
	cfgs map[string]map[component.ID]component.Config
	// written counts the keys of each section, valid IDs or not.
	written map[string]int

	service serviceResult
}

func newChecker(set otelcol.CollectorSettings, f otelcol.Factories, lines *lineIndex) *checker {
	c := &checker{
		set:       set,
		factories: f,
		lines:     lines,
		factoriesOf: map[string]map[component.Type]component.Factory{
			receivers.key:  generic(f.Receivers),
			processors.key: generic(f.Processors),
			exporters.key:  generic(f.Exporters),
			connectors.key: generic(f.Connectors),
			extensions.key: generic(f.Extensions),
		},
		ids:     map[string]map[component.ID]string{},
		cfgs:    map[string]map[component.ID]component.Config{},
		written: map[string]int{},
	}
	for _, s := range sections {
		c.ids[s.key] = map[component.ID]string{}
		c.cfgs[s.key] = map[component.ID]component.Config{}
	}
	return c
}

func generic[F component.Factory](m map[component.Type]F) map[component.Type]component.Factory {
	out := make(map[component.Type]component.Factory, len(m))
	for t, f := range m {
		out[t] = f
	}
	return out
}

func (c *checker) check(ctx context.Context, conf *confmap.Conf) {
	known := []string{serviceKey}
	for _, s := range sections {
		known = append(known, s.key)
	}
	for _, k := range sortedKeys(conf.ToStringMap()) {
		if !slices.Contains(known, k) {
			c.add([]string{k}, unknownKey(k))
		}
	}

	for _, s := range sections {
		c.checkSection(conf, s)
	}
	c.checkComponentSet()
	c.checkService(conf)
	c.checkGraphs(ctx)
	if len(c.found) == 0 {
		c.backstop(ctx)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkSection checks the components of one section one by one, as the Collector's unmarshal
// does, but without stopping at the first.
func (c *checker) checkSection(conf *confmap.Conf, s section) {
	sub, err := conf.Sub(s.key)
	if err != nil {
		c.written[s.key] = 1 // written, wrongly: not also "missing"
		c.add([]string{s.key}, fmt.Sprintf("must be a mapping of %s IDs to their configurations", s.noun))
		return
	}
	factories := c.factoriesOf[s.key]
	keys := oddLast(sortedKeys(sub.ToStringMap()), func() *component.ID { return new(component.ID) })
	c.written[s.key] = len(keys)
	for _, key := range keys {
		path := []string{s.key, key}
		var id component.ID
		if err := id.UnmarshalText([]byte(key)); err != nil {
			c.add(path, fmt.Sprintf("invalid %s ID: %v", s.noun, err))
			continue
		}
		if prev, dup := c.ids[s.key][id]; dup {
			c.add(path, fmt.Sprintf("duplicate %s ID: %q is the same ID as %q", s.noun, key, prev))
			continue
		}
		c.ids[s.key][id] = key

		factory, ok := factories[id.Type()]
		if !ok {
			c.add(path, unknownType(s, id, factories))
			continue
		}
		csub, err := sub.Sub(key)
		if err != nil {
			c.add(path, "the configuration must be a mapping")
			continue
		}
		cfg := factory.CreateDefaultConfig()
		if err := csub.Unmarshal(&cfg); err != nil {
			c.addIssues(path, withValues(csub, decodeIssues(err)))
			continue
		}
		if err := xconfmap.Validate(cfg); err != nil {
			c.addIssues(path, validateIssues(err, cfg))
			continue
		}
		c.cfgs[s.key][id] = cfg
	}
}

// oddLast sorts keys, those that differ from their ID (only by spaces) last, so that a
// duplicate is reported at the odd key rather than at the one written as the ID.
func oddLast[ID interface {
	UnmarshalText([]byte) error
	String() string
}](keys []string, newID func() ID) []string {
	odd := func(k string) int {
		id := newID()
		if id.UnmarshalText([]byte(k)) == nil && id.String() != k {
			return 1
		}
		return 0
	}
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(odd(a), odd(b)), cmp.Compare(a, b)) })
	return keys
}

// withValues adds the value to the messages that lack it: mapstructure drops the text of a
// duration that does not parse ("time: invalid duration").
func withValues(conf *confmap.Conf, issues []issue) []issue {
	for i, is := range issues {
		if !strings.HasPrefix(is.msg, "time: ") {
			continue
		}
		if v, ok := conf.Get(strings.Join(is.path, confmap.KeyDelimiter)).(string); ok {
			issues[i].msg += " " + strconv.Quote(v)
		}
	}
	return issues
}

func unknownType(s section, id component.ID, factories map[component.Type]component.Factory) string {
	types := make([]string, 0, len(factories))
	for t := range factories {
		types = append(types, t.String())
	}
	slices.Sort(types)
	msg := fmt.Sprintf("unknown %s type %q; supported: %s", s.noun, id.Type(), strings.Join(types, ", "))
	if s == exporters && id.Type().String() == "logging" {
		msg += " (the logging exporter has been replaced by the debug exporter)"
	}
	return msg
}

// checkComponentSet checks what otelcol.Config.Validate checks across sections. A section
// counts as written when it has keys at all: a key that is not a valid ID is reported already.
func (c *checker) checkComponentSet() {
	total := 0
	for _, s := range sections {
		total += c.written[s.key]
	}
	if total == 0 {
		c.add(nil, "empty configuration: no receivers, processors, exporters, connectors or extensions")
	} else if !allowNoPipelines() {
		for _, s := range []section{receivers, exporters} {
			if c.written[s.key] == 0 {
				c.add([]string{s.key}, fmt.Sprintf("no %s is configured", s.noun))
			}
		}
	}

	for _, id := range sortedIDs(c.ids[connectors.key]) {
		for _, other := range []section{exporters, receivers} {
			if _, ok := c.ids[other.key][id]; ok {
				c.add([]string{connectors.key, c.ids[connectors.key][id]}, fmt.Sprintf(
					"ambiguous ID: %q is both a connector and %s %s; rename one of them (e.g. the connector to %q)",
					id, article(other.noun), other.noun, id.String()+"/connector"))
				delete(c.cfgs[connectors.key], id)
			}
		}
	}
}

func sortedIDs[V any](m map[component.ID]V) []component.ID {
	ids := make([]component.ID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b component.ID) int { return cmp.Compare(a.String(), b.String()) })
	return ids
}

func article(noun string) string {
	if strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an"
	}
	return "a"
}
