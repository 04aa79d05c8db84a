package backend_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

const badInputProject = "my-group/my-project/"

// billionLaughs is the YAML bomb: nine levels of nine aliases stand for 9^9 nodes.
var billionLaughs = func() string {
	var b strings.Builder
	b.WriteString(`a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]` + "\n")
	for c := 'b'; c <= 'i'; c++ {
		prev := string(c - 1)
		fmt.Fprintf(&b, "%c: &%c [%s]\n", c, c, strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ","))
	}
	return b.String()
}()

// badInputAnswer is a refused request as the caller sees it.
type badInputAnswer struct {
	code int
	msg  string
}

// writeRaw sends body as it is to path, so that the plugin sees exactly the
// JSON types a client sent.
// check asserts the status, that a 400 is not wrapped as an internal error
// list, and that the message mentions every want.
func (got badInputAnswer) check(t *testing.T, code int, want []string) {
	t.Helper()
	t.Logf("%d %.300s", got.code, got.msg)
	if got.code != code {
		t.Errorf("status %d (%s), want %d", got.code, got.msg, code)
	}
	if got.code == http.StatusBadRequest && strings.Contains(got.msg, "error occurred") {
		t.Errorf("the 400 message is wrapped as an internal error list: %q", got.msg)
	}
	for _, w := range want {
		if !strings.Contains(got.msg, w) {
			t.Errorf("message %q does not mention %q", got.msg, w)
		}
	}
}

func writeRaw(t *testing.T, c *api.Client, path, body string) badInputAnswer {
	t.Helper()
	resp, err := c.Logical().WriteRawWithContext(t.Context(), path, []byte(body))
	if resp != nil {
		defer resp.Body.Close()
	}
	var re *api.ResponseError
	switch {
	case errors.As(err, &re):
		return badInputAnswer{re.StatusCode, strings.Join(re.Errors, "; ")}
	case err != nil:
		t.Fatalf("write %s: %v", path, err)
	}
	return badInputAnswer{code: resp.StatusCode}
}

// middleLine is a line from inside an armored or PEM block: key material, not a header.
func middleLine(block string) string {
	lines := strings.Split(strings.TrimSpace(block), "\n")
	return lines[len(lines)/2]
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestE2EBadInput proves the bad-input promise through one real Vault and one
// real git server: every refused request that reaches the plugin is a 4xx
// with the exact status and a message that names what to fix (Vault's own
// listener answers 500 for JSON it cannot check), nothing is pushed and no stored
// configuration changes; no read, refusal or log line carries a secret.
func TestE2EBadInput(t *testing.T) {
	p := badInputProject
	e := newPatchE2E(t, map[string]string{
		p + "release.yml":    releaseYML,
		p + "bomb.yml":       billionLaughs,
		p + "anchors.yml":    "base: &img registry/app:1.0\nsidecar: *img\n",
		"outside/secret.yml": "token: abc\n",
	})
	e.remote.Commit(t, nil, gittest.Symlink(p+"escape", "../../../outside"), gittest.Symlink(p+"etc", "/etc"), gittest.Message("symlinks"))
	ciJWT := e.gitlabToken(t, "my-group/my-project", e2eAudience)
	ci, err := e.login(t, ciJWT)
	if err != nil {
		t.Fatalf("CI login: %v", err)
	}
	root := e.v.Client

	var shown strings.Builder // every read, list and refusal the test saw
	good := setField(p+"release.yml", "spec.values.image.tag", "2.0.0")
	commands := func(cmds ...any) string { return mustJSON(t, map[string]any{"commands": cmds}) }
	deepPath := p + strings.Repeat("d/", 2100) + "x.yml"
	many := make([]any, 257)
	for i := range many {
		many[i] = good
	}

	patchCases := []struct {
		name string
		repo string // default infra
		body string
		code int
		want []string
	}{
		// Vault's listener checks the JSON before any plugin sees it and
		// answers 500 (vault http/util.go wrapJSONLimitsHandler); what it
		// lets through, its request parser refuses with a 400.
		{"unclosed JSON body (Vault's listener)", "", `{"commands": [`, 500, []string{"malformed JSON, unclosed containers"}},
		{"malformed JSON body", "", `{"commands": [1 2]}`, 400, []string{"error parsing JSON"}},
		{"no commands", "", `{}`, 400, []string{"commands is missing", "give the list of edits"}},
		{"commands a string", "", `{"commands": "rm -rf /"}`, 400, []string{"commands", "not a valid JSON array"}},
		{"commands a number", "", `{"commands": 5}`, 400, []string{"commands", "must be a JSON array", "got a number"}},
		{"commands an object", "", `{"commands": {"path": "` + p + `release.yml"}}`, 400, []string{"commands", "must be a JSON array", "got an object"}},
		{"commands null", "", `{"commands": null}`, 400, []string{"commands is missing"}},
		{"empty commands", "", `{"commands": []}`, 400, []string{"no commands given"}},
		{"path a number", "", `{"commands": [{"path": 7, "deleteFile": {}}]}`, 400, []string{"commands[0]: not a valid command: path must be a string, got a number"}},
		{"two operations", "", commands(map[string]any{"path": p + "release.yml", "setField": map[string]any{"field": "a", "value": 1}, "deleteFile": map[string]any{}}), 400,
			[]string{"commands[0]", "exactly one of setField, createFile, deleteFile", "found 2"}},
		{"no operation", "", commands(map[string]any{"path": p + "release.yml"}), 400, []string{"commands[0]", "exactly one of", "found 0"}},
		{"unknown request field", "", `{"branch": "prod", "commands": [` + mustJSON(t, good) + `]}`, 400, []string{`unknown field "branch"`, "commit, commands, dry_run and idempotency_key"}},
		{"unknown command field", "", commands(map[string]any{"path": p + "release.yml", "setFeld": map[string]any{}}), 400, []string{`unknown field "setFeld"`}},
		{"unknown commit field", "", `{"commit": {"mesage": "x"}, "commands": [` + mustJSON(t, good) + `]}`, 400, []string{"commit", `unknown field "mesage"`}},
		{"commit author a string", "", `{"commit": {"author": "bob"}, "commands": [` + mustJSON(t, good) + `]}`, 400, []string{"commit: author must be an object, got a string"}},
		{"dry_run not a bool", "", `{"dry_run": "maybe", "commands": [` + mustJSON(t, good) + `]}`, 400, []string{"dry_run"}},
		{"path ../x.yml", "", commands(setField("../x.yml", "a", 1)), 400, []string{"commands[0] ../x.yml: invalid path: path leaves the repository"}},
		{"absolute path", "", commands(setField("/etc/passwd.yml", "a", 1)), 400, []string{"/etc/passwd.yml", "must be relative"}},
		{"a/../../x.yml", "", commands(setField("a/../../x.yml", "a", 1)), 400, []string{"a/../../x.yml", "leaves the repository"}},
		{".git/config", "", commands(map[string]any{"path": ".git/config", "createFile": map[string]any{"content": "[core]\n"}}), 400, []string{".git/config", "inside a .git directory"}},
		{"NUL byte", "", commands(setField(p+"x.yml\x00", "a", 1)), 400, []string{"NUL byte"}},
		{"symlink out of the repository", "", commands(setField(p+"escape/secret.yml", "token", "x")), 400,
			[]string{p + "escape/secret.yml", "symlink to ../../../outside, which leaves the repository"}},
		{"symlink to /etc", "", commands(map[string]any{"path": p + "etc/passwd.yml", "createFile": map[string]any{"content": "x: 1\n"}}), 400,
			[]string{"symlink to /etc, which leaves the repository"}},
		{"file name too long", "", commands(map[string]any{"path": p + strings.Repeat("a", 300) + ".yml", "createFile": map[string]any{"content": "x: 1\n"}}), 400,
			[]string{"a file or directory name in the path is 304 bytes, at most 255"}},
		{"path too long", "", commands(map[string]any{"path": deepPath, "createFile": map[string]any{"content": "x: 1\n"}}), 400,
			[]string{fmt.Sprintf("path is %d bytes, at most 4096", len(deepPath))}},
		{"YAML bomb", "", commands(setField(p+"bomb.yml", "a[0]", "ha")), 413, []string{p + "bomb.yml", "aliases in the file expand to more than"}},
		{"malformed JSONPath", "", commands(setField(p+"release.yml", "spec.values[?(@.name ==", 1)), 400, []string{`field "spec.values[?(@.name =="`}},
		{"JSONPath construct left out", "", commands(setField(p+"release.yml", "$..tag", 1)), 400, []string{`field "$..tag"`, "descendant segments (..) are not supported"}},
		{"anchored node without allowAliased", "", commands(setField(p+"anchors.yml", "base", "registry/app:2.0")), 409, []string{p + "anchors.yml", "&img", "*img at line 2", `"allowAliased": true`}},
		{"value of a clashing type", "", commands(setField(p+"release.yml", "spec.values.image.tag.major", 2)), 409, []string{"spec.values.image.tag.major", "type clash", "is a string"}},
		{"setField without value", "", commands(map[string]any{"path": p + "release.yml", "setField": map[string]any{"field": "a"}}), 400, []string{"needs a value"}},
		{"too many commands", "", commands(many...), 413, []string{"257 commands given, at most 256"}},
		// Vault's listener refuses a JSON string over 1 MiB (its
		// max_json_string_value_length) with a 500 before the plugin's own
		// 4 MiB bound on files; a value made of smaller strings reaches it.
		{"createFile content over Vault's string limit", "", commands(map[string]any{"path": p + "big.yml", "createFile": map[string]any{"content": strings.Repeat("x", 1<<20+1)}}), 500,
			[]string{"JSON string value exceeds allowed length"}},
		{"edited file over 4 MiB", "", commands(map[string]any{"path": p + "release.yml", "setField": map[string]any{"field": "spec.blob", "create": true, "value": []string{strings.Repeat("x", 1<<20-1), strings.Repeat("x", 1<<20-1), strings.Repeat("x", 1<<20-1), strings.Repeat("x", 1<<20-1), "x"}}}), 413,
			[]string{p + "release.yml", "the edited file would be", "at most 4194304"}},
		{"unknown repository, policy allows", "nope", commands(good), 404, []string{`repository "nope" is not configured`, "configure/repository/nope"}},
		{"unknown repository, policy denies", "nope", commands(setField("other-group/x.yml", "a", 1)), 403, []string{"outside the caller's project directory"}},
	}
	for _, tc := range patchCases {
		t.Run("patch/"+tc.name, func(t *testing.T) {
			repo := tc.repo
			if repo == "" {
				repo = "infra"
			}
			before := e.remote.Head(t)
			got := writeRaw(t, ci, "flant_gitops/patch/"+repo, tc.body)
			shown.WriteString(got.msg)
			got.check(t, tc.code, tc.want)
			if after := e.remote.Head(t); after != before {
				t.Errorf("the refused request moved main from %s to %s", before, after)
			}
		})
	}

	// The CLI's own parsing: a JSON string on the command line reaches the
	// plugin as a string; a request file that is not JSON never leaves the CLI.
	cliCases := []struct {
		name  string
		stdin string
		args  []string
		want  []string
	}{
		{"commands= with broken JSON", "", []string{"commands=[{\"path\": \"" + p + "release.yml\""}, []string{"Code: 400", "not a valid JSON array of commands"}},
		{"commands= a plain word", "", []string{"commands=release.yml"}, []string{"Code: 400", "not a valid JSON array of commands"}},
		{"request on stdin not JSON", "commands: [x]", []string{"-"}, []string{"Failed to parse"}},
	}
	for _, tc := range cliCases {
		t.Run("patch CLI/"+tc.name, func(t *testing.T) {
			before := e.remote.Head(t)
			cmd := exec.CommandContext(t.Context(), e.v.VaultBinary, append([]string{"write", "flant_gitops/patch/infra"}, tc.args...)...)
			cmd.Env = append(e.v.CLIEnv(), "VAULT_TOKEN="+ci.Token())
			cmd.Stdin = strings.NewReader(tc.stdin)
			out, err := cmd.CombinedOutput()
			shown.Write(out)
			if err == nil {
				t.Fatalf("vault write succeeded:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("vault write output does not mention %q:\n%s", w, out)
				}
			}
			if after := e.remote.Head(t); after != before {
				t.Errorf("the refused request moved main from %s to %s", before, after)
			}
		})
	}

	t.Run("after all refusals a good patch makes exactly one commit", func(t *testing.T) {
		before := e.remote.Head(t)
		got := writeRaw(t, ci, "flant_gitops/patch/infra", commands(good))
		if got.code != http.StatusOK {
			t.Fatalf("status %d: %s", got.code, got.msg)
		}
		if n, _ := e.git(t, nil, "rev-list", "--count", before+"..main"); n != "1" {
			t.Fatalf("%s commits after one good patch", n)
		}
	})

	// Configure paths: a valid configuration first, then refused writes
	// that must leave it as it was.
	sshKey, knownHosts := backend.SSHKey(t, "")
	secrets := e2eSecrets{
		password:   e.srv.Password(),
		sshKeyLine: strings.Split(sshKey, "\n")[1],
		secretID:   "e2e-secret-id-" + randomWord(t),
	}
	alice := pgptest.NewKey(t, "Alice")
	setup := []struct {
		path string
		data map[string]any
	}{
		{"configure", map[string]any{"git_repo_url": "https://git.invalid/infra.git", "docker_image": e2eImage, "commands": []string{"true"}, "git_poll_period": "10m"}},
		{"configure/git_credential", map[string]any{"ssh_private_key": sshKey, "known_hosts": knownHosts}},
		{"configure/git_credential", map[string]any{"username": "oauth2", "password": secrets.password}},
		{"configure_vault_access", map[string]any{"vault_addr": "https://vault.invalid:8200", "role_name": "myrole", "role_id": "my-role-id", "secret_id": secrets.secretID}},
		{"configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.PublicArmored(t)}},
		{"configure/vault_request/app-secret", map[string]any{"path": "secret/data/app"}},
	}
	for _, w := range setup {
		if _, err := root.Logical().WriteWithContext(t.Context(), "flant_gitops/"+w.path, w.data); err != nil {
			t.Fatalf("write %s: %v", w.path, err)
		}
	}
	read := func(t *testing.T, path string) map[string]any {
		t.Helper()
		sec, err := root.Logical().ReadWithContext(t.Context(), "flant_gitops/"+path)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		if sec == nil {
			return nil
		}
		shown.WriteString(mustJSON(t, sec))
		return sec.Data
	}

	configCases := []struct {
		name, path string
		body       string   // JSON through the API, or
		cli        []string // key=value arguments through the vault CLI
		code       int
		want       []string
		readBack   string // the stored entry that must not change; default path
	}{
		{"git_poll_period=abc", "configure", "", []string{"git_poll_period=abc"}, 400, []string{"git_poll_period", "abc"}, ""},
		{"quorum -1", "configure", "", []string{"required_number_of_verified_signatures_on_commit=-1"}, 400,
			[]string{"required_number_of_verified_signatures_on_commit is -1", "give 0"}, ""},
		{"quorum x", "configure", "", []string{"required_number_of_verified_signatures_on_commit=x"}, 400,
			[]string{"required_number_of_verified_signatures_on_commit"}, ""},
		{"commands a number", "configure", `{"commands": 5}`, nil, 400, []string{"commands must be a list of strings, got a number"}, ""},
		{"commands an object", "configure", `{"commands": {"a": "b"}}`, nil, 400, []string{"commands"}, ""},
		{"docker_image by tag", "configure", "", []string{"docker_image=alpine:3.20"}, 400, []string{`docker_image "alpine:3.20" is not pinned`, "name@sha256:"}, ""},
		{"file:// URL", "configure", "", []string{"git_repo_url=file:///srv/infra.git"}, 400, []string{"git_repo_url", `scheme "file"`, "https://, http:// or ssh://"}, ""},
		{"ftp:// URL", "configure", "", []string{"git_repo_url=ftp://git.example.com/infra.git"}, 400, []string{"git_repo_url", `scheme "ftp"`}, ""},
		{"a bad field next to a good one", "configure", "", []string{"git_branch_name=release", "network_mode=container:x"}, 400, []string{"network_mode", "container"}, ""},
		{"repository url file://", "configure/repository/infra", "", []string{"url=file:///srv/infra.git"}, 400, []string{"url", `scheme "file"`}, ""},
		{"private key as trusted key", "configure/trusted_pgp_public_key/alice", "", []string{"public_key=" + alice.PrivateArmored(t)}, 400, []string{"public_key", "PRIVATE"}, ""},
		{"garbage as trusted key", "configure/trusted_pgp_public_key/alice", "", []string{"public_key=not a key"}, 400, []string{"public_key is not a valid PGP public key"}, ""},
		{"vault_request name without an env var", "configure/vault_request/app@prod", "", []string{"path=secret/data/x"}, 400, []string{`vault_request name "app@prod"`, "letters, digits"}, "configure/vault_request/app-secret"},
		{"vault_request name clash", "configure/vault_request/APP_secret", "", []string{"path=secret/data/x"}, 400, []string{"VAULT_REQUEST_TOKEN_APP_SECRET", `"app-secret" already uses`}, "configure/vault_request/app-secret"},
		{"vault_addr ftp://", "configure_vault_access", "", []string{"vault_addr=ftp://vault.example.com"}, 400, []string{"vault_addr", "https://"}, ""},
		{"garbage ssh key", "configure/git_credential", "", []string{"ssh_private_key=garbage-" + secrets.secretID, "known_hosts=" + knownHosts}, 400, []string{"ssh_private_key cannot be parsed"}, "configure"},
	}
	for _, tc := range configCases {
		t.Run("config/"+tc.name, func(t *testing.T) {
			readBack := tc.readBack
			if readBack == "" {
				readBack = tc.path
			}
			before := read(t, readBack)
			if before == nil {
				t.Fatalf("nothing stored at %s before the write", readBack)
			}
			var got badInputAnswer
			if tc.cli != nil {
				out, errOut, code := e.v.CLI(t, append([]string{"write", "flant_gitops/" + tc.path}, tc.cli...)...)
				got.msg = out + errOut
				if code != 0 {
					if _, after, ok := strings.Cut(errOut, "Code: "); ok {
						fmt.Sscanf(after, "%d", &got.code)
					}
				} else {
					got.code = http.StatusOK
				}
			} else {
				got = writeRaw(t, root, "flant_gitops/"+tc.path, tc.body)
			}
			shown.WriteString(got.msg)
			got.check(t, tc.code, tc.want)
			if after := read(t, readBack); !reflect.DeepEqual(after, before) {
				t.Errorf("%s changed after a refused write:\nbefore %v\n after %v", readBack, before, after)
			}
		})
	}

	t.Run("no secret in any read, list, refusal or log line", func(t *testing.T) {
		for _, path := range []string{"configure", "configure_vault_access", "configure/repository/infra", "configure/trusted_pgp_public_key/alice",
			"configure/vault_request/app-secret", "configure/signing_key", "status"} {
			read(t, path)
		}
		for _, path := range []string{"configure/repository", "configure/trusted_pgp_public_key", "configure/vault_request", "runs"} {
			sec, err := root.Logical().ListWithContext(t.Context(), "flant_gitops/"+path)
			if err != nil {
				t.Fatalf("list %s: %v", path, err)
			}
			shown.WriteString(mustJSON(t, sec))
		}
		log := e.v.Log()
		if !strings.Contains(log, "flant_gitops") {
			t.Fatalf("the server log does not mention the plugin; is it the right log?\n%s", log)
		}
		named := map[string]string{
			"git password": secrets.password, "ssh key": secrets.sshKeyLine, "secret_id": secrets.secretID,
			"CI id_token": ciJWT, "CI Vault token": ci.Token(),
			"PGP private key": middleLine(alice.PrivateArmored(t)),
		}
		for what, secret := range named {
			if strings.Contains(shown.String(), secret) {
				t.Errorf("a read, list or refusal carries the %s", what)
			}
			if strings.Contains(log, secret) {
				t.Errorf("the Vault log carries the %s", what)
			}
		}
	})
}
