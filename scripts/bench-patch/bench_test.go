// Package benchpatch measures one patch through Vault and the plugin against
// the git CLI floor on the same large repository, in the same run. Run it with
// scripts/bench-patch.sh.
package benchpatch

import (
	"bytes"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// allowAll replaces the built-in policy: the benchmark patches with the
// root token, which has no identity.
const allowAll = "package flant_gitops.patch\n\nviolations := set()\n"

var tagLine = regexp.MustCompile(`(?m)^  tag: "[^"]*"$`)

// BenchmarkPatchVsGitCLI runs interleaved rounds of (a) the git CLI floor on a
// warm clone: fetch, reset --hard to the tip, edit one value, commit, push;
// (b) one patch through Vault with the plugin. Then 10 concurrent patches to
// distinct files. Environment: BENCH_REPO (a bare repository made by
// mkrepo.sh, copied before use; required), BENCH_ROUNDS (default 10).
func BenchmarkPatchVsGitCLI(b *testing.B) {
	pristine := os.Getenv("BENCH_REPO")
	if pristine == "" {
		b.Fatal("BENCH_REPO must name a bare repository made by scripts/mkrepo.sh DIR 20000 2000; run scripts/bench-patch.sh")
	}
	rounds := 10
	if s := os.Getenv("BENCH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_ROUNDS=%q is not a positive number", s)
		}
		rounds = n
	}

	bare := filepath.Join(b.TempDir(), "big.git")
	run(b, "", "cp", "-a", pristine, bare)
	srv := gittest.NewServer(b)
	remote := srv.ServeRepo(b, "big", bare)
	files := strings.Fields(run(b, bare, "git", "ls-tree", "-r", "--name-only", "main"))
	if len(files) < rounds*2+10 {
		b.Fatalf("the repository has %d files, too few for %d rounds", len(files), rounds)
	}

	// (a) the floor: a warm clone, as a CI job with a cached checkout has.
	u, err := url.Parse(remote.URL())
	if err != nil {
		b.Fatal(err)
	}
	u.User = url.UserPassword(srv.Username(), srv.Password())
	clone := filepath.Join(b.TempDir(), "clone")
	run(b, "", "git", "clone", "--quiet", "--branch", "main", u.String(), clone)
	run(b, clone, "git", "config", "user.name", "bench")
	run(b, clone, "git", "config", "user.email", "bench@example.com")
	run(b, clone, "git", "config", "commit.gpgsign", "false")
	floor := func(file, tag string) {
		run(b, clone, "git", "fetch", "--quiet", "origin", "main")
		run(b, clone, "git", "reset", "--quiet", "--hard", "origin/main")
		p := filepath.Join(clone, filepath.FromSlash(file))
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, tagLine.ReplaceAll(data, []byte(`  tag: "`+tag+`"`)), 0o644); err != nil {
			b.Fatal(err)
		}
		run(b, clone, "git", "commit", "--quiet", "-am", "floor: "+file+" to "+tag)
		run(b, clone, "git", "push", "--quiet", "origin", "HEAD:main")
	}

	// (b) the plugin, its mirror in a folder that also marks its process.
	v, cacheDir := startPlugin(b, srv, remote.URL())
	c := v.Client
	patch := func(c *api.Client, file, tag string) error {
		s, err := c.Logical().Write("flant_gitops/patch/big", map[string]any{
			"commit":   map[string]any{"message": "plugin: " + file + " to " + tag},
			"commands": []any{map[string]any{"path": file, "setField": map[string]any{"field": "image.tag", "value": tag}}},
		})
		if err != nil {
			return err
		}
		if s.Data["no_op"] != false {
			return fmt.Errorf("answer %v: not a commit", s.Data)
		}
		return nil
	}

	start := time.Now()
	if err := patch(c, files[0], "cold"); err != nil {
		b.Fatal(err)
	}
	cold := time.Since(start)
	coldPID, err := pluginPID(cacheDir)
	if err != nil {
		b.Fatal(err)
	}
	// The first patch fills the mirror (a shallow fetch of the tip), whose peak is
	// reported apart. The plugin is then restarted: the rounds run in a fresh
	// process on the warm on-disk mirror, as after any plugin restart.
	coldHWM := procStatus(b, coldPID, "VmHWM")
	v.ReloadPlugin(b)
	pid := coldPID
	for i := 0; i < 100 && pid == coldPID; i++ {
		time.Sleep(100 * time.Millisecond)
		if pid, err = pluginPID(cacheDir); err != nil {
			pid = coldPID
		}
	}
	if pid == coldPID {
		b.Fatal("the plugin process did not restart")
	}

	var floorT, pluginT []time.Duration
	b.ResetTimer()
	for r := range rounds {
		file := files[1+2*r]
		start := time.Now()
		floor(file, fmt.Sprintf("floor-%d", r))
		floorT = append(floorT, time.Since(start))

		file = files[2+2*r]
		start = time.Now()
		if err := patch(c, file, fmt.Sprintf("plugin-%d", r)); err != nil {
			b.Fatalf("round %d: %v", r, err)
		}
		pluginT = append(pluginT, time.Since(start))
	}
	b.StopTimer()

	// 10 concurrent patches to distinct files, all through the plugin.
	before := remote.Head(b)
	var wg sync.WaitGroup
	errs := make([]error, 10)
	start = time.Now()
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = patch(c, files[len(files)-1-i], fmt.Sprintf("concurrent-%d", i))
		}()
	}
	wg.Wait()
	concurrentWall := time.Since(start)
	landed := 0
	for _, err := range errs {
		if err == nil {
			landed++
		} else {
			b.Errorf("concurrent patch: %v", err)
		}
	}
	newCommits := strings.TrimSpace(run(b, bare, "git", "rev-list", "--count", before+"..main"))

	hwm, rss := procStatus(b, pid, "VmHWM"), procStatus(b, pid, "VmRSS")

	fm, pm := median(floorT), median(pluginT)
	ratio := pm.Seconds() / fm.Seconds()
	b.ReportMetric(fm.Seconds(), "floor-s")
	b.ReportMetric(pm.Seconds(), "plugin-s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(float64(coldHWM)/1024, "plugin-cold-peak-MiB")
	b.ReportMetric(float64(hwm)/1024, "plugin-peak-MiB")
	b.ReportMetric(float64(landed), "concurrent-landed/10")
	fmt.Printf("repository: %s (%d files)\n", pristine, len(files))
	fmt.Printf("rounds: %d interleaved\n", rounds)
	fmt.Printf("git CLI floor (fetch, reset --hard, edit, commit, push): median %s  all %v\n", fm.Round(time.Millisecond), roundAll(floorT))
	fmt.Printf("plugin through Vault (one patch):                       median %s  all %v\n", pm.Round(time.Millisecond), roundAll(pluginT))
	fmt.Printf("ratio plugin/floor: %.2fx (target <= 1.5x)\n", ratio)
	fmt.Printf("first patch with a cold mirror: %s\n", cold.Round(time.Millisecond))
	fmt.Printf("plugin peak RSS (VmHWM): %d MiB through the cold first patch; %d MiB through the rounds and the concurrent patches after a restart on the warm mirror (target < 300 MiB); VmRSS now %d MiB\n",
		coldHWM/1024, hwm/1024, rss/1024)
	if env := os.Getenv("BENCH_PLUGIN_ENV"); env != "" {
		fmt.Printf("plugin environment added: %s\n", env)
	}
	fmt.Printf("10 concurrent patches to distinct files: %d/10 answered with a commit, %s new commits on the branch, wall %s\n",
		landed, newCommits, concurrentWall.Round(time.Millisecond))
	if newCommits != "10" {
		b.Errorf("%s new commits after 10 concurrent patches", newCommits)
	}
}

func run(b *testing.B, dir, name string, args ...string) string {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// startPlugin starts Vault with the plugin, its mirrors in a folder of their
// own (which also marks its process for pluginPID), the allow-all policy
// and the repository "big" at repoURL.
func startPlugin(b *testing.B, srv *gittest.Server, repoURL string) (v *vaulttest.Server, cacheDir string) {
	cacheDir = b.TempDir()
	env := append([]string{"FLANT_GITOPS_CACHE_DIR=" + cacheDir}, strings.Fields(os.Getenv("BENCH_PLUGIN_ENV"))...)
	v = vaulttest.NewServer(b, &vaulttest.Options{Env: env, LogLevel: "info"})
	for path, data := range map[string]map[string]any{
		"flant_gitops/configure/policy":         {"policy": allowAll},
		"flant_gitops/configure/repository/big": {"url": repoURL, "username": srv.Username(), "password": srv.Password()},
	} {
		if _, err := v.Client.Logical().Write(path, data); err != nil {
			b.Fatalf("write %s: %v", path, err)
		}
	}
	return v, cacheDir
}

// pluginPID finds the plugin process by its environment: only the Vault of
// this benchmark and its plugins carry this cache folder.
func pluginPID(cacheDir string) (int, error) {
	marker := []byte("FLANT_GITOPS_CACHE_DIR=" + cacheDir + "\x00")
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		exe, err := os.Readlink(filepath.Join(p, "exe"))
		if err != nil || filepath.Base(exe) != vaulttest.PluginName {
			continue
		}
		env, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil || !bytes.Contains(append(env, 0), marker) {
			continue
		}
		return strconv.Atoi(filepath.Base(p))
	}
	return 0, fmt.Errorf("no %s process with %s found", vaulttest.PluginName, marker[:len(marker)-1])
}

// procStatus reads a kB field of /proc/PID/status.
func procStatus(b *testing.B, pid int, field string) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return time.Duration(math.Round(float64(s[len(s)/2-1]+s[len(s)/2]) / 2))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
