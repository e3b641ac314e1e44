package validate

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// source is one configuration file, parsed again (the resolver keeps no positions) so that key
// paths can be given a line.
type source struct {
	name string     // base name, as shown in a Problem
	root *yaml.Node // nil when the file did not parse
	// bad explains, with a line, why the file cannot be a configuration; it is reported only
	// when the resolver fails too, so that the resolver stays the judge of what is valid.
	bad []Problem
}

// lineIndex maps key paths to file lines over the files of a configuration, in merge order.
type lineIndex struct {
	sources []source
}

// driveLetter is the resolver's rule for a Windows path, which it reads as a file.
var driveLetter = regexp.MustCompile("^[A-z]:")

// filePath returns the path a URI reads, if the resolver would read it with the file provider.
func filePath(uri string) (string, bool) {
	if driveLetter.MatchString(uri) || !strings.Contains(uri, ":") {
		return uri, true
	}
	if p, ok := strings.CutPrefix(uri, "file:"); ok {
		return filepath.Clean(p), true
	}
	return "", false
}

// newLineIndex parses the file URIs among uris. A file that cannot be read is skipped: the
// resolver reports that.
func newLineIndex(uris []string) *lineIndex {
	idx := &lineIndex{}
	for _, uri := range uris {
		p, ok := filePath(uri)
		if !ok {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// The path as given: with several files (the function's and the layer's), which one.
		src := source{name: p}
		var doc yaml.Node
		var value any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			src.bad = yamlProblems(src.name, err)
		} else if err := yaml.Unmarshal(data, &value); err != nil {
			// A node tree keeps what a value cannot have, such as a key defined twice.
			src.bad = yamlProblems(src.name, err)
		} else {
			src.root = &doc
			if root := documentRoot(&doc); root != nil && root.Kind != yaml.MappingNode {
				src.bad = []Problem{{File: src.name, Line: root.Line,
					Message: "the configuration must be a mapping, not a " + kindName(root)}}
			}
		}
		idx.sources = append(idx.sources, src)
	}
	return idx
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// yamlProblems turns a YAML error into problems with lines: one for a syntax error, one per
// error of a *yaml.TypeError.
func yamlProblems(file string, err error) []Problem {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	out := make([]Problem, 0, len(msgs))
	for _, msg := range msgs {
		p := Problem{Message: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			p.Line, _ = strconv.Atoi(m[1])
			p.File = file
			p.Message = "invalid YAML: " + strings.TrimPrefix(msg, m[0])
		}
		out = append(out, p)
	}
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	default:
		return "node of kind " + strconv.Itoa(int(n.Kind))
	}
}

// badFiles returns why files cannot be configurations, in URI order.
func (x *lineIndex) badFiles() []Problem {
	var out []Problem
	for _, s := range x.sources {
		out = append(out, s.bad...)
	}
	return out
}

// locate returns the file (its index in merge order, -1 for none) and line of path: the line of
// the deepest key of path found in a file, preferring the last file among equally deep ones,
// because a later file overrides an earlier one.
func (x *lineIndex) locate(path []string) (rank int, file string, line int) {
	rank, depth := -1, 0
	for i := len(x.sources) - 1; i >= 0; i-- {
		if x.sources[i].root == nil {
			continue
		}
		d, l := lookup(x.sources[i].root, path)
		if d > depth {
			rank, depth, file, line = i, d, x.sources[i].name, l
		}
	}
	return rank, file, line
}

func documentRoot(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return n.Content[0]
	}
	return n
}

// lookup follows path from the document and returns how many segments it found and the line
// of the last one found.
func lookup(doc *yaml.Node, path []string) (depth, line int) {
	node := documentRoot(doc)
	for _, seg := range path {
		if node == nil {
			break
		}
		node = unalias(node)
		var key, next *yaml.Node
		switch node.Kind {
		case yaml.MappingNode:
			key, next = findKey(node, seg, 0)
		case yaml.SequenceNode:
			if i, err := strconv.Atoi(seg); err == nil && i >= 0 && i < len(node.Content) {
				key, next = node.Content[i], node.Content[i]
			}
		}
		if key == nil {
			break
		}
		depth++
		line = key.Line
		node = next
	}
	return depth, line
}

func unalias(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// findKey returns the key node and value of name in mapping m; the last occurrence wins, and
// keys merged in with "<<" count after the mapping's own keys.
func findKey(m *yaml.Node, name string, depth int) (key, value *yaml.Node) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind == yaml.ScalarNode && k.Value == name {
			key, value = k, v
		}
	}
	if key != nil || depth > 8 {
		return key, value
	}
	for _, v := range merges {
		v = unalias(v)
		candidates := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			candidates = v.Content
		}
		for _, c := range candidates {
			if c = unalias(c); c.Kind == yaml.MappingNode {
				if k, val := findKey(c, name, depth+1); k != nil {
					return k, val
				}
			}
		}
	}
	return nil, nil
}
