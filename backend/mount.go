package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// cacheDirEnv overrides where mirrors are cached (default: the OS temp dir).
const cacheDirEnv = "FLANT_GITOPS_CACHE_DIR"

// mountIDKey holds the mount's id. It labels the mount's containers and
// names its cache folders, so both survive plugin restarts and two mounts
// never share them. Vault's BackendUUID would do too, but a stored id needs
// nothing from the factory.
const mountIDKey = "mount_id"

// cacheBase is the folder under which every mount keeps its mirrors.
func cacheBase() string {
	if base := os.Getenv(cacheDirEnv); base != "" {
		return base
	}
	return filepath.Join(os.TempDir(), "flant_gitops")
}

// mountIdentity reads the mount's id from storage, or makes and stores it on
// first use, once per backend: the watch and patch halves share it, so
// neither can overwrite the id the other already uses.
type mountIdentity struct {
	mu sync.Mutex
	id string
}

func (m *mountIdentity) get(ctx context.Context, s logical.Storage) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.id != "" {
		return m.id, nil
	}
	e, err := s.Get(ctx, mountIDKey)
	if err != nil {
		return "", fmt.Errorf("reading the mount id: %w", err)
	}
	if e != nil && len(e.Value) > 0 {
		m.id = string(e.Value)
		return m.id, nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating the mount id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	if err := s.Put(ctx, &logical.StorageEntry{Key: mountIDKey, Value: []byte(id)}); err != nil {
		return "", fmt.Errorf("storing the mount id: %w", err)
	}
	m.id = id
	return id, nil
}
