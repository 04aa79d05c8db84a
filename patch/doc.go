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
// A field is a dot path (spec.values.image.tag) or JSONPath: keys (.key, ['a.b']), indexes ([0],
// [-1], or a digits-only dot segment on a sequence), wildcards (.* and [*]) and filters
// ([?(@.name == 'BUILD_ID')] with == != < <= > >= && || ! and parentheses).
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
//   - Edits never go through an alias (that would change every place using the anchor), and keys
//     merged in with << are not edited in place.
//
// # Format
//
// The file is parsed with yaml.v3 only to locate nodes; the output is the input with the byte span
// of each edited node replaced. Strings keep the quoting of the scalar they replace, or are written
// plain when every YAML 1.1 and 1.2 reader reads them back as the same string, else double-quoted;
// multi-line strings become literal blocks. Objects and arrays become block YAML indented like the
// file (its mapping indent and its compact or indented sequence style), except inside or in place
// of a non-empty flow collection, where they stay flow. After each edit the result is parsed again
// and compared node by node with the original: an edit that would change anything but its target
// is refused with an error instead of written.
//
// Bounds (Limits) cap file size, command count, documents per file and alias expansion, which is
// counted on the node tree before anything is decoded, so a billion-laughs file is refused at once.
package patch
