package benchpatch

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// BenchmarkPatchBurst measures, in one run on the large repository:
//   - the first patch after a plugin start (cold mirror) against `git clone
//     --bare --depth 1 --single-branch` of the same branch from the same
//     server (timed before and after it, the mean taken), with the plugin's
//     peak RSS;
//   - one patch alone (median of 5) against 32 and 100 patches to distinct
//     files sent at once, all through Vault's HTTP API; every one must land
//     as its own commit.
//
// Environment: BENCH_REPO (a bare repository made by mkrepo.sh, copied
// before use; required).
func BenchmarkPatchBurst(b *testing.B) {
	pristine := os.Getenv("BENCH_REPO")
	if pristine == "" {
		b.Fatal("BENCH_REPO must name a bare repository made by scripts/mkrepo.sh DIR 20000 2000; run scripts/bench-patch.sh")
	}
	bare := filepath.Join(b.TempDir(), "big.git")
	run(b, "", "cp", "-a", pristine, bare)
	srv := gittest.NewServer(b)
	remote := srv.ServeRepo(b, "big", bare)
	files := strings.Fields(run(b, bare, "git", "ls-tree", "-r", "--name-only", "main"))
	const alone = 5
	if len(files) < 1+alone+32+100 {
		b.Fatalf("the repository has %d files, too few", len(files))
	}
	u, err := url.Parse(remote.URL())
	if err != nil {
		b.Fatal(err)
	}
	u.User = url.UserPassword(srv.Username(), srv.Password())
	shallowClone := func() time.Duration {
		dir := filepath.Join(b.TempDir(), "shallow.git")
		start := time.Now()
		run(b, "", "git", "clone", "--quiet", "--bare", "--depth", "1", "--single-branch", "--branch", "main", u.String(), dir)
		d := time.Since(start)
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		return d
	}

	v, cacheDir := startPlugin(b, srv, remote.URL())
	c := v.Client
	patch := func(c *api.Client, file, tag string) (string, error) {
		s, err := c.Logical().Write("flant_gitops/patch/big", map[string]any{
			"commit":   map[string]any{"message": "plugin: " + file + " to " + tag},
			"commands": []any{map[string]any{"path": file, "setField": map[string]any{"field": "image.tag", "value": tag}}},
		})
		if err != nil {
			return "", err
		}
		if s.Data["no_op"] != false {
			return "", fmt.Errorf("answer %v: not a commit", s.Data)
		}
		commit, _ := s.Data["commit"].(string)
		return commit, nil
	}

	cloneBefore := shallowClone()
	start := time.Now()
	if _, err := patch(c, files[0], "cold"); err != nil {
		b.Fatal(err)
	}
	cold := time.Since(start)
	cloneAfter := shallowClone()
	pid, err := pluginPID(cacheDir)
	if err != nil {
		b.Fatal(err)
	}
	coldHWM := procStatus(b, pid, "VmHWM")

	var aloneT []time.Duration
	for i := range alone {
		start := time.Now()
		if _, err := patch(c, files[1+i], fmt.Sprintf("alone-%d", i)); err != nil {
			b.Fatalf("patch alone %d: %v", i, err)
		}
		aloneT = append(aloneT, time.Since(start))
	}

	next := 1 + alone
	burst := func(n int) time.Duration {
		before := remote.Head(b)
		commits := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				commits[i], errs[i] = patch(c, files[next+i], fmt.Sprintf("burst%d-%d", n, i))
			}()
		}
		wg.Wait()
		wall := time.Since(start)
		next += n
		seen := map[string]bool{}
		for i, err := range errs {
			switch {
			case err != nil:
				b.Errorf("burst of %d, patch %d: %v", n, i, err)
			case seen[commits[i]]:
				b.Errorf("burst of %d, patch %d: commit %s answered twice", n, i, commits[i])
			default:
				seen[commits[i]] = true
			}
		}
		count := strings.TrimSpace(run(b, bare, "git", "rev-list", "--count", before+"..main"))
		fmt.Printf("%d patches to distinct files at once: %d answered with their own commit, %s new commits on the branch, wall %s\n",
			n, len(seen), count, wall.Round(time.Millisecond))
		if count != fmt.Sprint(n) {
			b.Errorf("%s new commits after %d patches", count, n)
		}
		return wall
	}
	b.ResetTimer()
	b32 := burst(32)
	b100 := burst(100)
	b.StopTimer()
	hwm := procStatus(b, pid, "VmHWM")

	one := median(aloneT)
	clone := (cloneBefore + cloneAfter) / 2
	b.ReportMetric(one.Seconds(), "alone-s")
	b.ReportMetric(b32.Seconds()/one.Seconds(), "burst32/alone")
	b.ReportMetric(b100.Seconds()/one.Seconds(), "burst100/alone")
	b.ReportMetric(cold.Seconds()/clone.Seconds(), "cold/clone")
	b.ReportMetric(float64(hwm)/1024, "plugin-peak-MiB")
	fmt.Printf("repository: %s (%d files)\n", pristine, len(files))
	fmt.Printf("one patch alone: median %s  all %v\n", one.Round(time.Millisecond), roundAll(aloneT))
	fmt.Printf("32 at once:  %s = %.1fx one patch alone (target <= 3x)\n", b32.Round(time.Millisecond), b32.Seconds()/one.Seconds())
	fmt.Printf("100 at once: %s = %.1fx one patch alone\n", b100.Round(time.Millisecond), b100.Seconds()/one.Seconds())
	fmt.Printf("first patch on a cold mirror: %s; git clone --bare --depth 1 --single-branch: %s before, %s after; ratio %.2fx (target <= 2x)\n",
		cold.Round(time.Millisecond), cloneBefore.Round(time.Millisecond), cloneAfter.Round(time.Millisecond), cold.Seconds()/clone.Seconds())
	fmt.Printf("plugin peak RSS (VmHWM): %d MiB through the cold first patch, %d MiB through the whole run (target < 300 MiB)\n", coldHWM/1024, hwm/1024)
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at the end: %s", load)
	}
}
