package backend_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

const e2eImage = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// secrets written in the test; none may come back from a read or a list, nor
// appear in the Vault server log (which carries the plugin's log).
type e2eSecrets struct {
	password, sshKeyLine, secretID string
}

func (s e2eSecrets) all() []string { return []string{s.password, s.sshKeyLine, s.secretID} }

// TestConfigurePathsThroughRealVault drives every configure path through a
// real Vault server and the plugin built from ./cmd/flant_gitops, over the
// plugin gRPC boundary, with the real vault CLI where the README does.
func TestConfigurePathsThroughRealVault(t *testing.T) {
	v := vaulttest.NewServer(t, nil)
	dir := t.TempDir()
	secrets := e2eSecrets{
		password: "glpat-e2e-password-" + randomWord(t),
		secretID: "e2e-secret-id-" + randomWord(t),
	}
	sshKey, knownHosts := backend.SSHKey(t, "")
	secrets.sshKeyLine = strings.Split(sshKey, "\n")[1]

	// The mount runs the version we built, so Vault accepted our RunningVersion.
	mounts, err := v.Client.Sys().ListMountsWithContext(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if m := mounts["flant_gitops/"]; m == nil || m.RunningVersion != vaulttest.PluginVersion || m.Type != "flant_gitops" {
		t.Fatalf("mount flant_gitops/ = %+v, want type flant_gitops running %s", m, vaulttest.PluginVersion)
	}

	var shown strings.Builder // every read and list answer
	cli := func(args ...string) string {
		t.Helper()
		out, errOut, code := v.CLI(t, args...)
		if code != 0 {
			t.Fatalf("vault %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	read := func(path string) map[string]any {
		t.Helper()
		out := cli("read", "-format=json", "flant_gitops/"+path)
		shown.WriteString(out)
		var sec api.Secret
		if err := json.Unmarshal([]byte(out), &sec); err != nil {
			t.Fatalf("read %s: %v\n%s", path, err, out)
		}
		return sec.Data
	}
	list := func(path string) []any {
		t.Helper()
		out := cli("list", "-format=json", "flant_gitops/"+path)
		shown.WriteString(out)
		var keys []any
		if err := json.Unmarshal([]byte(out), &keys); err != nil {
			t.Fatalf("list %s: %v\n%s", path, err, out)
		}
		return keys
	}

	// configure: create with the CLI, partial update, read.
	cli("write", "flant_gitops/configure",
		"git_repo_url=https://git.example.com/infra/deploy.git",
		"docker_image="+e2eImage,
		"commands=echo one, with a comma",
		"commands=cat /git/README.md",
		"memory_limit=512m", "cpu_limit=1.5")
	cli("write", "flant_gitops/configure", "git_branch_name=production", "network_mode=none")
	cfg := read("configure")
	wantCfg := map[string]any{
		"git_repo_url":    "https://git.example.com/infra/deploy.git",
		"git_branch_name": "production",
		"git_poll_period": json.Number("300"),
		"required_number_of_verified_signatures_on_commit": json.Number("0"),
		"initial_last_successful_commit":                   "",
		"docker_image":                                     e2eImage,
		"commands":                                         []any{"echo one, with a comma", "cat /git/README.md"},
		"run_timeout":                                      json.Number("1800"),
		"memory_limit":                                     "512m",
		"cpu_limit":                                        "1.5",
		"network_mode":                                     "none",
	}
	if !reflect.DeepEqual(normalize(cfg), normalize(wantCfg)) {
		t.Errorf("read configure:\n got %v\nwant %v", cfg, wantCfg)
	}

	// configure/git_credential: write-only, both kinds.
	cli("write", "flant_gitops/configure/git_credential", "username=oauth2", "password="+secrets.password)
	keyFile := writeFile(t, dir, "id_ed25519", sshKey)
	cli("write", "flant_gitops/configure/git_credential", "ssh_private_key=@"+keyFile, "known_hosts="+knownHosts)
	if out, errOut, code := v.CLI(t, "read", "flant_gitops/configure/git_credential"); code == 0 || !strings.Contains(errOut, "405") {
		t.Errorf("reading configure/git_credential: exit %d, want 405 unsupported operation\n%s%s", code, out, errOut)
	}

	// configure/trusted_pgp_public_key/NAME: write from a file, read, list.
	alice := pgptest.NewKey(t, "Alice")
	bob := pgptest.NewKey(t, "Bob")
	cli("write", "flant_gitops/configure/trusted_pgp_public_key/alice", "public_key=@"+writeFile(t, dir, "alice.asc", alice.PublicArmored(t)))
	cli("write", "flant_gitops/configure/trusted_pgp_public_key/bob", "public_key=@"+writeFile(t, dir, "bob.asc", bob.PublicArmored(t)))
	key := read("configure/trusted_pgp_public_key/alice")
	if key["fingerprint"] != alice.Fingerprint() || !reflect.DeepEqual(key["user_ids"], []any{"Alice <alice@example.com>"}) || key["name"] != "alice" {
		t.Errorf("read trusted key alice = %v", key)
	}
	if got := list("configure/trusted_pgp_public_key"); !reflect.DeepEqual(got, []any{"alice", "bob"}) {
		t.Errorf("list trusted keys = %v", got)
	}

	// configure_vault_access: the seed's command, then a secret_id rotation
	// by partial update; reads never show the secret_id.
	cli("write", "flant_gitops/configure_vault_access",
		"vault_addr="+v.Addr, "vault_tls_server_name=vault.test",
		"role_name=myrole", "secret_id_ttl=120m", "approle_mount_point=auth/approle",
		"secret_id="+secrets.secretID+"-old", "role_id=my-role-id")
	cli("write", "flant_gitops/configure_vault_access", "secret_id="+secrets.secretID)
	access := read("configure_vault_access")
	if _, ok := access["secret_id"]; ok {
		t.Errorf("configure_vault_access read has a secret_id field: %v", access)
	}
	if access["role_id"] != "my-role-id" || access["vault_addr"] != v.Addr || fmt.Sprint(access["secret_id_ttl"]) != "7200" {
		t.Errorf("read configure_vault_access = %v", access)
	}

	// configure/vault_request/NAME: plain fields, and JSON on stdin for options.
	cli("write", "flant_gitops/configure/vault_request/app-secret", "path=secret/data/app", "wrap_ttl=2m")
	if out, errOut, code := v.CLIStdin(t, `{"path":"auth/token/create","method":"post","options":{"ttl":"1h","policies":["deploy"]}}`,
		"write", "flant_gitops/configure/vault_request/deploy.token", "-"); code != 0 {
		t.Fatalf("write vault_request from stdin: exit %d\n%s%s", code, out, errOut)
	}
	req := read("configure/vault_request/deploy.token")
	wantReq := map[string]any{
		"name": "deploy.token", "path": "auth/token/create", "method": "POST",
		"options":  map[string]any{"ttl": "1h", "policies": []any{"deploy"}},
		"wrap_ttl": json.Number("60"), "env_var": "VAULT_REQUEST_TOKEN_DEPLOY_TOKEN",
	}
	if !reflect.DeepEqual(normalize(req), normalize(wantReq)) {
		t.Errorf("read vault_request:\n got %v\nwant %v", req, wantReq)
	}
	if got := list("configure/vault_request"); !reflect.DeepEqual(got, []any{"app-secret", "deploy.token"}) {
		t.Errorf("list vault requests = %v", got)
	}

	// Nothing secret came back.
	for _, secret := range secrets.all() {
		if strings.Contains(shown.String(), secret) {
			t.Errorf("a read or list answered the secret %q", secret)
		}
	}

	// Delete everything; reads then find nothing.
	for _, p := range []string{
		"configure", "configure/git_credential", "configure/trusted_pgp_public_key/alice",
		"configure/trusted_pgp_public_key/bob", "configure_vault_access",
		"configure/vault_request/app-secret", "configure/vault_request/deploy.token",
	} {
		cli("delete", "flant_gitops/"+p)
		if p == "configure/git_credential" {
			continue
		}
		if sec, err := v.Client.Logical().ReadWithContext(t.Context(), "flant_gitops/"+p); err != nil || sec != nil {
			t.Errorf("read %s after delete = %v, %v; want 404", p, sec, err)
		}
	}
	for _, p := range []string{"configure/trusted_pgp_public_key", "configure/vault_request"} {
		if sec, err := v.Client.Logical().ListWithContext(t.Context(), "flant_gitops/"+p); err != nil || sec != nil {
			t.Errorf("list %s after delete = %v, %v; want empty", p, sec, err)
		}
	}

	// The server log (with the plugin's stderr) holds no secret either.
	log := v.Log()
	if !strings.Contains(log, "flant_gitops") {
		t.Fatalf("server log does not mention the plugin; is it the right log?\n%s", log)
	}
	for _, secret := range secrets.all() {
		if strings.Contains(log, secret) {
			t.Errorf("the Vault log contains the secret %q", secret)
		}
	}
}

// TestPathHelpDescribesEveryField checks `vault path-help` for each path:
// the synopsis is there and every parameter has a description.
func TestPathHelpDescribesEveryField(t *testing.T) {
	v := vaulttest.NewServer(t, nil)
	cases := []struct {
		path     string
		synopsis string
		fields   []string
	}{
		{"configure", "Configure the repository to watch", []string{
			"git_repo_url", "git_branch_name", "git_poll_period", "required_number_of_verified_signatures_on_commit",
			"initial_last_successful_commit", "docker_image", "commands", "run_timeout", "memory_limit", "cpu_limit", "network_mode"}},
		{"configure/git_credential", "Write-only credential", []string{"username", "password", "ssh_private_key", "known_hosts"}},
		{"configure/trusted_pgp_public_key/", "List the trusted PGP public keys", nil},
		{"configure/trusted_pgp_public_key/alice", "A PGP public key whose signatures count", []string{"name", "public_key"}},
		{"configure_vault_access", "AppRole access to the Vault", []string{
			"vault_addr", "vault_tls_server_name", "vault_cacert", "approle_mount_point", "role_name", "role_id", "secret_id", "secret_id_ttl"}},
		{"configure/commit_status", "Commit statuses on the forge", []string{
			"provider", "api_url", "token", "repository", "context_template", "target_url_template", "enabled"}},
		{"configure/vault_request/", "List the vault requests", nil},
		{"configure/vault_request/db", "A Vault request made, wrapped", []string{"name", "path", "method", "options", "wrap_ttl"}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			out, errOut, code := v.CLI(t, "path-help", "flant_gitops/"+tc.path)
			if code != 0 {
				t.Fatalf("vault path-help: exit %d\n%s%s", code, out, errOut)
			}
			if strings.Contains(out, "<no description>") {
				t.Errorf("path-help shows a field without description:\n%s", out)
			}
			if !strings.Contains(out, tc.synopsis) || !strings.Contains(out, "## DESCRIPTION") {
				t.Errorf("path-help lacks the synopsis %q or a description:\n%s", tc.synopsis, out)
			}
			params := helpParameters(out)
			if len(params) != len(tc.fields) {
				t.Errorf("path-help lists parameters %v, want %v", keys(params), tc.fields)
			}
			for _, f := range tc.fields {
				if desc, ok := params[f]; !ok || len(desc) < 10 {
					t.Errorf("parameter %s: description %q", f, desc)
				}
			}
		})
	}
}

// helpParameters reads the "## PARAMETERS" section of path-help output:
// "    name (type)" lines, each followed by description lines indented deeper.
func helpParameters(help string) map[string]string {
	params := map[string]string{}
	_, section, ok := strings.Cut(help, "## PARAMETERS")
	if !ok {
		return params
	}
	section, _, _ = strings.Cut(section, "## DESCRIPTION")
	current := ""
	for _, line := range strings.Split(section, "\n") {
		switch {
		case strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "    ") && !strings.HasPrefix(line, "     "):
			current, _, _ = strings.Cut(strings.TrimSpace(line), " ")
			params[current] = ""
		case current != "":
			params[current] += strings.TrimSpace(line) + " "
		}
	}
	return params
}

// TestValidationThroughRealVault checks that each refused input comes back
// from the real server as HTTP 400 with a message naming field and fix.
func TestValidationThroughRealVault(t *testing.T) {
	v := vaulttest.NewServer(t, nil)
	alice := pgptest.NewKey(t, "Alice")
	base := map[string]any{
		"git_repo_url": "https://git.example.com/r.git",
		"docker_image": e2eImage,
		"commands":     []string{"true"},
	}
	with := func(k string, val any) map[string]any {
		m := map[string]any{}
		for kk, vv := range base {
			m[kk] = vv
		}
		m[k] = val
		return m
	}
	cases := []struct {
		name, path string
		data       map[string]any
		want       []string
	}{
		{"image not pinned", "configure", with("docker_image", "alpine:3.20"), []string{"docker_image", "not pinned", "name@sha256:"}},
		{"url scheme", "configure", with("git_repo_url", "file:///srv/r.git"), []string{"git_repo_url", "https://, http:// or ssh://"}},
		{"negative quorum", "configure", with("required_number_of_verified_signatures_on_commit", -2), []string{"required_number_of_verified_signatures_on_commit", "give 0"}},
		{"invalid pgp key", "configure/trusted_pgp_public_key/k", map[string]any{"public_key": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----"}, []string{"public_key is not a valid PGP public key"}},
		{"private pgp key", "configure/trusted_pgp_public_key/k", map[string]any{"public_key": alice.PrivateArmored(t)}, []string{"public_key", "PRIVATE"}},
		{"unknown method", "configure/vault_request/r", map[string]any{"path": "secret/x", "method": "PATCH"}, []string{"method", "GET, POST, PUT, LIST or DELETE"}},
		{"short wrap_ttl", "configure/vault_request/r", map[string]any{"path": "secret/x", "wrap_ttl": "30s"}, []string{"wrap_ttl", "at least 60s"}},
		{"bad env var name", "configure/vault_request/my%20req", map[string]any{"path": "secret/x"}, []string{"vault_request name", "letters, digits"}},
		{"no secret_id", "configure_vault_access", map[string]any{"vault_addr": "https://v:8200", "role_name": "r", "role_id": "i"}, []string{"missing secret_id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Client.Logical().WriteWithContext(t.Context(), "flant_gitops/"+tc.path, tc.data)
			var re *api.ResponseError
			if !errors.As(err, &re) || re.StatusCode != 400 {
				t.Fatalf("want HTTP 400, got %v", err)
			}
			msg := strings.Join(re.Errors, "; ")
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not mention %q", msg, w)
				}
			}
		})
	}

	// A quorum above the trusted keys is accepted (keys may follow) but
	// warned about.
	sec, err := v.Client.Logical().WriteWithContext(t.Context(), "flant_gitops/configure", with("required_number_of_verified_signatures_on_commit", 2))
	if err != nil {
		t.Fatal(err)
	}
	if sec == nil || len(sec.Warnings) == 0 || !strings.Contains(sec.Warnings[0], "is 2 but only 0 usable trusted signer") {
		t.Errorf("want a quorum warning, got %+v", sec)
	}
}

func normalize(m map[string]any) string {
	b, _ := json.Marshal(m)
	return string(b)
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func randomWord(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}
