package patch

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// Field syntax: RFC 9535 JSONPath for the selectors an edit needs, with two extensions for the
// dot paths CI jobs already write (spec.values.image.tag):
//
//	$                      the root; optional (E1): a field may start with a name or a bracket
//	.name  ['name'] ["n"]  a member name; quoted names take the RFC escapes \b \f \n \r \t \/ \\
//	                       \' (in '...') \" (in "...") and \uXXXX with surrogate pairs
//	.*  [*]                every value of a mapping or item of a sequence
//	[0]  [-1]              a sequence index (negative counts from the end)
//	[?expr]  [?(expr)]     the values/items for which expr holds: comparisons (== != < <= > >=)
//	                       of queries (@... or $...) with names and indexes only, and literals
//	                       (strings, numbers, true, false, null), && || ! and parentheses, and
//	                       existence tests of any supported query (@.name, @.*, @[?...])
//
// Whitespace (space, tab, LF, CR) may stand wherever RFC 9535 allows a blank: between segments,
// inside brackets, around operators. Extension E2: a dot name may also start with a digit and
// contain '-' (metadata.labels.app-name, containers.0); a digits-only dot name is an index on a
// sequence and a key on a mapping. Descendant segments (..), slices, unions and function
// expressions are refused with an error naming the construct: an edit should say where it writes.

const (
	maxFieldLen    = 4096
	maxFilterDepth = 32
	// maxSafeInt is the I-JSON range RFC 9535 gives indexes and integers.
	maxSafeInt = 1<<53 - 1
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
		return "[" + quoteName(s.key) + "]"
	case stepIndex:
		return "[" + strconv.Itoa(s.index) + "]"
	case stepWildcard:
		return "[*]"
	default:
		return s.text
	}
}

// quoteName writes a name as an RFC 9535 single-quoted string (its normalized-path form).
func quoteName(k string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range k {
		switch r {
		case '\'':
			b.WriteString(`\'`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('\'')
	return b.String()
}

func isPlainPathKey(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		if !isNameChar(r, i == 0, false) {
			return false
		}
	}
	return true
}

// isNameChar is RFC 9535 name-first / name-char, widened by extension E2 unless strict.
func isNameChar(r rune, first, strict bool) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		return true
	case r >= '0' && r <= '9':
		return !first || !strict
	case r == '-':
		return !strict
	case r >= 0x80 && r != utf8.RuneError && (r <= 0xD7FF || r >= 0xE000):
		return true
	}
	return false
}

type fieldPath struct {
	text  string
	steps []pathStep
}

// singular reports whether the path names at most one node (keys and indexes only).
func (p fieldPath) singular() bool { return singularSteps(p.steps) }

func singularSteps(steps []pathStep) bool {
	for _, s := range steps {
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
	s      string
	pos    int
	depth  int
	strict bool // RFC 9535 only, without extensions E1 and E2 (for the conformance test)
}

func (p *pathParser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid field at offset %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func compilePath(field string) (fieldPath, error) { return compileField(field, false) }

func compileField(field string, strict bool) (fieldPath, error) {
	if strings.TrimSpace(field) == "" {
		return fieldPath{}, errors.New("field is empty")
	}
	if len(field) > maxFieldLen {
		return fieldPath{}, fmt.Errorf("field is %d bytes long, at most %d are allowed", len(field), maxFieldLen)
	}
	if !utf8.ValidString(field) {
		return fieldPath{}, errors.New("field is not valid UTF-8")
	}
	p := &pathParser{s: field, strict: strict}
	if isBlank(field[0]) || isBlank(field[len(field)-1]) {
		return fieldPath{}, p.errorf("a field may not start or end with white space")
	}
	fp := fieldPath{text: field}
	switch {
	case field[0] == '$':
		p.pos = 1
	case strict:
		return fieldPath{}, p.errorf("a JSONPath query starts with $")
	case field[0] == '*':
		// Extension E1 for a leading wildcard: *.image is $.*.image.
		p.pos = 1
		fp.steps = append(fp.steps, pathStep{kind: stepWildcard})
	case field[0] != '[' && field[0] != '.':
		// Extension E1: a dot path starts with its first name.
		st, err := p.dotName()
		if err != nil {
			return fieldPath{}, err
		}
		fp.steps = append(fp.steps, st)
	}
	steps, err := p.segments()
	if err != nil {
		return fieldPath{}, err
	}
	if p.pos < len(p.s) {
		return fieldPath{}, p.errorf("unexpected %q, expected '.' or '['", p.s[p.pos])
	}
	fp.steps = append(fp.steps, steps...)
	if len(fp.steps) == 0 {
		return fieldPath{}, errors.New("field must name at least one key; replacing a whole document is not supported")
	}
	return fp, nil
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (p *pathParser) skipSpaces() {
	for p.pos < len(p.s) && isBlank(p.s[p.pos]) {
		p.pos++
	}
}

// segments reads *(S segment): it stops, before any blanks, at the first character that does not
// start a segment.
func (p *pathParser) segments() ([]pathStep, error) {
	var steps []pathStep
	for {
		save := p.pos
		p.skipSpaces()
		if p.pos >= len(p.s) || (p.s[p.pos] != '.' && p.s[p.pos] != '[') {
			p.pos = save
			return steps, nil
		}
		st, err := p.segment()
		if err != nil {
			return nil, err
		}
		steps = append(steps, st)
	}
}

func (p *pathParser) segment() (pathStep, error) {
	if p.s[p.pos] == '[' {
		return p.bracket()
	}
	p.pos++ // '.'
	if p.pos >= len(p.s) {
		return pathStep{}, p.errorf("a name must follow '.'")
	}
	switch p.s[p.pos] {
	case '.':
		return pathStep{}, p.errorf("descendant segments (..) are not supported; write the full path")
	case '*':
		p.pos++
		return pathStep{kind: stepWildcard}, nil
	}
	return p.dotName()
}

// dotName reads a member-name shorthand.
func (p *pathParser) dotName() (pathStep, error) {
	start := p.pos
	for p.pos < len(p.s) {
		r, w := utf8.DecodeRuneInString(p.s[p.pos:])
		if !isNameChar(r, p.pos == start, p.strict) {
			break
		}
		p.pos += w
	}
	name := p.s[start:p.pos]
	if name == "" {
		if p.pos < len(p.s) && isBlank(p.s[p.pos]) {
			return pathStep{}, p.errorf("white space may not follow '.'")
		}
		if p.pos < len(p.s) {
			return pathStep{}, p.errorf("%q cannot start a name; write ['...'] for keys with other characters", p.s[p.pos])
		}
		return pathStep{}, p.errorf("a name must follow '.'")
	}
	st := pathStep{kind: stepKey, key: name}
	if isDigits(name) {
		if i, err := strconv.Atoi(name); err == nil {
			st.digits, st.index = true, i
		}
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

// bracket reads "[" S selector S "]" and refuses what this dialect leaves out by name.
func (p *pathParser) bracket() (pathStep, error) {
	open := p.pos
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
	case c == ':':
		return pathStep{}, p.errorf("array slices ([start:end:step]) are not supported")
	case c == '-' || (c >= '0' && c <= '9'):
		i, err := p.integer()
		if err != nil {
			return pathStep{}, err
		}
		st = pathStep{kind: stepIndex, index: i}
	case c == '?':
		p.pos++
		p.skipSpaces()
		f, err := p.parseOr()
		if err != nil {
			return pathStep{}, err
		}
		st = pathStep{kind: stepFilter, filter: f}
	default:
		return pathStep{}, p.errorf("unexpected %q after '['; expected a quoted name, an index, * or a ?filter", c)
	}
	p.skipSpaces()
	if p.pos >= len(p.s) {
		return pathStep{}, p.errorf("unterminated '['")
	}
	switch p.s[p.pos] {
	case ']':
		p.pos++
		if st.kind == stepFilter {
			st.text = p.s[open:p.pos]
		}
		return st, nil
	case ':':
		return pathStep{}, p.errorf("array slices ([start:end:step]) are not supported")
	case ',':
		return pathStep{}, p.errorf("unions (several selectors in one [...]) are not supported; use one command per field")
	}
	return pathStep{}, p.errorf("expected ']'")
}

// integer reads an RFC 9535 int: no leading zeros, no -0, within ±(2^53-1).
func (p *pathParser) integer() (int, error) {
	start := p.pos
	if p.s[p.pos] == '-' {
		p.pos++
	}
	ds := p.pos
	for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
		p.pos++
	}
	text := p.s[start:p.pos]
	digits := p.s[ds:p.pos]
	switch {
	case digits == "":
		return 0, p.errorf("bad index %q", text)
	case len(digits) > 1 && digits[0] == '0', text == "-0":
		return 0, p.errorf("bad index %q: no leading zeros or -0", text)
	}
	i, err := strconv.ParseInt(text, 10, 64)
	if err != nil || i > maxSafeInt || i < -maxSafeInt {
		return 0, p.errorf("index %s is out of range", text)
	}
	return int(i), nil
}

// quoted reads an RFC 9535 string literal in single or double quotes.
func (p *pathParser) quoted() (string, error) {
	q := p.s[p.pos]
	p.pos++
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch {
		case c == q:
			p.pos++
			return b.String(), nil
		case c < 0x20:
			return "", p.errorf("control character %q in a quoted name; write it as an escape", c)
		case c != '\\':
			b.WriteByte(c)
			p.pos++
			continue
		}
		p.pos++ // '\\'
		if p.pos >= len(p.s) {
			break
		}
		e := p.s[p.pos]
		p.pos++
		switch e {
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case '/', '\\':
			b.WriteByte(e)
		case 'u':
			r, err := p.unicodeEscape()
			if err != nil {
				return "", err
			}
			b.WriteRune(r)
		default:
			if e == q {
				b.WriteByte(e)
				continue
			}
			p.pos--
			return "", p.errorf("\\%c is not an escape in a %s-quoted name; use \\b \\f \\n \\r \\t \\/ \\\\ \\%c or \\uXXXX", e, map[byte]string{'\'': "single", '"': "double"}[q], q)
		}
	}
	return "", p.errorf("unterminated quoted string")
}

// unicodeEscape reads the XXXX of \uXXXX (after the u), and the low half of a surrogate pair.
func (p *pathParser) unicodeEscape() (rune, error) {
	hex4 := func() (rune, error) {
		if p.pos+4 > len(p.s) {
			return 0, p.errorf("\\u needs four hex digits")
		}
		v, err := strconv.ParseUint(p.s[p.pos:p.pos+4], 16, 32)
		if err != nil || strings.ContainsAny(p.s[p.pos:p.pos+4], "+-") {
			return 0, p.errorf("\\u needs four hex digits, got %q", p.s[p.pos:p.pos+4])
		}
		p.pos += 4
		return rune(v), nil
	}
	r, err := hex4()
	if err != nil {
		return 0, err
	}
	switch {
	case r >= 0xDC00 && r <= 0xDFFF:
		return 0, p.errorf("\\u%04X is a low surrogate without a high one before it", r)
	case r >= 0xD800 && r <= 0xDBFF:
		if !strings.HasPrefix(p.s[p.pos:], `\u`) {
			return 0, p.errorf("\\u%04X is a high surrogate; a \\uDC00-\\uDFFF escape must follow", r)
		}
		p.pos += 2
		lo, err := hex4()
		if err != nil {
			return 0, err
		}
		if lo < 0xDC00 || lo > 0xDFFF {
			return 0, p.errorf("\\u%04X is a high surrogate; a \\uDC00-\\uDFFF escape must follow, not \\u%04X", r, lo)
		}
		return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), nil
	}
	return r, nil
}

// Filters.

// evalCtx carries what a filter may read besides the candidate (the document root, for $
// queries) and the selection budget the walk spends, so that the fields of one request cannot
// cost more than a bounded walk however they nest wildcards and filters.
type evalCtx struct {
	root     *yaml.Node
	work     *selectBudget
	err      *fieldError
	usedRoot bool
	// absolute holds the result of each $ query: it does not depend on the candidate.
	absolute map[*query][]*yaml.Node
}

// selectBudget counts the nodes the fields of one request visit against Limits.MaxSelectNodes.
type selectBudget struct {
	left, limit int
}

func newSelectBudget(limit int) *selectBudget { return &selectBudget{left: limit, limit: limit} }

func newEvalCtx(root *yaml.Node, work *selectBudget) *evalCtx {
	return &evalCtx{root: resolveAlias(root), work: work}
}

func (c *evalCtx) spend(n int) bool {
	c.work.left -= n
	if c.work.left < 0 && c.err == nil {
		c.err = errorf(KindLimit, "the fields of the request visit more than %d nodes when selecting (wildcards and filters included); split the request or write narrower fields", c.work.limit)
	}
	return c.err == nil
}

// filterExpr is a predicate evaluated on one candidate node.
type filterExpr interface {
	eval(c *evalCtx, n *yaml.Node) bool
}

type orExpr struct{ a, b filterExpr }
type andExpr struct{ a, b filterExpr }
type notExpr struct{ a filterExpr }
type existsExpr struct{ q *query }
type cmpExpr struct {
	op   string
	l, r operand
}

// query is a filter query: @ (relative) or $ (absolute) followed by segments.
type query struct {
	abs   bool
	steps []pathStep
}

// operand is a singular query or a literal.
type operand struct {
	isQuery bool
	q       *query
	lit     jsonValue
}

func (e orExpr) eval(c *evalCtx, n *yaml.Node) bool  { return e.a.eval(c, n) || e.b.eval(c, n) }
func (e andExpr) eval(c *evalCtx, n *yaml.Node) bool { return e.a.eval(c, n) && e.b.eval(c, n) }
func (e notExpr) eval(c *evalCtx, n *yaml.Node) bool { return !e.a.eval(c, n) }
func (e existsExpr) eval(c *evalCtx, n *yaml.Node) bool {
	return len(e.q.eval(c, n)) > 0
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
		save := p.pos
		p.skipSpaces()
		if !p.hasPrefix("||") {
			p.pos = save
			return l, nil
		}
		p.pos += 2
		p.skipSpaces()
		r, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		l = orExpr{l, r}
	}
}

func (p *pathParser) parseAnd() (filterExpr, error) {
	l, err := p.parseBasic()
	if err != nil {
		return nil, err
	}
	for {
		save := p.pos
		p.skipSpaces()
		if !p.hasPrefix("&&") {
			p.pos = save
			return l, nil
		}
		p.pos += 2
		p.skipSpaces()
		r, err := p.parseBasic()
		if err != nil {
			return nil, err
		}
		l = andExpr{l, r}
	}
}

// parseBasic reads a parenthesized expression, a comparison or a test, each maybe negated.
func (p *pathParser) parseBasic() (filterExpr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	if p.pos >= len(p.s) {
		return nil, p.errorf("unterminated filter")
	}
	if p.hasPrefix("!") && !p.hasPrefix("!=") {
		p.pos++
		p.skipSpaces()
		if p.hasPrefix("(") {
			e, err := p.parenExpr()
			if err != nil {
				return nil, err
			}
			return notExpr{e}, nil
		}
		start := p.pos
		o, err := p.operand()
		if err != nil {
			return nil, err
		}
		if !o.isQuery {
			p.pos = start
			return nil, p.errorf("! applies to a test such as !@.name or to a parenthesized expression")
		}
		if p.comparisonAhead() {
			return nil, p.errorf("! applies to a test or a parenthesized expression; write !(a == b) or a != b")
		}
		return notExpr{existsExpr{o.q}}, nil
	}
	if p.hasPrefix("(") {
		e, err := p.parenExpr()
		if err != nil {
			return nil, err
		}
		if p.comparisonAhead() {
			return nil, p.errorf("a parenthesized expression cannot be compared")
		}
		return e, nil
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	save := p.pos
	p.skipSpaces()
	for _, op := range []string{"==", "!=", "<=", ">=", "<", ">"} {
		if p.hasPrefix(op) {
			if l.isQuery && !singularSteps(l.q.steps) {
				p.pos = save
				return nil, p.errorf("comparisons need a singular query (names and indexes only); wildcards and filters can only be tested for existence")
			}
			p.pos += len(op)
			p.skipSpaces()
			r, err := p.operand()
			if err != nil {
				return nil, err
			}
			if r.isQuery && !singularSteps(r.q.steps) {
				return nil, p.errorf("comparisons need a singular query (names and indexes only); wildcards and filters can only be tested for existence")
			}
			return cmpExpr{op: op, l: l, r: r}, nil
		}
	}
	if p.hasPrefix("=~") || p.hasPrefix("=") {
		return nil, p.errorf("unsupported operator; use == != < <= > >=")
	}
	p.pos = save
	if !l.isQuery {
		return nil, p.errorf("a literal alone is not a condition; compare it with an @ or $ query")
	}
	return existsExpr{l.q}, nil
}

func (p *pathParser) comparisonAhead() bool {
	save := p.pos
	p.skipSpaces()
	ok := false
	for _, op := range []string{"==", "!=", "<", ">"} {
		ok = ok || p.hasPrefix(op)
	}
	p.pos = save
	return ok
}

func (p *pathParser) parenExpr() (filterExpr, error) {
	p.pos++ // '('
	p.skipSpaces()
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

func (p *pathParser) operand() (operand, error) {
	if p.pos >= len(p.s) {
		return operand{}, p.errorf("unterminated filter")
	}
	c := p.s[p.pos]
	switch {
	case c == '@' || c == '$':
		p.pos++
		steps, err := p.segments()
		if err != nil {
			return operand{}, err
		}
		return operand{isQuery: true, q: &query{abs: c == '$', steps: steps}}, nil
	case c == '\'' || c == '"':
		s, err := p.quoted()
		if err != nil {
			return operand{}, err
		}
		return operand{lit: jsonValue{kind: jsonString, text: s}}, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	for _, w := range []struct {
		word string
		v    jsonValue
	}{{"true", jsonValue{kind: jsonBool, text: "true"}}, {"false", jsonValue{kind: jsonBool, text: "false"}}, {"null", jsonValue{kind: jsonNull}}} {
		if p.hasPrefix(w.word) && !p.identAt(p.pos+len(w.word)) {
			p.pos += len(w.word)
			return operand{lit: w.v}, nil
		}
	}
	if c >= 'a' && c <= 'z' {
		end := p.pos
		for end < len(p.s) && p.identAt(end) {
			end++
		}
		if end < len(p.s) && p.s[end] == '(' {
			return operand{}, p.errorf("function expressions (%s()) are not supported", p.s[p.pos:end])
		}
	}
	return operand{}, p.errorf("expected @ or $ query, a quoted string, a number, true, false or null")
}

func (p *pathParser) identAt(i int) bool {
	if i >= len(p.s) {
		return false
	}
	c := p.s[i]
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// number reads an RFC 9535 number: (int / "-0") [ frac ] [ exp ].
func (p *pathParser) number() (operand, error) {
	start := p.pos
	bad := func() (operand, error) {
		for p.pos < len(p.s) && strings.IndexByte("0123456789.eE+-", p.s[p.pos]) >= 0 {
			p.pos++
		}
		return operand{}, p.errorf("bad number %q", p.s[start:p.pos])
	}
	digits := func() int {
		n := 0
		for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	if p.hasPrefix("-") {
		p.pos++
	}
	ds := p.pos
	if digits() == 0 || (p.pos-ds > 1 && p.s[ds] == '0') {
		return bad()
	}
	if p.hasPrefix(".") {
		p.pos++
		if digits() == 0 {
			return bad()
		}
	}
	if p.hasPrefix("e") || p.hasPrefix("E") {
		p.pos++
		if p.hasPrefix("+") || p.hasPrefix("-") {
			p.pos++
		}
		if digits() == 0 {
			return bad()
		}
	}
	if p.pos < len(p.s) && strings.IndexByte("0123456789.eE+-", p.s[p.pos]) >= 0 {
		return bad()
	}
	text := p.s[start:p.pos]
	if _, err := strconv.ParseFloat(text, 64); err != nil {
		return operand{}, p.errorf("number %s is out of range", text)
	}
	return operand{lit: jsonValue{kind: jsonNumber, text: text}}, nil
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

// eval returns the nodes a filter query selects from the candidate n (aliases resolved).
func (q *query) eval(c *evalCtx, n *yaml.Node) []*yaml.Node {
	cur := []*yaml.Node{resolveAlias(n)}
	if q.abs {
		c.usedRoot = true
		if r, ok := c.absolute[q]; ok {
			return r
		}
		defer func() {
			if c.absolute == nil {
				c.absolute = map[*query][]*yaml.Node{}
			}
			c.absolute[q] = cur
		}()
		cur = []*yaml.Node{c.root}
	}
	for _, st := range q.steps {
		var next []*yaml.Node
		for _, m := range cur {
			// Selecting scans the children (keys are compared one by one).
			if m == nil || !c.spend(1+len(m.Content)) {
				return nil
			}
			selectChildren(c, m, st, func(child *yaml.Node) {
				if r := resolveAlias(child); r != nil {
					next = append(next, r)
				}
			})
		}
		cur = next
	}
	return cur
}

// selectChildren calls add for each child of n (a resolved node) that st selects, in document order.
func selectChildren(c *evalCtx, n *yaml.Node, st pathStep, add func(*yaml.Node)) {
	switch n.Kind {
	case yaml.MappingNode:
		for j := 0; j+1 < len(n.Content); j += 2 {
			k, v := n.Content[j], n.Content[j+1]
			switch st.kind {
			case stepKey:
				if rk := resolveAlias(k); rk != nil && rk.Kind == yaml.ScalarNode && rk.Value == st.key && !isMergeKey(rk) {
					add(v)
				}
			case stepWildcard:
				if !isMergeKey(k) {
					add(v)
				}
			case stepFilter:
				if !isMergeKey(k) && st.filter.eval(c, v) {
					add(v)
				}
			}
		}
	case yaml.SequenceNode:
		switch {
		case st.kind == stepIndex || st.kind == stepKey && st.digits:
			j := st.index
			if j < 0 {
				j += len(n.Content)
			}
			if j >= 0 && j < len(n.Content) {
				add(n.Content[j])
			}
		case st.kind == stepWildcard:
			for _, item := range n.Content {
				add(item)
			}
		case st.kind == stepFilter:
			for _, item := range n.Content {
				if st.filter.eval(c, item) {
					add(item)
				}
			}
		}
	}
}

// A comparison follows RFC 9535: a query that selects nothing is Nothing, which equals only
// Nothing; == is deep equality (numbers by value); < <= > >= order numbers and strings only.
func (o operand) value(c *evalCtx, n *yaml.Node) (*yaml.Node, jsonValue, bool) {
	if !o.isQuery {
		return nil, o.lit, true
	}
	ns := o.q.eval(c, n)
	if len(ns) != 1 {
		return nil, jsonValue{}, false
	}
	return ns[0], jsonValue{}, true
}

func (e cmpExpr) eval(c *evalCtx, n *yaml.Node) bool {
	ln, lv, lok := e.l.value(c, n)
	rn, rv, rok := e.r.value(c, n)
	eq := func() bool {
		if !lok || !rok {
			return lok == rok
		}
		return valuesEqual(c, ln, lv, rn, rv)
	}
	less := func(aN *yaml.Node, aV jsonValue, aOK bool, bN *yaml.Node, bV jsonValue, bOK bool) bool {
		if !aOK || !bOK {
			return false
		}
		a, b := scalarOf(aN, aV), scalarOf(bN, bV)
		switch {
		case a.kind != b.kind:
			return false
		case a.kind == jsonNumber:
			return a.f < b.f
		case a.kind == jsonString:
			return a.s < b.s // byte order of UTF-8 is code point order
		}
		return false
	}
	switch e.op {
	case "==":
		return eq()
	case "!=":
		return !eq()
	case "<":
		return less(ln, lv, lok, rn, rv, rok)
	case ">":
		return less(rn, rv, rok, ln, lv, lok)
	case "<=":
		return less(ln, lv, lok, rn, rv, rok) || eq()
	default:
		return less(rn, rv, rok, ln, lv, lok) || eq()
	}
}

// scalar is a comparable JSON scalar; kind jsonObject stands for any collection.
type scalar struct {
	kind jsonKind
	s    string
	f    float64
}

func scalarOf(n *yaml.Node, v jsonValue) scalar {
	if n == nil {
		switch v.kind {
		case jsonNumber:
			f, _ := strconv.ParseFloat(v.text, 64) // checked by the parser
			return scalar{kind: jsonNumber, f: f}
		case jsonObject, jsonArray:
			return scalar{kind: jsonObject}
		}
		return scalar{kind: v.kind, s: v.text}
	}
	return nodeScalar(n)
}

// nodeScalar reads a resolved node the way a JSON reader of the YAML would.
func nodeScalar(n *yaml.Node) scalar {
	if n.Kind != yaml.ScalarNode {
		return scalar{kind: jsonObject}
	}
	switch n.ShortTag() {
	case "!!null":
		return scalar{kind: jsonNull}
	case "!!bool":
		var b bool
		if n.Decode(&b) == nil {
			return scalar{kind: jsonBool, s: strconv.FormatBool(b)}
		}
	case "!!int", "!!float":
		var f float64
		if n.Decode(&f) == nil {
			return scalar{kind: jsonNumber, f: f}
		}
	}
	// Strings, and scalars of other tags (timestamps, binary, custom), compare as their text.
	return scalar{kind: jsonString, s: n.Value}
}

// valuesEqual is RFC 9535 equality of two values, each a node or (when the node is nil) a literal.
func valuesEqual(c *evalCtx, an *yaml.Node, av jsonValue, bn *yaml.Node, bv jsonValue) bool {
	if an != nil && bn != nil {
		return nodesEqual(c, an, bn)
	}
	a, b := scalarOf(an, av), scalarOf(bn, bv)
	if a.kind != b.kind || a.kind == jsonObject {
		return false // literals are scalars, so a collection never equals one
	}
	if a.kind == jsonNumber {
		return a.f == b.f
	}
	return a.s == b.s
}

// nodesEqual compares the data two nodes read (aliases resolved): same kind, equal scalars,
// equal items in order, the same keys with equal values in any order.
func nodesEqual(c *evalCtx, a, b *yaml.Node) bool {
	a, b = resolveAlias(a), resolveAlias(b)
	if a == nil || b == nil || !c.spend(1) {
		return false
	}
	if a == b {
		return true
	}
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case yaml.ScalarNode:
		x, y := nodeScalar(a), nodeScalar(b)
		if x.kind == jsonNumber && y.kind == jsonNumber {
			return x.f == y.f || math.IsNaN(x.f) && math.IsNaN(y.f)
		}
		return x == y
	case yaml.SequenceNode:
		if len(a.Content) != len(b.Content) {
			return false
		}
		for i := range a.Content {
			if !nodesEqual(c, a.Content[i], b.Content[i]) {
				return false
			}
		}
		return true
	case yaml.MappingNode:
		if len(a.Content) != len(b.Content) {
			return false
		}
		for i := 0; i+1 < len(a.Content); i += 2 {
			found := false
			for j := 0; j+1 < len(b.Content); j += 2 {
				if nodesEqual(c, a.Content[i], b.Content[j]) {
					found = nodesEqual(c, a.Content[i+1], b.Content[j+1])
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	return false
}
