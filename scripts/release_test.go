package scripts_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestReleaseIsReproducible builds one target of `make release` (the
// linux/amd64 plugin, through scripts/release.sh --one, so with the release's
// own flags) from two copies of this tree at two different paths, and zips
// each with scripts/releasezip: both must be byte-identical, and the version
// must be linked in. scripts/release-check.sh does the same for every file
// of a release (make release-check); this is the cheap proof in `make test`.
func TestReleaseIsReproducible(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	const version = "v9.8.7-repro"
	copies := []string{
		filepath.Join(t.TempDir(), "one", "flant_gitops"),
		filepath.Join(t.TempDir(), "two", "a", "longer", "path"),
	}
	var bins, zips [][]byte
	for _, dir := range copies {
		copyTree(t, root, dir)
		bin := filepath.Join(dir, "out", "flant_gitops")
		run(t, dir, []string{"VERSION=" + version}, "bash", "scripts/release.sh", "--one", "linux/amd64", "flant_gitops", bin)
		zip := bin + ".zip"
		run(t, dir, nil, "go", "run", "./scripts/releasezip", "-mtime", "1700000000", "-name", "flant_gitops", zip, bin)
		bins = append(bins, readFile(t, bin))
		zips = append(zips, readFile(t, zip))
	}
	for _, c := range []struct {
		what string
		a, b []byte
	}{{"plugin binary", bins[0], bins[1]}, {"zip archive", zips[0], zips[1]}} {
		if !bytes.Equal(c.a, c.b) {
			t.Errorf("the %s is not reproducible: sha256 %x in %s, %x in %s; first difference at byte %s",
				c.what, sha256.Sum256(c.a), copies[0], sha256.Sum256(c.b), copies[1], firstDifference(c.a, c.b))
		}
	}
	if !bytes.Contains(bins[0], []byte(version)) {
		t.Errorf("the plugin does not carry its version %s (-X backend.Version)", version)
	}
	for _, dir := range copies {
		if bytes.Contains(bins[0], []byte(dir)) {
			t.Errorf("the plugin holds its build directory %s", dir)
		}
	}
}

// copyTree copies the files git would commit (tracked and new, not ignored)
// from root to dir.
func copyTree(t *testing.T, root, dir string) {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		info, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the work tree, not yet in the index
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if info.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, dst); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if info.IsDir() {
			continue // a submodule
		}
		data := readFile(t, src)
		if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstDifference(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprint(i)
		}
	}
	return fmt.Sprintf("%d (one is a prefix of the other)", min(len(a), len(b)))
}

// TestReleaseSignsItsSums runs `make release` for one platform with a
// SIGNING_KEY: SHA256SUMS lists every file with its right sum, gpg verifies
// SHA256SUMS.sig with the public key, and both binaries carry the version.
func TestReleaseSignsItsSums(t *testing.T) {
	const version = "v9.8.6-signed"
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(t.TempDir(), "gnupg")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	gpgEnv := []string{"GNUPGHOME=" + home}
	run(t, root, gpgEnv, "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Release <release@example.invalid>", "ed25519", "sign", "1d")
	t.Cleanup(func() { _ = exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run() })
	out, err := exec.Command("gpg", "--homedir", home, "--list-secret-keys", "--with-colons").Output()
	if err != nil {
		t.Fatal(err)
	}
	fpr := ""
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && fpr == "" {
			fpr = f[9]
		}
	}
	dist := filepath.Join(t.TempDir(), "dist")
	run(t, root, append(gpgEnv, "PLATFORMS=linux/amd64", "DIST="+dist, "VERSION="+version, "SIGNING_KEY="+fpr), "bash", "scripts/release.sh")

	run(t, dist, gpgEnv, "gpg", "--batch", "--verify", "SHA256SUMS.sig", "SHA256SUMS")
	run(t, dist, nil, "sha256sum", "--strict", "--check", "SHA256SUMS")
	sums := string(readFile(t, filepath.Join(dist, "SHA256SUMS")))
	for _, name := range []string{
		"flant_gitops_" + version + "_linux_amd64", "flant_gitops_" + version + "_linux_amd64.zip",
		"flant_gitops-patch_" + version + "_linux_amd64", "flant_gitops-patch_" + version + "_linux_amd64.zip",
		"flant_gitops-sign_" + version + "_linux_amd64", "flant_gitops-sign_" + version + "_linux_amd64.zip",
	} {
		if !strings.Contains(sums, "  "+name+"\n") {
			t.Errorf("SHA256SUMS does not list %s:\n%s", name, sums)
		}
		if bin := readFile(t, filepath.Join(dist, name)); !strings.HasSuffix(name, ".zip") && !bytes.Contains(bin, []byte(version)) {
			t.Errorf("%s does not carry its version %s", name, version)
		}
	}
	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		for _, cmd := range []string{"flant_gitops-patch", "flant_gitops-sign"} {
			v, err := exec.Command(filepath.Join(dist, cmd+"_"+version+"_linux_amd64"), "--version").Output()
			if err != nil || string(v) != cmd+" "+version+"\n" {
				t.Errorf("%s --version: %q, %v", cmd, v, err)
			}
		}
	}
}
