package patch

import (
	"fmt"
	"strings"
)

// ErrorKind tells the Vault layer which 4xx status an edit failure maps to.
type ErrorKind int

const (
	// KindInvalid: the request itself is wrong (bad JSON, bad path, bad field syntax) or asks for a
	// YAML construct the engine refuses to edit rather than risk reformatting the file.
	KindInvalid ErrorKind = iota + 1
	// KindNotFound: the file or the field does not exist.
	KindNotFound
	// KindConflict: the request does not fit what is in the file: a type clash, an existing file
	// without overwrite, or several matches where the field names exactly one node.
	KindConflict
	// KindLimit: a bound (file size, command count, documents, alias expansion) was exceeded.
	KindLimit
)

func (k ErrorKind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindNotFound:
		return "not found"
	case KindConflict:
		return "conflict"
	case KindLimit:
		return "limit exceeded"
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// Error is every failure caused by the request or the file contents. Index is the position of the
// command in the request (-1 when the error concerns the request as a whole), Path and Field name
// what the command addressed, Msg says what is wrong.
type Error struct {
	Kind  ErrorKind
	Index int
	Path  string
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Index >= 0 {
		fmt.Fprintf(&b, "commands[%d]", e.Index)
	} else {
		b.WriteString("commands")
	}
	if e.Path != "" {
		fmt.Fprintf(&b, " %s", e.Path)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, " field %q", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// fieldError is an error found while resolving or editing a field; apply turns it into an *Error
// carrying the command's index, path and field.
type fieldError struct {
	kind ErrorKind
	msg  string
}

func (e *fieldError) Error() string { return e.msg }

func errorf(kind ErrorKind, format string, args ...any) *fieldError {
	return &fieldError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
