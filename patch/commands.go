package patch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// Command is one edit, decoded from the patch request as the Vignet README shapes it:
//
//	{"path": "...", "setField": {"field": "...", "value": <any JSON>, "create": bool, "allowAliased": bool}}
//	{"path": "...", "createFile": {"content": "...", "overwrite": bool}}
//	{"path": "...", "deleteFile": {}}
type Command struct {
	Path       string      `json:"path"`
	SetField   *SetField   `json:"setField,omitempty"`
	CreateFile *CreateFile `json:"createFile,omitempty"`
	DeleteFile *DeleteFile `json:"deleteFile,omitempty"`
}

// SetField sets the node(s) Field selects to Value. Field is a dot path (spec.values.image.tag) or
// JSONPath (array index, wildcard, filter). Value is kept as raw JSON so that object keys keep the
// order the caller wrote them in. Create makes missing intermediate mappings for a path of keys.
// AllowAliased lets the edit change a node that carries an anchor (or sits inside one) although
// aliases elsewhere read it, and so change what they read too; without it such an edit is refused.
type SetField struct {
	Field        string          `json:"field"`
	Value        json.RawMessage `json:"value"`
	Create       bool            `json:"create,omitempty"`
	AllowAliased bool            `json:"allowAliased,omitempty"`
}

// CreateFile writes Content to a new file; an existing file is replaced only with Overwrite.
type CreateFile struct {
	Content   *string `json:"content"`
	Overwrite bool    `json:"overwrite,omitempty"`
}

// DeleteFile removes an existing file.
type DeleteFile struct{}

// DecodeCommands parses and validates a JSON array of commands: unknown fields are rejected, each
// command has exactly one operation, paths are cleaned with CleanPath, fields and values must
// parse, and the count is bounded by lim. Errors are *Error values.
func DecodeCommands(data []byte, lim Limits) ([]Command, error) {
	lim = lim.withDefaults()
	// The array first, then each command on its own, so that an error names the command's index.
	dec := json.NewDecoder(bytes.NewReader(data))
	var raws []json.RawMessage
	if err := dec.Decode(&raws); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			return nil, &Error{Kind: KindInvalid, Index: -1, Msg: "must be a JSON array of commands, got " + withArticle(te.Value)}
		}
		return nil, &Error{Kind: KindInvalid, Index: -1, Msg: "not a valid JSON array of commands: " + JSONErrorText(err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &Error{Kind: KindInvalid, Index: -1, Msg: "unexpected data after the JSON array of commands"}
	}
	if raws == nil {
		return nil, &Error{Kind: KindInvalid, Index: -1, Msg: "commands must be a JSON array, not null"}
	}
	cmds := make([]Command, len(raws))
	for i, raw := range raws {
		cdec := json.NewDecoder(bytes.NewReader(raw))
		cdec.DisallowUnknownFields()
		if err := cdec.Decode(&cmds[i]); err != nil {
			return nil, &Error{Kind: KindInvalid, Index: i, Msg: "not a valid command: " + JSONErrorText(err)}
		}
	}
	if err := validateCommands(cmds, lim); err != nil {
		return nil, err
	}
	return cmds, nil
}

// JSONErrorText words a JSON decoding error for the operator who wrote the JSON: a type mismatch
// names the field and the JSON types instead of Go's, and the "json: " prefix is dropped.
func JSONErrorText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		got := withArticle(te.Value)
		if te.Field == "" {
			return fmt.Sprintf("must be %s, got %s", jsonTypeName(te.Type), got)
		}
		return fmt.Sprintf("%s must be %s, got %s", te.Field, jsonTypeName(te.Type), got)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonTypeName is the JSON type a Go type decodes from.
func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another JSON type"
}

// withArticle turns encoding/json's value description ("number", "object", "number -1") into
// "a number", "an object".
func withArticle(v string) string {
	if strings.HasPrefix(v, "a") || strings.HasPrefix(v, "o") {
		return "an " + v
	}
	return "a " + v
}

// validateCommands checks what can be checked without the tree and cleans the paths in place.
func validateCommands(cmds []Command, lim Limits) error {
	if len(cmds) == 0 {
		return &Error{Kind: KindInvalid, Index: -1, Msg: "no commands given"}
	}
	if len(cmds) > lim.MaxCommands {
		return &Error{Kind: KindLimit, Index: -1, Msg: fmt.Sprintf("%d commands given, at most %d are allowed in one request", len(cmds), lim.MaxCommands)}
	}
	for i := range cmds {
		if err := validateCommand(&cmds[i], lim); err != nil {
			err.Index = i
			return err
		}
	}
	return nil
}

func validateCommand(c *Command, lim Limits) *Error {
	n := 0
	for _, set := range []bool{c.SetField != nil, c.CreateFile != nil, c.DeleteFile != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return &Error{Kind: KindInvalid, Path: c.Path, Msg: fmt.Sprintf("exactly one of setField, createFile, deleteFile must be given, found %d", n)}
	}
	clean, err := CleanPath(c.Path)
	if err != nil {
		return &Error{Kind: KindInvalid, Path: c.Path, Msg: "invalid path: " + err.Error()}
	}
	c.Path = clean
	switch {
	case c.SetField != nil:
		sf := c.SetField
		p, err := compilePath(sf.Field)
		if err != nil {
			return &Error{Kind: KindInvalid, Path: c.Path, Field: sf.Field, Msg: err.Error()}
		}
		if sf.Create && !p.singular() {
			return &Error{Kind: KindInvalid, Path: c.Path, Field: sf.Field, Msg: "create works only with a path of keys and indexes, not with wildcards or filters"}
		}
		if len(sf.Value) == 0 {
			return &Error{Kind: KindInvalid, Path: c.Path, Field: sf.Field, Msg: "setField needs a value (use null to set null)"}
		}
		if _, err := parseJSONValue(sf.Value); err != nil {
			return &Error{Kind: KindInvalid, Path: c.Path, Field: sf.Field, Msg: "value is not valid JSON: " + JSONErrorText(err)}
		}
	case c.CreateFile != nil:
		if c.CreateFile.Content == nil {
			return &Error{Kind: KindInvalid, Path: c.Path, Msg: "createFile needs content (use \"\" for an empty file)"}
		}
		if len(*c.CreateFile.Content) > lim.MaxFileBytes {
			return &Error{Kind: KindLimit, Path: c.Path, Msg: fmt.Sprintf("content is %d bytes, files may have at most %d", len(*c.CreateFile.Content), lim.MaxFileBytes)}
		}
	}
	return nil
}

// jsonKind is the JSON type of a decoded value.
type jsonKind int

const (
	jsonNull jsonKind = iota
	jsonBool
	jsonNumber
	jsonString
	jsonObject
	jsonArray
)

// jsonValue is a decoded JSON value that keeps object key order and the exact text of numbers, so
// the emitted YAML follows the request and never rounds a number.
type jsonValue struct {
	kind  jsonKind
	text  string // string contents, number literal, "true"/"false"
	keys  []string
	items []jsonValue // object values (parallel to keys) or array items
}

func parseJSONValue(raw []byte) (jsonValue, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeJSONValue(dec)
	if err != nil {
		return jsonValue{}, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return jsonValue{}, errors.New("unexpected data after the value")
	}
	return v, nil
}

func decodeJSONValue(dec *json.Decoder) (jsonValue, error) {
	tok, err := dec.Token()
	if err != nil {
		return jsonValue{}, err
	}
	switch t := tok.(type) {
	case nil:
		return jsonValue{kind: jsonNull}, nil
	case bool:
		if t {
			return jsonValue{kind: jsonBool, text: "true"}, nil
		}
		return jsonValue{kind: jsonBool, text: "false"}, nil
	case json.Number:
		// YAML readers would take an out-of-range number for a string or infinity.
		if _, err := strconv.ParseFloat(t.String(), 64); err != nil {
			return jsonValue{}, fmt.Errorf("number %s is out of range", t)
		}
		return jsonValue{kind: jsonNumber, text: t.String()}, nil
	case string:
		return jsonValue{kind: jsonString, text: t}, nil
	case json.Delim:
		switch t {
		case '{':
			v := jsonValue{kind: jsonObject}
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jsonValue{}, err
				}
				k, ok := kt.(string)
				if !ok {
					return jsonValue{}, errors.New("object key is not a string")
				}
				if seen[k] {
					return jsonValue{}, fmt.Errorf("object key %q appears twice", k)
				}
				seen[k] = true
				item, err := decodeJSONValue(dec)
				if err != nil {
					return jsonValue{}, err
				}
				v.keys = append(v.keys, k)
				v.items = append(v.items, item)
			}
			if _, err := dec.Token(); err != nil {
				return jsonValue{}, err
			}
			return v, nil
		case '[':
			v := jsonValue{kind: jsonArray}
			for dec.More() {
				item, err := decodeJSONValue(dec)
				if err != nil {
					return jsonValue{}, err
				}
				v.items = append(v.items, item)
			}
			if _, err := dec.Token(); err != nil {
				return jsonValue{}, err
			}
			return v, nil
		}
	}
	return jsonValue{}, fmt.Errorf("unexpected token %v", tok)
}

func (v jsonValue) isCollection() bool { return v.kind == jsonObject || v.kind == jsonArray }

func (v jsonValue) typeName() string {
	switch v.kind {
	case jsonNull:
		return "null"
	case jsonBool:
		return "boolean"
	case jsonNumber:
		return "number"
	case jsonString:
		return "string"
	case jsonObject:
		return "object"
	default:
		return "array"
	}
}
