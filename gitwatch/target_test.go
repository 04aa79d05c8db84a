package gitwatch

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalRepoURL(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" when refused
		err  string
	}{
		{in: "https://gitlab.example.com/ops/infra.git", want: "https://gitlab.example.com/ops/infra"},
		{in: "https://gitlab.example.com/ops/infra", want: "https://gitlab.example.com/ops/infra"},
		{in: "https://GITLAB.Example.COM/ops/infra/", want: "https://gitlab.example.com/ops/infra"},
		{in: "HTTPS://gitlab.example.com./ops/infra.git/", want: "https://gitlab.example.com/ops/infra"},
		{in: "https://gitlab.example.com:443/ops//infra.git", want: "https://gitlab.example.com/ops/infra"},
		{in: "  https://gitlab.example.com/ops/./x/../infra.git  ", want: "https://gitlab.example.com/ops/infra"},
		{in: "https://ci:s3cret@gitlab.example.com/ops/infra.git", want: "https://gitlab.example.com/ops/infra"},
		{in: "https://gitlab.example.com/ops/infra.git#frag", want: "https://gitlab.example.com/ops/infra"},
		// The path's case is the repository's: another path is another target.
		{in: "https://gitlab.example.com/Ops/Infra.git", want: "https://gitlab.example.com/Ops/Infra"},
		{in: "https://gitlab.example.com/ops/infra-staging.git", want: "https://gitlab.example.com/ops/infra-staging"},
		// Ports and transports stay apart.
		{in: "https://gitlab.example.com:8443/ops/infra.git", want: "https://gitlab.example.com:8443/ops/infra"},
		{in: "http://gitlab.example.com/ops/infra.git", want: "http://gitlab.example.com/ops/infra"},
		{in: "http://gitlab.example.com:80/ops/infra.git", want: "http://gitlab.example.com/ops/infra"},
		{in: "http://127.0.0.1:37411/infra.git", want: "http://127.0.0.1:37411/infra"},
		{in: "https://[2001:DB8::1]:443/ops/infra.git", want: "https://[2001:db8::1]/ops/infra"},
		{in: "https://[2001:db8::1]:8443/ops/infra.git", want: "https://[2001:db8::1]:8443/ops/infra"},
		// The two ssh spellings are one target.
		{in: "git@gitlab.example.com:ops/infra.git", want: "ssh://gitlab.example.com/ops/infra"},
		{in: "ssh://git@gitlab.example.com/ops/infra.git", want: "ssh://gitlab.example.com/ops/infra"},
		{in: "ssh://git@GitLab.example.com:22/ops/infra", want: "ssh://gitlab.example.com/ops/infra"},
		{in: "git+ssh://git@gitlab.example.com/ops/infra.git", want: "ssh://gitlab.example.com/ops/infra"},
		{in: "ssh://git@gitlab.example.com:2222/ops/infra.git", want: "ssh://gitlab.example.com:2222/ops/infra"},
		{in: "gitlab.example.com:ops/infra.git", want: "ssh://gitlab.example.com/ops/infra"},
		{in: "git@[2001:db8::1]:ops/infra.git", want: "ssh://[2001:db8::1]/ops/infra"},
		{in: "git://gitlab.example.com:9418/ops/infra.git", want: "git://gitlab.example.com/ops/infra"},
		{in: "https://gitlab.example.com/ops/a%20b.git", want: "https://gitlab.example.com/ops/a%20b"},
		{in: "https://gitlab.example.com/ops/infra.git?x=1", want: "https://gitlab.example.com/ops/infra?x=1"},
		{in: "/srv/git/infra.git", want: "file:///srv/git/infra"},
		{in: "file:///srv/git/infra.git/", want: "file:///srv/git/infra"},

		{in: "", err: "empty"},
		{in: "https://gitlab.example.com", err: "names no repository path"},
		{in: "https://gitlab.example.com/.git", err: "names no repository path"},
		{in: "https:///ops/infra.git", err: "no host"},
		{in: "relative/path.git", err: "neither a URL"},
		{in: "file://elsewhere/srv/infra.git", err: "another host"},
		{in: "https://ci:s3cret@gitlab.example.com:port/x", err: "cannot be read"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := CanonicalRepoURL(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("CanonicalRepoURL(%q) = %q, %v; want an error saying %q", tt.in, got, err, tt.err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("CanonicalRepoURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			again, err := CanonicalRepoURL(got)
			if err != nil || again != got {
				t.Errorf("the canonical form %q is not a fixed point: %q, %v", got, again, err)
			}
		})
	}
}

func TestTargetOf(t *testing.T) {
	const (
		repo   = TrailerRepository + ": https://h/a\n"
		branch = TrailerBranch + ": main\n"
	)
	tests := []struct {
		name, msg string
		want      Target
		err       error  // errors.Is
		errText   string // or contains
	}{
		{name: "as the patch path writes it", msg: "Bump\n\nRequested-By: x (y)\nVault-Request-Id: 1\n" + repo + branch,
			want: Target{URL: "https://h/a", Branch: "main"}},
		{name: "trailing blank lines", msg: "Bump\n\n" + repo + branch + "\n\n", want: Target{URL: "https://h/a", Branch: "main"}},
		{name: "made before targets", msg: "Bump\n\nRequested-By: x (y)\nVault-Request-Id: 1\n", err: ErrNoTarget},
		{name: "a title alone is never trailers", msg: repo, err: ErrNoTarget},
		{name: "only the last paragraph counts", msg: "Bump\n\n" + repo + branch + "\nRequested-By: x\n", err: ErrNoTarget},
		{name: "a paragraph with prose is not trailers", msg: "Bump\n\n" + repo + branch + "and more words\n", err: ErrNoTarget},
		{name: "the key is exact", msg: "Bump\n\nflant-gitops-repository: https://h/a\nflant-gitops-branch: main\n", err: ErrNoTarget},
		{name: "one without the other", msg: "Bump\n\n" + repo, errText: "one of each"},
		{name: "twice", msg: "Bump\n\n" + repo + branch + repo, errText: "one of each"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TargetOf(tt.msg)
			switch {
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("TargetOf = %+v, %v; want %v", got, err, tt.err)
				}
			case tt.errText != "":
				if err == nil || errors.Is(err, ErrNoTarget) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("TargetOf = %+v, %v; want an error saying %q", got, err, tt.errText)
				}
			case err != nil || got != tt.want:
				t.Fatalf("TargetOf = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
