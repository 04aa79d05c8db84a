package backend

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/approle"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// recorder stands in for a host an attacker controls: it records every
// request it receives and refuses it.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // method, path, headers and body of each request
}

func newRecorder(t testing.TB) *recorder {
	t.Helper()
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var b strings.Builder
		b.WriteString(req.Method + " " + req.URL.String() + "\n")
		_ = req.Header.Write(&b)
		b.Write(body)
		r.mu.Lock()
		r.seen = append(r.seen, b.String())
		r.mu.Unlock()
		http.Error(w, "recorder", http.StatusForbidden)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func TestVaultAccessAddressChangeNeedsSecretID(t *testing.T) {
	ca, _ := vaulttest.NewTestCA(t, "other CA")
	otherCA := vaulttest.CACertPEM(ca)
	cases := []struct {
		name   string
		write  map[string]any
		refuse []string // fields the 400 names; nil when the write is fine
	}{
		{"vault_addr", map[string]any{"vault_addr": "https://evil.example.com:8200"}, []string{"vault_addr", "secret_id"}},
		{"vault_cacert", map[string]any{"vault_cacert": otherCA}, []string{"vault_cacert", "secret_id"}},
		{"vault_tls_server_name", map[string]any{"vault_tls_server_name": "evil.example.com"}, []string{"vault_tls_server_name", "secret_id"}},
		{"approle_mount_point", map[string]any{"approle_mount_point": "auth/evil"}, []string{"approle_mount_point", "secret_id"}},
		{"several at once", map[string]any{"vault_addr": "https://evil.example.com", "vault_tls_server_name": "evil"}, []string{"vault_addr, vault_tls_server_name"}},
		{"the same address again", map[string]any{"vault_addr": "https://vault.example.com:8200/"}, nil},
		{"fields that do not move it", map[string]any{"role_id": "role-id-2", "role_name": "other", "secret_id_ttl": "60m"}, nil},
		{"new address with its secret_id", map[string]any{"vault_addr": "https://new.example.com", "secret_id": "new-secret"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure_vault_access", vaultAccessData()), "create")
			rot := &approle.Rotation{OldSecretID: "secret-id-very-secret", NewSecretID: "rotated-secret"}
			if err := putEntry(t.Context(), s, approle.RotationKey, rot); err != nil {
				t.Fatal(err)
			}
			before, _ := getVaultAccess(t.Context(), s)
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure_vault_access", tc.write)
			after, _ := getVaultAccess(t.Context(), s)
			leftRot, _ := getEntry[approle.Rotation](t.Context(), s, approle.RotationKey)
			if tc.refuse != nil {
				mustBadRequest(t, resp, err, tc.refuse...)
				if !reflect.DeepEqual(before, after) || leftRot == nil {
					t.Errorf("a refused write changed storage: before %+v after %+v, rotation %v", before, after, leftRot)
				}
				return
			}
			if err != nil || resp.IsError() {
				t.Fatalf("write refused: %v %v", err, resp.Error())
			}
			moved := len(vaultTargetChanges(before, after)) > 0
			if moved != (leftRot == nil) {
				t.Errorf("target moved %v, rotation record left %v: the record must go exactly when the target moves", moved, leftRot != nil)
			}
		})
	}
}

// A rotation record outlives neither its access nor a new access written
// after a delete: its secret_ids belong to the old target.
func TestVaultAccessDeleteAndRecreateDropRotationRecord(t *testing.T) {
	for _, deleteFirst := range []bool{true, false} {
		b, s := newTestBackend(t, nil, nil)
		mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure_vault_access", vaultAccessData()), "create")
		if err := putEntry(t.Context(), s, approle.RotationKey, &approle.Rotation{OldSecretID: "a", NewSecretID: "b"}); err != nil {
			t.Fatal(err)
		}
		mustOK(t, configReq(t, b, s, logical.DeleteOperation, "configure_vault_access", nil), "delete")
		if !deleteFirst {
			// A record written by a rotation racing the delete.
			if err := putEntry(t.Context(), s, approle.RotationKey, &approle.Rotation{OldSecretID: "a", NewSecretID: "b"}); err != nil {
				t.Fatal(err)
			}
		}
		data := vaultAccessData()
		data["vault_addr"], data["secret_id"] = "https://new.example.com", "new"
		mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure_vault_access", data), "create again")
		if r, _ := getEntry[approle.Rotation](t.Context(), s, approle.RotationKey); r != nil {
			t.Errorf("deleteFirst=%v: the old access's rotation record survived", deleteFirst)
		}
	}
}

// The end of the attack: after the refused write nothing reaches the new
// host, and the real target keeps working (secret_id rotation included).
// A rotation record left for another target is dropped, never sent.
func TestVaultAccessSecretIDNeverReachesANewHost(t *testing.T) {
	f := newTargetFixture(t, "10m")
	evil := newRecorder(t)
	p := newTestPlugin(t, nil)
	ctx := context.Background()
	p.request(t, logical.UpdateOperation, "configure_vault_access", f.accessFields("90s"))
	p.request(t, logical.UpdateOperation, "configure/vault_request/app", map[string]any{"path": "secret/data/app"})
	if _, _, err := p.b.prepareVaultRequests(ctx, p.s); err != nil {
		t.Fatal(err)
	}
	before, _ := getVaultAccess(ctx, p.s)
	for _, w := range []map[string]any{
		{"vault_addr": evil.URL},
		{"vault_addr": evil.URL, "vault_cacert": "", "vault_tls_server_name": ""},
	} {
		resp, err := p.b.HandleRequest(ctx, &logical.Request{Operation: logical.UpdateOperation, Path: "configure_vault_access", Storage: p.s, Data: w})
		mustBadRequest(t, resp, err, "vault_addr", "secret_id")
	}
	if after, _ := getVaultAccess(ctx, p.s); !reflect.DeepEqual(before, after) {
		t.Fatalf("refused writes changed the stored access: %+v", after)
	}
	p.sleep(61 * time.Second) // rotation due
	if err := p.client.RotateSecretID(ctx, approleStorage(p.s)); err != nil {
		t.Fatalf("rotate on the real target: %v", err)
	}
	if _, _, err := p.b.prepareVaultRequests(ctx, p.s); err != nil {
		t.Fatalf("vault requests on the real target: %v", err)
	}
	if got := evil.requests(); len(got) != 0 {
		t.Fatalf("the new host received %d request(s) after the refused write:\n%s", len(got), got[0])
	}

	// Moving with a secret_id of the new host: only that one goes there,
	// and a rotation record of the old target is never replayed.
	oldSecret := p.configuredSecretID(t)
	leftover := &approle.Rotation{OldSecretID: oldSecret, NewSecretID: newSecretID(t, f.tg), Target: targetFromEntry(before).Key()}
	p.request(t, logical.UpdateOperation, "configure_vault_access", map[string]any{
		"vault_addr": evil.URL, "vault_cacert": "", "vault_tls_server_name": "", "secret_id": "secret-of-the-new-host", "secret_id_ttl": 0,
	})
	if err := putEntry(ctx, p.s, approle.RotationKey, leftover); err != nil {
		t.Fatal(err)
	}
	if err := p.client.RotateSecretID(ctx, approleStorage(p.s)); err != nil {
		t.Fatalf("recovery of a record for another target: %v", err)
	}
	if r, _ := getEntry[approle.Rotation](ctx, p.s, approle.RotationKey); r != nil {
		t.Error("the rotation record of the old target was kept")
	}
	_, _, _ = p.b.prepareVaultRequests(ctx, p.s) // fails at the recorder
	got := strings.Join(evil.requests(), "\n")
	if !strings.Contains(got, "secret-of-the-new-host") {
		t.Fatalf("the recorder saw no login with the new host's secret_id; it proves nothing:\n%s", got)
	}
	for _, secret := range append(targetSecrets(t, f.tg), f.secretID, oldSecret, leftover.NewSecretID) {
		if strings.Contains(got, secret) {
			t.Fatal("a secret of the old target reached the new host")
		}
	}
}

func TestGitCredentialStaysWithItsURL(t *testing.T) {
	const (
		repoA = "https://git.example.com/infra/deploy.git"
		repoB = "https://evil.example.com/deploy.git"
	)
	cfg := map[string]any{"git_repo_url": repoA, "docker_image": testImage, "commands": "true"}
	cred := map[string]any{"username": "oauth2", "password": "glpat-secret"}
	type step struct {
		op     logical.Operation
		path   string
		data   map[string]any
		refuse []string
	}
	write := func(path string, data map[string]any, refuse ...string) step {
		return step{logical.UpdateOperation, path, data, refuse}
	}
	del := func(path string) step { return step{op: logical.DeleteOperation, path: path} }
	cases := []struct {
		name      string
		steps     []step
		wantURL   string // configure's git_repo_url at the end
		wantBound string // the credential's URL at the end; "-" when none is stored
	}{
		{"credential after configure: bound, move refused",
			[]step{write("configure", cfg), write("configure/git_credential", cred), write("configure", map[string]any{"git_repo_url": repoB}, "git_repo_url", "configure/git_credential", repoA)},
			repoA, repoA},
		{"credential before configure: bound by the first write, move refused",
			[]step{write("configure/git_credential", cred), write("configure", cfg), write("configure", map[string]any{"git_repo_url": repoB}, "git_repo_url")},
			repoA, repoA},
		{"delete and re-create configure elsewhere: refused",
			[]step{write("configure", cfg), write("configure/git_credential", cred), del("configure"), write("configure", map[string]any{"git_repo_url": repoB, "docker_image": testImage, "commands": "true"}, "git_repo_url")},
			"", repoA},
		{"the documented move: delete, change, write again",
			[]step{write("configure", cfg), write("configure/git_credential", cred), del("configure/git_credential"), write("configure", map[string]any{"git_repo_url": repoB}), write("configure/git_credential", cred)},
			repoB, repoB},
		{"same URL and other fields: fine",
			[]step{write("configure", cfg), write("configure/git_credential", cred), write("configure", map[string]any{"git_repo_url": repoA, "git_branch_name": "prod"})},
			repoA, repoA},
		{"no credential: moves freely",
			[]step{write("configure", cfg), write("configure", map[string]any{"git_repo_url": repoB})},
			repoB, "-"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			for i, st := range tc.steps {
				resp, err := rawConfigReq(b, s, st.op, st.path, st.data)
				if st.refuse != nil {
					mustBadRequest(t, resp, err, st.refuse...)
					continue
				}
				if err != nil || resp.IsError() {
					t.Fatalf("step %d %s %s: %v %v", i, st.op, st.path, err, resp.Error())
				}
			}
			c, _ := getConfig(t.Context(), s)
			gotURL := ""
			if c != nil {
				gotURL = c.GitRepoURL
			}
			gc, _ := getGitCredential(t.Context(), s)
			gotBound := "-"
			if gc != nil {
				gotBound = gc.GitRepoURL
			}
			if gotURL != tc.wantURL || gotBound != tc.wantBound {
				t.Errorf("git_repo_url %q, credential bound to %q; want %q, %q", gotURL, gotBound, tc.wantURL, tc.wantBound)
			}
		})
	}
}

// A credential whose recorded URL is not configure's (written by hand, or by
// a future bug) is not used: the poll fails with the fix instead.
func TestWatchSettingsRefuseACredentialOfAnotherURL(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{"git_repo_url": "https://a.example.com/r.git", "docker_image": testImage, "commands": "true"}), "configure")
	if err := putEntry(t.Context(), s, storageKeyGitCredential, &gitCredentialEntry{gitCredential: gitCredential{Username: "u", Password: "p"}, GitRepoURL: "https://b.example.com/r.git"}); err != nil {
		t.Fatal(err)
	}
	ws, err := loadWatchSettings(t.Context(), s)
	if err == nil || !strings.Contains(err.Error(), "written for https://b.example.com/r.git") || ws != nil {
		t.Fatalf("loadWatchSettings = %+v, %v; want a refusal naming both URLs", ws, err)
	}
}

func TestRepositoryURLChangeNeedsCredential(t *testing.T) {
	sshKey, knownHosts := testSSHKey(t, "")
	const path = "configure/repository/infra"
	basic := map[string]any{"url": "https://git.example.com/ops/infra.git", "username": "gitlab", "password": "glpat-secret"}
	viaSSH := map[string]any{"url": "ssh://git@git.example.com/ops/infra.git", "ssh_private_key": sshKey, "known_hosts": knownHosts}
	anon := map[string]any{"url": "https://git.example.com/ops/infra.git"}
	cases := []struct {
		name   string
		create map[string]any
		update map[string]any
		refuse []string
	}{
		{"password kept for a new url", basic, map[string]any{"url": "https://evil.example.com/infra.git"}, []string{"url", "password"}},
		{"username alone is not the secret", basic, map[string]any{"url": "https://evil.example.com/infra.git", "username": "x"}, []string{"password"}},
		{"ssh key kept for a new url", viaSSH, map[string]any{"url": "ssh://git@evil.example.com/infra.git", "known_hosts": knownHosts}, []string{"url", "ssh_private_key"}},
		{"new url with its password", basic, map[string]any{"url": "https://new.example.com/infra.git", "username": "u", "password": "new"}, nil},
		{"other fields keep the credential", basic, map[string]any{"branch": "prod", "sign_commits": false}, nil},
		{"no credential: moves freely", anon, map[string]any{"url": "https://other.example.com/infra.git"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, path, tc.create), "create")
			before, _ := getRepository(t.Context(), s, "infra")
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, path, tc.update)
			after, _ := getRepository(t.Context(), s, "infra")
			if tc.refuse == nil {
				if err != nil || resp.IsError() {
					t.Fatalf("refused: %v %v", err, resp.Error())
				}
				return
			}
			mustBadRequest(t, resp, err, tc.refuse...)
			if !reflect.DeepEqual(before, after) {
				t.Errorf("a refused write changed the repository: %+v", after)
			}
		})
	}
}

// The repository's password, after a refused move of its url, still goes
// only to its own git server: a patch pushes there and the new host hears
// nothing.
func TestRepositoryPasswordNeverReachesANewHost(t *testing.T) {
	t.Setenv(cacheDirEnv, t.TempDir())
	git := gittest.NewServer(t)
	repo := git.NewRepo(t, "infra")
	repo.Commit(t, map[string]string{"my-group/my-project/release.yml": "tag: v1\n"})
	evil := newRecorder(t)
	ci := &logical.Entity{ID: "ent-1", Name: "ci", Aliases: []*logical.Alias{{
		MountType: "jwt", MountAccessor: "auth_jwt_0a1b2c3d", Name: "my-group/my-project",
		Metadata: map[string]string{"project_path": "my-group/my-project"},
	}}}
	b, s := newTestBackend(t, ci, nil)
	configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"trusted_auth_mount_accessors": "auth_jwt_0a1b2c3d"})
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{
		"url": repo.URL(), "username": git.Username(), "password": git.Password(), "sign_commits": false,
	}), "repository")
	resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{"url": evil.URL + "/infra.git"})
	mustBadRequest(t, resp, err, "url", "password")

	before := repo.Head(t)
	resp, err = b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "patch/infra", Storage: s, MountPoint: "flant_gitops/", ID: "req-1", EntityID: ci.ID,
		Data: map[string]any{"commands": []any{map[string]any{"path": "my-group/my-project/release.yml", "setField": map[string]any{"field": "tag", "value": "v2"}}}},
	})
	if st := status(resp, err); st != http.StatusOK || repo.Head(t) == before {
		t.Fatalf("patch after the refused move: %d %q; want it pushed to the real server", st, errText(resp, err))
	}
	if got := evil.requests(); len(got) != 0 {
		t.Fatalf("the new host received %d request(s):\n%s", len(got), got[0])
	}
}
