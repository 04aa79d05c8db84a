package backend

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// allowAllPolicy lets every caller patch, so these tests see the tip check
// alone.
const allowAllPolicy = "package flant_gitops.patch\n\nviolations := set()\n"

// A repository with require_trusted_tip patches only on a tip the watch's
// rule accepts; otherwise 409 names the tip (and the commit that broke a
// plugin chain) and nothing is pushed.
func TestRequireTrustedTip(t *testing.T) {
	alice := pgptest.NewKey(t, "Alice")
	srv := gittest.NewServer(t)
	entity := &logical.Entity{ID: "ent-1", Name: "ci"}
	tests := []struct {
		name    string
		require bool
		// tip builds the branch and returns the commit to name in a refusal
		// ("" when the patch must land).
		tip func(t *testing.T, b *backend, s logical.Storage, repo *gittest.Repo) string
	}{
		{"unsigned tip refused", true, func(t *testing.T, _ *backend, _ logical.Storage, repo *gittest.Repo) string {
			return repo.Commit(t, map[string]string{"deploy.sh": "evil\n"})
		}},
		{"tip signed by a trusted person", true, func(t *testing.T, _ *backend, _ logical.Storage, repo *gittest.Repo) string {
			repo.Commit(t, map[string]string{"deploy.sh": "good\n"}, gittest.SignKey(alice))
			return ""
		}},
		{"unsigned tip signed later by a note", true, func(t *testing.T, _ *backend, _ logical.Storage, repo *gittest.Repo) string {
			c := repo.Commit(t, map[string]string{"deploy.sh": "good\n"})
			repo.NoteSignature(t, c, alice)
			return ""
		}},
		{"the plugin's commit on an unsigned push: the push is named", true, func(t *testing.T, b *backend, s logical.Storage, repo *gittest.Repo) string {
			pushed := repo.Commit(t, map[string]string{"deploy.sh": "evil\n"})
			// The README used to recommend trusting the plugin's key.
			pub := configReq(t, b, s, logical.ReadOperation, "configure/signing_key", nil).Data["public_key"]
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/patch-path", map[string]any{"public_key": pub}), "trust the plugin")
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{"require_trusted_tip": false}), "option off")
			if resp, err := trustedTipPatch(b, s, entity, "tag: 0\n"); status(resp, err) != 200 {
				t.Fatalf("CI patch without the option: %q", errText(resp, err))
			}
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{"require_trusted_tip": true}), "option on")
			return pushed
		}},
		{"the plugin's commit for this branch on a signed commit", true, func(t *testing.T, b *backend, s logical.Storage, repo *gittest.Repo) string {
			repo.Commit(t, map[string]string{"deploy.sh": "good\n"}, gittest.SignKey(alice))
			trustPlugin(t, b, s)
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{"require_trusted_tip": false}), "option off")
			if resp, err := trustedTipPatch(b, s, entity, "tag: 0\n"); status(resp, err) != 200 {
				t.Fatalf("CI patch without the option: %q", errText(resp, err))
			}
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{"require_trusted_tip": true}), "option on")
			return ""
		}},
		{"replay: the plugin's commit for staging pushed to main", true, func(t *testing.T, b *backend, s logical.Storage, repo *gittest.Repo) string {
			signed := repo.Commit(t, map[string]string{"deploy.sh": "good\n"}, gittest.SignKey(alice))
			trustPlugin(t, b, s)
			updateRef(t, repo, "staging", signed)
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra-staging", map[string]any{
				"url": repo.URL(), "branch": "staging", "username": srv.Username(), "password": srv.Password(),
			}), "staging repository")
			resp, err := b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.UpdateOperation, Path: "patch/infra-staging", Storage: s, MountPoint: "flant_gitops/", ID: "req-0", EntityID: entity.ID,
				Data: map[string]any{"commands": []any{map[string]any{"path": "deploy.sh", "createFile": map[string]any{"content": "staging only\n", "overwrite": true}}}},
			})
			if status(resp, err) != 200 {
				t.Fatalf("CI patch to staging: %q", errText(resp, err))
			}
			replayed := toString(resp.Data["commit"])
			updateRef(t, repo, "main", replayed)
			return replayed
		}},
		{"unsigned tip without the option", false, func(t *testing.T, _ *backend, _ logical.Storage, repo *gittest.Repo) string {
			repo.Commit(t, map[string]string{"deploy.sh": "whatever\n"})
			return ""
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(cacheDirEnv, t.TempDir())
			b, s := newTestBackend(t, entity, nil)
			repo := srv.NewRepo(t, fmt.Sprintf("tip%d", i))
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"policy": allowAllPolicy}), "policy")
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.PublicArmored(t)}), "trust alice")
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{
				"url": repo.URL(), "username": srv.Username(), "password": srv.Password(), "require_trusted_tip": tt.require,
			}), "repository")
			if got := configReq(t, b, s, logical.ReadOperation, "configure/repository/infra", nil).Data["require_trusted_tip"]; got != tt.require {
				t.Fatalf("read require_trusted_tip = %v, want %v", got, tt.require)
			}
			refused := tt.tip(t, b, s, repo)
			before := repo.Head(t)
			resp, err := trustedTipPatch(b, s, entity, "tag: 1\n")
			if refused == "" {
				if st := status(resp, err); st != 200 || repo.Head(t) == before {
					t.Fatalf("patch on an accepted tip: %d %q, head %s (was %s)", st, errText(resp, err), repo.Head(t), before)
				}
				return
			}
			msg := errText(resp, err)
			if st := status(resp, err); st != 409 || !strings.Contains(msg, refused) || !strings.Contains(msg, "require_trusted_tip") || !strings.Contains(msg, "0 of the 1") {
				t.Fatalf("patch on an untrusted tip: %d %q, want 409 naming %s", st, msg, refused)
			}
			if repo.Head(t) != before {
				t.Fatalf("something was pushed: head %s, was %s", repo.Head(t), before)
			}
		})
	}
}

func trustedTipPatch(b *backend, s logical.Storage, entity *logical.Entity, content string) (*logical.Response, error) {
	return b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "patch/infra", Storage: s, MountPoint: "flant_gitops/", ID: "req-1", EntityID: entity.ID,
		Data: map[string]any{"commands": []any{map[string]any{"path": "values.yaml", "createFile": map[string]any{"content": content, "overwrite": true}}}},
	})
}

// trustPlugin trusts the mount's own signing key, as the README used to
// recommend.
func trustPlugin(t *testing.T, b *backend, s logical.Storage) {
	t.Helper()
	pub := configReq(t, b, s, logical.ReadOperation, "configure/signing_key", nil).Data["public_key"]
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/patch-path", map[string]any{"public_key": pub}), "trust the plugin")
}

// updateRef points branch of repo's served repository at commit, as a push would.
func updateRef(t *testing.T, repo *gittest.Repo, branch, commit string) {
	t.Helper()
	if out, err := exec.Command("git", "-C", repo.Dir, "update-ref", "refs/heads/"+branch, commit).CombinedOutput(); err != nil {
		t.Fatalf("git update-ref %s %s: %v\n%s", branch, commit, err, out)
	}
}
