package vaulttest

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestServerWithPluginReloadsAndStopsClean starts the default server, reloads
// the plugin, and checks that stopping leaves no process of its group.
func TestServerWithPluginReloadsAndStopsClean(t *testing.T) {
	var pgid int
	t.Run("server", func(t *testing.T) {
		s := NewServer(t, nil)
		pgid = s.cmd.Process.Pid
		mounts, err := s.Client.Sys().ListMountsWithContext(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if m := mounts[MountPath+"/"]; m == nil || m.RunningVersion != PluginVersion || m.RunningSha256 != s.PluginSHA256 {
			t.Fatalf("mount = %+v, want the plugin at version %s sha256 %s", m, PluginVersion, s.PluginSHA256)
		}
		s.ReloadPlugin(t)
		out, errOut, code := s.CLI(t, "secrets", "list")
		if code != 0 || !strings.Contains(out, MountPath+"/") {
			t.Fatalf("vault secrets list: exit %d\n%s%s", code, out, errOut)
		}
	})
	if err := syscall.Kill(-pgid, 0); err != syscall.ESRCH {
		t.Fatalf("process group %d still has processes after cleanup (kill -0: %v)", pgid, err)
	}
}

// TestNoPluginTLSServer is the shape of a second, "target" Vault: HTTPS with
// a generated CA, no plugin.
func TestNoPluginTLSServer(t *testing.T) {
	s := NewServer(t, &Options{NoPlugin: true, TLS: true, Env: []string{"VAULTTEST_MARKER=1"}})
	if !strings.HasPrefix(s.Addr, "https://127.0.0.1:") || !strings.Contains(s.CACertPEM, "BEGIN CERTIFICATE") {
		t.Fatalf("Addr %q, CA %q: want https and a PEM CA", s.Addr, s.CACertPEM)
	}
	out, errOut, code := s.CLI(t, "secrets", "list")
	if code != 0 {
		t.Fatalf("vault secrets list over TLS: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, MountPath) || s.PluginSHA256 != "" {
		t.Fatalf("NoPlugin server has the plugin:\n%s", out)
	}
}

func TestPluginBuildArgs(t *testing.T) {
	tests := []struct {
		race     string
		wantRace bool
	}{
		{"", false},
		{"0", false},
		{"1", true},
	}
	for _, tt := range tests {
		args := strings.Join(pluginBuildArgs(tt.race, PluginVersion, "/out"), " ")
		if got := strings.Contains(args, " -race "); got != tt.wantRace {
			t.Errorf("VAULTTEST_RACE=%q: go %s, want -race %v", tt.race, args, tt.wantRace)
		}
		if !strings.HasSuffix(args, "-o /out "+pluginPackage) || !strings.Contains(args, versionSymbol+"="+PluginVersion) {
			t.Errorf("VAULTTEST_RACE=%q: go %s lacks the version or output", tt.race, args)
		}
	}
}

func TestRaceReports(t *testing.T) {
	const prefix = "2026-01-01T00:00:00.000Z [DEBUG] secrets.flant_gitops: "
	report := prefix + "WARNING: DATA RACE\n" +
		prefix + "Write at 0x00c000 by goroutine 7:\n" +
		prefix + "  backend.(*worker).run()\n" +
		prefix + "=================="
	tests := []struct {
		name, log, want string
	}{
		{"clean", prefix + "poll done\n" + prefix + "==================\n", ""},
		{"one report", prefix + "before\n" + prefix + "==================\n" + report + "\n" + prefix + "after\n", report + "\n"},
		{"cut short", report[:strings.LastIndex(report, "\n")], report[:strings.LastIndex(report, "\n")] + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := raceReports(tt.log); got != tt.want {
				t.Errorf("raceReports = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRaceFiles(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the answer; none means ""
	}{
		{"no files", nil, nil},
		{"empty report file", map[string]string{"race.12": ""}, nil},
		{"one report", map[string]string{"race.12": "==================\n" + raceReport + "\nRead at 0x1 by goroutine 7:\n"}, []string{"race.12:", "Read at 0x1"}},
		{"another prefix is ignored", map[string]string{"other.12": raceReport}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got := raceFiles(filepath.Join(dir, "race"))
			if len(tt.want) == 0 && got != "" {
				t.Fatalf("raceFiles = %q, want none", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("raceFiles = %q, want it to contain %q", got, w)
				}
			}
		})
	}
}
