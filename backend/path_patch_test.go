package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/patch"
)

func TestRepositoryConfig(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	key, hosts := testSSHKey(t, "")
	const path = "configure/repository/infra"
	tests := []struct {
		name string
		data map[string]any
		want string // "" = accepted; otherwise part of the 400 message
	}{
		{"no url", map[string]any{"branch": "main"}, "url is empty"},
		{"file url", map[string]any{"url": "file:///tmp/x.git"}, `scheme "file"`},
		{"password in url", map[string]any{"url": "https://u:p@git.example.com/x.git"}, "must not contain a password"},
		{"bad branch", map[string]any{"url": "https://git.example.com/x.git", "branch": "a..b"}, "branch"},
		{"both credentials", map[string]any{"url": "https://git.example.com/x.git", "password": "t", "ssh_private_key": "k"}, "not both"},
		{"ssh key for https", map[string]any{"url": "https://git.example.com/x.git", "ssh_private_key": key, "known_hosts": hosts}, "SSH private key is configured but"},
		{"bad author email", map[string]any{"url": "https://git.example.com/x.git", "default_author_email": "not an email"}, "default_author_email"},
		{"accepted", map[string]any{"url": "https://git.example.com/x.git", "username": "gitlab", "password": "secret-token"}, ""},
		{"partial update keeps the rest", map[string]any{"sign_commits": false}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, path, tc.data)
			if tc.want == "" {
				if st := status(resp, err); st != http.StatusOK {
					t.Fatalf("status %d: %s", st, errText(resp, err))
				}
				return
			}
			if st := status(resp, err); st != http.StatusBadRequest || !strings.Contains(errText(resp, err), tc.want) {
				t.Fatalf("status %d %q, want 400 containing %q", st, errText(resp, err), tc.want)
			}
		})
	}

	resp := configReq(t, b, s, logical.ReadOperation, path, nil)
	want := map[string]any{
		"url": "https://git.example.com/x.git", "branch": "main", "credential_type": "password",
		"sign_commits": false, "default_author_name": defaultPatchAuthorName,
	}
	for k, v := range want {
		if resp.Data[k] != v {
			t.Errorf("read %s = %v, want %v", k, resp.Data[k], v)
		}
	}
	for k, v := range resp.Data {
		if k == "password" || k == "username" || strings.Contains(toString(v), "secret-token") {
			t.Errorf("read returns credential field %s", k)
		}
	}
	list := configReq(t, b, s, logical.ListOperation, "configure/repository/", nil)
	if keys, _ := list.Data["keys"].([]string); len(keys) != 1 || keys[0] != "infra" {
		t.Fatalf("list = %v", list.Data)
	}
	configReq(t, b, s, logical.DeleteOperation, path, nil)
	if resp := configReq(t, b, s, logical.ReadOperation, path, nil); resp != nil {
		t.Fatalf("read after delete = %v", resp.Data)
	}
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}

func TestPolicyConfig(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	resp := configReq(t, b, s, logical.ReadOperation, "configure/policy", nil)
	if resp.Data["builtin"] != true || !strings.Contains(toString(resp.Data["policy"]), "package flant_gitops.patch") {
		t.Fatalf("default policy read = %v", resp.Data)
	}
	r, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/policy", map[string]any{"policy": "package flant_gitops.patch\nviolations contains x if {"})
	if st := status(r, err); st != http.StatusBadRequest || !strings.Contains(errText(r, err), "policy.rego:") {
		t.Fatalf("broken rego: status %d %q, want 400 with the compiler's message", st, errText(r, err))
	}
	custom := "package flant_gitops.patch\n\nviolations contains \"never\" if false\n"
	configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"policy": custom})
	resp = configReq(t, b, s, logical.ReadOperation, "configure/policy", nil)
	if resp.Data["builtin"] != false || resp.Data["policy"] != custom {
		t.Fatalf("custom policy read = %v", resp.Data)
	}
	configReq(t, b, s, logical.DeleteOperation, "configure/policy", nil)
	if resp := configReq(t, b, s, logical.ReadOperation, "configure/policy", nil); resp.Data["builtin"] != true {
		t.Fatalf("after delete = %v", resp.Data)
	}
}

func TestSigningKeyPath(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	first := configReq(t, b, s, logical.ReadOperation, "configure/signing_key", nil)
	fp := toString(first.Data["fingerprint"])
	if len(fp) != 40 || !strings.Contains(toString(first.Data["public_key"]), "BEGIN PGP PUBLIC KEY BLOCK") {
		t.Fatalf("first read = %v", first.Data)
	}
	again := configReq(t, b, s, logical.ReadOperation, "configure/signing_key", nil)
	if again.Data["fingerprint"] != fp {
		t.Fatal("the key changed between two reads")
	}
	for _, r := range []*logical.Response{first, again} {
		for k, v := range r.Data {
			if strings.Contains(toString(v), "PRIVATE") {
				t.Fatalf("%s carries private key material", k)
			}
		}
	}
	rotated := configReq(t, b, s, logical.UpdateOperation, "configure/signing_key/rotate", nil)
	if rotated.Data["fingerprint"] == fp || len(toString(rotated.Data["fingerprint"])) != 40 {
		t.Fatalf("rotate = %v (old %s)", rotated.Data, fp)
	}
	if now := configReq(t, b, s, logical.ReadOperation, "configure/signing_key", nil); now.Data["fingerprint"] != rotated.Data["fingerprint"] {
		t.Fatal("read after rotate shows the old key")
	}
}

// TestPatchRequestChecks covers everything decided before any git traffic:
// validation (400), the policy (403) and the unknown repository (404, only
// once the policy allowed the request).
func TestPatchRequestChecks(t *testing.T) {
	gitlab := &logical.Entity{
		ID: "ent-1", Name: "entity_ci",
		Aliases: []*logical.Alias{{MountType: "jwt", MountAccessor: "auth_jwt_0a1b2c3d", Name: "my-group/my-project", Metadata: map[string]string{"project_path": "my-group/my-project"}}},
	}
	otherMount := &logical.Entity{
		ID: "ent-2", Name: "entity_gh",
		Aliases: []*logical.Alias{{MountType: "jwt", MountAccessor: "auth_jwt_99999999", Name: "my-group/my-project", Metadata: map[string]string{"project_path": "my-group/my-project"}}},
	}
	setTag := func(path string) map[string]any {
		return map[string]any{"commands": []any{map[string]any{"path": path, "setField": map[string]any{"field": "spec.values.image.tag", "value": "1.2.5"}}}}
	}
	tests := []struct {
		name   string
		entity *logical.Entity
		repo   string
		data   map[string]any
		status int
		want   string
	}{
		{"no commands", gitlab, "infra", map[string]any{}, 400, "commands is missing"},
		{"unknown field", gitlab, "infra", map[string]any{"commands": []any{}, "branch": "x"}, 400, `unknown field "branch"`},
		{"path leaving the repository", gitlab, "infra", setTag("../x.yml"), 400, "path leaves the repository"},
		{"committer", gitlab, "infra", map[string]any{"commit": map[string]any{"committer": map[string]any{"name": "x"}}, "commands": setTag("a.yml")["commands"]}, 400, "commit.committer"},
		{"bad author email", gitlab, "infra", map[string]any{"commit": map[string]any{"author": map[string]any{"name": "x", "email": "no"}}, "commands": setTag("a.yml")["commands"]}, 400, "commit.author.email"},
		{"message forging Requested-By", gitlab, "infra", withMessage(setTag("a.yml"), "Bump\n\nrequested-by : admin (root)"), 400, "commit.message: line 3 reads as a Requested-By trailer"},
		{"message forging Vault-Request-Id with '='", gitlab, "infra", withMessage(setTag("a.yml"), "Bump\n\nVault-Request-Id=1"), 400, "Vault-Request-Id trailer"},
		{"message forging the target", gitlab, "infra", withMessage(setTag("a.yml"), "Bump\n\nFlant-Gitops-Branch: main"), 400, "Flant-Gitops-Branch trailer"},
		{"message hiding the plugin's trailers", gitlab, "infra", withMessage(setTag("a.yml"), "Bump\n---\nmore"), 400, `line 2 starts with "---"`},
		{"no identity", nil, "infra", setTag("my-group/my-project/release.yml"), 403, "no Vault identity"},
		{"other project", gitlab, "infra", setTag("other-group/x.yml"), 403, "outside the caller's project directory"},
		{"dot-dot into another project", gitlab, "infra", setTag("my-group/my-project/../../other-group/x.yml"), 403, "other-group/x.yml"},
		{"json file", gitlab, "infra", setTag("my-group/my-project/x.json"), 403, "only .yml and .yaml"},
		{"unknown repository is denied first when not allowed", gitlab, "nope", setTag("other-group/x.yml"), 403, "outside"},
		{"unknown repository once allowed", gitlab, "nope", setTag("my-group/my-project/release.yml"), 404, `repository "nope" is not configured`},
		{"alias of an auth mount the operator did not name", otherMount, "infra", setTag("my-group/my-project/release.yml"), 403, "on a trusted auth mount (auth_jwt_0a1b2c3d)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, tc.entity, nil)
			configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"trusted_auth_mount_accessors": "auth_jwt_0a1b2c3d"})
			req := &logical.Request{
				Operation: logical.UpdateOperation, Path: "patch/" + tc.repo, Data: tc.data, Storage: s,
				MountPoint: "flant_gitops/", ID: "req-1",
			}
			if tc.entity != nil {
				req.EntityID = tc.entity.ID
			}
			resp, err := b.HandleRequest(context.Background(), req)
			if st := status(resp, err); st != tc.status || !strings.Contains(errText(resp, err), tc.want) {
				t.Fatalf("status %d %q, want %d containing %q", st, errText(resp, err), tc.status, tc.want)
			}
		})
	}
}

// withMessage sets commit.message on a patch request body.
func withMessage(body map[string]any, msg string) map[string]any {
	body["commit"] = map[string]any{"message": msg}
	return body
}

func TestPatchErrorStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{&patch.Error{Kind: patch.KindInvalid, Index: 0, Msg: "bad"}, http.StatusBadRequest},
		{&patch.Error{Kind: patch.KindNotFound, Index: 0, Msg: "no such field"}, http.StatusNotFound},
		{&patch.Error{Kind: patch.KindConflict, Index: 0, Msg: "type clash"}, http.StatusConflict},
		{&patch.Error{Kind: patch.KindLimit, Index: 0, Msg: "too big"}, http.StatusRequestEntityTooLarge},
		{&patch.ConflictError{Branch: "main", Attempts: 5}, http.StatusConflict},
		{&patch.RemoteError{Op: "pushing to", URL: "https://git.example.com/x.git", Err: errors.New("connection refused")}, http.StatusBadGateway},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{errors.New("disk full"), http.StatusInternalServerError},
		{&patch.QueueFullError{Branch: "main", Queued: 256, RetryAfter: 3 * time.Second}, http.StatusTooManyRequests},
		{&patch.BaseError{Branch: "main", Tip: "0123abcd", Err: errors.New("the tip is not signed")}, http.StatusConflict},
		{&patch.BaseError{Branch: "main", Tip: "0123abcd", Err: logical.CodedError(http.StatusPreconditionFailed, "untrusted tip")}, http.StatusPreconditionFailed},
		{&patch.ClosedError{Branch: "main"}, http.StatusServiceUnavailable},
		{&patch.RefusedError{Branch: "main", URL: "https://git.example.com/x.git", Reason: "push protection: a secret was found"}, http.StatusUnprocessableEntity},
		{&patch.QueueFullError{Kind: patch.QueueBytes, Branch: "main", Held: 16 << 20, Budget: 16 << 20, Size: 24 << 20, RetryAfter: time.Second}, http.StatusTooManyRequests},
		{&patch.QueueFullError{Kind: patch.PluginBytes, Branch: "main", Held: 30 << 20, Budget: 32 << 20, Size: 24 << 20, RetryAfter: time.Second}, http.StatusTooManyRequests},
		{&patch.QueueFullError{Kind: patch.FairShare, Branch: "main", Queued: 256, Held: 128, Budget: 8 << 20, Dropped: true, RetryAfter: time.Second}, http.StatusTooManyRequests},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			resp, err := patchErrorResponse(tc.err)
			if got := status(resp, err); got != tc.want || !strings.Contains(errText(resp, err), tc.err.Error()) {
				t.Fatalf("status %d %q, want %d carrying %q", got, errText(resp, err), tc.want, tc.err)
			}
		})
	}
}
