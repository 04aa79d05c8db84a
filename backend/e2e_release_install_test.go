package backend

import (
	"archive/zip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/backend/vaulttest"
)

// TestE2EReleaseInstall walks README "Install" with a release build of this
// machine's platform (scripts/release.sh, the flags of `make release`):
// unzip into Vault's plugin directory, register by the sha256 SHA256SUMS
// lists for the binary and by version, enable that version, and see the
// version in `vault plugin info`, sys/mounts and the mount's status.
func TestE2EReleaseInstall(t *testing.T) {
	const version = "v0.9.0-release"
	root := vaulttest.RepoRoot(t)
	dist := t.TempDir()
	base := "flant_gitops_" + version + "_" + runtime.GOOS + "_" + runtime.GOARCH
	bin := filepath.Join(dist, base)
	for _, c := range [][]string{
		{"bash", "scripts/release.sh", "--one", runtime.GOOS + "/" + runtime.GOARCH, "flant_gitops", bin},
		{"go", "run", "./scripts/releasezip", "-mtime", "1700000000", "-name", "flant_gitops", bin + ".zip", bin},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "VERSION="+version)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	sum, err := fileSHA256Hex(bin)
	if err != nil {
		t.Fatal(err)
	}

	plugins := filepath.Join(t.TempDir(), "plugins")
	if err := os.Mkdir(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	unzipTo(t, bin+".zip", plugins)
	if got, err := fileSHA256Hex(filepath.Join(plugins, "flant_gitops")); err != nil || got != sum {
		t.Fatalf("the unzipped plugin has sha256 %s (%v), the release binary %s", got, err, sum)
	}

	srv := vaulttest.NewServer(t, &vaulttest.Options{NoPlugin: true, Config: "plugin_directory = \"" + plugins + "\"\n"})
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := srv.CLI(t, args...)
		if code != 0 {
			t.Fatalf("vault %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	run("plugin", "register", "-sha256="+sum, "-version="+version, "secret", "flant_gitops")
	run("secrets", "enable", "-path=flant_gitops", "-plugin-version="+version, "flant_gitops")
	if info := run("plugin", "info", "-version="+version, "secret", "flant_gitops"); !strings.Contains(info, sum) || !strings.Contains(info, version) {
		t.Errorf("vault plugin info:\n%s\nwant sha256 %s and version %s", info, sum, version)
	}
	m, err := srv.Client.Sys().GetMount("flant_gitops")
	if err != nil {
		t.Fatal(err)
	}
	if m.RunningVersion != version || m.RunningSha256 != sum {
		t.Errorf("the mount runs %s sha256 %s, want %s sha256 %s", m.RunningVersion, m.RunningSha256, version, sum)
	}
	if st := run("read", "-field=version", "flant_gitops/status"); strings.TrimSpace(st) != version {
		t.Errorf("status version %q, want %s", st, version)
	}
}

func fileSHA256Hex(path string) (string, error) {
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "", io.ErrUnexpectedEOF
	}
	return f[0], nil
}

func unzipTo(t *testing.T, archive, dir string) {
	t.Helper()
	r, err := zip.OpenReader(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, f := range r.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(filepath.Join(dir, filepath.Base(f.Name)), os.O_CREATE|os.O_WRONLY|os.O_EXCL, f.Mode().Perm())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
