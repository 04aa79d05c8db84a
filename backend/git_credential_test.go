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

// configure/git_credential and configure/repository/NAME take the same kind
// of credential and judge it by the same rules: each case gets the same
// answer from both paths (a refusal never echoes key material and stores
// nothing), and an accepted credential is stored the same.
func TestCredentialPairRulesAreShared(t *testing.T) {
	key, hosts := testSSHKey(t, "")
	locked, _ := testSSHKey(t, "pass")
	cases := []struct {
		name string
		data map[string]any
		want []string // nil: accepted
	}{
		{"nothing", map[string]any{"username": "", "password": "", "ssh_private_key": "", "known_hosts": ""}, []string{"username and password", "ssh_private_key and known_hosts"}},
		{"both kinds", map[string]any{"username": "u", "password": "p", "ssh_private_key": key, "known_hosts": hosts}, []string{"not both"}},
		{"password only", map[string]any{"password": "p"}, []string{"username is empty"}},
		{"blank username", map[string]any{"username": "  ", "password": "p"}, []string{"username is empty"}},
		{"username only", map[string]any{"username": "u"}, []string{"password is empty"}},
		{"key without known_hosts", map[string]any{"ssh_private_key": key}, []string{"known_hosts is empty", "ssh-keyscan"}},
		{"known_hosts only", map[string]any{"known_hosts": hosts}, []string{"ssh_private_key is empty"}},
		{"garbage key", map[string]any{"ssh_private_key": "not a key", "known_hosts": hosts}, []string{"ssh_private_key cannot be parsed"}},
		{"passphrase key", map[string]any{"ssh_private_key": locked, "known_hosts": hosts}, []string{"ssh_private_key", "passphrase"}},
		{"garbage known_hosts", map[string]any{"ssh_private_key": key, "known_hosts": "git.example.com ssh-ed25519 !!!"}, []string{"known_hosts cannot be parsed"}},
		{"basic", map[string]any{"username": " oauth2 ", "password": "glpat-secret"}, nil},
		{"ssh", map[string]any{"ssh_private_key": key, "known_hosts": hosts}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			repo := map[string]any{"url": "https://git.example.com/infra.git"}
			if tc.data["ssh_private_key"] != nil || tc.data["known_hosts"] != nil {
				repo["url"] = "ssh://git@git.example.com/infra.git"
			}
			for k, v := range tc.data {
				repo[k] = v
			}
			credResp, credErr := rawConfigReq(b, s, logical.UpdateOperation, "configure/git_credential", tc.data)
			repoResp, repoErr := rawConfigReq(b, s, logical.CreateOperation, "configure/repository/infra", repo)
			cred, err := getGitCredential(t.Context(), s)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := getRepository(t.Context(), s, "infra")
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil {
				mustBadRequest(t, credResp, credErr, tc.want...)
				mustBadRequest(t, repoResp, repoErr, tc.want...)
				for _, resp := range []*logical.Response{credResp, repoResp} {
					if msg := resp.Error().Error(); strings.Contains(msg, "PRIVATE KEY") {
						t.Errorf("error message echoes key material: %q", msg)
					}
				}
				if cred != nil || stored != nil {
					t.Errorf("a refused write stored something: credential %v, repository %v", cred != nil, stored != nil)
				}
				return
			}
			if credErr != nil || repoErr != nil {
				t.Fatalf("Go errors: %v; %v", credErr, repoErr)
			}
			mustOK(t, credResp, "configure/git_credential")
			mustOK(t, repoResp, "configure/repository/infra")
			if cred == nil || stored == nil || cred.gitCredential != stored.gitCredential {
				t.Fatalf("the paths stored different credentials for the same input")
			}
		})
	}
}

// The repository path replaces a credential as a whole but keeps the stored
// one when a write gives none of its fields.
func TestRepositoryCredentialPartialUpdate(t *testing.T) {
	key, hosts := testSSHKey(t, "")
	b, s := newTestBackend(t, nil, nil)
	const path = "configure/repository/infra"
	mustOK(t, configReq(t, b, s, logical.CreateOperation, path, map[string]any{"url": "ssh://git@git.example.com/infra.git", "ssh_private_key": key, "known_hosts": hosts}), "create")
	before, _ := getRepository(t.Context(), s, "infra")

	mustOK(t, configReq(t, b, s, logical.UpdateOperation, path, map[string]any{"branch": "prod"}), "update without credential fields")
	after, _ := getRepository(t.Context(), s, "infra")
	if after.gitCredential != before.gitCredential || after.Branch != "prod" {
		t.Fatalf("an update without credential fields changed the credential or lost the branch")
	}

	resp, err := rawConfigReq(b, s, logical.UpdateOperation, path, map[string]any{"known_hosts": hosts})
	mustBadRequest(t, resp, err, "ssh_private_key is empty")
	if after, _ := getRepository(t.Context(), s, "infra"); after.gitCredential != before.gitCredential {
		t.Fatal("a refused half credential changed the stored one")
	}
}
