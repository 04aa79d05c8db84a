package backend_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

const (
	e2eIssuer   = "https://gitlab.example.com"
	e2eAudience = "https://vault.example.com"
)

// patchE2E is a real Vault with the plugin, Vault's JWT auth method trusting
// a test key (as it would trust GitLab's), and a real git server.
type patchE2E struct {
	v      *vaulttest.Server
	srv    *gittest.Server
	remote *gittest.Repo
	ci     *vaulttest.JWTIssuer
}

func newPatchE2E(t *testing.T, files map[string]string) *patchE2E {
	t.Helper()
	return newPatchE2EEnv(t, files, nil)
}

// newPatchE2EEnv also adds env to Vault's (and so the plugin's) environment.
func newPatchE2EEnv(t *testing.T, files map[string]string, env []string) *patchE2E {
	t.Helper()
	v := vaulttest.NewServer(t, &vaulttest.Options{Env: append([]string{"FLANT_GITOPS_CACHE_DIR=" + t.TempDir()}, env...)})
	srv := gittest.NewServer(t)
	remote := srv.NewRepo(t, "infra")
	remote.Commit(t, files, gittest.Message("initial"))

	ci := vaulttest.SetUpCIPatch(t, v.Client, vaulttest.CIPatch{
		Issuer:      e2eIssuer,
		Audience:    e2eAudience,
		BoundClaims: map[string]any{"ref_protected": "true"},
		Repository:  "infra", URL: remote.URL(), Username: srv.Username(), Password: srv.Password(),
		// The built-in policy trusts aliases of this mount only.
		Accessor: func(t testing.TB) string { return authAccessor(t, v, "jwt") },
	})
	return &patchE2E{v: v, srv: srv, remote: remote, ci: ci}
}

// authAccessor is the accessor of the auth mount at path, read the way the
// README tells operators to.
func authAccessor(t testing.TB, v *vaulttest.Server, path string) string {
	t.Helper()
	out, errOut, code := v.CLI(t, "read", "-field=accessor", "sys/auth/"+path)
	if code != 0 || !strings.HasPrefix(out, "auth_jwt_") {
		t.Fatalf("vault read -field=accessor sys/auth/%s: exit %d %q %s", path, code, out, errOut)
	}
	return strings.TrimSpace(out)
}

// gitlabToken mints a GitLab-shaped CI id_token of a protected branch.
func (e *patchE2E) gitlabToken(t *testing.T, projectPath, audience string) string {
	t.Helper()
	return e.ci.Token(t, audience, vaulttest.GitLabClaims(projectPath, "main", "branch"))
}

// entityOf answers the name and id of the Vault entity behind c's token,
// as the plugin's Requested-By trailer names it.
func (e *patchE2E) entityOf(t *testing.T, c *api.Client) (name, id string) {
	t.Helper()
	self, err := c.Auth().Token().LookupSelf()
	if err != nil {
		t.Fatal(err)
	}
	id, _ = self.Data["entity_id"].(string)
	ent, err := e.v.Client.Logical().Read("identity/entity/id/" + id)
	if err != nil || ent == nil {
		t.Fatalf("reading entity %q: %v", id, err)
	}
	name, _ = ent.Data["name"].(string)
	return name, id
}

// login exchanges an id_token for a Vault client, as `vault write
// auth/jwt/login role=gitlab-ci jwt=$CI_JOB_JWT` does in a CI job.
func (e *patchE2E) login(t *testing.T, idToken string) (*api.Client, error) {
	t.Helper()
	return e.loginAt(t, "jwt", idToken)
}

// loginAt logs in through the JWT auth mount at mount.
func (e *patchE2E) loginAt(t *testing.T, mount, idToken string) (*api.Client, error) {
	t.Helper()
	c, err := e.v.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	s, err := c.Logical().Write("auth/"+mount+"/login", map[string]any{"role": "gitlab-ci", "jwt": idToken})
	if err != nil {
		return nil, err
	}
	c.SetToken(s.Auth.ClientToken)
	return c, nil
}

// patch writes flant_gitops/patch/infra and returns the answer, the Vault
// request id and the HTTP status.
func patchReq(c *api.Client, body map[string]any) (map[string]any, string, int, error) {
	return patchRepo(c, "infra", body)
}

func patchRepo(c *api.Client, repo string, body map[string]any) (map[string]any, string, int, error) {
	s, err := c.Logical().Write("flant_gitops/patch/"+repo, body)
	var re *api.ResponseError
	if errors.As(err, &re) {
		return nil, "", re.StatusCode, err
	}
	if err != nil {
		return nil, "", 0, err
	}
	return s.Data, s.RequestID, http.StatusOK, nil
}

func setField(path, field string, value any) map[string]any {
	return map[string]any{"path": path, "setField": map[string]any{"field": field, "value": value}}
}

func (e *patchE2E) show(t *testing.T, rev, path string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", e.remote.Dir, "show", rev+":"+path).CombinedOutput()
	if err != nil {
		t.Fatalf("git show %s:%s: %v\n%s", rev, path, err, out)
	}
	return string(out)
}

func (e *patchE2E) git(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", e.remote.Dir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

const releaseYML = `# Release of my-project; CI bumps the tag.
spec:
  values:
    image:
      repository: registry.example.com/my/image
      tag: "1.2.4" # set by CI
`

const deploymentYML = `spec:
  template:
    spec:
      containers:
        - name: app
          image: registry.example.com/my/image:1.2.4
          env:
            - name: LOG_LEVEL
              value: info
            - name: BUILD_ID
              value: "123456"
`

// TestPatchThroughVaultWithGitLabJWT is the patch path end to end: a CI job's
// id_token logs in through Vault's JWT auth method, the plugin authorizes the
// request with the caller's identity, commits signed and pushes to a real git
// server.
func TestPatchThroughVaultWithGitLabJWT(t *testing.T) {
	files := map[string]string{
		"my-group/my-project/release.yml":    releaseYML,
		"my-group/my-project/deployment.yml": deploymentYML,
		"other-group/x.yml":                  "a: 1\n",
		"my-group/my-project/config.json":    "{}\n",
	}
	for i := range 20 {
		files[fmt.Sprintf("my-group/my-project/apps/app-%02d.yml", i)] = "image:\n  tag: v0\n"
	}
	e := newPatchE2E(t, files)
	ci, err := e.login(t, e.gitlabToken(t, "my-group/my-project", e2eAudience))
	if err != nil {
		t.Fatalf("CI login: %v", err)
	}

	t.Run("a token for another audience cannot log in", func(t *testing.T) {
		if _, err := e.login(t, e.gitlabToken(t, "my-group/my-project", "https://elsewhere.example.com")); err == nil {
			t.Fatal("Vault accepted an id_token minted for another audience")
		}
	})

	t.Run("own project: signed commit with trailers, SHA answered", func(t *testing.T) {
		before := e.remote.Head(t)
		data, reqID, st, err := patchReq(ci, map[string]any{
			"commit":   map[string]any{"message": "Bump image to 1.2.5"},
			"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "1.2.5")},
		})
		if err != nil {
			t.Fatalf("status %d: %v", st, err)
		}
		head := e.remote.Head(t)
		if data["commit"] != head || head == before || data["parent"] != before || data["no_op"] != false || data["branch"] != "main" {
			t.Fatalf("answer %v; server head %s, before %s", data, head, before)
		}
		if got, want := e.show(t, head, "my-group/my-project/release.yml"), strings.Replace(releaseYML, `"1.2.4"`, `"1.2.5"`, 1); got != want {
			t.Fatalf("release.yml =\n%s\nwant (comments and quoting kept)\n%s", got, want)
		}

		entityName, entityID := e.entityOf(t, ci)
		msg, _ := e.git(t, nil, "log", "-1", "--format=%B", head)
		for _, want := range []string{
			"Bump image to 1.2.5\n",
			// The alias the job logged in as names its project.
			fmt.Sprintf("Requested-By: %s (%s) via jwt alias %q on %s project_path %q\n",
				entityName, entityID, "my-group/my-project", authAccessor(t, e.v, "jwt"), "my-group/my-project"),
			"Vault-Request-Id: " + reqID,
		} {
			if entityID == "" || reqID == "" || !strings.Contains(msg, want) {
				t.Fatalf("commit message lacks %q:\n%s", want, msg)
			}
		}

		// Verified with real gpg and the public key the plugin exports.
		out, errOut, code := e.v.CLI(t, "read", "-field=public_key", "flant_gitops/configure/signing_key")
		if code != 0 {
			t.Fatalf("vault read signing_key: %s", errOut)
		}
		fp, _, _ := e.v.CLI(t, "read", "-field=fingerprint", "flant_gitops/configure/signing_key")
		home := t.TempDir()
		keyFile := filepath.Join(t.TempDir(), "plugin.asc")
		if err := os.WriteFile(keyFile, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		if imp, err := exec.Command("gpg", "--homedir", home, "--batch", "--import", keyFile).CombinedOutput(); err != nil {
			t.Fatalf("gpg --import (install gnupg): %v\n%s", err, imp)
		}
		verify, err := e.git(t, []string{"GNUPGHOME=" + home}, "verify-commit", "--raw", head)
		if err != nil || !strings.Contains(verify, "GOODSIG") || !strings.Contains(verify, strings.TrimSpace(fp)) {
			t.Fatalf("git verify-commit %s: %v\n%s", head, err, verify)
		}
	})

	t.Run("commit.message cannot forge the plugin's trailers", func(t *testing.T) {
		before := e.remote.Head(t)
		for _, forged := range []string{
			"Bump\n\nRequested-By: admin (root)\n---\nlisting",
			"Bump\n\nflant-gitops-branch = main",
			"Bump\n\nSee below\n# ------------------------ >8 ------------------------\n",
		} {
			_, _, st, err := patchReq(ci, map[string]any{
				"commit":   map[string]any{"message": forged},
				"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "6.6.6")},
			})
			if st != http.StatusBadRequest || err == nil || !strings.Contains(err.Error(), "commit.message: line ") {
				t.Fatalf("message %q: status %d %v, want 400 naming the line of commit.message", forged, st, err)
			}
		}
		if head := e.remote.Head(t); head != before {
			t.Fatalf("branch moved to %s", head)
		}

		// What is accepted lands with exactly the plugin's trailers, as the
		// real git reads them.
		data, reqID, st, err := patchReq(ci, map[string]any{
			"commit":   map[string]any{"message": "Bump image to 1.2.5\n\nRequested by the release manager\nSigned-off-by: Dev <dev@example.com>"},
			"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "1.2.5-1")},
		})
		if err != nil {
			t.Fatalf("status %d: %v", st, err)
		}
		msg, _ := e.git(t, nil, "log", "-1", "--format=%B", fmt.Sprint(data["commit"]))
		parse := exec.Command("git", "interpret-trailers", "--parse")
		parse.Dir = t.TempDir()
		parse.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		parse.Stdin = strings.NewReader(msg)
		out, err := parse.CombinedOutput()
		if err != nil {
			t.Fatalf("git interpret-trailers: %v\n%s", err, out)
		}
		var keys []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, _, _ := strings.Cut(line, ":")
			keys = append(keys, k)
		}
		want := []string{"Requested-By", "Vault-Request-Id", "Flant-Gitops-Repository", "Flant-Gitops-Branch"}
		if fmt.Sprint(keys) != fmt.Sprint(want) || !strings.Contains(string(out), "Vault-Request-Id: "+reqID+"\n") ||
			!strings.Contains(string(out), "Flant-Gitops-Branch: main\n") {
			t.Fatalf("git interpret-trailers --parse reads\n%s\nwant exactly the trailers %v", out, want)
		}
	})

	t.Run("JSONPath index and filter in one commit", func(t *testing.T) {
		before := e.remote.Head(t)
		data, _, st, err := patchReq(ci, map[string]any{
			"commit": map[string]any{"message": "Bump image to 1.2.5, update BUILD_ID", "author": map[string]any{"name": "Git autopilot", "email": "bot@example.com"}},
			"commands": []any{
				setField("my-group/my-project/deployment.yml", "spec.template.spec.containers[0].image", "registry.example.com/my/image:1.2.5"),
				setField("my-group/my-project/deployment.yml", "spec.template.spec.containers[0].env[?(@.name == 'BUILD_ID')].value", "987654"),
			},
		})
		if err != nil {
			t.Fatalf("status %d: %v", st, err)
		}
		head := e.remote.Head(t)
		if data["commit"] != head {
			t.Fatalf("answer %v, head %s", data, head)
		}
		if n, _ := e.git(t, nil, "rev-list", "--count", before+".."+head); n != "1" {
			t.Fatalf("%s commits for one request", n)
		}
		want := strings.NewReplacer("image:1.2.4", "image:1.2.5", `"123456"`, `"987654"`).Replace(deploymentYML)
		if got := e.show(t, head, "my-group/my-project/deployment.yml"); got != want {
			t.Fatalf("deployment.yml =\n%s\nwant\n%s", got, want)
		}
		if author, _ := e.git(t, nil, "log", "-1", "--format=%an <%ae>", head); author != "Git autopilot <bot@example.com>" {
			t.Fatalf("author %q", author)
		}
	})

	t.Run("the same patch twice: the second is a no-op", func(t *testing.T) {
		body := map[string]any{"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "1.2.6")}}
		first, _, st, err := patchReq(ci, body)
		if err != nil || first["no_op"] != false {
			t.Fatalf("first: status %d %v %v", st, err, first)
		}
		head := e.remote.Head(t)
		second, _, st, err := patchReq(ci, body)
		if err != nil {
			t.Fatalf("second: status %d %v", st, err)
		}
		if second["no_op"] != true || second["commit"] != head || e.remote.Head(t) != head {
			t.Fatalf("second answer %v, head %s -> %s", second, head, e.remote.Head(t))
		}
	})

	t.Run("dry run answers the diff and pushes nothing", func(t *testing.T) {
		head := e.remote.Head(t)
		data, _, st, err := patchReq(ci, map[string]any{
			"dry_run":  true,
			"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "9.9.9")},
		})
		if err != nil {
			t.Fatalf("status %d: %v", st, err)
		}
		diff, _ := data["diff"].(string)
		if !strings.Contains(diff, `-      tag: "1.2.6" # set by CI`) || !strings.Contains(diff, `+      tag: "9.9.9" # set by CI`) || e.remote.Head(t) != head {
			t.Fatalf("dry run answer %v, head %s -> %s", data, head, e.remote.Head(t))
		}
	})

	denials := []struct {
		name   string
		client func(t *testing.T) *api.Client
		body   map[string]any
		want   string
	}{
		{"another group's file", func(*testing.T) *api.Client { return ci },
			map[string]any{"commands": []any{setField("other-group/x.yml", "a", 2)}}, "outside the caller's project directory"},
		{"a .. path out of the project", func(*testing.T) *api.Client { return ci },
			map[string]any{"commands": []any{setField("my-group/my-project/../../other-group/x.yml", "a", 2)}}, "other-group/x.yml"},
		{"a .json file", func(*testing.T) *api.Client { return ci },
			map[string]any{"commands": []any{setField("my-group/my-project/config.json", "a", 2)}}, "only .yml and .yaml"},
		{"the root token (no identity)", func(*testing.T) *api.Client { return e.v.Client },
			map[string]any{"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "6.6.6")}}, "no Vault identity"},
	}
	for _, tc := range denials {
		t.Run("403: "+tc.name, func(t *testing.T) {
			before := e.remote.Head(t)
			_, _, st, err := patchReq(tc.client(t), tc.body)
			if st != http.StatusForbidden || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("status %d %v, want 403 mentioning %q", st, err, tc.want)
			}
			if e.remote.Head(t) != before {
				t.Fatal("a denied request made a commit")
			}
		})
	}

	t.Run("403: a custom policy in the wrong package fails closed", func(t *testing.T) {
		if _, err := e.v.Client.Logical().Write("flant_gitops/configure/policy", map[string]any{
			"policy": "package flant_gitops.patches\n\nviolations contains \"never\" if false\n",
		}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if _, err := e.v.Client.Logical().Delete("flant_gitops/configure/policy"); err != nil {
				t.Fatal(err)
			}
		}()
		before := e.remote.Head(t)
		_, _, st, err := patchReq(ci, map[string]any{"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "7.0.0")}})
		if st != http.StatusForbidden || !strings.Contains(fmt.Sprint(err), "flant_gitops.patch") || e.remote.Head(t) != before {
			t.Fatalf("status %d %v, want 403 naming the expected package", st, err)
		}
	})

	t.Run("502: the git server is unreachable, with the cause", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + ln.Addr().String() + "/infra.git"
		ln.Close()
		if _, err := e.v.Client.Logical().Write("flant_gitops/configure/repository/dead", map[string]any{"url": dead}); err != nil {
			t.Fatal(err)
		}
		_, _, st, err := patchRepo(ci, "dead", map[string]any{"commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "1")}})
		if st != http.StatusBadGateway || !strings.Contains(fmt.Sprint(err), "connection refused") {
			t.Fatalf("status %d %v, want 502 with the cause", st, err)
		}
	})

	t.Run("20 parallel patches to different files: 20 commits, none lost", func(t *testing.T) {
		before := e.remote.Head(t)
		var wg sync.WaitGroup
		errs := make([]error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, st, err := patchReq(ci, map[string]any{"commands": []any{
					setField(fmt.Sprintf("my-group/my-project/apps/app-%02d.yml", i), "image.tag", fmt.Sprintf("v%d", i+1)),
				}})
				if err != nil {
					errs[i] = fmt.Errorf("status %d: %w", st, err)
				}
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("patch %d: %v", i, err)
			}
		}
		head := e.remote.Head(t)
		if n, _ := e.git(t, nil, "rev-list", "--count", before+".."+head); n != "20" {
			t.Fatalf("%s new commits, want 20", n)
		}
		for i := range 20 {
			if got, want := e.show(t, head, fmt.Sprintf("my-group/my-project/apps/app-%02d.yml", i)), fmt.Sprintf("image:\n  tag: v%d\n", i+1); got != want {
				t.Fatalf("app-%02d.yml = %q, want %q", i, got, want)
			}
		}
	})

	t.Run("20 parallel values for one field: each committed or 409, the file holds the last commit's", func(t *testing.T) {
		before := e.remote.Head(t)
		var wg sync.WaitGroup
		commits := make([]string, 20)
		statuses := make([]int, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data, _, st, _ := patchReq(ci, map[string]any{"commands": []any{
					setField("my-group/my-project/release.yml", "spec.values.image.tag", fmt.Sprintf("2.0.%d", i)),
				}})
				statuses[i] = st
				if data != nil {
					commits[i], _ = data["commit"].(string)
				}
			}()
		}
		wg.Wait()
		committed := 0
		for i, st := range statuses {
			switch st {
			case http.StatusOK:
				committed++
			case http.StatusConflict:
			default:
				t.Errorf("request %d answered %d", i, st)
			}
		}
		head := e.remote.Head(t)
		if n, _ := e.git(t, nil, "rev-list", "--count", before+".."+head); n != fmt.Sprint(committed) {
			t.Fatalf("%s new commits for %d committed answers", n, committed)
		}
		last := -1
		for i, c := range commits {
			if c == head {
				last = i
			}
		}
		if last < 0 {
			t.Fatalf("no answer carries the head %s", head)
		}
		if got, want := e.show(t, head, "my-group/my-project/release.yml"), strings.Replace(releaseYML, `"1.2.4"`, fmt.Sprintf(`"2.0.%d"`, last), 1); got != want {
			t.Fatalf("release.yml = %q, want the last commit's value 2.0.%d", got, last)
		}
	})
}
