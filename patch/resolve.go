package patch

import (
	"fmt"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// loc is where a node sits: its ancestors from the document node down to its parent, and its index
// in the parent's Content. Edits need the ancestors for indentation and flow context.
type loc struct {
	chain []*yaml.Node
	idx   int
}

func (l loc) parent() *yaml.Node { return l.chain[len(l.chain)-1] }
func (l loc) node() *yaml.Node   { return l.parent().Content[l.idx] }

func (l loc) child(i int) loc {
	chain := make([]*yaml.Node, len(l.chain), len(l.chain)+1)
	copy(chain, l.chain)
	return loc{chain: append(chain, l.node()), idx: i}
}

// key is the key node when the node is a mapping value.
func (l loc) key() *yaml.Node {
	if p := l.parent(); p.Kind == yaml.MappingNode && l.idx%2 == 1 {
		return p.Content[l.idx-1]
	}
	return nil
}

// inFlow reports whether the node sits inside a flow collection, where only flow text may go.
func (l loc) inFlow() bool {
	for _, n := range l.chain {
		if n.Style&yaml.FlowStyle != 0 && (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) {
			return true
		}
	}
	return false
}

// stop says where a singular path left the tree, for create.
type stop struct {
	at        loc // the mapping (or null) that lacks steps[step]
	step      int
	creatable bool
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!str":
			return "a string"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a scalar"
	}
	return "a document"
}

func docRoot(doc *yaml.Node) (loc, bool) {
	if len(doc.Content) == 0 {
		return loc{}, false
	}
	return loc{chain: []*yaml.Node{doc}, idx: 0}, true
}

func isMergeKey(k *yaml.Node) bool { return k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" }

// resolveOne walks a singular path (keys and indexes) in one document; visit records the nodes
// it reads.
func resolveOne(doc *yaml.Node, p fieldPath, visit *[]*yaml.Node, work *selectBudget) (loc, *stop, *fieldError) {
	ctx := newEvalCtx(nil, work)
	cur, ok := docRoot(doc)
	if !ok {
		return loc{}, nil, errorf(KindNotFound, "the document is empty")
	}
	for i, st := range p.steps {
		n := cur.node()
		*visit = append(*visit, n)
		if !ctx.spend(1 + len(n.Content)) {
			return loc{}, nil, ctx.err
		}
		at := p.prefix(i)
		switch n.Kind {
		case yaml.AliasNode:
			return loc{}, nil, errAt(KindInvalid, n, "%s is the alias *%s; edit the anchored node &%s instead, editing through an alias would change every place that uses it", at, n.Value, n.Value)
		case yaml.MappingNode:
			if st.kind == stepIndex {
				return loc{}, nil, errAt(KindConflict, n, "type clash: %s is a mapping, not a sequence, so index [%d] does not apply", at, st.index)
			}
			var found []int
			for j := 0; j+1 < len(n.Content); j += 2 {
				if k := n.Content[j]; k.Kind == yaml.ScalarNode && k.Value == st.key && !isMergeKey(k) {
					found = append(found, j+1)
				}
			}
			switch len(found) {
			case 0:
				msg := fmt.Sprintf("no match: key %q not found in the mapping at %s", st.key, at)
				if hasMergeKey(n) {
					msg += " (keys merged in with << are not edited; add the key with create: true to override)"
				}
				return loc{}, &stop{at: cur, step: i, creatable: true}, errAt(KindNotFound, n, "%s", msg)
			case 1:
				cur = cur.child(found[0])
			default:
				return loc{}, nil, errAt(KindConflict, n, "key %q appears %d times in the mapping at %s", st.key, len(found), at)
			}
		case yaml.SequenceNode:
			if st.kind == stepKey && !st.digits {
				return loc{}, nil, errAt(KindConflict, n, "type clash: %s is a sequence, not a mapping, so key %q does not apply (use an index or a filter)", at, st.key)
			}
			j := st.index
			if j < 0 {
				j += len(n.Content)
			}
			if j < 0 || j >= len(n.Content) {
				return loc{}, &stop{at: cur, step: i}, errAt(KindNotFound, n, "no match: index %d is out of range, the sequence at %s has %d items", st.index, at, len(n.Content))
			}
			cur = cur.child(j)
		default:
			if n.ShortTag() == "!!null" {
				return loc{}, &stop{at: cur, step: i, creatable: st.kind == stepKey}, errAt(KindNotFound, n, "no match: %s is null", at)
			}
			return loc{}, nil, errAt(KindConflict, n, "type clash: %s is %s, not a mapping or sequence, so %s does not apply", at, kindName(n), strings.TrimPrefix(st.String(), "."))
		}
	}
	return cur, nil, nil
}

func hasMergeKey(m *yaml.Node) bool {
	for j := 0; j+1 < len(m.Content); j += 2 {
		if isMergeKey(m.Content[j]) {
			return true
		}
	}
	return false
}

// resolveAll walks a path with wildcards or filters in one document and returns every match in
// document order. Branches where a step does not apply simply match nothing, as in JSONPath.
// It records in t the nodes it walks through and the nodes filters test.
func resolveAll(doc *yaml.Node, p fieldPath, t *target, work *selectBudget) ([]loc, *fieldError) {
	root, ok := docRoot(doc)
	if !ok {
		return nil, nil
	}
	front := []loc{root}
	ctx := newEvalCtx(root.node(), work)
	defer func() { t.readsRoot = t.readsRoot || ctx.usedRoot }()
	for i, st := range p.steps {
		var next []loc
		for _, l := range front {
			n := l.node()
			t.visited = append(t.visited, n)
			if !ctx.spend(1 + len(n.Content)) {
				return nil, ctx.err
			}
			if n.Kind == yaml.AliasNode {
				return nil, errAt(KindInvalid, n, "a match of %s is the alias *%s; edit the anchored node &%s instead, editing through an alias would change every place that uses it", p.prefix(i), n.Value, n.Value)
			}
			switch {
			case n.Kind == yaml.MappingNode:
				for j := 0; j+1 < len(n.Content); j += 2 {
					k, v := n.Content[j], n.Content[j+1]
					if isMergeKey(k) {
						continue
					}
					switch st.kind {
					case stepKey:
						if k.Kind == yaml.ScalarNode && k.Value == st.key {
							next = append(next, l.child(j+1))
						}
					case stepWildcard:
						next = append(next, l.child(j+1))
					case stepFilter:
						t.tested = append(t.tested, v)
						if st.filter.eval(ctx, v) {
							next = append(next, l.child(j+1))
						}
					}
				}
			case n.Kind == yaml.SequenceNode:
				switch {
				case st.kind == stepIndex || st.kind == stepKey && st.digits:
					j := st.index
					if j < 0 {
						j += len(n.Content)
					}
					if j >= 0 && j < len(n.Content) {
						next = append(next, l.child(j))
					}
				case st.kind == stepWildcard:
					for j := range n.Content {
						next = append(next, l.child(j))
					}
				case st.kind == stepFilter:
					for j, item := range n.Content {
						t.tested = append(t.tested, item)
						if st.filter.eval(ctx, item) {
							next = append(next, l.child(j))
						}
					}
				}
			}
		}
		if ctx.err != nil {
			return nil, ctx.err
		}
		if len(next) == 0 {
			return nil, errorf(KindNotFound, "no match: nothing matches %s at %s", strings.TrimPrefix(st.String(), "."), p.prefix(i))
		}
		front = next
	}
	return front, nil
}

// target is the outcome of resolving a field in a file: the nodes to set, or where to create.
type target struct {
	locs   []loc
	create *stop
	// What resolving read, so that a batch of edits knows when a command depends on another.
	visited   []*yaml.Node // walked through
	tested    []*yaml.Node // tested by a filter (with their subtrees)
	readsRoot bool         // a filter read a $ query
}

// resolveField applies the match rules across the documents of a file:
//   - a path of keys and indexes names exactly one node: it may match in one document only
//     (so one Deployment of a multi-document file can be addressed), more is an error;
//   - a path with a wildcard or filter sets every node it matches, in every document, and must
//     match at least one;
//   - create applies to a path of keys (after existing keys and indexes) in a single-document file.
func resolveField(f *yamlFile, p fieldPath, create bool) (target, *fieldError) {
	return resolveFieldWith(f, p, create, newSelectBudget(DefaultLimits().MaxSelectNodes))
}

// resolveFieldWith is resolveField spending the selection budget of a request.
func resolveFieldWith(f *yamlFile, p fieldPath, create bool, work *selectBudget) (target, *fieldError) {
	if len(f.docs) == 0 {
		return target{}, errorf(KindNotFound, "no match: the file holds no YAML document")
	}
	if !p.singular() {
		var t target
		var firstErr *fieldError
		for _, d := range f.docs {
			ls, err := resolveAll(d, p, &t, work)
			if err != nil && err.kind != KindNotFound {
				return target{}, err
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			t.locs = append(t.locs, ls...)
		}
		if len(t.locs) == 0 {
			if firstErr == nil {
				firstErr = errorf(KindNotFound, "no match")
			}
			return target{}, firstErr
		}
		return t, nil
	}
	var visited []*yaml.Node
	var found []loc
	var foundDocs []string
	var errs []*fieldError
	var stops []*stop
	for i, d := range f.docs {
		l, st, err := resolveOne(d, p, &visited, work)
		if err != nil && err.kind == KindLimit {
			return target{}, err
		}
		if err != nil {
			errs = append(errs, err)
			stops = append(stops, st)
			continue
		}
		found = append(found, l)
		foundDocs = append(foundDocs, fmt.Sprint(i+1))
	}
	switch {
	case len(found) == 1:
		return target{locs: found, visited: visited}, nil
	case len(found) > 1:
		return target{}, errorf(KindConflict, "multiple matches: the field names one node but matches in documents %s of the file; use a filter to choose", strings.Join(foundDocs, ", "))
	case len(f.docs) > 1:
		if create {
			return target{}, errorf(KindInvalid, "no document of the file has the field, and create cannot choose one of its %d documents", len(f.docs))
		}
		return target{}, errorf(KindNotFound, "no match in any of the %d documents; first document: %s", len(f.docs), errs[0].msg)
	}
	err, st := errs[0], stops[0]
	if !create || st == nil {
		return target{}, err
	}
	if !st.creatable {
		return target{}, errorf(err.kind, "%s; create adds mapping keys only", err.msg)
	}
	for _, s := range p.steps[st.step:] {
		if s.kind != stepKey {
			return target{}, errorf(err.kind, "%s; create adds mapping keys only, not sequence items", err.msg)
		}
	}
	return target{create: st, visited: visited}, nil
}
