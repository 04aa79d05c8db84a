package backend

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestGitCredentialWriteOnly(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/git_credential", map[string]any{
		"username": "oauth2", "password": "glpat-very-secret",
	}), "write basic")

	for _, op := range []logical.Operation{logical.ReadOperation, logical.ListOperation} {
		resp, err := rawConfigReq(b, s, op, "configure/git_credential", nil)
		if !isUnsupported(err) {
			t.Errorf("%s configure/git_credential = %#v, %v; want unsupported operation", op, resp, err)
		}
	}
	cred, err := getGitCredential(t.Context(), s)
	if err != nil || cred == nil || cred.Username != "oauth2" || cred.Password != "glpat-very-secret" {
		t.Fatalf("stored credential = %+v, %v", cred, err)
	}

	// A write replaces the whole credential: switching to SSH drops the password.
	key, hosts := testSSHKey(t, "")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/git_credential", map[string]any{
		"ssh_private_key": key, "known_hosts": hosts,
	}), "write ssh")
	cred, _ = getGitCredential(t.Context(), s)
	if cred.Password != "" || cred.Username != "" || !strings.Contains(cred.SSHPrivateKey, "OPENSSH PRIVATE KEY") || !strings.HasPrefix(cred.KnownHosts, "git.example.com ") {
		t.Fatalf("credential after SSH write = %+v", cred)
	}

	mustOK(t, configReq(t, b, s, logical.DeleteOperation, "configure/git_credential", nil), "delete")
	if cred, _ := getGitCredential(t.Context(), s); cred != nil {
		t.Fatalf("credential after delete = %+v", cred)
	}
}
