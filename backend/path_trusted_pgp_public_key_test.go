package backend

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

func TestTrustedKeyWriteReadListDelete(t *testing.T) {
	b, s := newConfigTestBackend(t)
	alice := pgptest.NewKey(t, "Alice")
	bob := pgptest.NewKey(t, "Bob")

	resp := configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.PublicArmored(t)})
	mustOK(t, resp, "write alice")
	if resp.Data["fingerprint"] != alice.Fingerprint() {
		t.Errorf("write answered fingerprint %v, want %s", resp.Data["fingerprint"], alice.Fingerprint())
	}
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/bob", map[string]any{"public_key": bob.PublicArmored(t)}), "write bob")

	resp = configReq(t, b, s, logical.ReadOperation, "configure/trusted_pgp_public_key/alice", nil)
	if resp.Data["fingerprint"] != alice.Fingerprint() || !reflect.DeepEqual(resp.Data["user_ids"], []string{"Alice <alice@example.com>"}) ||
		resp.Data["usable"] != true || resp.Data["public_key"] != alice.PublicArmored(t) {
		t.Errorf("read alice = %#v", resp.Data)
	}

	resp = configReq(t, b, s, logical.ListOperation, "configure/trusted_pgp_public_key/", nil)
	if !reflect.DeepEqual(resp.Data["keys"], []string{"alice", "bob"}) {
		t.Errorf("list = %#v, want [alice bob]", resp.Data["keys"])
	}
	keys, err := listTrustedKeys(t.Context(), s)
	if err != nil || len(keys) != 2 || keys[0].Fingerprint != alice.Fingerprint() || keys[1].Fingerprint != bob.Fingerprint() {
		t.Fatalf("listTrustedKeys = %+v, %v", keys, err)
	}

	// Deleting a key below the quorum warns.
	data := minimalConfig()
	data["required_number_of_verified_signatures_on_commit"] = 2
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", data), "configure quorum 2")
	resp = configReq(t, b, s, logical.DeleteOperation, "configure/trusted_pgp_public_key/bob", nil)
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "is 2 but only 1") {
		t.Errorf("delete below quorum: want a warning, got %#v", resp)
	}
	if resp := configReq(t, b, s, logical.ReadOperation, "configure/trusted_pgp_public_key/bob", nil); resp != nil {
		t.Errorf("read after delete = %#v", resp)
	}
}

func TestTrustedKeyValidation(t *testing.T) {
	alice := pgptest.NewKey(t, "Alice")
	bob := pgptest.NewKey(t, "Bob")
	cases := []struct {
		name, path string
		data       map[string]any
		want       []string
	}{
		{"missing key", "alice", map[string]any{}, []string{"public_key is missing", "gpg --armor --export"}},
		{"garbage", "alice", map[string]any{"public_key": "hello"}, []string{"public_key is not a valid PGP public key"}},
		{"private key", "alice", map[string]any{"public_key": alice.PrivateArmored(t)}, []string{"public_key", "PRIVATE"}},
		{"two keys", "alice", map[string]any{"public_key": alice.PublicArmored(t) + bob.PublicArmored(t)}, []string{"public_key", "exactly one"}},
		{"bad name", "al ice", map[string]any{"public_key": alice.PublicArmored(t)}, []string{"trusted_pgp_public_key name", "letters, digits"}},
		{"slash in name", "a/b", map[string]any{"public_key": alice.PublicArmored(t)}, []string{"trusted_pgp_public_key name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newConfigTestBackend(t)
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/"+tc.path, tc.data)
			mustBadRequest(t, resp, err, tc.want...)
			if keys, _ := listTrustedKeys(t.Context(), s); len(keys) != 0 {
				t.Errorf("a refused write stored %d keys", len(keys))
			}
		})
	}
}

func TestTrustedKeySameFingerprintTwiceRefused(t *testing.T) {
	b, s := newConfigTestBackend(t)
	alice := pgptest.NewKey(t, "Alice")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.PublicArmored(t)}), "write")
	resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/alice2", map[string]any{"public_key": alice.PublicArmored(t)})
	mustBadRequest(t, resp, err, "already trusted as \"alice\"")
	// Rewriting the same name with the same key is fine.
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.PublicArmored(t)}), "rewrite")
}

func TestQuorumCountsOnlyUsableKeys(t *testing.T) {
	now := time.Now()
	past := now.Add(-time.Hour)
	future := now.Add(time.Hour)
	keys := []*trustedKeyEntry{
		{Name: "ok"},
		{Name: "expiring", Expires: &future},
		{Name: "expired", Expires: &past},
		{Name: "revoked", Revoked: true},
	}
	cases := []struct {
		required int
		want     string
	}{
		{1, ""},
		{2, ""},
		{3, "is 3 but only 2 usable trusted PGP key(s) are configured (2 more expired or revoked)"},
	}
	for _, tc := range cases {
		got := quorumMessage(tc.required, keys, now)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("quorumMessage(%d) = %q, want %q", tc.required, got, tc.want)
		}
	}
}

func TestTrustedKeyExpiredAndRevokedWarn(t *testing.T) {
	b, s := newConfigTestBackend(t)
	expired := pgptest.NewKey(t, "Old", pgptest.CreatedAt(time.Now().Add(-48*time.Hour)), pgptest.Lifetime(time.Hour))
	revoked := pgptest.NewKey(t, "Gone")
	revoked.Revoke(t)
	for name, k := range map[string]*pgptest.Key{"old": expired, "gone": revoked} {
		resp := configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/"+name, map[string]any{"public_key": k.PublicArmored(t)})
		mustOK(t, resp, "write "+name)
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "counts zero") || resp.Data["usable"] != false {
			t.Errorf("%s: want usable=false and a warning, got %#v", name, resp)
		}
	}
}
