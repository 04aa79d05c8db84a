package sshsig

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Whoever may push notes chooses these bytes: no input may panic.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"ed25519.sig", "ecdsa_sk.sig", "rsa.sig", "ecdsa_sk_webauthn.sig"} {
		armored, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(armored)
		if blob, err := Unarmor(armored); err == nil {
			f.Add(blob)
		}
	}
	pub, err := os.ReadFile(filepath.Join("testdata", "ed25519.pub"))
	if err != nil {
		f.Fatal(err)
	}
	key, err := ParsePublicKey(string(pub))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		IsSSHSIG(data)
		blob, err := Unarmor(data)
		if err != nil {
			blob = data
		}
		sig, err := Parse(blob)
		if err != nil {
			return
		}
		_ = Verify(sig, []byte("m"), "git", sig.PublicKey)
		_ = Verify(sig, []byte("m"), "git", key)
	})
}

func FuzzParseAllowedSigners(f *testing.F) {
	pub, err := os.ReadFile(filepath.Join("testdata", "ed25519.pub"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("alice " + string(pub)))
	f.Add([]byte(`"a b",c namespaces="git",valid-after="20260101Z",valid-before="20270101" ` + string(pub)))
	f.Add([]byte(`* cert-authority,namespaces="\"x\"" ` + string(pub)))
	f.Fuzz(func(t *testing.T, data []byte) {
		signers, err := ParseAllowedSigners(data)
		if err != nil {
			return
		}
		for _, a := range signers {
			a.MatchesPrincipal("alice")
			_ = a.CheckOptions("git", time.Unix(1780315200, 0))
		}
	})
}
