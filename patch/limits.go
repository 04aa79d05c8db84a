package patch

// Limits bounds what one patch request may cost. A zero field takes its DefaultLimits value, so a
// partially filled Limits never means "unlimited".
type Limits struct {
	// MaxFileBytes bounds every file read, created or produced by an edit.
	MaxFileBytes int
	// MaxCommands bounds the number of commands in one request.
	MaxCommands int
	// MaxDocuments bounds the number of YAML documents in one file.
	MaxDocuments int
	// MaxAliasExpansion bounds the number of nodes that aliases would add if they were expanded
	// (a node reached through N aliases counts N times), which refuses billion-laughs files.
	MaxAliasExpansion int
	// MaxParseBytes bounds the YAML one request may make the engine parse: each file it edits
	// once, and again whenever a command reads what an earlier command of the request changed.
	// It keeps the CPU a request costs a fixed multiple of its size, whatever the commands do.
	MaxParseBytes int
	// MaxSelectNodes bounds the nodes the fields of one request may visit while selecting
	// (paths walked, wildcards expanded, filters evaluated and compared), all commands together.
	MaxSelectNodes int
}

// DefaultLimits are sized for GitOps repositories: values files of tens of thousands of lines,
// a CI job changing a handful of fields.
func DefaultLimits() Limits {
	return Limits{
		MaxFileBytes:      4 << 20,
		MaxCommands:       256,
		MaxDocuments:      1000,
		MaxAliasExpansion: 100_000,
		MaxParseBytes:     64 << 20, // 16 parses of the largest file
		MaxSelectNodes:    20_000_000,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	defaultIfNotPositive(&l.MaxFileBytes, d.MaxFileBytes)
	defaultIfNotPositive(&l.MaxCommands, d.MaxCommands)
	defaultIfNotPositive(&l.MaxDocuments, d.MaxDocuments)
	defaultIfNotPositive(&l.MaxAliasExpansion, d.MaxAliasExpansion)
	defaultIfNotPositive(&l.MaxParseBytes, d.MaxParseBytes)
	defaultIfNotPositive(&l.MaxSelectNodes, d.MaxSelectNodes)
	return l
}

// defaultIfNotPositive replaces a zero or negative limit (a caller's unset
// field) with the default.
func defaultIfNotPositive[T int | int64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// parseBudget counts the bytes of YAML one request has parsed against Limits.MaxParseBytes.
type parseBudget struct {
	left, limit int
}

func newParseBudget(lim Limits) *parseBudget {
	return &parseBudget{left: lim.MaxParseBytes, limit: lim.MaxParseBytes}
}

func (b *parseBudget) charge(n int) *fieldError {
	b.left -= n
	if b.left < 0 {
		return errorf(KindLimit, "the request would make the engine parse more than %d bytes of YAML: each edited file is parsed once, and again whenever a command reads what an earlier one changed; split the request or group its edits by what they read", b.limit)
	}
	return nil
}

// parse parses src after charging it to the budget.
func (b *parseBudget) parse(src []byte, lim Limits) (*yamlFile, *fieldError) {
	if err := b.charge(len(src)); err != nil {
		return nil, err
	}
	return parseYAML(src, lim)
}
