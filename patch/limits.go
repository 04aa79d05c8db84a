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
}

// DefaultLimits are sized for GitOps repositories: values files of tens of thousands of lines,
// a CI job changing a handful of fields.
func DefaultLimits() Limits {
	return Limits{
		MaxFileBytes:      4 << 20,
		MaxCommands:       256,
		MaxDocuments:      1000,
		MaxAliasExpansion: 100_000,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxCommands <= 0 {
		l.MaxCommands = d.MaxCommands
	}
	if l.MaxDocuments <= 0 {
		l.MaxDocuments = d.MaxDocuments
	}
	if l.MaxAliasExpansion <= 0 {
		l.MaxAliasExpansion = d.MaxAliasExpansion
	}
	return l
}
