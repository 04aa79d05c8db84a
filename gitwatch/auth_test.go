package gitwatch

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// testSSHKey is a fresh unencrypted OpenSSH private key.
func testSSHKey(t *testing.T) []byte {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block)
}

func TestSSHFetchChecksHostKey(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ssh")
	head := repo.Commit(t, map[string]string{"a.txt": "over ssh"})
	sshd := srv.ServeSSH(t)
	impostor := srv.ServeSSH(t) // same repositories, another host key

	tests := []struct {
		name       string
		auth       Auth
		wantErr    string
		wantNoHead bool
	}{
		{name: "matching known_hosts", auth: Auth{SSHPrivateKey: sshd.ClientPrivateKey(), SSHKnownHosts: sshd.KnownHosts()}},
		{name: "known_hosts with comments and the key", auth: Auth{SSHPrivateKey: sshd.ClientPrivateKey(), SSHKnownHosts: append([]byte("# pinned by ops\n"), sshd.KnownHosts()...)}},
		{name: "host key of another server", auth: Auth{SSHPrivateKey: sshd.ClientPrivateKey(), SSHKnownHosts: impostorLine(impostor, sshd)}, wantErr: "key mismatch"},
		{name: "client key not accepted", auth: Auth{SSHPrivateKey: testSSHKey(t), SSHKnownHosts: sshd.KnownHosts()}, wantErr: "unable to authenticate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := OpenMirror(context.Background(), filepath.Join(t.TempDir(), "m"), sshd.RepoURL("ssh"), "main", tc.auth)
			if err != nil {
				t.Fatalf("OpenMirror: %v", err)
			}
			res, err := m.Fetch(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Fetch error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || res.Head != head {
				t.Fatalf("Fetch = %+v, %v; want head %s", res, err, head)
			}
		})
	}
}

// impostorLine claims the impostor's host key for the real server's address.
func impostorLine(impostor, real *gittest.SSHServer) []byte {
	realHost := strings.Fields(string(real.KnownHosts()))[0]
	fields := strings.Fields(string(impostor.KnownHosts()))
	return []byte(realHost + " " + fields[1] + " " + fields[2] + "\n")
}
