package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
	"github.com/flant/flant_gitops/internal/waittest"
)

// recordingStorage remembers every entry the plugin writes, transient ones
// (a secret_id rotation record) included.
type recordingStorage struct {
	logical.InmemStorage
	mu   sync.Mutex
	puts []*logical.StorageEntry
}

func (r *recordingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	r.mu.Lock()
	r.puts = append(r.puts, &logical.StorageEntry{Key: e.Key, Value: append([]byte(nil), e.Value...)})
	r.mu.Unlock()
	return r.InmemStorage.Put(ctx, e)
}

// sealWrapCovers applies Vault's rule: exact match, or prefix for an entry
// ending in "/".
func sealWrapCovers(paths []string, key string) bool {
	for _, p := range paths {
		if key == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(key, p)) {
			return true
		}
	}
	return false
}

// TestEverySecretInStorageIsSealWrapped configures everything (both kinds
// of git credential, AppRole access with a real secret_id rotation, patch
// repositories, the signing key and its rotation), then checks every entry
// the plugin wrote: one that holds a secret must be covered by
// SealWrapStorage, and every entry must be in the storage-key table. What
// is a secret comes from the table of values the test wrote or the target
// Vault handed out, not from the plugin's list.
func TestEverySecretInStorageIsSealWrapped(t *testing.T) {
	f := newTargetFixture(t, "10m")
	s := &recordingStorage{}
	p := newTestPlugin(t, s)
	ctx := context.Background()
	sshKey, knownHosts := testSSHKey(t, "")
	sshKeyLine := strings.Split(sshKey, "\n")[1]
	engine := dockertest.NewTLSProxy(t)
	secrets := []struct{ what, value string }{
		{"git_credential password", "glpat-watch-" + randomHex(t)},
		{"repository password", "glpat-patch-" + randomHex(t)},
		{"SSH private key", sshKeyLine},
		{"configured secret_id", f.secretID},
		{"plugin signing key", "PGP PRIVATE KEY BLOCK"},
		{"Docker engine client key", strings.Split(string(engine.ClientKeyPEM), "\n")[1]},
		{"forge token of commit statuses", "glpat-status-" + randomHex(t)},
	}
	p.request(t, logical.UpdateOperation, "configure", map[string]any{"git_repo_url": "https://git.example.com/r.git", "docker_image": testImage, "commands": "true"})
	p.request(t, logical.UpdateOperation, "configure/git_credential", map[string]any{"ssh_private_key": sshKey, "known_hosts": knownHosts})
	p.request(t, logical.UpdateOperation, "configure/git_credential", map[string]any{"username": "oauth2", "password": secrets[0].value})
	p.request(t, logical.UpdateOperation, "configure/trusted_pgp_public_key/alice", map[string]any{"public_key": pgptest.NewKey(t, "Alice").PublicArmored(t)})
	p.request(t, logical.UpdateOperation, "configure_vault_access", f.accessFields("90s"))
	p.request(t, logical.UpdateOperation, "configure/docker_engine", engineFields(engine))
	p.request(t, logical.UpdateOperation, "configure/vault_request/app", map[string]any{"path": "secret/data/app"})
	p.request(t, logical.UpdateOperation, "configure/commit_status", map[string]any{"provider": "gitlab", "api_url": "https://gitlab.example.com", "token": secrets[6].value, "repository": "infra/r"})
	if _, _, err := p.b.prepareVaultRequests(ctx, s); err != nil {
		t.Fatal(err)
	}
	p.sleep(61 * time.Second)
	if err := p.client.RotateSecretID(ctx, approleStorage(s)); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if p.configuredSecretID(t) == f.secretID {
		t.Fatal("the secret_id was not rotated")
	}
	p.request(t, logical.CreateOperation, "configure/repository/https", map[string]any{"url": "https://git.example.com/infra.git", "username": "u", "password": secrets[1].value})
	p.request(t, logical.CreateOperation, "configure/repository/ssh", map[string]any{"url": "ssh://git@git.example.com/infra.git", "ssh_private_key": sshKey, "known_hosts": knownHosts})
	p.request(t, logical.ReadOperation, "configure/signing_key", nil)
	p.request(t, logical.UpdateOperation, "configure/signing_key/rotate", nil)
	p.request(t, logical.ReadOperation, "status", nil)

	for _, sid := range targetSecrets(t, f.tg) { // every secret_id and token the target handed out
		secrets = append(secrets, struct{ what, value string }{"secret from the target Vault", sid})
	}
	found := map[string]bool{}
	s.mu.Lock()
	defer s.mu.Unlock()
	var tableKeys []string
	for _, k := range storageKeys {
		tableKeys = append(tableKeys, k.key)
	}
	for _, e := range s.puts {
		if !sealWrapCovers(tableKeys, e.Key) {
			t.Errorf("storage entry %q is not in the storage-key table (storage_keys.go)", e.Key)
		}
		for _, sec := range secrets {
			if !strings.Contains(string(e.Value), sec.value) {
				continue
			}
			found[sec.what] = true
			if !sealWrapCovers(sealWrapStorage(), e.Key) {
				t.Errorf("storage entry %q holds a %s but SealWrapStorage %q does not cover it", e.Key, sec.what, sealWrapStorage())
			}
		}
	}
	for _, sec := range secrets[:7] {
		if !found[sec.what] {
			t.Errorf("no storage entry held the %s: the check proves nothing for it", sec.what)
		}
	}
	if !found["secret from the target Vault"] {
		t.Error("no storage entry held a rotated secret_id")
	}
}

func randomHex(t testing.TB) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestPrivateCacheDir: the mirror cache folder is made 0700, and one that
// anyone else owns or may enter is refused with a log line, not reused.
func TestPrivateCacheDir(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, base string) // base does not exist yet
		refuse  string                          // "" when the folder is accepted
	}{
		{"missing: created 0700", func(t *testing.T, base string) {
			t.Cleanup(func() {
				if fi, err := os.Stat(base); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("created base %s: %v; want mode 0700", base, err)
				}
			})
		}, ""},
		{"existing, private", func(t *testing.T, base string) { mkdir(t, base, 0o700); mkdir(t, filepath.Join(base, "m"), 0o700) }, ""},
		{"base readable by others (an operator's folder)", func(t *testing.T, base string) { mkdir(t, base, 0o755) }, ""},
		{"base writable by others", func(t *testing.T, base string) { mkdir(t, base, 0o777) }, "mode 0777"},
		{"base writable by group", func(t *testing.T, base string) { mkdir(t, base, 0o770) }, "mode 0770"},
		{"mount folder writable by others", func(t *testing.T, base string) { mkdir(t, base, 0o700); mkdir(t, filepath.Join(base, "m"), 0o703) }, "mode 0703"},
		{"mount folder readable by group", func(t *testing.T, base string) { mkdir(t, base, 0o700); mkdir(t, filepath.Join(base, "m"), 0o740) }, "mode 0740"},
		{"mount folder owned by another user", func(t *testing.T, base string) {
			mkdir(t, base, 0o700)
			mkdir(t, filepath.Join(base, "m"), 0o700)
			if err := os.Chown(filepath.Join(base, "m"), 12345, 12345); err != nil {
				t.Fatalf("chown (the test runs as root): %v", err)
			}
		}, "owned by uid 12345"},
		{"base owned by another user", func(t *testing.T, base string) {
			mkdir(t, base, 0o700)
			if err := os.Chown(base, 12345, 12345); err != nil {
				t.Fatalf("chown (the test runs as root): %v", err)
			}
		}, "owned by uid 12345"},
		{"mount folder is a symlink", func(t *testing.T, base string) {
			mkdir(t, base, 0o700)
			if err := os.Symlink(t.TempDir(), filepath.Join(base, "m")); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "flant_gitops")
			tc.prepare(t, base)
			var log strings.Builder
			logger := hclog.New(&hclog.LoggerOptions{Output: &log})
			dir, err := privateCacheDir(logger, base, "m")
			if tc.refuse == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("%s: %v, mode %v; want 0700", dir, err, fi.Mode().Perm())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.refuse) || !strings.Contains(err.Error(), cacheDirEnv) {
				t.Fatalf("privateCacheDir = %q, %v; want a refusal saying %q and how to fix it", dir, err, tc.refuse)
			}
			if !strings.Contains(log.String(), "refusing the mirror cache folder") || !strings.Contains(log.String(), tc.refuse) {
				t.Errorf("no clear log line for the refusal:\n%s", log.String())
			}
		})
	}
}

// The watch half refuses such a folder at its poll, and status says why.
func TestPollRefusesAnOpenCacheFolder(t *testing.T) {
	base := filepath.Join(t.TempDir(), "flant_gitops")
	mkdir(t, base, 0o777)
	t.Setenv(cacheDirEnv, base)
	b, s := newTestBackend(t, nil, nil)
	configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{
		"git_repo_url": "https://git.example/ops.git", "docker_image": "sha256:" + strings.Repeat("1", 64), "commands": []string{"true"},
	})
	ctx := context.Background()
	b.watch.Start(watchStorage{s}) // polls once at start
	var st *watch.State
	waittest.Until(t, func() bool {
		var err error
		st, err = b.watch.State(ctx, watchStorage{s})
		return err == nil && st.LastPollOutcome != ""
	})
	if st.LastPollOutcome != watch.OutcomeError || !strings.Contains(st.LastPollResult, "mode 0777") {
		t.Fatalf("poll outcome %q %q, want an error naming the open cache folder", st.LastPollOutcome, st.LastPollResult)
	}
	if ids, err := b.watch.ListRuns(ctx, watchStorage{s}); err != nil || len(ids) != 0 {
		t.Fatalf("runs %v (%v): a run started from a refused cache folder", ids, err)
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil { // the umask would narrow Mkdir's mode
		t.Fatal(err)
	}
}
