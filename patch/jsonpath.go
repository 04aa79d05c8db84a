package patch

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Field syntax. A field is a dot path (spec.values.image.tag) or JSONPath with these features:
//
//	$                      optional root
//	.key  ['key']  ["key"] a mapping key (brackets allow dots, as in ['app.kubernetes.io/name'])
//	[0]  [-1]  .0          a sequence index (negative counts from the end; a digits-only dot
//	                       segment is an index on a sequence and a key on a mapping)
//	.*  [*]                every value of a mapping or item of a sequence
//	[?(expr)]              the values/items for which expr holds; expr compares @-relative
//	                       paths with string, number, boolean and null literals using
//	                       == != < <= > >=, combines them with && || ! and parentheses, and
//	                       a bare @.path tests that the path exists
//
// Recursive descent, slices and unions are refused: a GitOps edit should say where it writes.

const (
	maxFieldLen    = 4096
	maxFilterDepth = 32
)

type stepKind int

const (
	stepKey stepKind = iota
	stepIndex
	stepWildcard
	stepFilter
)

type pathStep struct {
	kind stepKind
	key  string
	// digits marks a dot-path key made only of digits, which indexes a sequence.
	digits bool
	index  int
	filter filterExpr
	text   string // the filter as written, for messages
}

func (s pathStep) String() string {
	switch s.kind {
	case stepKey:
		if isPlainPathKey(s.key) {
			return "." + s.key
		}
		return "[" + strconv.Quote(s.key) + "]"
	case stepIndex:
		return "[" + strconv.Itoa(s.index) + "]"
	case stepWildcard:
		return "[*]"
	default:
		return s.text
	}
}

func isPlainPathKey(k string) bool {
	return k != "" && !strings.ContainsAny(k, ".[]'\"*") && strings.TrimSpace(k) == k
}

type fieldPath struct {
	text  string
	steps []pathStep
}

// singular reports whether the path names at most one node (keys and indexes only).
func (p fieldPath) singular() bool {
	for _, s := range p.steps {
		if s.kind != stepKey && s.kind != stepIndex {
			return false
		}
	}
	return true
}

// prefix renders the first n steps for error messages.
func (p fieldPath) prefix(n int) string {
	var b strings.Builder
	b.WriteString("$")
	for _, s := range p.steps[:n] {
		b.WriteString(s.String())
	}
	return b.String()
}

type pathParser struct {
	s     string
	pos   int
	depth int
}

func (p *pathParser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid field at offset %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func compilePath(field string) (fieldPath, error) {
	if strings.TrimSpace(field) == "" {
		return fieldPath{}, errors.New("field is empty")
	}
	if len(field) > maxFieldLen {
		return fieldPath{}, fmt.Errorf("field is %d bytes long, at most %d are allowed", len(field), maxFieldLen)
	}
	p := &pathParser{s: field}
	fp := fieldPath{text: field}
	first := true
	if strings.HasPrefix(field, "$") {
		p.pos = 1
		first = false
	}
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch {
		case c == '[':
			st, err := p.bracket()
			if err != nil {
				return fieldPath{}, err
			}
			fp.steps = append(fp.steps, st)
		case c == '.':
			p.pos++
			if p.pos < len(p.s) && p.s[p.pos] == '.' {
				return fieldPath{}, p.errorf("recursive descent (..) is not supported; write the full path")
			}
			st, err := p.dotName()
			if err != nil {
				return fieldPath{}, err
			}
			fp.steps = append(fp.steps, st)
		case first:
			st, err := p.dotName()
			if err != nil {
				return fieldPath{}, err
			}
			fp.steps = append(fp.steps, st)
		default:
			return fieldPath{}, p.errorf("unexpected %q, expected '.' or '['", c)
		}
		first = false
	}
	if len(fp.steps) == 0 {
		return fieldPath{}, errors.New("field must name at least one key; replacing a whole document is not supported")
	}
	return fp, nil
}

func (p *pathParser) dotName() (pathStep, error) {
	start := p.pos
	for p.pos < len(p.s) && p.s[p.pos] != '.' && p.s[p.pos] != '[' {
		if p.s[p.pos] == ']' {
			return pathStep{}, p.errorf("unexpected ']'")
		}
		p.pos++
	}
	name := p.s[start:p.pos]
	switch {
	case name == "":
		return pathStep{}, p.errorf("empty key; use ['...'] for keys with dots or brackets")
	case name == "*":
		return pathStep{kind: stepWildcard}, nil
	}
	st := pathStep{kind: stepKey, key: name}
	if i, err := strconv.Atoi(name); err == nil && i >= 0 && isDigits(name) {
		st.digits, st.index = true, i
	}
	return st, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func (p *pathParser) skipSpaces() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *pathParser) bracket() (pathStep, error) {
	p.pos++ // '['
	p.skipSpaces()
	if p.pos >= len(p.s) {
		return pathStep{}, p.errorf("unterminated '['")
	}
	var st pathStep
	switch c := p.s[p.pos]; {
	case c == '*':
		p.pos++
		st = pathStep{kind: stepWildcard}
	case c == '\'' || c == '"':
		k, err := p.quoted()
		if err != nil {
			return pathStep{}, err
		}
		st = pathStep{kind: stepKey, key: k}
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		p.pos++
		for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
			p.pos++
		}
		i, err := strconv.Atoi(p.s[start:p.pos])
		if err != nil {
			return pathStep{}, p.errorf("bad index %q", p.s[start:p.pos])
		}
		st = pathStep{kind: stepIndex, index: i}
	case c == '?':
		start := p.pos - 1
		p.pos++
		p.skipSpaces()
		if p.pos >= len(p.s) || p.s[p.pos] != '(' {
			return pathStep{}, p.errorf("a filter is written [?(...)]")
		}
		p.pos++
		f, err := p.parseOr()
		if err != nil {
			return pathStep{}, err
		}
		p.skipSpaces()
		if p.pos >= len(p.s) || p.s[p.pos] != ')' {
			return pathStep{}, p.errorf("expected ')' to close the filter")
		}
		p.pos++
		st = pathStep{kind: stepFilter, filter: f, text: p.s[start:p.pos] + "]"}
	default:
		return pathStep{}, p.errorf("unexpected %q after '['", c)
	}
	p.skipSpaces()
	if p.pos >= len(p.s) {
		return pathStep{}, p.errorf("unterminated '['")
	}
	switch p.s[p.pos] {
	case ']':
		p.pos++
		return st, nil
	case ':':
		return pathStep{}, p.errorf("slices are not supported")
	case ',':
		return pathStep{}, p.errorf("unions are not supported")
	}
	return pathStep{}, p.errorf("expected ']'")
}

// quoted reads a single- or double-quoted string with backslash escapes for the quote and backslash.
func (p *pathParser) quoted() (string, error) {
	q := p.s[p.pos]
	p.pos++
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch {
		case c == '\\' && p.pos+1 < len(p.s):
			b.WriteByte(p.s[p.pos+1])
			p.pos += 2
		case c == q:
			p.pos++
			return b.String(), nil
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
	return "", p.errorf("unterminated quoted string")
}

// filterExpr is a predicate evaluated on one candidate node.
type filterExpr interface {
	eval(n *yaml.Node) bool
}

type orExpr struct{ a, b filterExpr }
type andExpr struct{ a, b filterExpr }
type notExpr struct{ a filterExpr }
type existsExpr struct{ rel []pathStep }
type cmpExpr struct {
	op   string
	l, r operand
}

// operand is an @-relative path or a literal.
type operand struct {
	isPath bool
	rel    []pathStep
	lit    jsonValue
}

func (e orExpr) eval(n *yaml.Node) bool  { return e.a.eval(n) || e.b.eval(n) }
func (e andExpr) eval(n *yaml.Node) bool { return e.a.eval(n) && e.b.eval(n) }
func (e notExpr) eval(n *yaml.Node) bool { return !e.a.eval(n) }
func (e existsExpr) eval(n *yaml.Node) bool {
	return relLookup(n, e.rel) != nil
}

func (p *pathParser) enter() error {
	p.depth++
	if p.depth > maxFilterDepth {
		return p.errorf("filter nests deeper than %d levels", maxFilterDepth)
	}
	return nil
}

func (p *pathParser) hasPrefix(tok string) bool { return strings.HasPrefix(p.s[p.pos:], tok) }

func (p *pathParser) parseOr() (filterExpr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	l, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for {
		p.skipSpaces()
		if !p.hasPrefix("||") {
			return l, nil
		}
		p.pos += 2
		r, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		l = orExpr{l, r}
	}
}

func (p *pathParser) parseAnd() (filterExpr, error) {
	l, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	for {
		p.skipSpaces()
		if !p.hasPrefix("&&") {
			return l, nil
		}
		p.pos += 2
		r, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		l = andExpr{l, r}
	}
}

func (p *pathParser) parseUnary() (filterExpr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.skipSpaces()
	if p.pos >= len(p.s) {
		return nil, p.errorf("unterminated filter")
	}
	switch {
	case p.hasPrefix("!") && !p.hasPrefix("!="):
		p.pos++
		e, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		return notExpr{e}, nil
	case p.hasPrefix("("):
		p.pos++
		e, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		p.skipSpaces()
		if !p.hasPrefix(")") {
			return nil, p.errorf("expected ')'")
		}
		p.pos++
		return e, nil
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	p.skipSpaces()
	for _, op := range []string{"==", "!=", "<=", ">=", "<", ">"} {
		if p.hasPrefix(op) {
			p.pos += len(op)
			r, err := p.operand()
			if err != nil {
				return nil, err
			}
			return cmpExpr{op: op, l: l, r: r}, nil
		}
	}
	if p.hasPrefix("=~") || p.hasPrefix("=") {
		return nil, p.errorf("unsupported operator; use == != < <= > >=")
	}
	if !l.isPath {
		return nil, p.errorf("a literal alone is not a condition; compare it with an @ path")
	}
	return existsExpr{rel: l.rel}, nil
}

func (p *pathParser) operand() (operand, error) {
	p.skipSpaces()
	if p.pos >= len(p.s) {
		return operand{}, p.errorf("unterminated filter")
	}
	c := p.s[p.pos]
	switch {
	case c == '@':
		p.pos++
		rel, err := p.relPath()
		if err != nil {
			return operand{}, err
		}
		return operand{isPath: true, rel: rel}, nil
	case c == '$':
		return operand{}, p.errorf("filters may refer to the current node (@) only, not to the root ($)")
	case c == '\'' || c == '"':
		s, err := p.quoted()
		if err != nil {
			return operand{}, err
		}
		return operand{lit: jsonValue{kind: jsonString, text: s}}, nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		p.pos++
		for p.pos < len(p.s) && strings.IndexByte("0123456789.eE+-", p.s[p.pos]) >= 0 {
			p.pos++
		}
		text := p.s[start:p.pos]
		if _, err := strconv.ParseFloat(text, 64); err != nil {
			return operand{}, p.errorf("bad number %q", text)
		}
		return operand{lit: jsonValue{kind: jsonNumber, text: text}}, nil
	}
	for _, w := range []struct {
		word string
		v    jsonValue
	}{{"true", jsonValue{kind: jsonBool, text: "true"}}, {"false", jsonValue{kind: jsonBool, text: "false"}}, {"null", jsonValue{kind: jsonNull}}} {
		if p.hasPrefix(w.word) {
			p.pos += len(w.word)
			return operand{lit: w.v}, nil
		}
	}
	return operand{}, p.errorf("expected @path, a quoted string, a number, true, false or null")
}

// relPath reads the keys and indexes after '@'.
func (p *pathParser) relPath() ([]pathStep, error) {
	var rel []pathStep
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case '.':
			p.pos++
			start := p.pos
			for p.pos < len(p.s) && strings.IndexByte(".[]()=!<>&| \t", p.s[p.pos]) < 0 {
				p.pos++
			}
			name := p.s[start:p.pos]
			if name == "" {
				return nil, p.errorf("empty key in filter path")
			}
			st := pathStep{kind: stepKey, key: name}
			if isDigits(name) {
				if i, err := strconv.Atoi(name); err == nil {
					st.digits, st.index = true, i
				}
			}
			rel = append(rel, st)
		case '[':
			st, err := p.bracket()
			if err != nil {
				return nil, err
			}
			if st.kind != stepKey && st.kind != stepIndex {
				return nil, p.errorf("filter paths take keys and indexes only")
			}
			rel = append(rel, st)
		default:
			return rel, nil
		}
	}
	return rel, nil
}

// resolveAlias follows alias nodes for reading; filters read through aliases, edits never do.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 64; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

// relLookup reads an @-relative path; nil means missing.
func relLookup(n *yaml.Node, rel []pathStep) *yaml.Node {
	n = resolveAlias(n)
	for _, st := range rel {
		if n == nil {
			return nil
		}
		switch {
		case n.Kind == yaml.MappingNode && st.kind == stepKey:
			var found *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if k := resolveAlias(n.Content[i]); k != nil && k.Kind == yaml.ScalarNode && k.Value == st.key {
					found = n.Content[i+1]
					break
				}
			}
			n = found
		case n.Kind == yaml.SequenceNode && (st.kind == stepIndex || st.digits):
			i := st.index
			if i < 0 {
				i += len(n.Content)
			}
			if i < 0 || i >= len(n.Content) {
				return nil
			}
			n = n.Content[i]
		default:
			return nil
		}
		n = resolveAlias(n)
	}
	return n
}

// scalarOf turns a node or literal into a comparable value; ok is false for collections and missing.
type scalar struct {
	kind jsonKind
	s    string
	f    float64
}

func nodeScalar(n *yaml.Node) (scalar, bool) {
	if n == nil || n.Kind != yaml.ScalarNode {
		return scalar{}, false
	}
	switch n.ShortTag() {
	case "!!str":
		return scalar{kind: jsonString, s: n.Value}, true
	case "!!null":
		return scalar{kind: jsonNull}, true
	case "!!bool":
		var b bool
		if n.Decode(&b) != nil {
			return scalar{}, false
		}
		if b {
			return scalar{kind: jsonBool, s: "true"}, true
		}
		return scalar{kind: jsonBool, s: "false"}, true
	case "!!int", "!!float":
		var f float64
		if n.Decode(&f) != nil {
			return scalar{}, false
		}
		return scalar{kind: jsonNumber, f: f}, true
	}
	return scalar{}, false
}

func litScalar(v jsonValue) scalar {
	if v.kind == jsonNumber {
		f, _ := strconv.ParseFloat(v.text, 64) // checked by the parser
		return scalar{kind: jsonNumber, f: f}
	}
	return scalar{kind: v.kind, s: v.text}
}

func (o operand) value(n *yaml.Node) (scalar, bool) {
	if o.isPath {
		return nodeScalar(relLookup(n, o.rel))
	}
	return litScalar(o.lit), true
}

func (e cmpExpr) eval(n *yaml.Node) bool {
	l, lok := e.l.value(n)
	r, rok := e.r.value(n)
	if !lok || !rok || l.kind != r.kind {
		return e.op == "!=" && (lok || rok)
	}
	var c int
	switch l.kind {
	case jsonNumber:
		switch {
		case l.f < r.f:
			c = -1
		case l.f > r.f:
			c = 1
		case l.f != r.f: // NaN
			return e.op == "!="
		}
	case jsonString:
		c = strings.Compare(l.s, r.s)
	default:
		if e.op != "==" && e.op != "!=" {
			return false
		}
		if l.s != r.s {
			c = 1
		}
	}
	switch e.op {
	case "==":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	default:
		return c >= 0
	}
}
