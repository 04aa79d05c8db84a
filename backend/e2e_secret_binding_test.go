package backend

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// TestE2ESecretsStayWithTheirAddress is the attack through a real Vault: a
// writer of configure, configure_vault_access or configure/repository/NAME
// points the address at a host they control, hoping the stored secret
// follows. Each write is refused with a 400 naming the fields, the stored
// configuration is unchanged, and the host receives nothing.
func TestE2ESecretsStayWithTheirAddress(t *testing.T) {
	git := gittest.NewServer(t)
	repo := git.NewRepo(t, "ops")
	head := repo.Commit(t, map[string]string{"README": "one\n"})
	evil := newRecorder(t)
	srv := vaulttest.NewServer(t, &vaulttest.Options{Env: []string{cacheDirEnv + "=" + t.TempDir()}})
	e := &watchE2E{t: t, vault: srv, repo: repo}
	const secretID = "e2e-secret-id-that-must-stay"

	e.configure(map[string]any{
		"git_repo_url": repo.URL(), "docker_image": testImage, "commands": []string{"true"},
		"git_poll_period": "1h", "initial_last_successful_commit": head,
	})
	e.write("configure/git_credential", map[string]any{"username": git.Username(), "password": git.Password()})
	e.write("configure_vault_access", map[string]any{"vault_addr": srv.Addr, "role_name": "myrole", "role_id": "my-role-id", "secret_id": secretID})
	e.write("configure/repository/infra", map[string]any{"url": repo.URL(), "username": git.Username(), "password": git.Password()})
	e.pollUntilOutcome(watch.OutcomeUpToDate)

	attacks := []struct {
		path, field string
		data        map[string]any
		want        []string
	}{
		{"configure", "git_repo_url", map[string]any{"git_repo_url": evil.URL + "/ops.git"}, []string{"git_repo_url", "configure/git_credential", repo.URL()}},
		{"configure_vault_access", "vault_addr", map[string]any{"vault_addr": evil.URL}, []string{"vault_addr", "secret_id"}},
		{"configure_vault_access", "vault_addr", map[string]any{"vault_addr": evil.URL, "vault_tls_server_name": "evil.example.com"}, []string{"vault_addr, vault_tls_server_name", "secret_id"}},
		{"configure/repository/infra", "url", map[string]any{"url": evil.URL + "/infra.git"}, []string{"url", "password"}},
	}
	for _, a := range attacks {
		before := e.read(a.path)
		_, err := srv.Client.Logical().WriteWithContext(t.Context(), vaulttest.MountPath+"/"+a.path, a.data)
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
			t.Fatalf("write %s %v: %v, want a 400", a.path, a.data, err)
		}
		for _, w := range a.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("the refusal of %s does not name %q: %v", a.path, w, err)
			}
		}
		if after := e.read(a.path); after[a.field] != before[a.field] {
			t.Errorf("%s %s = %v after the refused write, was %v", a.path, a.field, after[a.field], before[a.field])
		}
	}

	// The watcher still fetches, with its credential, from the real server.
	git.ResetStats()
	e.pollUntilOutcome(watch.OutcomeUpToDate)
	if st := git.Stats(); st.RefAdvertisements == 0 || st.Unauthorized != 0 {
		t.Errorf("the poll after the refused writes did not fetch from the real server with the credential: %+v", st)
	}
	if got := evil.requests(); len(got) != 0 {
		t.Fatalf("the new host received %d request(s):\n%s", len(got), got[0])
	}

	// The recorder does see a fetch once the URL really moves, without any
	// credential: it would have caught a leak.
	if _, err := srv.Client.Logical().DeleteWithContext(t.Context(), vaulttest.MountPath+"/configure/git_credential"); err != nil {
		t.Fatal(err)
	}
	e.configure(map[string]any{"git_repo_url": evil.URL + "/ops.git"})
	e.pollUntilOutcome(watch.OutcomeError)
	got := strings.Join(evil.requests(), "\n")
	if !strings.Contains(got, "/ops.git/info/refs") {
		t.Fatalf("the recorder saw no fetch after the URL moved; the check above proves nothing:\n%s", got)
	}
	if strings.Contains(got, "Authorization") || strings.Contains(got, git.Password()) || strings.Contains(got, secretID) {
		t.Fatalf("a credential reached the new host:\n%s", got)
	}
}
