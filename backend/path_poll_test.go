package backend

import (
	"strings"
	"testing"

	"github.com/flant/flant_gitops/backend/vaulttest"
)

// A rate-limited poll must tell the operator why and when to ask again, in
// the CLI's "Errors:" list, not only in a status code.
func TestPollRateLimitedAnswerThroughCLI(t *testing.T) {
	v := vaulttest.NewServer(t, nil)
	steps := []struct {
		name     string
		wantExit int
		want     []string
	}{
		{name: "first poll starts", wantExit: 0, want: []string{"poll started"}},
		{name: "second poll within 2s is refused", wantExit: 2, want: []string{"Code: 429", "* rate-limited: a poll was requested at", "ask again after"}},
	}
	for _, st := range steps {
		stdout, stderr, code := v.CLI(t, "write", "-f", vaulttest.MountPath+"/poll")
		if code != st.wantExit {
			t.Fatalf("%s: vault write -f %s/poll exited %d, want %d\nstdout: %s\nstderr: %s", st.name, vaulttest.MountPath, code, st.wantExit, stdout, stderr)
		}
		for _, w := range st.want {
			if !strings.Contains(stdout+stderr, w) {
				t.Errorf("%s: output lacks %q\nstdout: %s\nstderr: %s", st.name, w, stdout, stderr)
			}
		}
	}
}
