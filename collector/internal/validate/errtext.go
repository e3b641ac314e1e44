package validate

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"go.opentelemetry.io/collector/confmap"
)

// issue is a problem before it is located in a file: a key path and a message.
type issue struct {
	path []string
	msg  string
}

// decodingFailed is how mapstructure introduces the list of errors of one decode; it carries no
// information of its own.
const decodingFailed = "decoding failed due to the following error(s):\n\n"

const invalidKeys = "has invalid keys: "

// unknownKey is how a key the component does not have is reported (the Collector's own
// "has invalid keys" names the parent, not the key).
func unknownKey(k string) string { return fmt.Sprintf("unknown key %q", k) }

// namedError is what mapstructure's DecodeError looks like from outside: the (dotted) name of
// the field that failed and the cause. Matching the method set rather than the type keeps this
// package independent of which mapstructure confmap uses.
type namedError interface {
	error
	Name() string
	Unwrap() error
}

// decodeIssues splits the error of a confmap Unmarshal into one issue per failing key. confmap
// starts a fresh decode, whose names start from the empty name, for every value that has its
// own Unmarshal method, so the names along the chain are concatenated. Where a chain is broken
// (a %v), the text is read instead.
func decodeIssues(err error) []issue {
	var out []issue
	walkDecode(err, nil, "", &out)
	return out
}

// walkDecode walks the error tree; context is the text of the wrappers passed on the way, such
// as a component's "cannot unmarshal x: ", which starts each message below them.
func walkDecode(err error, prefix []string, context string, out *[]issue) {
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, child := range e.Unwrap() {
			walkDecode(child, prefix, context, out)
		}
		return
	case namedError:
		if inner := e.Unwrap(); inner != nil && e.Error() == "'"+e.Name()+"' "+inner.Error() {
			walkDecode(inner, join(prefix, splitName(e.Name())), context, out)
			return
		}
	case interface {
		error
		Unwrap() error
	}:
		inner := e.Unwrap()
		if inner == nil {
			break
		}
		if e.Error() == decodingFailed+inner.Error() {
			walkDecode(inner, prefix, context, out)
			return
		}
		if ctx, ok := strings.CutSuffix(e.Error(), inner.Error()); ok && hasNamed(inner) {
			walkDecode(inner, prefix, context+ctx, out)
			return
		}
	}
	decodeText(err.Error(), prefix, context, out)
}

func hasNamed(err error) bool {
	var n namedError
	return errors.As(err, &n)
}

// decodeText reads one mapstructure message: "'name' message", where message may itself be a
// "decoding failed" list, or "has invalid keys: a, b" (one issue per key, so each gets its line).
func decodeText(text string, prefix []string, context string, out *[]issue) {
	if name, rest, ok := cutName(text); ok {
		prefix = join(prefix, splitName(name))
		text = rest
	}
	// A wrapper's text ("cannot read it: ") may come before the list.
	if ctx, body, ok := strings.Cut(text, decodingFailed); ok && !strings.Contains(ctx, "\n") {
		decodeList(body, prefix, context+ctx, out)
		return
	}
	if keys, ok := strings.CutPrefix(text, invalidKeys); ok {
		for _, k := range strings.Split(keys, ", ") {
			*out = append(*out, issue{path: join(prefix, []string{k}), msg: context + unknownKey(k)})
		}
		return
	}
	*out = append(*out, issue{path: prefix, msg: context + text})
}

// decodeList reads the entries of a "decoding failed" list. A list nested in it (an entry
// "'name' decoding failed ...") is followed by its own entries and then by the rest of the
// outer list, and the text does not show where one ends: rather than guess wrong paths, such a
// list is one issue at the path that is certain.
func decodeList(body string, prefix []string, context string, out *[]issue) {
	entries := splitEntries(body)
	for _, entry := range entries {
		if _, rest, named := cutName(entry); named && strings.HasPrefix(rest, decodingFailed[:len(decodingFailed)-2]) {
			*out = append(*out, issue{path: prefix, msg: context + decodingFailed + strings.TrimRight(body, "\n")})
			return
		}
	}
	for _, entry := range entries {
		decodeText(entry, prefix, context, out)
	}
}

// cutName splits "'name' rest"; the name may be empty (the root of a decode).
func cutName(text string) (name, rest string, ok bool) {
	if !strings.HasPrefix(text, "'") {
		return "", text, false
	}
	i := strings.Index(text[1:], "' ")
	if i < 0 {
		return "", text, false
	}
	return text[1 : 1+i], text[i+3:], true
}

// splitEntries splits a "decoding failed" body into its entries: a line that does not start a
// new "'name' ..." entry continues the previous one (multi-line messages).
func splitEntries(body string) []string {
	var entries []string
	for _, line := range strings.Split(body, "\n") {
		if line == "" && len(entries) == 0 {
			continue
		}
		if len(entries) == 0 || strings.HasPrefix(line, "'") {
			entries = append(entries, line)
			continue
		}
		entries[len(entries)-1] += "\n" + line
	}
	return entries
}

// splitName turns a mapstructure field name such as "protocols.grpc", "headers[x-key]" or
// "actions[0].key" into key segments.
func splitName(name string) []string {
	var segs []string
	cur := strings.Builder{}
	flush := func() {
		if cur.Len() > 0 {
			segs = append(segs, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '.':
			flush()
		case '[':
			flush()
			end := strings.IndexByte(name[i+1:], ']')
			if end < 0 {
				cur.WriteString(name[i:])
				i = len(name)
				continue
			}
			segs = append(segs, name[i+1:i+1+end])
			i += end + 1
		default:
			cur.WriteByte(name[i])
		}
	}
	flush()
	return segs
}

// validateIssues splits the error of xconfmap.Validate(cfg) into one issue per failing value,
// with key paths. xconfmap names a path by mapstructure tags, but by the lowercased Go field name
// for an embedded (",squash") struct, which is not a key of the file: the type of cfg tells
// which segments those are.
func validateIssues(err error, cfg any) []issue {
	var raw []issue
	walkValidate(err, nil, &raw)
	t := reflect.TypeOf(cfg)
	for i := range raw {
		raw[i].path = keyPath(t, raw[i].path)
	}
	return raw
}

func walkValidate(err error, prefix []string, out *[]issue) {
	if e, ok := err.(interface{ Unwrap() []error }); ok {
		for _, child := range e.Unwrap() {
			walkValidate(child, prefix, out)
		}
		return
	}
	if path, inner, ok := asPathError(err); ok {
		walkValidate(inner, join(prefix, path), out)
		return
	}
	*out = append(*out, issue{path: prefix, msg: err.Error()})
}

// asPathError recognises xconfmap's (unexported) pathError and reads its path from its text,
// which is the path, ": ", then the cause.
func asPathError(err error) (path []string, inner error, ok bool) {
	t := reflect.TypeOf(err)
	if t.Name() != "pathError" || t.PkgPath() != "go.opentelemetry.io/collector/confmap/xconfmap" {
		return nil, nil, false
	}
	inner = errors.Unwrap(err)
	if inner == nil {
		return nil, nil, false
	}
	p, found := strings.CutSuffix(err.Error(), ": "+inner.Error())
	if !found || p == "" {
		return nil, inner, true
	}
	return strings.Split(p, confmap.KeyDelimiter), inner, true
}

// keyPath maps xconfmap's field path over type t to the keys a user writes: it drops the
// segments of squashed structs and sees through wrappers with a Get() *T method
// (configoptional.Optional, whose value xconfmap reaches through its Validate). Segments it
// cannot follow (interfaces, unknown names) are kept as they are.
func keyPath(t reflect.Type, segs []string) []string {
	out := make([]string, 0, len(segs))
	for i, seg := range segs {
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == nil {
			return append(out, segs[i:]...)
		}
		switch t.Kind() {
		case reflect.Struct:
			f, ok := structField(t, seg, 0)
			if !ok {
				return append(out, segs[i:]...)
			}
			if !isSquash(f) {
				out = append(out, seg)
			}
			t = f.Type
		case reflect.Map, reflect.Slice, reflect.Array:
			out = append(out, seg)
			t = t.Elem()
		default:
			return append(out, segs[i:]...)
		}
	}
	return out
}

// structField finds the field xconfmap calls name in struct t.
func structField(t reflect.Type, name string, depth int) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.IsExported() && xconfmapName(f) == name {
			return f, true
		}
	}
	if depth > 4 {
		return reflect.StructField{}, false
	}
	m, ok := reflect.PointerTo(t).MethodByName("Get")
	if !ok || m.Type.NumIn() != 1 || m.Type.NumOut() != 1 {
		return reflect.StructField{}, false
	}
	inner := m.Type.Out(0)
	for inner.Kind() == reflect.Pointer {
		inner = inner.Elem()
	}
	if inner.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	return structField(inner, name, depth+1)
}

// xconfmapName is the rule xconfmap uses to name a field in a path.
func xconfmapName(f reflect.StructField) string {
	if tag, ok := f.Tag.Lookup(confmap.MapstructureTag); ok {
		if name, _, _ := strings.Cut(tag, ","); name != "" {
			return name
		}
	}
	return strings.ToLower(f.Name)
}

func isSquash(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get(confmap.MapstructureTag), ",")
	for _, o := range strings.Split(opts, ",") {
		if o == "squash" {
			return true
		}
	}
	return false
}

// join returns a new slice: issue paths are kept, so they must not share backing arrays.
func join(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}
