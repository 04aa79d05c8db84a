package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch"
)

func TestMirrorTargetFingerprint(t *testing.T) {
	const secret = "s3cr3t-password"
	base := mirrorTarget{URL: "https://git.example/a.git", Branch: "main", Auth: gitwatch.Auth{Username: "bot", Password: secret}}
	cases := []struct {
		name          string
		change        func(t *mirrorTarget)
		newFolder     bool // a new clone is needed
		newIdentifier bool // the open mirror is reopened
	}{
		{"nothing", func(*mirrorTarget) {}, false, false},
		{"url", func(t *mirrorTarget) { t.URL = "https://git.example/b.git" }, true, true},
		{"branch", func(t *mirrorTarget) { t.Branch = "release" }, true, true},
		{"password", func(t *mirrorTarget) { t.Auth.Password = "rotated" }, false, true},
		{"username", func(t *mirrorTarget) { t.Auth.Username = "other" }, false, true},
		{"ssh key", func(t *mirrorTarget) { t.Auth.SSHPrivateKey = []byte("KEY") }, false, true},
		{"known hosts", func(t *mirrorTarget) { t.Auth.SSHKnownHosts = []byte("host ssh-ed25519 AAAA") }, false, true},
		// Parts are length-prefixed: moving a character between them counts.
		{"url and branch boundary", func(t *mirrorTarget) { t.URL, t.Branch = t.URL+"m", "ain" }, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.change(&c)
			if got := c.folder() != base.folder(); got != tc.newFolder {
				t.Errorf("folder changed = %v, want %v", got, tc.newFolder)
			}
			if got := c.fingerprint() != base.fingerprint(); got != tc.newIdentifier {
				t.Errorf("fingerprint changed = %v, want %v", got, tc.newIdentifier)
			}
			if c.folder() != c.folder() || c.fingerprint() != c.fingerprint() {
				t.Error("not stable")
			}
			for _, s := range []string{c.folder(), c.fingerprint()} {
				if strings.Contains(s, secret) || strings.Contains(s, "bot") || strings.ContainsAny(s, "/:") {
					t.Errorf("%q shows the target or its credentials", s)
				}
			}
		})
	}
}

// The vault client's identity keeps the encoding it had before it shared the
// function, so no live session is dropped by an upgrade.
func TestIdentityHashEncoding(t *testing.T) {
	if got, want := identityHash("a", "bc"), identityHash("ab", "c"); got == want {
		t.Fatal("parts run together")
	}
	sum := sha256.Sum256([]byte("1:a;2:bc;"))
	if got := identityHash("a", "bc"); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("identityHash = %q, want the sha256 of the length-prefixed parts", got)
	}
}

func TestMirrorFolderRemovesStaleOnes(t *testing.T) {
	target := mirrorTarget{URL: "https://git.example/a.git", Branch: "main"}
	other := mirrorTarget{URL: "https://git.example/b.git", Branch: "main"}
	cases := []struct {
		name string
		keep func(string) bool
		// existing folders under <base>, relative
		existing []string
		// what is left under <base>/m/<kind>
		left []string
	}{
		{"a fresh cache", nil, nil, []string{}},
		{"the target's own folder is kept", nil, []string{"m/watch/" + target.folder()}, []string{target.folder()}},
		{"another target's folder is stale", nil,
			[]string{"m/watch/" + target.folder(), "m/watch/" + other.folder()}, []string{target.folder()}},
		{"a folder keep claims stays", func(f string) bool { return f == other.folder() },
			[]string{"m/watch/" + other.folder(), "m/watch/junk"}, []string{other.folder()}},
		{"the old layout goes", nil,
			[]string{"m/0123456789abcdef", "patch-m/0123456789abcdef", "patch-other/x"}, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "flant_gitops")
			for _, d := range tc.existing {
				if err := os.MkdirAll(filepath.Join(base, d, "objects"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			var log strings.Builder
			logger := hclog.New(&hclog.LoggerOptions{Output: &log})
			dir, err := mirrorFolder(logger, base, "m", mirrorKindWatch, target, tc.keep)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(base, "m", "watch", target.folder()); dir != want {
				t.Errorf("folder %s, want %s", dir, want)
			}
			left := []string{}
			entries, err := os.ReadDir(filepath.Join(base, "m", "watch"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				left = append(left, e.Name())
			}
			if !slices.Equal(left, tc.left) {
				t.Errorf("left %v, want %v", left, tc.left)
			}
			if fi, err := os.Stat(filepath.Join(base, "m", "watch")); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("kind folder: %v, want mode 0700", err)
			}
			for _, gone := range []string{"m/0123456789abcdef", "patch-m"} {
				if _, err := os.Stat(filepath.Join(base, gone)); !os.IsNotExist(err) {
					t.Errorf("%s of the old layout is still there", gone)
				}
			}
			if _, err := os.Stat(filepath.Join(base, "patch-other", "x")); err != nil && slices.Contains(tc.existing, "patch-other/x") {
				t.Error("another mount's folder was removed")
			}
			if removed := len(tc.existing) - len(tc.left) - boolInt(slices.Contains(tc.existing, "patch-other/x")); strings.Count(log.String(), "removed a mirror cache no longer configured") != removed {
				t.Errorf("want %d removal log lines:\n%s", removed, log.String())
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// The patch half serves many branches: a configured repository's folder is
// never stale, a deleted or changed one's is, when another mirror is opened.
func TestPatchMirrorDirKeepsConfiguredRepositories(t *testing.T) {
	base := t.TempDir()
	t.Setenv(cacheDirEnv, base)
	b, s := newTestBackend(t, nil, nil)
	ctx := context.Background()
	write := func(name, url string) *repositoryEntry {
		mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/"+name, map[string]any{"url": url, "username": "bot", "password": "tok"}), "configure "+name)
		e, err := getRepository(ctx, s, name)
		if err != nil || e == nil {
			t.Fatalf("reading %s: %v", name, err)
		}
		return e
	}
	a, other := write("a", "https://git.example/a.git"), write("b", "https://git.example/b.git")
	mountID, err := b.mount.get(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	kindDir := filepath.Join(base, mountID, mirrorKindPatch)
	old := write("c", "https://git.example/c-old.git").mirrorTarget().folder()
	write("c", "https://git.example/c-new.git") // c's old folder is no longer configured
	for _, f := range []string{other.mirrorTarget().folder(), old} {
		if err := os.MkdirAll(filepath.Join(kindDir, f), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := b.patch.mirrorDir(ctx, s, a)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(kindDir, a.mirrorTarget().folder()); dir != want {
		t.Errorf("mirror of a at %s, want %s", dir, want)
	}
	if _, err := os.Stat(filepath.Join(kindDir, other.mirrorTarget().folder())); err != nil {
		t.Errorf("configured repository b lost its mirror: %v", err)
	}
	if _, err := os.Stat(filepath.Join(kindDir, old)); !os.IsNotExist(err) {
		t.Errorf("c's folder for its old url is still there (%v)", err)
	}
}
