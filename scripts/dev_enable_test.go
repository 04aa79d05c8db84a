// Package scripts_test checks the dev scripts' behaviour that a fresh
// machine meets first.
package scripts_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/backend/receiver"
)

// TestEnableNeedsCheck runs `scripts/dev-enable.sh --check` (what `make
// enable` runs first) with a PATH holding only some of its tools: it must
// name everything missing in one message, exit 1 and create nothing.
func TestEnableNeedsCheck(t *testing.T) {
	src, err := os.ReadFile("dev-enable.sh")
	if err != nil {
		t.Fatal(err)
	}
	bashPath, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	_, busyboxErr := os.Stat("/bin/busybox")

	const (
		goodGo    = "#!/bin/sh\necho go1.26.0\n"
		oldGo     = "#!/bin/sh\necho go1.22.5\n"
		deadDock  = "#!/bin/sh\nexit 1\n"
		aliveDock = "#!/bin/sh\nexit 0\n"
		ok        = "#!/bin/sh\nexit 0\n"
	)
	for _, tc := range []struct {
		name  string
		tools map[string]string // fake tools on PATH: name -> script
		want  []string          // lines the message must have
		clean []string          // tools that must not be named
	}{
		{
			name:  "a bare machine hears every tool at once",
			tools: map[string]string{},
			want:  []string{"go is not installed", "git is not installed", "gpg is not installed", "docker is not installed", "make is not installed", "openssl is not installed"},
		},
		{
			name:  "Docker present but unreachable, Go too old",
			tools: map[string]string{"go": oldGo, "git": ok, "gpg": ok, "docker": deadDock, "make": ok, "openssl": ok, "sha256sum": ok},
			want:  []string{"Docker is not reachable", "Go 1.22.5 is too old"},
			clean: []string{"git is not installed", "make is not installed", "openssl is not installed"},
		},
		{
			name:  "only openssl missing",
			tools: map[string]string{"go": goodGo, "git": ok, "gpg": ok, "docker": aliveDock, "make": ok, "sha256sum": ok},
			want:  []string{"openssl is not installed"},
			clean: []string{"Docker is not reachable", "is too old", "go is not installed", "make is not installed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, script, bin := stageDevEnable(t, src, tc.tools)
			cmd := exec.Command(bashPath, script, "--check")
			cmd.Env = []string{"PATH=" + bin, "HOME=" + t.TempDir(), "VERSION=test", "VAULT_BINARY=/nonexistent-but-set"}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1; stdout %q stderr %q", err, stdout.String(), stderr.String())
			}
			msg := stderr.String()
			if n := strings.Count(msg, "make enable: cannot start"); n != 1 {
				t.Errorf("%d messages, want one:\n%s", n, msg)
			}
			want := tc.want
			if busyboxErr != nil {
				want = append(want, "busybox-static")
			}
			for _, w := range want {
				if !strings.Contains(msg, w) {
					t.Errorf("the message does not say %q:\n%s", w, msg)
				}
			}
			for _, c := range tc.clean {
				if strings.Contains(msg, c) {
					t.Errorf("the message names %q, which is there:\n%s", c, msg)
				}
			}
			entries, err := os.ReadDir(root)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 {
				t.Errorf("the check created files: %v", entries)
			}
		})
	}
}

// TestEnableNeedsCheckNamesTheVaultBuild: with every need met but no Vault
// binary, the check passes and says up front how long the first build takes.
func TestEnableNeedsCheckNamesTheVaultBuild(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatalf("/bin/busybox: %v (install busybox-static, as .ci/run does)", err)
	}
	src, err := os.ReadFile("dev-enable.sh")
	if err != nil {
		t.Fatal(err)
	}
	ok := "#!/bin/sh\nexit 0\n"
	_, script, bin := stageDevEnable(t, src, map[string]string{
		"git": ok, "gpg": ok, "docker": ok, "make": ok, "openssl": ok, "sha256sum": ok,
		"go": "#!/bin/sh\necho go1.26.0\n",
	})
	bashPath, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bashPath, script, "--check")
	cmd.Env = []string{"PATH=" + bin, "HOME=" + t.TempDir(), "VERSION=test"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{"no Vault binary", "about 8 minutes on 2 idle cores", "~4 GB", "up to 30 minutes"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("the check does not say %q:\n%s", w, out)
		}
	}
}

// stageDevEnable copies the script into a fresh tree (it finds the repository
// from its own place) and makes a PATH of the shell's own helpers plus the
// given fake tools, name to script body.
func stageDevEnable(t *testing.T, src []byte, tools map[string]string) (root, script, bin string) {
	t.Helper()
	root = t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	script = filepath.Join(root, "scripts", "dev-enable.sh")
	if err := os.WriteFile(script, src, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = t.TempDir()
	for _, name := range []string{"dirname", "sed", "cat"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range tools {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root, script, bin
}

// TestEnablePassesTheWebhookHeaders: the dev mount passes through exactly
// the headers the receivers read.
func TestEnablePassesTheWebhookHeaders(t *testing.T) {
	src, err := os.ReadFile("dev-enable.sh")
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(src, []byte("hook_headers=("))
	if start < 0 {
		t.Fatal("dev-enable.sh does not set hook_headers")
	}
	end := bytes.IndexByte(src[start:], ')')
	got := strings.Fields(string(src[start+len("hook_headers=(") : start+end]))
	if want := receiver.PassthroughHeaders(); !slices.Equal(got, want) {
		t.Errorf("dev-enable.sh passes through %v, the receivers read %v", got, want)
	}
}
