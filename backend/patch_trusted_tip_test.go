package backend

import (
	"context"
	"encoding/base64"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch"
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

// Issue 19 item 3 on the patch path: every require_trusted_tip request on
// one tip (each member of a group, and the groups after it) asked for the
// same expensive check. The verdict is computed once per tip, rule and
// signature refs: a note signature or a key change checks again.
func TestTrustedTipCheckedOncePerTip(t *testing.T) {
	t.Setenv(cacheDirEnv, t.TempDir())
	alice, bob, carol := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Bob"), pgptest.NewKey(t, "Carol")
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "tip")
	tip := repo.Commit(t, map[string]string{"deploy.sh": "echo unsigned\n"})
	// Whoever may push notes attaches packets that name Alice and do not
	// verify (as many as a note is read of).
	var lines []string
	for _, p := range pgptest.Forged(t, alice.Entity.PrimaryKey.Fingerprint, 100) {
		lines = append(lines, base64.StdEncoding.EncodeToString(p))
	}
	repo.AddNoteLines(t, tip, lines...)

	entity := &logical.Entity{ID: "ent-1", Name: "ci"}
	b, s := newTestBackend(t, entity, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"policy": allowAllPolicy}), "policy")
	for name, k := range map[string]*pgptest.Key{"alice": alice, "bob": bob} {
		mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/"+name, map[string]any{"public_key": k.PublicArmored(t)}), "trust "+name)
	}
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{
		"url": repo.URL(), "username": srv.Username(), "password": srv.Password(), "require_trusted_tip": true,
	}), "repository")
	checks := func() int {
		b.patch.tips.mu.Lock()
		defer b.patch.tips.mu.Unlock()
		return b.patch.tips.checks
	}

	const callers = 4
	var wg sync.WaitGroup
	answers := make([]string, callers)
	codes := make([]int, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := trustedTipPatch(b, s, entity, fmt.Sprintf("tag: %d\n", i))
			codes[i], answers[i] = status(resp, err), errText(resp, err)
		}()
	}
	wg.Wait()
	for i := range callers {
		if codes[i] != 409 || !strings.Contains(answers[i], tip) || !strings.Contains(answers[i], "0 of the 1") {
			t.Errorf("caller %d: %d %q, want 409 naming the tip %s", i, codes[i], answers[i], tip)
		}
	}
	if n := checks(); n != 1 {
		t.Errorf("%d callers on one tip cost %d checks, want 1", callers, n)
	}

	// A new trusted key is a new rule: the same tip is checked again.
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/carol", map[string]any{"public_key": carol.PublicArmored(t)}), "trust carol")
	if resp, err := trustedTipPatch(b, s, entity, "tag: carol\n"); status(resp, err) != 409 {
		t.Fatalf("patch on the unsigned tip: %d %q, want 409", status(resp, err), errText(resp, err))
	}
	if n := checks(); n != 2 {
		t.Errorf("%d checks after a key was added, want 2", n)
	}

	// Bob signs the tip in a note: the signature refs moved, the tip is
	// checked again and accepted.
	repo.NoteSignature(t, tip, bob)
	if resp, err := trustedTipPatch(b, s, entity, "tag: signed\n"); status(resp, err) != 200 {
		t.Fatalf("patch on the tip Bob signed: %d %q", status(resp, err), errText(resp, err))
	}
	if n := checks(); n != 3 {
		t.Errorf("%d checks after the note moved, want 3", n)
	}

	// The new tip is the plugin's commit, and the plugin's key is not
	// trusted here: refused, checked once for both callers.
	for range 2 {
		if resp, err := trustedTipPatch(b, s, entity, "tag: again\n"); status(resp, err) != 409 {
			t.Fatalf("patch on the plugin's tip: %d %q, want 409", status(resp, err), errText(resp, err))
		}
	}
	if n := checks(); n != 4 {
		t.Errorf("%d checks after two callers on the new tip, want 4", n)
	}
}

func TestTipMemoBounds(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	q := gitwatch.Quorum{OK: true}
	tests := []struct {
		name    string
		fill    func(m *tipMemo)
		key     string
		at      time.Time
		want    bool
		maxSize int
	}{
		{"remembered", func(m *tipMemo) { m.put("k", q, t0) }, "k", t0.Add(tipMemoTTL - time.Second), true, 1},
		{"expired", func(m *tipMemo) { m.put("k", q, t0) }, "k", t0.Add(tipMemoTTL), false, 1},
		{"a clock set back forgets", func(m *tipMemo) { m.put("k", q, t0) }, "k", t0.Add(-time.Second), false, 1},
		{"an empty key is never remembered", func(m *tipMemo) { m.put("", q, t0) }, "", t0, false, 0},
		{"full: the oldest goes", func(m *tipMemo) {
			for i := range tipMemoSize + 1 {
				m.put(fmt.Sprint(i), q, t0.Add(time.Duration(i)*time.Millisecond))
			}
		}, "0", t0.Add(time.Second), false, tipMemoSize},
		{"full: the newest stays", func(m *tipMemo) {
			for i := range tipMemoSize + 1 {
				m.put(fmt.Sprint(i), q, t0.Add(time.Duration(i)*time.Millisecond))
			}
		}, fmt.Sprint(tipMemoSize), t0.Add(time.Second), true, tipMemoSize},
		{"full of expired verdicts: all go", func(m *tipMemo) {
			for i := range tipMemoSize {
				m.put(fmt.Sprint(i), q, t0)
			}
			m.put("new", q, t0.Add(tipMemoTTL))
		}, "new", t0.Add(tipMemoTTL), true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m tipMemo
			tt.fill(&m)
			if _, ok := m.get(tt.key, tt.at); ok != tt.want {
				t.Errorf("get(%q) = %v, want %v", tt.key, ok, tt.want)
			}
			if len(m.entries) > tt.maxSize {
				t.Errorf("%d entries, want at most %d", len(m.entries), tt.maxSize)
			}
		})
	}
}

// Two repository entries for one branch share its queue (patch.Repo), so
// a request of an entry with sign_commits=false and one of an entry with
// require_trusted_tip can go out in one group: patch/txn_group.go then
// refuses the second when the first's unsigned commit is below it
// (TestGroupTrustedBaseUnderUnsignedSibling in package patch).
func TestSiblingEntriesShareTheBranchQueue(t *testing.T) {
	t.Setenv(cacheDirEnv, t.TempDir())
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shared")
	repo.Commit(t, map[string]string{"a": "a\n"})
	b, s := newTestBackend(t, &logical.Entity{ID: "ent-1"}, nil)
	for name, opts := range map[string]map[string]any{
		"unsigned": {"sign_commits": false},
		"strict":   {"require_trusted_tip": true},
	} {
		opts["url"], opts["username"], opts["password"] = repo.URL(), srv.Username(), srv.Password()
		mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/"+name, opts), name)
	}
	ctx := context.Background()
	var repos []any
	for _, name := range []string{"unsigned", "strict"} {
		e, err := getRepository(ctx, s, name)
		if err != nil || e == nil {
			t.Fatalf("read %s: %v", name, err)
		}
		r, err := b.patch.openRepo(ctx, s, e)
		if err != nil {
			t.Fatal(err)
		}
		repos = append(repos, r)
	}
	if repos[0] != repos[1] {
		t.Fatal("two entries of one branch have separate queues; the unsigned-sibling check in attemptGroup would never be needed")
	}
}
