package patch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/gitwatch"
)

// targetTrailers is the target paragraph f's Repo writes, as git log shows it.
func (f *txnFixture) targetTrailers(t *testing.T) string {
	t.Helper()
	u, err := gitwatch.CanonicalRepoURL(f.remote.URL())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s: %s\n%s: main", gitwatch.TrailerRepository, u, gitwatch.TrailerBranch)
}

// interpretTrailers runs the real `git interpret-trailers --parse` on msg
// with the given -c settings and no user or system configuration.
func interpretTrailers(t *testing.T, msg string, config ...string) string {
	t.Helper()
	var args []string
	for _, c := range config {
		args = append(args, "-c", c)
	}
	cmd := exec.Command("git", append(args, "interpret-trailers", "--parse")...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git interpret-trailers --parse: %v\n%s", err, out)
	}
	return string(out)
}

// trailerConfigs are the ways a reader's git may split trailers.
var trailerConfigs = [][]string{
	nil,
	{"trailer.separators=:="},
	{"trailer.separators=:=#"},
}

var pluginKeys = []string{"Requested-By", "Vault-Request-Id"}

func TestCheckMessage(t *testing.T) {
	tests := []struct {
		name, msg string
		refused   string // what the error says; "" when accepted
	}{
		{"plain", "Bump image to 1.2.5", ""},
		{"other trailers are the caller's", "Bump\n\nSigned-off-by: Dev <dev@example.com>\nCo-authored-by: A <a@example.com>", ""},
		{"a longer key", "Bump\n\nRequested-By-Bot: x\nVault-Request-Ids: 1", ""},
		{"the word without a separator", "Requested-By the release manager\nRequested-By\nrequested by: Alice", ""},
		{"four dashes and an indented divider", "Bump\n----\n ---\n--", ""},

		{"Requested-By", "Bump\n\nRequested-By: admin (root)", "line 3 reads as a Requested-By trailer"},
		{"lower case", "Bump\n\nrequested-by: admin", "Requested-By trailer"},
		{"blanks before the separator", "Bump\n\nREQUESTED-BY \t: admin", "Requested-By trailer"},
		{"'=' separator", "Bump\n\nVault-Request-Id= 1", "Vault-Request-Id trailer"},
		{"a configured separator", "Bump\n\nVault-Request-Id # 1", "Vault-Request-Id trailer"},
		{"indented, as a continuation line", "Bump\n\nFoo: x\n Requested-By: admin", "line 4 reads as a Requested-By trailer"},
		{"in the title", "Requested-By: admin", "line 1"},
		{"the target repository", "Bump\n\nFlant-Gitops-Repository: https://h/a", "Flant-Gitops-Repository trailer"},
		{"the target branch", "Bump\n\nflant-gitops-branch: main", "Flant-Gitops-Branch trailer"},
		{"divider", "Bump\n\nSee below\n---", `line 4 starts with "---"`},
		{"divider with text", "Bump\n--- notes", `line 2 starts with "---"`},
		{"divider with CR", "Bump\n---\r\nmore", `starts with "---"`},
		{"scissors", "Bump\n# ------------------------ >8 ------------------------\nRequested-By: admin", "scissors line"},
		{"scissors with another comment char", "Bump\n; ------------------------ >8 ------------------------", "scissors line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckMessage(tt.msg, pluginKeys...)
			switch {
			case tt.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)):
				t.Fatalf("CheckMessage = %v, want an error saying %q", err, tt.refused)
			case tt.refused != "" && !strings.Contains(err.Error(), ": re") && !strings.Contains(err.Error(), "remove"):
				t.Errorf("the error does not say what to change: %v", err)
			}
			if err != nil {
				return
			}
			// Accepted: the real git reads exactly the plugin's trailers.
			ours := []Trailer{{"Requested-By", "entity_1 (0f0e)"}, {"Vault-Request-Id", "req-1"},
				{gitwatch.TrailerRepository, "https://h/a"}, {gitwatch.TrailerBranch, "main"}}
			want := "Requested-By: entity_1 (0f0e)\nVault-Request-Id: req-1\n" + gitwatch.TrailerRepository + ": https://h/a\n" + gitwatch.TrailerBranch + ": main\n"
			msg := commitMessage(tt.msg, ours)
			for _, cfg := range trailerConfigs {
				if got := interpretTrailers(t, msg, cfg...); got != want {
					t.Errorf("git %v interpret-trailers --parse reads\n%s\nwant\n%s", cfg, got, want)
				}
			}
			if got, err := gitwatch.TargetOf(msg); err != nil || got.URL != "https://h/a" || got.Branch != "main" {
				t.Errorf("TargetOf = %+v, %v", got, err)
			}
		})
	}
}

// Why the divider and scissors lines are refused: behind them the real git
// reports the caller's lines as the trailers and never reads the plugin's.
func TestUncheckedDividerHidesPluginTrailers(t *testing.T) {
	ours := []Trailer{{"Requested-By", "entity_1 (0f0e)"}, {"Vault-Request-Id", "req-1"}}
	for _, forged := range []string{
		"Bump\n\nRequested-By: admin (root)\n---\nlisting",
		"Bump\n\nRequested-By: admin (root)\n# ------------------------ >8 ------------------------\n",
	} {
		if got := interpretTrailers(t, commitMessage(forged, ours)); got != "Requested-By: admin (root)\n" {
			t.Errorf("git reads %q from the unchecked message %q; the refusal in CheckMessage rests on it reading the forged line", got, forged)
		}
		if CheckMessage(forged, pluginKeys...) == nil {
			t.Errorf("CheckMessage accepted %q", forged)
		}
	}
}

// A Repo refuses a message that forges its trailers, whoever calls it, and
// pushes nothing; an accepted one lands with exactly the plugin's trailers
// as the real git reads them, the target naming the Repo's remote.
func TestPatchMessageCannotForgeTrailers(t *testing.T) {
	f := newTxnFixture(t, map[string]string{"a.yaml": "v: 1\n"})
	before := f.remote.Head(t)
	req := f.request(createFile("a.yaml", "v: 2\n"))
	req.Message = "Bump\n\nRequested-By: admin (root)\n---\nlisting"
	_, err := f.repo.Patch(context.Background(), req)
	var pe *Error
	if !errors.As(err, &pe) || pe.Kind != KindInvalid || pe.Field != "commit.message" || !strings.Contains(pe.Msg, "Requested-By") {
		t.Fatalf("Patch with a forged trailer in the message = %v, want an invalid commit.message", err)
	}
	if head := f.remote.Head(t); head != before {
		t.Fatalf("branch moved to %s", head)
	}

	req.Message = "Bump\n\nRequested by the release manager\nSigned-off-by: Dev <dev@example.com>"
	res, err := f.repo.Patch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := gitIn(t, f.remote.Dir, nil, "log", "-1", "--format=%B", res.Commit)
	if err != nil {
		t.Fatal(err)
	}
	want := "Requested-By: entity_1 (0f0e)\nVault-Request-Id: req-1\n" + f.targetTrailers(t) + "\n"
	for _, cfg := range trailerConfigs {
		if got := interpretTrailers(t, msg, cfg...); got != want {
			t.Errorf("git %v interpret-trailers --parse reads\n%s\nwant\n%s", cfg, got, want)
		}
	}
	got, err := gitwatch.TargetOf(msg)
	if err == nil {
		got, err = got.Canonical()
	}
	wantURL, _ := gitwatch.CanonicalRepoURL(f.remote.URL())
	if err != nil || got != (gitwatch.Target{URL: wantURL, Branch: "main"}) {
		t.Errorf("the watch reads the target %+v, %v; want %s main", got, err, wantURL)
	}
	f.verifyCommits(t, res.Commit)
}
