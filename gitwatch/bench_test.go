package gitwatch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// Benchmark repositories come from scripts/mkrepo.sh and are cached between
// runs (the large one takes about half a minute to make).
//
//	FLANT_GITOPS_BENCH_LARGE=1   also run on the 20000-file / 2000-commit repository (~116 MB)
//	FLANT_GITOPS_BENCH_DIR=DIR   where to cache the generated repositories
//	FLANT_GITOPS_MKREPO=PATH     mkrepo.sh (default ../scripts/mkrepo.sh)
type benchRepo struct {
	name           string
	files, commits int
}

func benchRepos() []benchRepo {
	repos := []benchRepo{{name: "small", files: 200, commits: 50}}
	if os.Getenv("FLANT_GITOPS_BENCH_LARGE") == "1" {
		repos = append(repos, benchRepo{name: "large", files: 20000, commits: 2000})
	}
	return repos
}

// generated returns the cached bare repository for br, making it if needed.
func (br benchRepo) generated(b *testing.B) string {
	b.Helper()
	cache := os.Getenv("FLANT_GITOPS_BENCH_DIR")
	if cache == "" {
		cache = filepath.Join(os.TempDir(), "flant_gitops-bench-repos")
	}
	dir := filepath.Join(cache, fmt.Sprintf("mkrepo-%d-%d.git", br.files, br.commits))
	if _, err := os.Stat(filepath.Join(dir, "packed-refs")); err == nil {
		return dir
	}
	mkrepo := os.Getenv("FLANT_GITOPS_MKREPO")
	if mkrepo == "" {
		mkrepo = filepath.Join("..", "scripts", "mkrepo.sh")
	}
	if _, err := os.Stat(mkrepo); err != nil {
		b.Fatalf("mkrepo.sh not found at %s; set FLANT_GITOPS_MKREPO: %v", mkrepo, err)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		b.Fatal(err)
	}
	_ = os.RemoveAll(dir) // a half-made repository from an interrupted run
	cmd := exec.Command("bash", mkrepo, dir, strconv.Itoa(br.files), strconv.Itoa(br.commits))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("mkrepo.sh %s: %v\n%s", dir, err, out)
	}
	return dir
}

// BenchmarkPoll measures, per repository size and in one run:
//   - list-floor: go-git's bare Remote.List against the server (the least a
//     poll can cost: one ref advertisement);
//   - idle: Mirror.Fetch when nothing changed;
//   - idle-vs-floor: both alternated in one loop, with their ratio;
//   - one-commit: Mirror.Fetch that finds one new commit (one file changed),
//     with upload-pack-bytes/op the pack size the server sent;
//   - initial-fetch: building the mirror from nothing (once per cache
//     directory, for scale).
//
// scripts/bench-gitwatch.sh prints the ratios to the floor.
func BenchmarkPoll(b *testing.B) {
	ctx := context.Background()
	for _, br := range benchRepos() {
		src := br.generated(b)
		b.Run(br.name, func(b *testing.B) {
			srv := gittest.NewServer(b)
			// A shared clone keeps the cached repository untouched while the
			// benchmark adds commits.
			served := filepath.Join(b.TempDir(), "served.git")
			if out, err := exec.Command("git", "clone", "--quiet", "--bare", "--shared", src, served).CombinedOutput(); err != nil {
				b.Fatalf("clone %s: %v\n%s", src, err, out)
			}
			repo := srv.ServeRepo(b, "bench", served)
			auth := Auth{Username: srv.Username(), Password: srv.Password()}
			m, err := OpenMirror(ctx, filepath.Join(b.TempDir(), "mirror"), repo.URL(), "main", auth)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.Fetch(ctx); err != nil {
				b.Fatalf("initial fetch: %v", err)
			}

			b.Run("list-floor", func(b *testing.B) {
				remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{repo.URL()}})
				basic := &githttp.BasicAuth{Username: srv.Username(), Password: srv.Password()}
				for b.Loop() {
					if _, err := remote.ListContext(ctx, &git.ListOptions{Auth: basic}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("idle", func(b *testing.B) {
				srv.ResetStats()
				for b.Loop() {
					res, err := m.Fetch(ctx)
					if err != nil || res.Changed {
						b.Fatalf("idle fetch = %+v, %v", res, err)
					}
				}
				if st := srv.Stats(); st.UploadPacks != 0 {
					b.Fatalf("idle polls requested packs: %+v", st)
				}
			})
			// The machine is shared, so load drifts between sub-benchmarks:
			// this one alternates a floor List and an idle Fetch in every
			// iteration and reports their ratio under the same load.
			b.Run("idle-vs-floor", func(b *testing.B) {
				remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{repo.URL()}})
				basic := &githttp.BasicAuth{Username: srv.Username(), Password: srv.Password()}
				list := func() {
					if _, err := remote.ListContext(ctx, &git.ListOptions{Auth: basic}); err != nil {
						b.Fatal(err)
					}
				}
				poll := func() {
					if res, err := m.Fetch(ctx); err != nil || res.Changed {
						b.Fatalf("idle fetch = %+v, %v", res, err)
					}
				}
				var floor, idle time.Duration
				n := 0
				for b.Loop() {
					first, second, firstSum, secondSum := list, poll, &floor, &idle
					if n%2 == 1 {
						first, second, firstSum, secondSum = poll, list, &idle, &floor
					}
					t0 := time.Now()
					first()
					t1 := time.Now()
					second()
					*firstSum += t1.Sub(t0)
					*secondSum += time.Since(t1)
					n++
				}
				b.ReportMetric(float64(floor.Nanoseconds())/float64(n), "floor-ns/op")
				b.ReportMetric(float64(idle.Nanoseconds())/float64(n), "idle-ns/op")
				b.ReportMetric(float64(idle)/float64(floor), "idle/floor")
			})
			b.Run("one-commit", func(b *testing.B) {
				srv.ResetStats()
				n := 0
				for b.Loop() {
					b.StopTimer()
					n++
					want := repo.CommitDirect(b, map[string]string{"team-1/app-1/values.yaml": fmt.Sprintf("replicaCount: %d\n", n)}, "bump")
					b.StartTimer()
					res, err := m.Fetch(ctx)
					if err != nil || res.Head != want {
						b.Fatalf("fetch = %+v, %v; want head %s", res, err, want)
					}
				}
				st := srv.Stats()
				b.ReportMetric(float64(st.UploadPackBytes)/float64(n), "upload-pack-bytes/op")
			})
			// Last: it allocates the most, and its garbage would slow the others.
			b.Run("initial-fetch", func(b *testing.B) {
				for b.Loop() {
					fresh, err := OpenMirror(ctx, filepath.Join(b.TempDir(), "fresh"), repo.URL(), "main", auth)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := fresh.Fetch(ctx); err != nil {
						b.Fatalf("initial fetch: %v", err)
					}
				}
			})
		})
	}
}
