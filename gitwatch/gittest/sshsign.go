package gittest

import (
	"encoding/base64"
	"testing"

	"github.com/flant/flant_gitops/gitwatch/sshsig"
	"github.com/flant/flant_gitops/gitwatch/sshsig/sshsigtest"
)

// SignSSH signs the commit through `git commit -S` with gpg.format=ssh and
// user.signingkey set to the private key at keyPath (git runs ssh-keygen).
func SignSSH(keyPath string) CommitOption { return func(c *commitConfig) { c.sshKey = keyPath } }

// NoteSignatureSSH adds an SSH note signature over commit, in the format
// the watcher reads: `ssh-keygen -Y sign -n git` over the 40-hex id (no
// newline), dearmored, base64 on one line.
func (r *Repo) NoteSignatureSSH(t testing.TB, commit string, k *sshsigtest.Key) {
	t.Helper()
	blob, err := sshsig.Unarmor(k.Sign(t, "git", []byte(commit)))
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	r.AddNoteLines(t, commit, base64.StdEncoding.EncodeToString(blob))
}
