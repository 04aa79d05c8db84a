package gitwatch

import (
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

func TestParseKey(t *testing.T) {
	alice := pgptest.NewKey(t, "Alice", pgptest.ExtraUserID("Alice Work", "alice@work.example"))
	bob := pgptest.NewKey(t, "Bob")
	created := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	expiring := pgptest.NewKey(t, "Carol", pgptest.CreatedAt(created), pgptest.Lifetime(24*time.Hour))
	revoked := pgptest.NewKey(t, "Dave")
	revoked.Revoke(t)
	aliceArmored := alice.PublicArmored(t)

	tests := []struct {
		name    string
		armored string
		wantErr string // substring; empty means success
		check   func(t *testing.T, info KeyInfo)
	}{
		{
			name:    "ssh key",
			armored: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGwa4kl0e6pN3pdTgcFRpCtfZGjw5YlEUT7VzntHDP0V alice@laptop",
			wantErr: "SSH key, not a PGP key",
		},
		{
			name:    "public key",
			armored: aliceArmored,
			check: func(t *testing.T, info KeyInfo) {
				if info.Fingerprint != alice.Fingerprint() || len(info.Fingerprint) != 40 {
					t.Errorf("fingerprint %q, want %q", info.Fingerprint, alice.Fingerprint())
				}
				want := []string{"Alice <alice@example.com>", "Alice Work <alice@work.example>"}
				if strings.Join(info.UserIDs, "|") != strings.Join(want, "|") {
					t.Errorf("user IDs %q, want %q", info.UserIDs, want)
				}
				if info.Expires != nil || info.Revoked {
					t.Errorf("expires %v revoked %v, want neither", info.Expires, info.Revoked)
				}
			},
		},
		{
			name:    "surrounding whitespace is fine",
			armored: "\n\n  " + aliceArmored + "\n\n",
			check: func(t *testing.T, info KeyInfo) {
				if info.Fingerprint != alice.Fingerprint() {
					t.Errorf("fingerprint %q, want %q", info.Fingerprint, alice.Fingerprint())
				}
			},
		},
		{
			name:    "expiring key reports its expiry",
			armored: expiring.PublicArmored(t),
			check: func(t *testing.T, info KeyInfo) {
				if info.Expires == nil || !info.Expires.Equal(created.Add(24*time.Hour)) {
					t.Errorf("expires %v, want %v", info.Expires, created.Add(24*time.Hour))
				}
				if !info.Created.Equal(created) {
					t.Errorf("created %v, want %v", info.Created, created)
				}
			},
		},
		{
			name:    "revoked key is reported revoked",
			armored: revoked.PublicArmored(t),
			check: func(t *testing.T, info KeyInfo) {
				if !info.Revoked {
					t.Error("revoked = false, want true")
				}
			},
		},
		{name: "private key refused", armored: alice.PrivateArmored(t), wantErr: "PRIVATE key"},
		{
			name:    "private key packets under a public header refused",
			armored: strings.ReplaceAll(alice.PrivateArmored(t), "PRIVATE KEY", "PUBLIC KEY"),
			wantErr: "private key material",
		},
		{name: "two armored keys refused", armored: aliceArmored + "\n" + bob.PublicArmored(t), wantErr: "exactly one armored block, found 2"},
		{name: "public key followed by private key refused", armored: aliceArmored + alice.PrivateArmored(t), wantErr: "PRIVATE key"},
		{name: "empty", armored: "  \n", wantErr: "empty"},
		{name: "not armored", armored: "mQINBGBn", wantErr: "exactly one armored block, found 0"},
		{name: "signature block instead of key", armored: "-----BEGIN PGP SIGNATURE-----\n\nwsBc\n-----END PGP SIGNATURE-----", wantErr: "must start with"},
		{name: "trailing garbage", armored: aliceArmored + "extra", wantErr: "must end with"},
		{name: "damaged base64", armored: damageBody(aliceArmored), wantErr: "PGP public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := ParseKey(tc.armored)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseKey error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			tc.check(t, info)
		})
	}
}

// damageBody flips characters in the middle of the armored body.
func damageBody(armored string) string {
	lines := strings.Split(armored, "\n")
	mid := len(lines) / 2
	lines[mid] = strings.Repeat("A", len(lines[mid]))
	return strings.Join(lines, "\n")
}
