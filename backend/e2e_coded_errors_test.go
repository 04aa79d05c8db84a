package backend_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// A coded error reaches the caller as the one sentence the plugin wrote:
// in the API answer's errors and in the vault CLI, never as
// "1 error occurred:\n\t* ...", and with its status.
func TestCodedErrorsReadAsOneSentence(t *testing.T) {
	e := newPatchE2E(t, map[string]string{"my-group/my-project/release.yml": releaseYML})
	ci, err := e.login(t, e.gitlabToken(t, "my-group/my-project", e2eAudience))
	if err != nil {
		t.Fatalf("CI login: %v", err)
	}
	set := func(key, tag string) string {
		return `{"idempotency_key": "` + key + `", "commands": [{"path": "my-group/my-project/release.yml", "setField": {"field": "spec.values.image.tag", "value": "` + tag + `"}}]}`
	}
	if _, _, st, err := patchReq(ci, map[string]any{"idempotency_key": "k1", "commands": []any{setField("my-group/my-project/release.yml", "spec.values.image.tag", "1.2.5")}}); err != nil {
		t.Fatalf("first patch: %d %v", st, err)
	}
	tests := []struct {
		name, token, path, body string
		code                    int
		want                    string // the whole sentence
	}{
		{"422 of a reused key", ci.Token(), "flant_gitops/patch/infra", set("k1", "1.2.6"), http.StatusUnprocessableEntity,
			"this idempotency_key was already used by you for a different request (other commands, message, author or repository): give each different change its own key"},
		{"404 of a repository not configured", ci.Token(), "flant_gitops/patch/nosuch", set("k2", "1.2.6"), http.StatusNotFound,
			`repository "nosuch" is not configured: write flant_gitops/configure/repository/nosuch first`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.v.Addr+"/v1/"+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Vault-Token", tt.token)
			resp, err := ci.CloneConfig().HttpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var answer struct {
				Errors []string `json:"errors"`
			}
			if err := json.Unmarshal(raw, &answer); err != nil {
				t.Fatalf("answer %s is not Vault's JSON: %v", raw, err)
			}
			if resp.StatusCode != tt.code || len(answer.Errors) != 1 || answer.Errors[0] != tt.want {
				t.Fatalf("HTTP %d %s\nwant %d {\"errors\": [%q]}", resp.StatusCode, raw, tt.code, tt.want)
			}

			cmd := exec.CommandContext(t.Context(), e.v.VaultBinary, "write", tt.path, "-")
			cmd.Env = append(e.v.CLIEnv(), "VAULT_TOKEN="+tt.token) // the last one counts
			cmd.Stdin = strings.NewReader(tt.body)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err = cmd.Run()
			t.Logf("vault write %s: %v\n%s", tt.path, err, stderr.String())
			if err == nil || strings.Contains(stderr.String(), "error occurred") || !strings.Contains(stderr.String(), fmt.Sprintf("Code: %d. Errors:", tt.code)) || !strings.Contains(stderr.String(), "* "+tt.want+"\n") {
				t.Fatalf("vault write: %v, stderr:\n%s\nwant code %d and the sentence %q alone", err, stderr.String(), tt.code, tt.want)
			}
		})
	}
}
