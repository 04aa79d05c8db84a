package gitwatch

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// rsaKey makes a test key whose primary key is RSA of bits (Ed25519 when
// bits is 0), with an extra RSA signing subkey of subBits when not 0.
func rsaKey(t *testing.T, name string, bits, subBits int) *pgptest.Key {
	t.Helper()
	created := time.Now().Add(-time.Hour)
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Time: func() time.Time { return created }}
	if bits > 0 {
		cfg = &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: bits, Time: func() time.Time { return created }}
	}
	e, err := openpgp.NewEntity(name, "", strings.ToLower(name)+"@example.com", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if subBits > 0 {
		sub := &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: subBits, Time: func() time.Time { return created }}
		if err := e.AddSigningSubkey(sub); err != nil {
			t.Fatal(err)
		}
	}
	return &pgptest.Key{Entity: e, Name: name}
}

func publicArmored(t *testing.T, e *openpgp.Entity) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestWeakKeys(t *testing.T) {
	srv := gittest.NewServer(t)
	tests := []struct {
		name    string
		key     *pgptest.Key
		wantErr string // "" when the key is accepted
	}{
		{"RSA-1024 primary", rsaKey(t, "Weak", 1024, 0), "RSA with 1024 bits"},
		{"RSA-2048 primary", rsaKey(t, "Fine", 2048, 0), ""},
		{"Ed25519 primary with an RSA-1024 signing subkey", rsaKey(t, "Sub", 0, 1024), "signing subkey"},
		{"Ed25519", pgptest.NewKey(t, "Ed"), ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := srv.NewRepo(t, fmt.Sprintf("weak%d", i))
			armored := publicArmored(t, tt.key.Entity)
			_, err := ParseKey(armored)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseKey refused a strong key: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "2048")):
				t.Fatalf("ParseKey = %v, want a refusal saying %q and the 2048-bit minimum", err, tt.wantErr)
			}

			// A key stored before the check existed: its signature counts zero
			// and the reason is reported.
			c := repo.Commit(t, map[string]string{"f": tt.name}, gittest.SignKey(tt.key))
			m := openMirror(t, srv, repo, t.TempDir())
			mustFetch(t, m)
			q, err := m.verify(context.Background(), c, []TrustedKey{{Name: "stored", Armored: armored}}, 1)
			if err != nil {
				t.Fatal(err)
			}
			if wantOK := tt.wantErr == ""; q.OK != wantOK || q.Verified != map[bool]int{true: 1}[wantOK] {
				t.Errorf("verified %d, ok %v; want ok %v (ignored %q)", q.Verified, q.OK, wantOK, q.Ignored)
			}
			if tt.wantErr != "" && !strings.Contains(strings.Join(q.Ignored, "\n"), tt.wantErr) {
				t.Errorf("the weak stored key is not reported: %q", q.Ignored)
			}
		})
	}
}
