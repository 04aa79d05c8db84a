package watch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
)

// Storage is the mount's storage as the worker uses it: Vault's
// logical.Storage seen through a four-method adapter in the backend, an
// in-memory map in the tests.
type Storage interface {
	// Get returns nil, nil when key holds nothing.
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	// List returns the names directly under prefix; a name ending in "/"
	// is a folder.
	List(ctx context.Context, prefix string) ([]string, error)
}

// The storage keys of the worker. None holds a secret: the run log is the
// commands' output, which must not print secrets.
const (
	stateKey          = "watch/state"
	lastSuccessfulKey = "watch/last_successful_commit"
	runsPrefix        = "runs/"
	runLogPrefix      = "runlog/"
)

// StorageKeys lists the keys and prefixes (ending in "/") the worker writes,
// for the backend's table of storage keys.
func StorageKeys() []string {
	return []string{stateKey, lastSuccessfulKey, runsPrefix, runLogPrefix}
}

// getEntry reads one JSON entry; nil without error when it does not exist.
// It is the backend's getEntry without the Vault SDK's codec, which the
// worker does not need: its entries have no any-typed fields (the SDK
// decodes their numbers as json.Number) and are never compressed.
func getEntry[T any](ctx context.Context, s Storage, key string) (*T, error) {
	raw, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %q from storage: %w", key, err)
	}
	if raw == nil {
		return nil, nil
	}
	v := new(T)
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(v); err != nil {
		return nil, fmt.Errorf("decode %q from storage: %w", key, err)
	}
	return v, nil
}

// putEntry writes v as JSON the way Vault's logical.StorageEntryJSON does
// (a json.Encoder line), so entries written before the worker had its own
// package read the same.
func putEntry(ctx context.Context, s Storage, key string, v any) error {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return fmt.Errorf("encode %q for storage: %w", key, err)
	}
	if err := s.Put(ctx, key, buf.Bytes()); err != nil {
		return fmt.Errorf("write %q to storage: %w", key, err)
	}
	return nil
}

func deleteEntry(ctx context.Context, s Storage, key string) error {
	if err := s.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete %q from storage: %w", key, err)
	}
	return nil
}
