package patch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// yamlFile is one parsed file: the original bytes, the node trees of its documents, and what the
// editor needs to turn node positions into byte offsets and to indent new text like the file does.
type yamlFile struct {
	src        []byte
	docs       []*yaml.Node
	lineStarts []int
	nl         string
	mapIndent  int // columns a nested mapping is indented by
	seqIndent  int // columns a block sequence's "-" sits right of its key (0: compact style)
	// aliases lists, for each anchored node that is aliased, the alias nodes that read it.
	aliases map[*yaml.Node][]*yaml.Node
	// holdsAnchor marks the nodes with an aliased anchor somewhere below them.
	holdsAnchor map[*yaml.Node]bool
}

func parseYAML(src []byte, lim Limits) (*yamlFile, *fieldError) {
	if len(src) > lim.MaxFileBytes {
		return nil, errorf(KindLimit, "file is %d bytes, at most %d are allowed", len(src), lim.MaxFileBytes)
	}
	for i, c := range src {
		// YAML reads a lone CR as a line break; positions would not map to lines of src.
		if c == '\r' && (i+1 == len(src) || src[i+1] != '\n') {
			return nil, errorf(KindInvalid, "file has a carriage return that is not part of a CRLF line break (byte %d); such files are not edited", i)
		}
	}
	docs, ferr := decodeDocuments(src, lim.MaxDocuments)
	if ferr != nil {
		return nil, ferr
	}
	if err := checkAliasExpansion(docs, lim.MaxAliasExpansion); err != nil {
		return nil, err
	}
	f := &yamlFile{src: src, docs: docs, nl: "\n", lineStarts: []int{0}}
	if bytes.HasPrefix(src, []byte("\ufeff")) {
		f.lineStarts[0] = 3 // the parser does not count a byte order mark as a column
	}
	for i, c := range src {
		if c == '\n' {
			f.lineStarts = append(f.lineStarts, i+1)
		}
	}
	if i := bytes.IndexByte(src, '\n'); i > 0 && src[i-1] == '\r' {
		f.nl = "\r\n"
	}
	f.detectIndent()
	f.indexAliases()
	return f, nil
}

func (f *yamlFile) indexAliases() {
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			if f.aliases == nil {
				f.aliases = map[*yaml.Node][]*yaml.Node{}
			}
			f.aliases[n.Alias] = append(f.aliases[n.Alias], n)
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	for _, d := range f.docs {
		walk(d)
	}
	if len(f.aliases) == 0 {
		return
	}
	// Mark the nodes that hold an aliased anchor below them, so an edit checks the subtree it
	// replaces only when there is something to find.
	f.holdsAnchor = map[*yaml.Node]bool{}
	var stack []*yaml.Node
	var mark func(n *yaml.Node)
	mark = func(n *yaml.Node) {
		if len(f.aliases[n]) > 0 {
			for i := len(stack) - 1; i >= 0 && !f.holdsAnchor[stack[i]]; i-- {
				f.holdsAnchor[stack[i]] = true
			}
		}
		stack = append(stack, n)
		for _, c := range n.Content {
			mark(c)
		}
		stack = stack[:len(stack)-1]
	}
	for _, d := range f.docs {
		mark(d)
	}
}

// decodeDocuments parses every document into node trees; nothing is decoded into Go values, so
// aliases stay unexpanded here.
func decodeDocuments(src []byte, maxDocs int) (docs []*yaml.Node, ferr *fieldError) {
	defer func() {
		// The parser has panicked on malformed input in past releases; a bad file must answer
		// an error, never take the plugin down.
		if r := recover(); r != nil {
			docs, ferr = nil, errorf(KindInvalid, "file is not valid YAML: the parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(src))
	for {
		n := new(yaml.Node)
		err := dec.Decode(n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, errorf(KindInvalid, "file is not valid YAML: %s", yamlErrorText(err))
		}
		if len(docs) == maxDocs {
			return nil, errorf(KindLimit, "file has more than %d YAML documents", maxDocs)
		}
		docs = append(docs, n)
	}
}

func yamlErrorText(err error) string {
	s := err.Error()
	if len(s) > 6 && s[:6] == "yaml: " {
		return s[6:]
	}
	return s
}

// checkAliasExpansion sums, over every alias in the file, the size of the subtree it stands for
// (itself expanded), memoized per node and saturated at the limit, so a billion-laughs file costs
// time linear in its size and is refused before anything expands it.
func checkAliasExpansion(docs []*yaml.Node, limit int) *fieldError {
	const inProgress = -1
	memo := map[*yaml.Node]int{}
	var expanded func(n *yaml.Node) (int, bool)
	expanded = func(n *yaml.Node) (int, bool) {
		if n == nil {
			return 0, true
		}
		if s, ok := memo[n]; ok {
			return s, s != inProgress
		}
		memo[n] = inProgress
		total := 1
		if n.Kind == yaml.AliasNode {
			s, ok := expanded(n.Alias)
			if !ok {
				return 0, false
			}
			total = s
		}
		for _, c := range n.Content {
			s, ok := expanded(c)
			if !ok {
				return 0, false
			}
			total = min(total+s, limit+1)
		}
		memo[n] = total
		return total, true
	}
	added := 0
	var walk func(n *yaml.Node) *fieldError
	walk = func(n *yaml.Node) *fieldError {
		if n.Kind == yaml.AliasNode {
			s, ok := expanded(n.Alias)
			if !ok {
				return errAt(KindInvalid, n, "alias *%s refers to a node that contains it", n.Value)
			}
			if added = min(added+s, limit+1); added > limit {
				return errorf(KindLimit, "aliases in the file expand to more than %d nodes", limit)
			}
		}
		for _, c := range n.Content {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range docs {
		if err := walk(d); err != nil {
			return err
		}
	}
	return nil
}

// offset turns a parser position (1-based line, 1-based column counted in characters) into a byte
// offset in src.
func (f *yamlFile) offset(line, col int) int {
	if line < 1 || line > len(f.lineStarts) {
		return len(f.src)
	}
	off := f.lineStarts[line-1]
	for i := 1; i < col && off < len(f.src) && f.src[off] != '\n'; i++ {
		_, w := utf8.DecodeRune(f.src[off:])
		off += w
	}
	return off
}

func (f *yamlFile) nodeOffset(n *yaml.Node) int { return f.offset(n.Line, n.Column) }

// lineOf returns the 0-based line holding off.
func (f *yamlFile) lineOf(off int) int {
	lo, hi := 0, len(f.lineStarts)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if f.lineStarts[mid] <= off {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// column returns the 0-based column (in characters) of off.
func (f *yamlFile) column(off int) int {
	return utf8.RuneCount(f.src[f.lineStarts[f.lineOf(off)]:off])
}

// lineEnd returns the offset of the line break ending the line holding off (or len(src)); a CR of
// a CRLF pair counts as the break.
func (f *yamlFile) lineEnd(off int) int {
	i := bytes.IndexByte(f.src[off:], '\n')
	if i < 0 {
		return len(f.src)
	}
	end := off + i
	if end > off && f.src[end-1] == '\r' {
		end--
	}
	return end
}

// detectIndent finds how the file indents nested mappings and sequences under a key, from the
// first occurrence of each; files without one get two spaces.
func (f *yamlFile) detectIndent() {
	f.mapIndent, f.seqIndent = -1, -1
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if f.mapIndent >= 0 && f.seqIndent >= 0 {
			return
		}
		if n.Kind == yaml.MappingNode && n.Style&yaml.FlowStyle == 0 {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if v.Style&yaml.FlowStyle != 0 || v.Line <= k.Line || v.Anchor != "" || v.Tag != "" && v.Style&yaml.TaggedStyle != 0 {
					continue
				}
				d := v.Column - k.Column
				switch {
				case v.Kind == yaml.MappingNode && f.mapIndent < 0 && d > 0:
					f.mapIndent = d
				case v.Kind == yaml.SequenceNode && f.seqIndent < 0 && d >= 0:
					f.seqIndent = d
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	for _, d := range f.docs {
		walk(d)
	}
	if f.mapIndent < 0 {
		f.mapIndent = 2
	}
	if f.seqIndent < 0 {
		f.seqIndent = f.mapIndent
	}
}

func errAt(kind ErrorKind, n *yaml.Node, format string, args ...any) *fieldError {
	return errorf(kind, "%s (line %d)", fmt.Sprintf(format, args...), n.Line)
}
