package backend

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/crypto/ssh"

	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// sshPublicKeyLine is a fresh Ed25519 public key as a .pub line.
func sshPublicKeyLine(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " alice@laptop"
}

// sshKeygen makes a key with the real ssh-keygen and returns the .pub line
// and the private key file's text.
func sshKeygen(t *testing.T, args ...string) (pub, private string) {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen is missing (apt-get install openssh-client): %v", err)
	}
	file := filepath.Join(t.TempDir(), "key")
	out, err := exec.Command("ssh-keygen", append([]string{"-q", "-N", "", "-C", "test@example.com", "-f", file}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	p, err := os.ReadFile(file + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(p)), string(k)
}

func TestSignerWriteReadListDelete(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	laptop, token := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Alice")
	sshLine, _ := sshKeygen(t, "-t", "ed25519")

	resp := configReq(t, b, s, logical.UpdateOperation, "configure/signer/alice", map[string]any{
		"pgp_public_keys": []any{laptop.PublicArmored(t), token.PublicArmored(t)},
		"ssh_public_keys": []any{`valid-after="20240101",namespaces="git" ` + sshLine},
	})
	mustOK(t, resp, "write alice")
	pgp, _ := resp.Data["pgp_public_keys"].([]map[string]any)
	sshKeys, _ := resp.Data["ssh_public_keys"].([]map[string]any)
	if len(pgp) != 2 || pgp[0]["fingerprint"] != laptop.Fingerprint() || pgp[1]["fingerprint"] != token.Fingerprint() || pgp[0]["kind"] != "pgp" {
		t.Errorf("pgp keys = %v", pgp)
	}
	if len(sshKeys) != 1 || !strings.HasPrefix(sshKeys[0]["fingerprint"].(string), "SHA256:") || sshKeys[0]["valid_after"] != "20240101" ||
		sshKeys[0]["namespaces"] != "git" || sshKeys[0]["type"] != "ssh-ed25519" || sshKeys[0]["comment"] != "test@example.com" {
		t.Errorf("ssh keys = %v", sshKeys)
	}

	// An update without keys keeps them; revoked_keys marks one unusable.
	resp = configReq(t, b, s, logical.UpdateOperation, "configure/signer/alice", map[string]any{"revoked_keys": strings.ToLower(token.Fingerprint())})
	mustOK(t, resp, "revoke a key")
	resp = configReq(t, b, s, logical.ReadOperation, "configure/signer/alice", nil)
	pgp, _ = resp.Data["pgp_public_keys"].([]map[string]any)
	if len(pgp) != 2 || pgp[1]["usable"] != false || pgp[1]["problem"] != "listed in revoked_keys" || pgp[0]["usable"] != true || resp.Data["usable"] != true ||
		!reflect.DeepEqual(resp.Data["revoked_keys"], []string{token.Fingerprint()}) {
		t.Errorf("read after revoke = %v", resp.Data)
	}
	// The read holds public data only: every key field is one of these.
	allowed := map[string]bool{"kind": true, "fingerprint": true, "user_ids": true, "created": true, "expires": true, "revoked": true, "usable": true,
		"problem": true, "public_key": true, "type": true, "comment": true, "valid_after": true, "valid_before": true, "namespaces": true}
	for _, k := range append(pgp, sshKeys...) {
		for f := range k {
			if !allowed[f] {
				t.Errorf("a key shows field %q", f)
			}
		}
	}
	raw, _ := json.Marshal(resp.Data)
	if strings.Contains(string(raw), "PRIVATE") {
		t.Errorf("the read shows private material: %s", raw)
	}

	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/signer/bob", map[string]any{"pgp_public_keys": pgptest.NewKey(t, "Bob").PublicArmored(t)}), "write bob")
	resp = configReq(t, b, s, logical.ListOperation, "configure/signer/", nil)
	if !reflect.DeepEqual(resp.Data["keys"], []string{"alice", "bob"}) {
		t.Errorf("list = %v", resp.Data["keys"])
	}

	// The quorum counts signers: alice's two keys are one.
	data := minimalConfig()
	data["required_number_of_verified_signatures_on_commit"] = 2
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", data), "configure quorum 2")
	resp = configReq(t, b, s, logical.DeleteOperation, "configure/signer/bob", nil)
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "is 2 but only 1 usable trusted signer") {
		t.Errorf("delete below the quorum: want a warning, got %#v", resp)
	}
	if resp := configReq(t, b, s, logical.ReadOperation, "configure/signer/bob", nil); resp != nil {
		t.Errorf("read after delete = %#v", resp)
	}

	// The watch gets every key, each with its signer.
	ws, err := loadWatchSettings(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	var pgpKeys, sshKeys2, revoked int
	for _, k := range ws.Keys {
		switch {
		case k.Revoked:
			revoked++
			if !strings.Contains(k.Armored, "PUBLIC KEY") {
				t.Errorf("the revocation does not carry the key: %+v", k)
			}
		case k.SSH != "" && k.Signer == "alice":
			sshKeys2++
		case k.Armored != "" && k.Signer == "alice":
			pgpKeys++
		default:
			t.Errorf("unexpected watch key %+v", k)
		}
	}
	if pgpKeys != 2 || sshKeys2 != 1 || revoked != 1 {
		t.Errorf("watch keys: %d PGP, %d SSH, %d revoked; want 2, 1, 1: %+v", pgpKeys, sshKeys2, revoked, ws.Keys)
	}
}

func TestSignerValidation(t *testing.T) {
	alice, bob := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Bob")
	weak := pgptest.NewKey(t, "Weak", pgptest.RSA(1024))
	sshLine, sshPrivate := sshKeygen(t, "-t", "ed25519")
	dsaLess, _ := rsa.GenerateKey(rand.Reader, 1024)
	weakSSH, err := ssh.NewPublicKey(&dsaLess.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	weakSSHLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(weakSSH)))
	cases := []struct {
		name string
		data map[string]any
		want []string
	}{
		{"no keys", map[string]any{"revoked_keys": []any{}}, []string{"has no keys"}},
		{"bad armor", map[string]any{"pgp_public_keys": []any{"-----BEGIN PGP PUBLIC KEY BLOCK-----\nnope\n-----END PGP PUBLIC KEY BLOCK-----"}}, []string{"pgp_public_keys item 1", "not a valid PGP public key"}},
		{"private PGP key", map[string]any{"pgp_public_keys": []any{alice.PrivateArmored(t)}}, []string{"PRIVATE"}},
		{"weak PGP key", map[string]any{"pgp_public_keys": []any{weak.PublicArmored(t)}}, []string{"1024 bits"}},
		{"the same key twice", map[string]any{"pgp_public_keys": []any{alice.PublicArmored(t), alice.PublicArmored(t)}}, []string{"item 2 is the same key as pgp_public_keys item 1"}},
		{"private SSH key", map[string]any{"ssh_public_keys": []any{sshPrivate}}, []string{"SSH PRIVATE key"}},
		{"garbage SSH line", map[string]any{"ssh_public_keys": []any{"ssh-ed25519 !!!"}}, []string{"ssh_public_keys item 1", "not an SSH public key line"}},
		{"allowed_signers principals", map[string]any{"ssh_public_keys": []any{"alice@example.com " + sshLine}}, []string{"without the principals field"}},
		{"weak SSH RSA", map[string]any{"ssh_public_keys": []any{weakSSHLine}}, []string{"1024 bits"}},
		{"unknown option", map[string]any{"ssh_public_keys": []any{"no-pty " + sshLine}}, []string{`option "no-pty"`}},
		{"namespaces without git", map[string]any{"ssh_public_keys": []any{`namespaces="file" ` + sshLine}}, []string{"leaves out \"git\""}},
		{"bad time", map[string]any{"ssh_public_keys": []any{`valid-after="yesterday" ` + sshLine}}, []string{"is not a time"}},
		{"empty window", map[string]any{"ssh_public_keys": []any{`valid-after="20250101",valid-before="20240101" ` + sshLine}}, []string{"could never sign"}},
		{"cert authority", map[string]any{"ssh_public_keys": []any{"cert-authority " + sshLine}}, []string{"cert-authority"}},
		{"bad revoked fingerprint", map[string]any{"pgp_public_keys": []any{alice.PublicArmored(t)}, "revoked_keys": []any{"ABCD"}}, []string{"not a key fingerprint"}},
		{"key of another signer", map[string]any{"pgp_public_keys": []any{bob.PublicArmored(t)}}, []string{"already held by signer \"bob\""}},
		{"bad name", nil, []string{"signer name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/signer/bob", map[string]any{"pgp_public_keys": bob.PublicArmored(t)}), "write bob")
			path := "configure/signer/alice"
			if tc.data == nil {
				path, tc.data = "configure/signer/-bad", map[string]any{"pgp_public_keys": alice.PublicArmored(t)}
			}
			resp := configReq(t, b, s, logical.UpdateOperation, path, tc.data)
			if resp == nil || !resp.IsError() {
				t.Fatalf("want a 400, got %#v", resp)
			}
			for _, w := range tc.want {
				if !strings.Contains(resp.Error().Error(), w) {
					t.Errorf("error %q does not say %q", resp.Error(), w)
				}
			}
			if e, _ := getSigner(t.Context(), s, "alice"); e != nil {
				t.Errorf("a refused write stored %+v", e)
			}
		})
	}
}

// A key stored as a trusted key and by a signer counts once, as the
// signer's; several armored blocks in one text are several keys.
func TestSignerAndTrustedKeyTogether(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	laptop, token := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Alice")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/alice-old", map[string]any{"public_key": laptop.PublicArmored(t)}), "legacy key")
	resp := configReq(t, b, s, logical.UpdateOperation, "configure/signer/alice", map[string]any{"pgp_public_keys": laptop.PublicArmored(t) + "\n" + token.PublicArmored(t)})
	mustOK(t, resp, "signer with both keys in one text")
	if pgp, _ := resp.Data["pgp_public_keys"].([]map[string]any); len(pgp) != 2 {
		t.Errorf("keys = %v, want 2", resp.Data["pgp_public_keys"])
	}
	if len(resp.Warnings) == 0 || !strings.Contains(strings.Join(resp.Warnings, "\n"), "counts once, as signer \"alice\"") {
		t.Errorf("warnings = %q", resp.Warnings)
	}
	keys, _, err := trustedForRule(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	signers, err := listSigners(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	legacy, _ := listTrustedKeys(t.Context(), s)
	if usable, _ := usableSigners(legacy, signers, time.Now()); usable != 1 || len(keys) != 3 {
		t.Errorf("usable signers = %d over %d keys, want 1 over 3", usable, len(keys))
	}
	// The plugin's own key is never a person's.
	sk := configReq(t, b, s, logical.ReadOperation, "configure/signing_key", nil)
	mustOK(t, sk, "signing key")
	resp = configReq(t, b, s, logical.UpdateOperation, "configure/signer/ci", map[string]any{"pgp_public_keys": sk.Data["public_key"]})
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "plugin's own signing key") {
		t.Errorf("the plugin's key as a signer's: %#v", resp)
	}
}
