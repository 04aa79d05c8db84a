package main_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
	yaml "go.yaml.in/yaml/v3"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

const githubIssuer = "https://token.actions.githubusercontent.com"

// readmeSection is the README's text from a "### " heading to the next one.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vaulttest.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n### "+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", "### "+heading)
	}
	section, _, _ = strings.Cut(section, "\n### ")
	return section
}

// fenced is the first block fenced as lang in text.
func fenced(t *testing.T, text, lang string) string {
	t.Helper()
	_, block, ok := strings.Cut(text, "```"+lang+"\n")
	if !ok {
		t.Fatalf("no %s block in:\n%s", lang, text)
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// readmeRole is the JSON the README writes to a JWT role, as a Vault write.
func readmeRole(t *testing.T, section, rolePath string) map[string]any {
	t.Helper()
	_, body, ok := strings.Cut(readmeSection(t, section), "vault write "+rolePath+" - <<'JSON'\n")
	if !ok {
		t.Fatalf("the README's %q section does not write %s from a JSON heredoc", section, rolePath)
	}
	body, _, ok = strings.Cut(body, "\nJSON\n")
	if !ok {
		t.Fatalf("the %s heredoc does not end", rolePath)
	}
	var role map[string]any
	if err := json.Unmarshal([]byte(body), &role); err != nil {
		t.Fatalf("the README's %s is not JSON: %v\n%s", rolePath, err, body)
	}
	return role
}

// gitlabRawJob is the README's GitLab job: its rules and its script, less
// the package install that needs the network.
func gitlabRawJob(t *testing.T) (rules []map[string]string, script []string) {
	t.Helper()
	var jobs map[string]struct {
		Rules  []map[string]string `yaml:"rules"`
		Script []string            `yaml:"script"`
	}
	if err := yaml.Unmarshal([]byte(fenced(t, readmeSection(t, "GitLab CI job"), "yaml")), &jobs); err != nil {
		t.Fatalf("the README's GitLab job is not YAML: %v", err)
	}
	if len(jobs) != 1 {
		t.Fatalf("the README's GitLab block has %d jobs, want 1", len(jobs))
	}
	for _, j := range jobs {
		rules = j.Rules
		for _, line := range j.Script {
			if !strings.HasPrefix(line, "apk add ") {
				script = append(script, line)
			}
		}
	}
	if len(script) == 0 {
		t.Fatal("the README's GitLab job has no script")
	}
	return rules, script
}

// githubJob is the README's GitHub workflow: the vault-action step's login
// (mount path and role) and the run script of the step after it.
type githubJob struct {
	path, role, run string
	shell           string
}

func githubRawJob(t *testing.T) githubJob {
	t.Helper()
	var wf struct {
		Jobs map[string]struct {
			Steps []struct {
				Uses  string            `yaml:"uses"`
				With  map[string]string `yaml:"with"`
				Shell string            `yaml:"shell"`
				Run   string            `yaml:"run"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal([]byte(fenced(t, readmeSection(t, "GitHub Actions job"), "yaml")), &wf); err != nil {
		t.Fatalf("the README's GitHub workflow is not YAML: %v", err)
	}
	var j githubJob
	for _, job := range wf.Jobs {
		for _, s := range job.Steps {
			switch {
			case strings.HasPrefix(s.Uses, "hashicorp/vault-action@"):
				j.path, j.role = s.With["path"], s.With["role"]
			case s.Run != "":
				j.run, j.shell = s.Run, s.Shell
			}
		}
	}
	if j.path == "" || j.role == "" || j.run == "" {
		t.Fatalf("the README's GitHub workflow lacks the vault-action login or a run step: %+v", j)
	}
	return j
}

// githubCLISteps are the run scripts of the README's CI client steps for
// GitHub that call the CLI (the download step needs the network).
func githubCLISteps(t *testing.T) []string {
	t.Helper()
	section := readmeSection(t, "CI client")
	_, rest, ok := strings.Cut(section, "```yaml\n")
	if !ok {
		t.Fatal("the CI client section has no yaml block")
	}
	_, rest, ok = strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the CI client section's yaml block does not end")
	}
	var steps []struct {
		Run string `yaml:"run"`
	}
	if err := yaml.Unmarshal([]byte(fenced(t, rest, "yaml")), &steps); err != nil {
		t.Fatalf("the CI client's GitHub steps are not YAML: %v", err)
	}
	var runs []string
	for _, s := range steps {
		if strings.Contains(s.Run, "flant_gitops-patch\" ") && !strings.HasPrefix(s.Run, "curl ") {
			runs = append(runs, s.Run)
		}
	}
	if len(runs) == 0 {
		t.Fatal("the CI client's GitHub steps do not call flant_gitops-patch")
	}
	return runs
}

// gitlabToken mints a GitLab-shaped id_token of a tag pipeline.
func (e *ciEnv) gitlabToken(t *testing.T, namespace, project, tag string) string {
	t.Helper()
	return e.gitlab.Token(t, audience, vaulttest.GitLabClaims(namespace+"/"+project, tag, "tag"))
}

func githubClaims(repository, ref string) map[string]any {
	owner, _, _ := strings.Cut(repository, "/")
	return map[string]any{
		"sub":              "repo:" + repository + ":ref:" + ref,
		"repository":       repository,
		"repository_owner": owner,
		"ref":              ref,
		"ref_type":         "tag",
		"event_name":       "push",
		"workflow":         "release",
		"actor":            "ci-bot",
	}
}

// recipeEnv is newCIEnv with the README's own roles: GitLab's at auth/jwt,
// GitHub's on a second JWT mount named as the workflow logs in, both
// trusted, the vault CLI on the job's PATH.
func recipeEnv(t *testing.T) (*ciEnv, githubJob) {
	t.Helper()
	e := newCIEnv(t)
	gh := githubRawJob(t)
	c := e.v.Client
	if err := os.Symlink(vaulttest.VaultBinary(t), filepath.Join(e.bin, "vault")); err != nil {
		t.Fatal(err)
	}
	e.remote.Commit(t, map[string]string{"my-org/my-app/release.yml": releaseYML}, gittest.Message("the GitHub repository's release"))
	e.github = vaulttest.NewJWTIssuer(t, githubIssuer)
	e.github.Mount(t, c, gh.path)
	auths, err := c.Sys().ListAuth()
	if err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		path string
		data map[string]any
	}{
		{"auth/jwt/role/gitlab-ci", readmeRole(t, "Operator setup", "auth/jwt/role/gitlab-ci")},
		{"auth/" + gh.path + "/role/" + gh.role, readmeRole(t, "GitHub Actions job", "auth/"+gh.path+"/role/"+gh.role)},
		{"flant_gitops/configure/policy", map[string]any{
			"trusted_auth_mount_accessors": auths["jwt/"].Accessor + "," + auths[gh.path+"/"].Accessor,
		}},
	}
	for _, w := range writes {
		if _, err := c.Logical().Write(w.path, w.data); err != nil {
			t.Fatalf("write %s: %v", w.path, err)
		}
	}
	return e, gh
}

// TestRecipesThroughVaultJWT runs the README's raw GitLab and GitHub jobs,
// their commands as written, with the README's roles on Vault's JWT auth
// method, against a real git server.
func TestRecipesThroughVaultJWT(t *testing.T) {
	e, gh := recipeEnv(t)
	rules, script := gitlabRawJob(t)
	if len(rules) != 1 || rules[0]["if"] != "$CI_COMMIT_TAG" {
		t.Errorf("the GitLab job's rules are %v, want only `if: $CI_COMMIT_TAG`", rules)
	}
	gitlabScript := strings.Join(script, "\n")
	if gh.shell != "bash" {
		t.Errorf("the GitHub step's shell is %q, want bash (so a failing jq fails the step)", gh.shell)
	}
	// vault-action's login, then a step's script as GitHub runs it
	// (`shell: bash`: -eo pipefail; no shell: -e).
	github := func(repository, ref, script string) (result, error) {
		s, err := e.v.Client.Logical().Write("auth/"+gh.path+"/login", map[string]any{
			"role": gh.role, "jwt": e.github.Token(t, audience, githubClaims(repository, ref)),
		})
		if err != nil {
			return result{}, err
		}
		env := e.jobEnv("HOME="+t.TempDir(), "VAULT_TOKEN="+s.Auth.ClientToken, "RUNNER_TEMP="+e.bin,
			"GITHUB_REPOSITORY="+repository, "GITHUB_REF_NAME="+strings.TrimPrefix(ref, "refs/tags/"))
		if e.v.CACertPath != "" {
			env = append(env, "CURL_CA_BUNDLE="+e.v.CACertPath)
		}
		return run(t, env, "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script), nil
	}
	gitlabCLI := strings.Join(readmeJobCommands(t), "\n")
	githubCLI := strings.Join(githubCLISteps(t), "\n")
	// GitLab runs a job's lines in one shell that stops at the first failure.
	gitlabWith := func(script, namespace, project, tag string) result {
		env := e.jobEnv("HOME="+t.TempDir(),
			"VAULT_ID_TOKEN="+e.gitlabToken(t, namespace, project, tag),
			"CI_PROJECT_PATH="+namespace+"/"+project, "CI_COMMIT_TAG="+tag)
		return run(t, env, "bash", "-c", "set -eo pipefail\n"+script)
	}
	gitlab := func(namespace, project, tag string) result {
		return gitlabWith(gitlabScript, namespace, project, tag)
	}

	for _, tc := range []struct {
		name      string
		run       func() (result, error)
		cli       bool // the job prints the SHA, not Vault's JSON answer
		file, tag string
		message   string // the commit message's first line, "" for the plugin's
	}{
		{
			name: "GitLab raw job", file: "my-group/my-project/release.yml", tag: `v1.2.3"x`,
			message: `my-group/my-project: release v1.2.3"x`,
			run:     func() (result, error) { return gitlab("my-group", "my-project", `v1.2.3"x`), nil },
		},
		{
			name: "GitHub raw job", file: "my-org/my-app/release.yml", tag: `v2.0.0"y`,
			run: func() (result, error) { return github("my-org/my-app", `refs/tags/v2.0.0"y`, gh.run) },
		},
		{
			name: "GitLab CLI job", file: "my-group/my-project/release.yml", tag: `v1.2.4"z`, cli: true,
			message: `my-group/my-project: release v1.2.4"z`,
			run:     func() (result, error) { return gitlabWith(gitlabCLI, "my-group", "my-project", `v1.2.4"z`), nil },
		},
		{
			name: "GitHub CLI job", file: "my-org/my-app/release.yml", tag: `v2.0.1"w`, cli: true,
			message: `my-org/my-app: release v2.0.1"w`,
			run:     func() (result, error) { return github("my-org/my-app", `refs/tags/v2.0.1"w`, githubCLI) },
		},
	} {
		t.Run(tc.name+" commits a tag with a quote as that string", func(t *testing.T) {
			r, err := tc.run()
			if err != nil {
				t.Fatalf("login refused: %v", err)
			}
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
			}
			var answer struct {
				Data struct {
					Commit string `json:"commit"`
				} `json:"data"`
			}
			if tc.cli {
				answer.Data.Commit = strings.TrimSpace(r.stdout)
			} else if err := json.Unmarshal([]byte(r.stdout), &answer); err != nil {
				t.Fatalf("the job's output is not Vault's JSON answer: %v\n%s", err, r.stdout)
			}
			head := e.remote.Head(t)
			if answer.Data.Commit != head {
				t.Fatalf("answered commit %q, the branch is at %s\n%s", answer.Data.Commit, head, r.stdout)
			}
			if got := tagOf(t, fileAt(t, e, head, tc.file)); got != tc.tag {
				t.Errorf("%s's tag reads %q, want %q", tc.file, got, tc.tag)
			}
			if tc.message != "" {
				if msg := e.git(t, "log", "-1", "--format=%s", head); strings.TrimSpace(msg) != tc.message {
					t.Errorf("commit subject %q, want %q", msg, tc.message)
				}
			}
		})
	}

	refusedGitLab := []struct{ name, namespace, want string }{
		{"another namespace", "other-group", "namespace_path"},
		{"a namespace whose name starts like ours", "my-group-evil", "namespace_path"},
	}
	for _, tc := range refusedGitLab {
		t.Run("GitLab job from "+tc.name+" is refused at login", func(t *testing.T) {
			before := e.remote.Head(t)
			r := gitlab(tc.namespace, "app", "evil")
			if r.code == 0 || !strings.Contains(r.stderr, "auth/jwt/login") || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d stderr %q; want a failure at auth/jwt/login naming %s", r.code, r.stderr, tc.want)
			}
			if strings.Contains(r.stderr, "flant_gitops/patch") || r.stdout != "" {
				t.Errorf("the job went on past the refused login: stdout %q stderr %q", r.stdout, r.stderr)
			}
			if head := e.remote.Head(t); head != before {
				t.Errorf("the branch moved to %s", head)
			}
		})
	}

	refusedGitHub := []struct{ name, repository, ref, want string }{
		{"another repository", "evil-org/my-app", "refs/tags/v9", "repository"},
		{"another repository of the owner", "my-org/other", "refs/tags/v9", "repository"},
		{"a branch", "my-org/my-app", "refs/heads/feature", "ref"},
	}
	for _, tc := range refusedGitHub {
		t.Run("GitHub job from "+tc.name+" is refused at login", func(t *testing.T) {
			before := e.remote.Head(t)
			_, err := github(tc.repository, tc.ref, gh.run)
			if err == nil {
				t.Fatal("the login was accepted")
			}
			var re *api.ResponseError
			if !errors.As(err, &re) || re.StatusCode != 400 || !strings.Contains(err.Error(), `"`+tc.want+`"`) {
				t.Errorf("login error %v; want HTTP 400 naming claim %q", err, tc.want)
			}
			if head := e.remote.Head(t); head != before {
				t.Errorf("the branch moved to %s", head)
			}
		})
	}
}
