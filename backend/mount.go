package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// cacheDirEnv overrides where mirrors are cached (default: the OS temp dir).
const cacheDirEnv = "FLANT_GITOPS_CACHE_DIR"

// The entry at mountIDKey holds the mount's id. It labels the mount's
// containers and names its cache folders, so both survive plugin restarts
// and two mounts never share them. Vault's BackendUUID would do too, but a
// stored id needs nothing from the factory.

// cacheBase is the folder under which every mount keeps its mirrors.
func cacheBase() string {
	if base := os.Getenv(cacheDirEnv); base != "" {
		return base
	}
	return filepath.Join(os.TempDir(), "flant_gitops")
}

// privateCacheDir makes sure the mount's cache folder base/name can be
// trusted before a mirror is opened in it. Both folders are created 0700
// when missing. base/name must be a real folder owned by this process's user
// and closed to group and others: anyone else who could write there could
// swap the mirror (and so the files a run sees), anyone who could read could
// copy it. base must be a real folder owned by this user that group and
// others cannot write (so nobody can swap base/name), which lets an operator
// give a 0755 FLANT_GITOPS_CACHE_DIR. A folder that fails is refused, with a
// log line, never reused or repaired.
func privateCacheDir(logger hclog.Logger, base, name string) (string, error) {
	dir := filepath.Join(base, name)
	for _, d := range []struct {
		path   string
		closed os.FileMode // permission bits that must be clear
		want   string
	}{{base, 0o022, "0700 or 0755"}, {dir, 0o077, "0700"}} {
		mkdir := os.Mkdir
		if d.path == base {
			mkdir = os.MkdirAll
		}
		if err := mkdir(d.path, 0o700); err != nil && !os.IsExist(err) {
			return "", fmt.Errorf("creating the mirror cache folder %s (set %s to a writable folder): %w", d.path, cacheDirEnv, err)
		}
		if err := checkPrivateDir(d.path, d.closed, d.want); err != nil {
			logger.Error("refusing the mirror cache folder", "path", d.path, "reason", err.Error())
			return "", fmt.Errorf("refusing the mirror cache folder %s: %w; remove it, or set %s to a folder of this user that no one else can write", d.path, err, cacheDirEnv)
		}
	}
	return dir, nil
}

// checkPrivateDir says why dir is not a folder of this process's user with
// the closed permission bits clear.
func checkPrivateDir(dir string, closed os.FileMode, want string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("it is a symbolic link")
	case !fi.IsDir():
		return fmt.Errorf("it is not a folder")
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("it is owned by uid %d, not by this process's uid %d", st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&closed != 0 {
		return fmt.Errorf("its mode %04o lets others in (want %s)", perm, want)
	}
	return nil
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
