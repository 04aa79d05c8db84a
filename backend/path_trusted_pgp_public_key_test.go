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
	b, s := newTestBackend(t, nil, nil)
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
			b, s := newTestBackend(t, nil, nil)
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/"+tc.path, tc.data)
			mustBadRequest(t, resp, err, tc.want...)
			if keys, _ := listTrustedKeys(t.Context(), s); len(keys) != 0 {
				t.Errorf("a refused write stored %d keys", len(keys))
			}
		})
	}
}

func TestTrustedKeySameFingerprintTwiceRefused(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
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
	good := pgptest.NewKey(t, "Good").PublicArmored(t)
	keys := []*trustedKeyEntry{
		{Name: "ok", PublicKey: good},
		{Name: "expiring", Expires: &future, PublicKey: good},
		{Name: "expired", Expires: &past, PublicKey: good},
		{Name: "revoked", Revoked: true, PublicKey: good},
		// Stored before weak keys were refused on write.
		{Name: "weak", PublicKey: pgptest.NewKey(t, "Weak", pgptest.RSA(1024)).PublicArmored(t)},
	}
	cases := []struct {
		required int
		want     string
	}{
		{1, ""},
		{2, ""},
		{3, "is 3 but only 2 usable trusted signer(s) are configured (3 more with only expired, revoked or too weak"},
	}
	for _, tc := range cases {
		got := quorumMessage(tc.required, keys, nil, now)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("quorumMessage(%d) = %q, want %q", tc.required, got, tc.want)
		}
	}
}

func TestTrustedKeyExpiredAndRevokedWarn(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
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

// An RSA-1024 key is refused on write with the fix; one stored before the
// rule counts zero, and read, status and the quorum warning say so.
func TestWeakTrustedKey(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	weak := pgptest.NewKey(t, "Weak", pgptest.RSA(1024))
	resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/weak", map[string]any{"public_key": weak.PublicArmored(t)})
	mustBadRequest(t, resp, err, "RSA with 1024 bits", "2048", "gpg --quick-gen-key")
	if k, err := getTrustedKey(t.Context(), s, "weak"); err != nil || k != nil {
		t.Fatalf("the refused key was stored: %+v %v", k, err)
	}

	// As an older version stored it.
	if err := putEntry(t.Context(), s, storagePrefixTrustedKey+"weak", &trustedKeyEntry{Name: "weak", PublicKey: weak.PublicArmored(t), Fingerprint: weak.Fingerprint()}); err != nil {
		t.Fatal(err)
	}
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{
		"git_repo_url": "https://git.example/ops.git", "docker_image": "sha256:" + strings.Repeat("1", 64),
		"commands": []string{"true"}, "required_number_of_verified_signatures_on_commit": 1,
	}), "configure")
	read := configReq(t, b, s, logical.ReadOperation, "configure/trusted_pgp_public_key/weak", nil)
	if read.Data["usable"] != false || !strings.Contains(toString(read.Data["problem"]), "1024 bits") {
		t.Errorf("read of the stored weak key = usable %v, problem %q", read.Data["usable"], read.Data["problem"])
	}
	st := configReq(t, b, s, logical.ReadOperation, "status", nil)
	problems, _ := st.Data["trusted_key_problems"].([]string)
	if len(problems) != 1 || !strings.Contains(problems[0], "weak") || !strings.Contains(problems[0], "1024 bits") {
		t.Errorf("status trusted_key_problems = %v, want the weak key and why", st.Data["trusted_key_problems"])
	}
	if qp := toString(st.Data["quorum_problem"]); !strings.Contains(qp, "only 0 usable") {
		t.Errorf("status quorum_problem = %q, want no usable key", qp)
	}
}
