package gitwatch

import (
	"context"
	"fmt"
	"testing"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// A re-wrapped signature armor makes a new commit id whose signature still
// verifies; ContentID sees the same signed content. Anything else changed in
// the commit is another content.
func TestContentIDFollowsRewrap(t *testing.T) {
	alice := pgptest.NewKey(t, "Alice")
	g := pgptest.NewGPG(t)
	gpgFP := g.GenKey(t, "Gina")
	srv := gittest.NewServer(t)
	ctx := context.Background()
	keys := append(trusted(t, map[string]*pgptest.Key{"alice": alice}), TrustedKey{Name: "gina", Armored: g.ExportPublic(t, gpgFP)})

	tests := []struct {
		name string
		sign gittest.CommitOption
	}{
		{"go-crypto signature", gittest.SignKey(alice)},
		{"git commit -S with gpg", gittest.SignGPG(g, gpgFP)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := srv.NewRepo(t, fmt.Sprintf("rewrap%d", i))
			orig := repo.Commit(t, map[string]string{"deploy.sh": "echo " + tt.name + "\n"}, tt.sign)
			other := repo.Commit(t, map[string]string{"deploy.sh": "echo other " + tt.name + "\n"}, tt.sign)
			m := openMirror(t, srv, repo, t.TempDir())
			mustFetch(t, m) // orig and other
			rewrapped := repo.Rewrap(t, orig, "re-wrapped by an attacker")
			if rewrapped == orig {
				t.Fatal("re-wrapping kept the commit id")
			}
			if head := mustFetch(t, m).Head; head != rewrapped {
				t.Fatalf("HEAD %s, want the re-wrapped %s", head, rewrapped)
			}

			q, err := m.verify(ctx, rewrapped, keys, 1)
			if err != nil || !q.OK {
				t.Fatalf("the re-wrapped commit does not verify: %+v %v", q, err)
			}
			ids := map[string]string{}
			for _, c := range []string{orig, rewrapped, other} {
				id, err := m.ContentID(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				ids[c] = id
			}
			if ids[orig] != ids[rewrapped] {
				t.Errorf("content id of the re-wrapped commit %s differs from the original's %s", ids[rewrapped], ids[orig])
			}
			if ids[other] == ids[orig] {
				t.Errorf("another change has the same content id %s", ids[other])
			}
		})
	}
}

func TestUnsignedPayload(t *testing.T) {
	tests := []struct{ name, raw, want string }{
		{"unsigned", "tree t\nauthor a\n\nmsg\n", "tree t\nauthor a\n\nmsg\n"},
		{"gpgsig removed with its lines", "tree t\ngpgsig -----BEGIN\n Comment: x\n \n AAA\n -----END\nauthor a\n\nmsg\n", "tree t\nauthor a\n\nmsg\n"},
		{"sha256 signature removed too", "tree t\ngpgsig-sha256 -----BEGIN\n B\nauthor a\n\nmsg\n", "tree t\nauthor a\n\nmsg\n"},
		{"message lines that look like headers stay", "tree t\n\ngpgsig in the message\n indented\n", "tree t\n\ngpgsig in the message\n indented\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(unsignedPayload([]byte(tt.raw))); got != tt.want {
				t.Errorf("unsignedPayload = %q, want %q", got, tt.want)
			}
		})
	}
}
