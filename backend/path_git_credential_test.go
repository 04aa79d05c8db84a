package backend

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/ssh"
)

// testSSHKey makes an ed25519 key in OpenSSH PEM form and a known_hosts
// line for a host using its public half.
func testSSHKey(t *testing.T, passphrase string) (privatePEM, knownHosts string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block)), "git.example.com " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
}

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

func TestGitCredentialValidation(t *testing.T) {
	key, hosts := testSSHKey(t, "")
	locked, _ := testSSHKey(t, "pass")
	cases := []struct {
		name string
		data map[string]any
		want []string
	}{
		{"nothing", map[string]any{}, []string{"username and password", "ssh_private_key and known_hosts"}},
		{"both kinds", map[string]any{"username": "u", "password": "p", "ssh_private_key": key, "known_hosts": hosts}, []string{"not both"}},
		{"password only", map[string]any{"password": "p"}, []string{"username is empty"}},
		{"username only", map[string]any{"username": "u"}, []string{"password is empty"}},
		{"key without known_hosts", map[string]any{"ssh_private_key": key}, []string{"known_hosts is empty", "ssh-keyscan"}},
		{"known_hosts only", map[string]any{"known_hosts": hosts}, []string{"ssh_private_key is empty"}},
		{"garbage key", map[string]any{"ssh_private_key": "not a key", "known_hosts": hosts}, []string{"ssh_private_key cannot be parsed"}},
		{"passphrase key", map[string]any{"ssh_private_key": locked, "known_hosts": hosts}, []string{"ssh_private_key", "passphrase"}},
		{"garbage known_hosts", map[string]any{"ssh_private_key": key, "known_hosts": "git.example.com ssh-ed25519 !!!"}, []string{"known_hosts cannot be parsed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/git_credential", tc.data)
			mustBadRequest(t, resp, err, tc.want...)
			if msg := resp.Error().Error(); strings.Contains(msg, "PRIVATE KEY") {
				t.Errorf("error message echoes key material: %q", msg)
			}
			if cred, _ := getGitCredential(t.Context(), s); cred != nil {
				t.Errorf("a refused write stored a credential")
			}
		})
	}
}
