// Package patch edits the YAML files of a GitOps repository the way a person would: it changes the
// value it is asked to change and leaves every other byte of the file as it was.
//
// # Commands
//
// Commands follow the Vignet API: setField, createFile and deleteFile, decoded and validated by
// DecodeCommands and applied in order, all or nothing, by Apply against a lazy Tree (only the files
// the commands name are read). Apply returns the resulting Changes; the git transaction that
// commits and pushes them lives beside this engine and is not part of it.
//
// # Fields
//
// A field is RFC 9535 JSONPath, for the selectors an edit needs:
//
//	$                      the root; optional: spec.values.image.tag is $.spec.values.image.tag
//	.name  ['name'] ["n"]  a mapping key; quoted names take the RFC escapes \b \f \n \r \t \/ \\,
//	                       the own quote (\' or \"), and \uXXXX with surrogate pairs
//	[0]  [-1]              a sequence index (negative counts from the end)
//	.*  [*]                every value of a mapping or item of a sequence
//	[?expr]  [?(expr)]     the values or items for which expr holds
//
// A filter compares (== != < <= > >=) literals (strings, numbers, true, false, null) and queries
// of names and indexes from the candidate (@) or the document root ($); combines them with &&, ||,
// ! and parentheses; and tests that a query selects something (@.name, @.*, @[?@.x == 1]). As the
// RFC says, a query that selects nothing equals only another such query, == compares numbers by
// value and collections deeply, and < <= > >= order numbers and strings only. White space (space,
// tab, LF, CR) may stand wherever the RFC allows a blank (between segments, inside brackets,
// around operators), never inside a name or at either end of the field.
//
// Where the dialect differs from RFC 9535, on purpose:
//   - $ is optional, so the dot paths CI jobs already write keep working.
//   - A dot name may start with a digit and contain '-' (metadata.labels.app-name); a
//     digits-only dot name indexes a sequence and is a key on a mapping (containers.0.image).
//     Other keys are written in brackets (['app.kubernetes.io/name']).
//   - Descendant segments (..), slices ([1:3]), unions ([0,1]) and function expressions
//     (length(), match(), ...) are refused with an error that names the construct: an edit
//     should say where it writes.
//   - A path of keys and indexes names exactly one node: where the RFC would select nothing, or
//     the same key in several documents, the edit is refused (404 or 409) instead of doing
//     nothing or everything.
//
// Match rules, chosen for CI jobs that must not edit more than they mean to:
//   - A path of keys and indexes names exactly one node. In a multi-document file it may match in
//     one document only (so the Deployment of a Deployment+Service file can be addressed); a match
//     in several documents is an error, not a bulk edit.
//   - A path with a wildcard or a filter explicitly selects a set: every node it matches, in every
//     document, is set, and it must match at least one.
//   - create: true adds the missing keys of a path of keys (after any existing keys and indexes)
//     to the last mapping found, as nested block mappings; it never adds sequence items and needs a
//     single-document file.
//   - The value's type must fit the node: an object replaces a mapping, an array a sequence, a
//     scalar a scalar; null, empty and ~ nodes take anything, and null clears anything. Anything
//     else is a type clash.
//   - A field that already reads the value, as data, is left byte for byte (a no-op): an alias
//     that reads it, 0x10 for 16, 1.50 for 1.5, True for true.
//   - Edits never go through an alias (that would change every place using the anchor), and keys
//     merged in with << are not edited in place.
//   - Anchors: an edit of a node that carries an anchor, or that sits inside one, changes what
//     every alias of it reads (including << merges and aliases used as keys). It is refused with
//     the lines of those aliases unless the setField says allowAliased: true. Replacing a node that
//     defines an anchor read from outside it is always refused (the aliases would dangle).
//
// # Format
//
// The file is parsed with go.yaml.in/yaml/v3 (the maintained yaml.v3) only to locate nodes; the
// output is the input with the byte span of each edited node replaced. Strings keep the quoting of
// the scalar they replace, or are written plain when every YAML 1.1 and 1.2 reader reads them back
// as the same string, else double-quoted; multi-line strings become literal blocks where a block
// can go, and stay in the scalar's place, double-quoted with escapes, where it cannot (a comment
// or more follows on the line, the scalar was double-quoted, or it sits in a flow collection), so
// a trailing comment is kept. Objects and arrays become block YAML indented like the file (its
// mapping indent and its compact or indented sequence style), except inside or in place of a
// non-empty flow collection, where they stay flow. After the edits the result is parsed again and
// compared node by node with the original: every other node must keep its kind, tag, value, anchor
// and style, and every alias must read the same data (unless allowAliased let it change); an edit
// that would change anything else is refused with an error instead of written.
//
// # Cost
//
// The setFields of one file are planned against one parse and written together: the file is
// parsed and verified again only when a command reads a node that an earlier pending edit changes
// or encloses (a filter testing an edited item, a path through a created key), and once at the
// end. So a request of N edits to distinct fields costs about two parses of the file plus a walk
// per command, not N parses; a refused batch costs a few more (its prefixes are bisected to name
// the command that fails). Commands that each read the one before still cost a parse each, so
// Limits.MaxParseBytes (64 MiB, 16 parses of the largest file) caps the YAML one request may
// make the engine parse, answered with a limit error (413). BenchmarkMaximalRequest measures the
// largest requests the limits allow (256 setFields on a 4 MiB file) as a multiple of one parse.
//
// Bounds (Limits) cap file size, command count, documents per file and alias expansion, which is
// counted on the node tree before anything is decoded, so a billion-laughs file is refused at once;
// filters may compare at most ten million nodes per field.
package patch
