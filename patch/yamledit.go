package patch

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"

	yaml "go.yaml.in/yaml/v3"
)

// The editor never re-serializes a file. It finds the byte span of each node it changes from the
// parser's positions, writes new text for that span only, and then parses the result to prove that
// every other node kept its value, tag, anchor and style; an edit that cannot be proven is refused.
// Everything outside the spans is copied byte for byte, which keeps comments, blank lines, key
// order, quoting, indentation, document markers and the final newline.

// splice replaces src[start:end] with text; cmd is the command that asked for it.
type splice struct {
	start, end int
	text       string
	cmd        int
}

// expectation is what verification demands of an edited node in the new tree.
type expectation struct {
	set       *jsonValue // the node now holds this value
	appendKey string     // or: the mapping gained this key, with appendVal, at its end
	appendVal *jsonValue
	cmd       int
}

type editPlan struct {
	splices []splice
	expect  map[*yaml.Node]expectation
	// aliased are anchored nodes whose aliases the request allows to change with them (with the
	// command that allowed it).
	aliased map[*yaml.Node]int
	targets []loc // the nodes set or appended to
}

func newPlan() *editPlan {
	return &editPlan{expect: map[*yaml.Node]expectation{}, aliased: map[*yaml.Node]int{}}
}

// fileEditor applies the setField commands of one file. Edits are planned against one parse and
// written together: the file is parsed and verified again only when a command reads a node that
// a pending edit changes (or encloses), when a plan fails, and at the end. So N edits of distinct
// fields cost two parses of the file, not N, and every command still sees the edits before it.
type fileEditor struct {
	f       *yamlFile
	lim     Limits
	budget  *parseBudget
	work    *selectBudget
	pending *editPlan
	size    int                 // length of the file once the pending splices are applied
	edited  map[*yaml.Node]bool // nodes whose data pending edits change
	above   map[*yaml.Node]bool // their ancestors
}

func newFileEditor(f *yamlFile, lim Limits, budget *parseBudget, work *selectBudget) *fileEditor {
	e := &fileEditor{f: f, lim: lim, budget: budget, work: work}
	e.reset()
	return e
}

func (e *fileEditor) reset() {
	e.pending, e.size = newPlan(), len(e.f.src)
	e.edited, e.above = map[*yaml.Node]bool{}, map[*yaml.Node]bool{}
}

// cmdError is a fieldError with the index of the command it belongs to.
type cmdError struct {
	cmd int
	*fieldError
}

// set plans one setField (command cmd). A plan that reads what a pending edit changes, or that
// fails, is made again after the pending edits are written, so its outcome is the one it would
// have on its own.
func (e *fileEditor) set(cmd int, p fieldPath, v jsonValue, create, allowAliased bool) *cmdError {
	plan, conflict, ferr := e.plan(cmd, p, v, create, allowAliased)
	if (conflict || ferr != nil) && len(e.pending.splices) > 0 {
		if err := e.flush(); err != nil {
			return err
		}
		plan, _, ferr = e.plan(cmd, p, v, create, allowAliased)
	}
	if ferr != nil {
		return &cmdError{cmd, ferr}
	}
	delta := 0
	for _, sp := range plan.splices {
		delta += len(sp.text) - (sp.end - sp.start)
	}
	if e.size+delta > e.lim.MaxFileBytes {
		return &cmdError{cmd, errorf(KindLimit, "the edited file would be %d bytes, at most %d are allowed", e.size+delta, e.lim.MaxFileBytes)}
	}
	e.size += delta
	e.pending.splices = append(e.pending.splices, plan.splices...)
	for n, x := range plan.expect {
		e.pending.expect[n] = x
	}
	for n, c := range plan.aliased {
		if _, ok := e.pending.aliased[n]; !ok {
			e.pending.aliased[n] = c
		}
	}
	for _, l := range plan.targets {
		e.edited[l.node()] = true
		for _, c := range l.chain {
			e.above[c] = true
		}
	}
	return nil
}

// plan resolves and plans one command against the current parse; conflict reports that the
// command reads something a pending edit changes.
func (e *fileEditor) plan(cmd int, p fieldPath, v jsonValue, create, allowAliased bool) (*editPlan, bool, *fieldError) {
	t, ferr := resolveFieldWith(e.f, p, create, e.work)
	if ferr != nil {
		return nil, false, ferr
	}
	if e.touches(t, p) {
		return nil, true, nil
	}
	plan := newPlan()
	if t.create != nil {
		ferr = e.f.planCreate(plan, t.create, p, v, allowAliased)
	} else {
		for _, l := range t.locs {
			if ferr = e.f.planSet(plan, l, v, allowAliased); ferr != nil {
				break
			}
		}
	}
	if ferr != nil {
		return nil, false, ferr
	}
	for i := range plan.splices {
		plan.splices[i].cmd = cmd
		for _, q := range e.pending.splices {
			if plan.splices[i].start < q.end && q.start < plan.splices[i].end || plan.splices[i].start == q.start {
				return nil, true, nil
			}
		}
	}
	for n, x := range plan.expect {
		x.cmd = cmd
		plan.expect[n] = x
	}
	for n := range plan.aliased {
		plan.aliased[n] = cmd
	}
	return plan, false, nil
}

// touches reports whether resolving or planning t read a node that a pending edit changes: a
// node walked through or tested by a filter, a target enclosing an edited node, or anything a
// filter may reach beyond its candidate ($ queries, aliases whose anchors may change).
func (e *fileEditor) touches(t target, p fieldPath) bool {
	if len(e.pending.splices) == 0 {
		return false
	}
	if t.readsRoot || !p.singular() && len(e.pending.aliased) > 0 {
		return true
	}
	for _, n := range t.visited {
		if e.edited[n] {
			return true
		}
	}
	for _, n := range t.tested {
		if e.edited[n] || e.above[n] {
			return true
		}
	}
	check := func(l loc) bool {
		if e.edited[l.node()] || e.above[l.node()] {
			return true
		}
		if r := resolveAlias(l.node()); r != nil && (e.edited[r] || e.above[r]) {
			return true // a no-op check reads through an alias
		}
		for _, c := range l.chain {
			if e.edited[c] {
				return true
			}
		}
		return false
	}
	if t.create != nil && check(t.create.at) {
		return true
	}
	for _, l := range t.locs {
		if check(l) {
			return true
		}
	}
	return false
}

// flush writes the pending splices, parses the result once and verifies every pending edit. When
// that fails for a batch, the first command that breaks it is found by bisecting the prefixes of
// the batch (a few more parses, not one per command), so the refusal names the command that
// would have failed had each been written alone.
func (e *fileEditor) flush() *cmdError {
	plan := e.pending
	if len(plan.splices) == 0 {
		return nil
	}
	nf, err := e.write(plan)
	if err != nil {
		var cmds []int
		for _, sp := range plan.splices {
			if len(cmds) == 0 || cmds[len(cmds)-1] != sp.cmd {
				cmds = append(cmds, sp.cmd)
			}
		}
		// Invariant: the prefix up to cmds[hi] fails (err is its error); up to cmds[lo-1] passes.
		lo, hi := 0, len(cmds)-1
		for lo < hi {
			mid := (lo + hi) / 2
			if _, merr := e.write(plan.upTo(cmds[mid])); merr != nil {
				hi, err = mid, merr
			} else {
				lo = mid + 1
			}
		}
		return err
	}
	e.f = nf
	e.reset()
	return nil
}

// upTo is the part of the plan made by commands up to cmd.
func (p *editPlan) upTo(cmd int) *editPlan {
	q := newPlan()
	for _, sp := range p.splices {
		if sp.cmd <= cmd {
			q.splices = append(q.splices, sp)
		}
	}
	for n, x := range p.expect {
		if x.cmd <= cmd {
			q.expect[n] = x
		}
	}
	for n, c := range p.aliased {
		if c <= cmd {
			q.aliased[n] = c
		}
	}
	return q
}

// write applies a plan to the current file, parses the result and verifies it.
func (e *fileEditor) write(plan *editPlan) (*yamlFile, *cmdError) {
	last := plan.splices[len(plan.splices)-1].cmd
	out, ferr := applySplices(e.f.src, plan.splices)
	if ferr != nil {
		return nil, &cmdError{last, ferr}
	}
	nf, perr := e.budget.parse(out, e.lim)
	if perr != nil {
		if perr.kind == KindLimit {
			return nil, &cmdError{last, perr}
		}
		return nil, &cmdError{last, errorf(KindInvalid, "refused: the edit would not leave valid YAML (%s); the surrounding YAML construct is not supported for editing", perr.msg)}
	}
	if line, o, ok := verifyEdit(e.f, nf, plan); !ok {
		if x, target := plan.expect[o]; target {
			return nil, &cmdError{x.cmd, errorf(KindInvalid, "refused: the value cannot be written at line %d so that YAML reads it back unchanged", line)}
		}
		return nil, &cmdError{last, errorf(KindInvalid, "refused: the edit cannot be made without changing other parts of the file near line %d; the YAML construct there is not supported for editing", line)}
	}
	return nf, nil
}

func applySplices(src []byte, sp []splice) ([]byte, *fieldError) {
	sp = append([]splice(nil), sp...)
	sort.SliceStable(sp, func(i, j int) bool { return sp[i].start < sp[j].start })
	var b bytes.Buffer
	b.Grow(len(src) + 64)
	prev := 0
	for _, s := range sp {
		if s.start < prev || s.end < s.start || s.end > len(src) {
			return nil, errorf(KindConflict, "the field matches nodes nested inside each other; they cannot all be set")
		}
		b.Write(src[prev:s.start])
		b.WriteString(s.text)
		prev = s.end
	}
	b.Write(src[prev:])
	return b.Bytes(), nil
}

func isEmptyNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && n.Value == "" && n.Style == 0
}

func isCollection(n *yaml.Node) bool {
	return n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode
}

func isBlockCollection(n *yaml.Node) bool {
	return isCollection(n) && n.Style&yaml.FlowStyle == 0
}

func typeClash(n *yaml.Node, v jsonValue) bool {
	if v.kind == jsonNull {
		return false // null clears any node
	}
	t := resolveAlias(n)
	if t == nil {
		return true
	}
	switch t.Kind {
	case yaml.MappingNode:
		return v.kind != jsonObject
	case yaml.SequenceNode:
		return v.kind != jsonArray
	}
	return v.isCollection() && t.ShortTag() != "!!null"
}

func (f *yamlFile) planSet(plan *editPlan, l loc, v jsonValue, allowAliased bool) *fieldError {
	n := l.node()
	if matchJSON(n, v) {
		return nil // the field already reads the value: leave its bytes alone
	}
	if n.Style&yaml.TaggedStyle != 0 {
		return errAt(KindInvalid, n, "the node has the explicit tag %s; tagged nodes are not edited", n.Tag)
	}
	if typeClash(n, v) {
		return errAt(KindConflict, n, "type clash: the field holds %s and the value is %s; set a field inside it or use a value of the same type (null clears any field)", kindName(n), v.typeName())
	}
	if err := f.checkAnchors(plan, l, allowAliased, true); err != nil {
		return err
	}
	start, end, err := f.valueSpan(l)
	if err != nil {
		return err
	}
	key := l.key()
	indent := f.parentIndent(l)
	var sp splice
	switch {
	case l.inFlow() || isCollection(n) && n.Style&yaml.FlowStyle != 0 && len(n.Content) > 0:
		// Keep flow style where the file chose it: args: [a, b] stays on its line.
		sp = splice{start: start, end: end, text: f.flowText(v, n)}
	case !v.isCollection() || len(v.items) == 0:
		blockIndent := indent + f.mapIndent
		if strings.TrimLeft(string(f.src[end:f.lineEnd(end)]), " \t") != "" {
			// A comment (or more) follows on the line: a block scalar would swallow it, so
			// the value stays in the scalar's place, double-quoted when it has line breaks.
			blockIndent = -1
		}
		text := f.inlineText(v, n, blockIndent)
		switch {
		case isBlockCollection(n) && key != nil:
			a, err := f.afterColon(l)
			if err != nil {
				return err
			}
			sp = splice{start: a, end: end, text: " " + text}
		case isEmptyNull(n):
			sp = splice{start: start, end: start, text: " " + text}
		default:
			sp = splice{start: start, end: end, text: text}
		}
	case isBlockCollection(n):
		sp = splice{start: start, end: end, text: f.blockText(v, n, f.column(start))}
	case key != nil:
		a, err := f.afterColon(l)
		if err != nil {
			return err
		}
		step := f.mapIndent
		if v.kind == jsonArray {
			step = f.seqIndent
		}
		col := f.column(f.nodeOffset(key)) + step
		block := f.nl + strings.Repeat(" ", col) + f.blockText(v, n, col)
		le := f.lineEnd(end)
		tail := strings.TrimLeft(string(f.src[end:le]), " \t")
		switch {
		case strings.HasPrefix(tail, "#"):
			// The line comment stays on the key's line, above the new block.
			sp = splice{start: a, end: le, text: " " + tail + block}
		case tail == "":
			sp = splice{start: a, end: end, text: block}
		default:
			return errAt(KindInvalid, n, "refused: text follows the value on its line, a block cannot be placed there")
		}
	case isEmptyNull(n):
		return errAt(KindInvalid, n, "refused: an empty sequence item cannot be replaced by a block; write null or a value there first")
	default:
		sp = splice{start: start, end: end, text: f.blockText(v, n, f.column(start))}
	}
	plan.splices = append(plan.splices, sp)
	vv := v
	plan.expect[n] = expectation{set: &vv}
	plan.targets = append(plan.targets, l)
	return nil
}

// checkAnchors refuses an edit that would change what an alias elsewhere reads: the node at l, or
// a node enclosing it, carries an anchor that is aliased (unless allowAliased says the request
// means to change every alias with it), or the node being replaced (replaces) defines an anchor
// that an alias outside it reads, which would be left dangling.
func (f *yamlFile) checkAnchors(plan *editPlan, l loc, allowAliased, replaces bool) *fieldError {
	if len(f.aliases) == 0 {
		return nil
	}
	n := l.node()
	path := append(append([]*yaml.Node(nil), l.chain[1:]...), n)
	for i := len(path) - 1; i >= 0; i-- {
		a := path[i]
		if a.Kind == yaml.AliasNode || len(f.aliases[a]) == 0 {
			continue
		}
		if allowAliased {
			plan.aliased[a] = 0
			continue
		}
		where := "the field"
		if a != n {
			where = fmt.Sprintf("the node enclosing the field at line %d", a.Line)
		}
		return errAt(KindConflict, n, "refused: %s carries the anchor &%s, which is also read through *%s at %s; the edit would change what is read there too. Set \"allowAliased\": true on the setField if that is meant, or edit those places instead",
			where, a.Anchor, a.Anchor, aliasLines(f.aliases[a]))
	}
	if !replaces || n.Kind == yaml.AliasNode || !f.holdsAnchor[n] {
		return nil
	}
	inside := map[*yaml.Node]bool{}
	var anchored []*yaml.Node
	var walk func(m *yaml.Node)
	walk = func(m *yaml.Node) {
		inside[m] = true
		if m != n && len(f.aliases[m]) > 0 {
			anchored = append(anchored, m)
		}
		for _, c := range m.Content {
			walk(c)
		}
	}
	walk(n)
	for _, a := range anchored {
		var outside []*yaml.Node
		for _, al := range f.aliases[a] {
			if !inside[al] {
				outside = append(outside, al)
			}
		}
		if len(outside) > 0 {
			return errAt(KindConflict, n, "refused: the value being replaced defines the anchor &%s (line %d), which is read through *%s at %s; replacing it would leave nothing for them to read. Edit the fields inside it instead",
				a.Anchor, a.Line, a.Anchor, aliasLines(outside))
		}
	}
	return nil
}

func aliasLines(as []*yaml.Node) string {
	lines := make([]string, 0, len(as))
	for i, a := range as {
		if i == 10 {
			lines = append(lines, fmt.Sprintf("and %d more", len(as)-i))
			break
		}
		lines = append(lines, strconv.Itoa(a.Line))
	}
	word := "line "
	if len(as) > 1 {
		word = "lines "
	}
	return word + strings.Join(lines, ", ")
}

// planCreate adds the missing keys of a path, as nested mappings ending in v.
func (f *yamlFile) planCreate(plan *editPlan, st *stop, p fieldPath, v jsonValue, allowAliased bool) *fieldError {
	var keys []string
	for _, s := range p.steps[st.step:] {
		keys = append(keys, s.key)
	}
	val := v
	for i := len(keys) - 1; i >= 1; i-- {
		val = jsonValue{kind: jsonObject, keys: []string{keys[i]}, items: []jsonValue{val}}
	}
	m := st.at.node()
	entry := jsonValue{kind: jsonObject, keys: []string{keys[0]}, items: []jsonValue{val}}
	if m.Kind != yaml.MappingNode || len(m.Content) == 0 {
		return f.planSet(plan, st.at, entry, allowAliased)
	}
	if m.Style&yaml.TaggedStyle != 0 {
		return errAt(KindInvalid, m, "the mapping has the explicit tag %s; tagged nodes are not edited", m.Tag)
	}
	if err := f.checkAnchors(plan, st.at, allowAliased, false); err != nil {
		return err
	}
	_, end, err := f.valueSpan(st.at.child(len(m.Content) - 1))
	if err != nil {
		return err
	}
	var sp splice
	if m.Style&yaml.FlowStyle != 0 {
		sp = splice{start: end, end: end, text: ", " + f.keyText(keys[0], true) + ": " + f.flowText(val, nil)}
	} else {
		col := f.column(f.contentStart(m))
		text := f.keyText(keys[0], false) + ":" + f.entryValue(val, nil, col)
		if i := bytes.IndexByte(f.src[end:], '\n'); i >= 0 {
			at := end + i + 1
			sp = splice{start: at, end: at, text: strings.Repeat(" ", col) + text + f.nl}
		} else {
			sp = splice{start: len(f.src), end: len(f.src), text: f.nl + strings.Repeat(" ", col) + text}
		}
	}
	plan.splices = append(plan.splices, sp)
	plan.expect[m] = expectation{appendKey: keys[0], appendVal: &val}
	plan.targets = append(plan.targets, st.at)
	return nil
}

// parentIndent is the column of the entries of the collection holding the node (-1 at top level);
// block scalars and continuation lines must be indented further.
func (f *yamlFile) parentIndent(l loc) int {
	if k := l.key(); k != nil {
		return f.column(f.nodeOffset(k))
	}
	if p := l.parent(); p.Kind == yaml.SequenceNode {
		return f.column(f.contentStart(p))
	}
	return -1
}

// contentStart is where a collection's first entry (or opening bracket) begins, after any anchor.
func (f *yamlFile) contentStart(n *yaml.Node) int {
	off := f.nodeOffset(n)
	if off < len(f.src) && (f.src[off] == '&' || f.src[off] == '!') {
		off = f.skipBlank(f.propsEnd(off))
	}
	return off
}

// propsEnd skips an anchor or tag token and the spaces after it.
func (f *yamlFile) propsEnd(off int) int {
	for off < len(f.src) && (f.src[off] == '&' || f.src[off] == '!') {
		for off < len(f.src) && !isSpaceOrBreak(f.src[off]) && strings.IndexByte(",[]{}", f.src[off]) < 0 {
			off++
		}
		for off < len(f.src) && (f.src[off] == ' ' || f.src[off] == '\t') {
			off++
		}
	}
	return off
}

func isSpaceOrBreak(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// skipBlank skips white space, line breaks and comments.
func (f *yamlFile) skipBlank(off int) int {
	for off < len(f.src) {
		switch c := f.src[off]; {
		case isSpaceOrBreak(c):
			off++
		case c == '#':
			for off < len(f.src) && f.src[off] != '\n' {
				off++
			}
		default:
			return off
		}
	}
	return off
}

// afterColon is the offset just after the ':' that ends the key of a mapping value.
func (f *yamlFile) afterColon(l loc) (int, *fieldError) {
	key := l.key()
	kl := loc{chain: l.chain, idx: l.idx - 1}
	if key.Kind != yaml.ScalarNode || isEmptyNull(key) || key.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return 0, errAt(KindInvalid, key, "refused: complex mapping keys are not supported for editing")
	}
	_, end, err := f.valueSpan(kl)
	if err != nil {
		return 0, err
	}
	for end < len(f.src) && (f.src[end] == ' ' || f.src[end] == '\t') {
		end++
	}
	if end >= len(f.src) || f.src[end] != ':' {
		return 0, errAt(KindInvalid, key, "refused: cannot find the ':' after key %q", key.Value)
	}
	return end + 1, nil
}

// valueSpan returns the byte span of the node at l, without its anchor and its comments.
func (f *yamlFile) valueSpan(l loc) (int, int, *fieldError) {
	n := l.node()
	off := f.nodeOffset(n)
	switch n.Kind {
	case yaml.AliasNode:
		if off >= len(f.src) || f.src[off] != '*' {
			return 0, 0, errAt(KindInvalid, n, "refused: cannot locate alias *%s in the text", n.Value)
		}
		return off, off + 1 + len(n.Value), nil
	case yaml.ScalarNode:
		if isEmptyNull(n) {
			if l.key() == nil {
				return off, off, nil
			}
			a, err := f.afterColon(l)
			return a, a, err
		}
		if n.Anchor != "" || n.Style&yaml.TaggedStyle != 0 {
			off = f.propsEnd(off)
		}
		end, err := f.scalarEnd(n, off, l)
		return off, end, err
	case yaml.MappingNode, yaml.SequenceNode:
		start := f.contentStart(n)
		if n.Style&yaml.FlowStyle != 0 {
			end, err := f.flowEnd(n, l, start)
			return start, end, err
		}
		if len(n.Content) == 0 {
			return 0, 0, errAt(KindInvalid, n, "refused: cannot locate an empty block collection")
		}
		_, end, err := f.valueSpan(l.child(len(n.Content) - 1))
		return start, end, err
	}
	return 0, 0, errAt(KindInvalid, n, "refused: unsupported node")
}

func (f *yamlFile) flowEnd(n *yaml.Node, l loc, start int) (int, *fieldError) {
	open, closing := byte('['), byte(']')
	if n.Kind == yaml.MappingNode {
		open, closing = '{', '}'
	}
	if start >= len(f.src) || f.src[start] != open {
		return 0, errAt(KindInvalid, n, "refused: cannot locate the flow collection in the text")
	}
	j := start + 1
	if len(n.Content) > 0 {
		_, e, err := f.valueSpan(l.child(len(n.Content) - 1))
		if err != nil {
			return 0, err
		}
		j = e
	}
	j = f.skipBlank(j)
	if j < len(f.src) && f.src[j] == ',' {
		j = f.skipBlank(j + 1)
	}
	if j >= len(f.src) || f.src[j] != closing {
		return 0, errAt(KindInvalid, n, "refused: cannot find the end of the flow collection")
	}
	return j + 1, nil
}

func (f *yamlFile) scalarEnd(n *yaml.Node, off int, l loc) (int, *fieldError) {
	src := f.src
	if off >= len(src) {
		return 0, errAt(KindInvalid, n, "refused: cannot locate the value in the text")
	}
	switch {
	case n.Style&yaml.DoubleQuotedStyle != 0:
		if src[off] != '"' {
			break
		}
		for j := off + 1; j < len(src); j++ {
			switch src[j] {
			case '\\':
				j++
			case '"':
				return j + 1, nil
			}
		}
	case n.Style&yaml.SingleQuotedStyle != 0:
		if src[off] != '\'' {
			break
		}
		for j := off + 1; j < len(src); j++ {
			if src[j] == '\'' {
				if j+1 < len(src) && src[j+1] == '\'' {
					j++
					continue
				}
				return j + 1, nil
			}
		}
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		if src[off] != '|' && src[off] != '>' {
			break
		}
		return f.blockScalarEnd(n, off, f.parentIndent(l))
	default:
		if end, ok := f.plainEnd(off, n.Value, l.inFlow(), f.parentIndent(l)); ok {
			return end, nil
		}
		return 0, errAt(KindInvalid, n, "refused: cannot find the end of the plain scalar")
	}
	return 0, errAt(KindInvalid, n, "refused: cannot locate the quoted or block scalar in the text")
}

// plainLine returns the end of the plain scalar text starting at off on its line.
func (f *yamlFile) plainLine(off int, inFlow bool) int {
	src := f.src
	j := off
	for ; j < len(src); j++ {
		c := src[j]
		if c == '\n' || c == '\r' {
			break
		}
		if c == '#' && j > off && (src[j-1] == ' ' || src[j-1] == '\t') {
			break
		}
		if c == ':' && (j+1 == len(src) || isSpaceOrBreak(src[j+1]) || inFlow && strings.IndexByte(",[]{}", src[j+1]) >= 0) {
			break
		}
		if inFlow && strings.IndexByte(",[]{}", c) >= 0 {
			break
		}
	}
	for j > off && (src[j-1] == ' ' || src[j-1] == '\t') {
		j--
	}
	return j
}

// plainEnd finds the end of a plain scalar, following continuation lines by folding them the way
// YAML does until the text equals the parsed value.
func (f *yamlFile) plainEnd(off int, value string, inFlow bool, parentIndent int) (int, bool) {
	end := f.plainLine(off, inFlow)
	folded := string(f.src[off:end])
	if folded == value {
		return end, true
	}
	if !strings.HasPrefix(value, folded) {
		return 0, false
	}
	blank := 0
	pos := f.lineEnd(off)
	for pos < len(f.src) && len(folded) < len(value) {
		if f.src[pos] == '\r' {
			pos++
		}
		pos++ // '\n'
		le := f.lineEnd(pos)
		cs := pos
		for cs < le && (f.src[cs] == ' ' || f.src[cs] == '\t') {
			cs++
		}
		if cs == le {
			blank++
			pos = le
			continue
		}
		if cs-pos <= parentIndent && !inFlow || f.src[cs] == '#' {
			return 0, false
		}
		ce := f.plainLine(cs, inFlow)
		if ce == cs {
			return 0, false
		}
		if blank > 0 {
			folded += strings.Repeat("\n", blank)
		} else {
			folded += " "
		}
		blank = 0
		folded += string(f.src[cs:ce])
		if folded == value {
			return ce, true
		}
		if !strings.HasPrefix(value, folded) || ce < le {
			return 0, false
		}
		pos = le
	}
	return 0, false
}

// blockScalarEnd finds the last content line of a literal or folded scalar. Lines belong to it
// while they are blank or indented at least as far as its first content line (and further than
// the parent); trailing blank lines stay outside the span.
func (f *yamlFile) blockScalarEnd(n *yaml.Node, off, parentIndent int) (int, *fieldError) {
	j := off + 1
	for j < len(f.src) && (f.src[j] == '+' || f.src[j] == '-' || f.src[j] >= '0' && f.src[j] <= '9') {
		if f.src[j] >= '0' && f.src[j] <= '9' {
			return 0, errAt(KindInvalid, n, "refused: block scalars with an explicit indentation indicator are not supported for editing")
		}
		j++
	}
	end := j
	contentIndent := -1
	pos := f.lineEnd(off)
	for pos < len(f.src) {
		if f.src[pos] == '\r' {
			pos++
		}
		pos++
		le := f.lineEnd(pos)
		ind := 0
		for pos+ind < le && f.src[pos+ind] == ' ' {
			ind++
		}
		if pos+ind == le {
			pos = le
			continue
		}
		if contentIndent < 0 {
			if ind <= parentIndent {
				break
			}
			contentIndent = ind
		} else if ind < contentIndent {
			break
		}
		end = le
		pos = le
	}
	return end, nil
}

// Text generation. Strings keep the quoting of the scalar they replace; otherwise they are plain
// when that reads back as the same string under both YAML 1.1 (Kubernetes, Helm) and 1.2 rules,
// and double-quoted when not. Maps and lists become block YAML indented like the file.

func (f *yamlFile) inlineText(v jsonValue, old *yaml.Node, literalIndent int) string {
	switch {
	case v.kind == jsonObject && len(v.items) == 0:
		return "{}"
	case v.kind == jsonArray && len(v.items) == 0:
		return "[]"
	}
	return f.scalarText(v, old, false, literalIndent)
}

func (f *yamlFile) scalarText(v jsonValue, old *yaml.Node, inFlow bool, literalIndent int) string {
	switch v.kind {
	case jsonNull:
		return "null"
	case jsonBool, jsonNumber:
		return v.text
	}
	s := v.text
	var style yaml.Style
	if old != nil && old.Kind == yaml.ScalarNode && old.ShortTag() == "!!str" {
		style = old.Style
	}
	switch {
	case style&yaml.DoubleQuotedStyle != 0:
		return doubleQuote(s)
	case strings.Contains(s, "\n") && !inFlow && literalIndent >= 0 && literalOK(s):
		return f.literal(s, literalIndent)
	case style&yaml.SingleQuotedStyle != 0 && singleOK(s):
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	case plainOK(s, inFlow):
		return s
	}
	return doubleQuote(s)
}

func (f *yamlFile) literal(s string, indent int) string {
	chomp := "-"
	if strings.HasSuffix(s, "\n") {
		chomp, s = "", s[:len(s)-1]
	}
	var b strings.Builder
	b.WriteString("|" + chomp)
	pad := strings.Repeat(" ", max(indent, 1))
	for _, line := range strings.Split(s, "\n") {
		b.WriteString(f.nl)
		if line != "" {
			b.WriteString(pad + line)
		}
	}
	return b.String()
}

func (f *yamlFile) keyText(k string, inFlow bool) string {
	if plainOK(k, inFlow) {
		return k
	}
	return doubleQuote(k)
}

func (f *yamlFile) flowText(v jsonValue, old *yaml.Node) string {
	switch v.kind {
	case jsonObject:
		parts := make([]string, len(v.keys))
		for i, k := range v.keys {
			parts[i] = f.keyText(k, true) + ": " + f.flowText(v.items[i], styleSource(old, i, k))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case jsonArray:
		parts := make([]string, len(v.items))
		for i, item := range v.items {
			parts[i] = f.flowText(item, styleSource(old, i, ""))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return f.scalarText(v, old, true, 0)
}

// styleSource picks the old node whose quoting a new item should copy: the value of the same key
// in a mapping, the item at the same index in a sequence (or the last one, for appended items).
func styleSource(old *yaml.Node, i int, key string) *yaml.Node {
	if old == nil || len(old.Content) == 0 {
		return nil
	}
	switch old.Kind {
	case yaml.MappingNode:
		for j := 0; j+1 < len(old.Content); j += 2 {
			if old.Content[j].Value == key {
				return old.Content[j+1]
			}
		}
	case yaml.SequenceNode:
		return old.Content[min(i, len(old.Content)-1)]
	}
	return nil
}

// blockText renders a non-empty map or list whose first line starts at column col (the caller has
// placed it there); later lines carry their own indentation. Scalars copy the quoting of the
// matching node of old, the collection being replaced (nil when there is none).
func (f *yamlFile) blockText(v jsonValue, old *yaml.Node, col int) string {
	var b strings.Builder
	pad := strings.Repeat(" ", col)
	if v.kind == jsonObject {
		for i, k := range v.keys {
			if i > 0 {
				b.WriteString(f.nl + pad)
			}
			b.WriteString(f.keyText(k, false) + ":" + f.entryValue(v.items[i], styleSource(old, i, k), col))
		}
		return b.String()
	}
	for i, item := range v.items {
		if i > 0 {
			b.WriteString(f.nl + pad)
		}
		b.WriteString("- ")
		src := styleSource(old, i, "")
		if item.isCollection() && len(item.items) > 0 {
			b.WriteString(f.blockText(item, src, col+2))
		} else {
			b.WriteString(f.inlineText(item, src, col+2))
		}
	}
	return b.String()
}

// entryValue renders what follows "key:" for a key at column col.
func (f *yamlFile) entryValue(v jsonValue, old *yaml.Node, col int) string {
	if v.isCollection() && len(v.items) > 0 {
		step := f.mapIndent
		if v.kind == jsonArray {
			step = f.seqIndent
		}
		return f.nl + strings.Repeat(" ", col+step) + f.blockText(v, old, col+step)
	}
	return " " + f.inlineText(v, old, col+f.mapIndent)
}

func doubleQuote(s string) string {
	// strconv.Quote escapes are all valid YAML escapes, and it escapes U+0085, U+2028 and
	// U+2029, which YAML 1.1 parsers would read as line breaks.
	return strconv.Quote(s)
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func singleOK(s string) bool { return printable(s) }

func literalOK(s string) bool {
	if strings.HasSuffix(s, "\n\n") || strings.ContainsRune(s, '\r') {
		return false
	}
	content := false
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if line == "" {
			continue
		}
		if strings.TrimLeft(line, " \t") == "" || !printable(strings.ReplaceAll(line, "\t", " ")) {
			return false
		}
		if !content && (line[0] == ' ' || line[0] == '\t') {
			return false // would need an indentation indicator
		}
		content = true
	}
	return content
}

// yaml11Special matches plain scalars that YAML 1.1 parsers (go-yaml v2, sigs.k8s.io/yaml, PyYAML)
// read as booleans, numbers or nulls although YAML 1.2 reads some of them as strings.
var yaml11Special = regexp.MustCompile(`^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|~|null|Null|NULL|` +
	`[-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+|` +
	`[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|=|<<)$`)

// plainOK reports whether s can be written without quotes and read back as the same string.
func plainOK(s string, inFlow bool) bool {
	if s == "" || s != strings.TrimSpace(s) || !printable(s) {
		return false
	}
	switch c := s[0]; {
	case strings.IndexByte("?:,[]{}#&*!|>'\"%@`", c) >= 0:
		return false
	case c == '-' && (len(s) == 1 || s[1] == ' '):
		return false
	}
	if strings.Contains(s, ": ") || strings.Contains(s, " #") || strings.HasSuffix(s, ":") {
		return false
	}
	if inFlow && strings.ContainsAny(s, ",[]{}:") {
		return false
	}
	if yaml11Special.MatchString(s) {
		return false
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil || len(n.Content) != 1 {
		return false
	}
	c := n.Content[0]
	return c.Kind == yaml.ScalarNode && c.Style == 0 && c.ShortTag() == "!!str" && c.Value == s
}

// matchJSON reports whether node n reads exactly the value v, as data: aliases are followed,
// numbers compare by value within their type (integer or not), booleans and nulls by meaning.
func matchJSON(n *yaml.Node, v jsonValue) bool {
	n = resolveAlias(n)
	if n == nil {
		return false
	}
	switch v.kind {
	case jsonObject:
		if n.Kind != yaml.MappingNode || len(n.Content) != 2*len(v.keys) {
			return false
		}
		for i, k := range v.keys {
			kn := resolveAlias(n.Content[2*i])
			if kn == nil || kn.Kind != yaml.ScalarNode || kn.ShortTag() != "!!str" || kn.Value != k || !matchJSON(n.Content[2*i+1], v.items[i]) {
				return false
			}
		}
		return true
	case jsonArray:
		if n.Kind != yaml.SequenceNode || len(n.Content) != len(v.items) {
			return false
		}
		for i := range v.items {
			if !matchJSON(n.Content[i], v.items[i]) {
				return false
			}
		}
		return true
	}
	if n.Kind != yaml.ScalarNode {
		return false
	}
	switch tag := n.ShortTag(); v.kind {
	case jsonNull:
		return tag == "!!null"
	case jsonBool:
		var b bool
		return tag == "!!bool" && n.Decode(&b) == nil && strconv.FormatBool(b) == v.text
	case jsonNumber:
		return numberMatches(n, tag, v.text)
	default:
		return tag == "!!str" && n.Value == v.text
	}
}

// numberMatches compares a YAML number with a JSON number literal: an integer literal matches an
// !!int of the same value, any other literal a !!float of the same value.
func numberMatches(n *yaml.Node, tag, text string) bool {
	if n.Value == text && (tag == "!!int" || tag == "!!float") {
		return true
	}
	if !strings.ContainsAny(text, ".eE") {
		if tag != "!!int" {
			return false
		}
		var got, want int64
		if n.Decode(&got) != nil {
			return false
		}
		want, err := strconv.ParseInt(text, 10, 64)
		return err == nil && got == want
	}
	if tag != "!!float" {
		return false
	}
	var got float64
	want, err := strconv.ParseFloat(text, 64)
	return err == nil && n.Decode(&got) == nil && got == want
}

// verifyEdit walks the old and new trees together: edited nodes must hold what was asked, every
// other node must be unchanged in kind, tag, value, anchor and style, and every alias must read
// the same data as before unless its anchor is one the request allowed to change. On a
// difference it returns its line and the old node there.
func verifyEdit(old, nf *yamlFile, plan *editPlan) (int, *yaml.Node, bool) {
	if len(old.docs) != len(nf.docs) {
		return 1, nil, false
	}
	// Alias expansion is bounded by Limits.MaxAliasExpansion, so this walk needs no budget of its own.
	ctx := newEvalCtx(nil, newSelectBudget(math.MaxInt))
	for i := range old.docs {
		if line, o, ok := sameNode(ctx, old.docs[i], nf.docs[i], plan); !ok {
			return line, o, false
		}
	}
	return 0, nil, true
}

func sameNode(ctx *evalCtx, o, n *yaml.Node, plan *editPlan) (int, *yaml.Node, bool) {
	e, edited := plan.expect[o]
	if edited && e.set != nil {
		return o.Line, o, o.Anchor == n.Anchor && matchJSON(n, *e.set)
	}
	extra := 0
	if edited {
		extra = 2
	}
	if o.Kind != n.Kind || o.Value != n.Value || o.Anchor != n.Anchor || o.ShortTag() != n.ShortTag() ||
		o.Style != n.Style || len(o.Content)+extra != len(n.Content) {
		return o.Line, o, false
	}
	if _, allowed := plan.aliased[o.Alias]; o.Kind == yaml.AliasNode && !allowed && !nodesEqual(ctx, o.Alias, n.Alias) {
		return o.Line, o, false
	}
	for i, c := range o.Content {
		if line, bad, ok := sameNode(ctx, c, n.Content[i], plan); !ok {
			return line, bad, false
		}
	}
	if edited {
		k, v := n.Content[len(o.Content)], n.Content[len(o.Content)+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" || k.Value != e.appendKey || !matchJSON(v, *e.appendVal) {
			return o.Line, o, false
		}
	}
	return 0, nil, true
}
