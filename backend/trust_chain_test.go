package backend

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch/pgptest"
	"github.com/flant/flant_gitops/patch"
)

// Rotation keeps the public part of every earlier key, the read shows them,
// and the watch knows them all as the plugin's, together with any trusted
// key carrying the plugin's identity, whatever its name.
func TestSigningKeyRotationKeepsEarlierKeys(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	ctx := context.Background()
	var fps []string
	fps = append(fps, toString(configReq(t, b, s, logical.ReadOperation, "configure/signing_key", nil).Data["fingerprint"]))
	for range 2 {
		fps = append(fps, toString(configReq(t, b, s, logical.UpdateOperation, "configure/signing_key/rotate", nil).Data["fingerprint"]))
	}
	read := configReq(t, b, s, logical.ReadOperation, "configure/signing_key", nil)
	prev, _ := read.Data["previous_keys"].([]map[string]any)
	if len(prev) != 2 || prev[0]["fingerprint"] != fps[0] || prev[1]["fingerprint"] != fps[1] || read.Data["fingerprint"] != fps[2] {
		t.Fatalf("previous_keys = %v, want %v oldest first, then current %s", prev, fps[:2], fps[2])
	}
	for _, p := range prev {
		pub := toString(p["public_key"])
		if !strings.Contains(pub, "BEGIN PGP PUBLIC KEY BLOCK") || strings.Contains(pub, "PRIVATE") || p["retired_at"] == "" {
			t.Errorf("previous key %v is not a public key with its retirement date", p)
		}
	}

	// Another mount's plugin key, trusted here under an unremarkable name.
	other, err := patch.GenerateSigningKey(pluginCommitterName, pluginCommitterEmail, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	otherPub, err := other.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/ci-bot", map[string]any{"public_key": string(otherPub)}), "trust ci-bot")
	alice := pgptest.NewKey(t, "Alice")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.PublicArmored(t)}), "trust alice")
	keys, err := listTrustedKeys(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pluginKeyFingerprints(ctx, s, keys)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := append(slices.Clone(fps), other.Fingerprint())
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("plugin keys = %v, want the current and earlier signing keys %v", got, want)
	}
}
