package patch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flant/flant_gitops/gitwatch"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// txnFixture is a gittest server with one repository and a Repo patching it.
type txnFixture struct {
	srv    *gittest.Server
	remote *gittest.Repo
	repo   *Repo
	key    *SigningKey
}

func newTxnFixture(t *testing.T, files map[string]string, opts ...gittest.CommitOption) *txnFixture {
	t.Helper()
	srv := gittest.NewServer(t)
	remote := srv.NewRepo(t, "infra")
	remote.Commit(t, files, append([]gittest.CommitOption{gittest.Message("initial")}, opts...)...)
	f := &txnFixture{srv: srv, remote: remote}
	f.repo = f.open(t)
	k, err := GenerateSigningKey("flant_gitops", "flant_gitops@localhost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.key = k
	return f
}

// open makes another Repo with its own mirror, as a second plugin node would.
func (f *txnFixture) open(t *testing.T) *Repo {
	t.Helper()
	r, err := OpenRepo(context.Background(), filepath.Join(t.TempDir(), "mirror"), Remote{
		URL:    f.remote.URL(),
		Branch: "main",
		Auth:   gitwatch.Auth{Username: f.srv.Username(), Password: f.srv.Password()},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *txnFixture) request(cmds ...Command) TxnRequest {
	return TxnRequest{
		Commands:  cmds,
		Message:   "Bump image",
		Author:    Person{Name: "CI", Email: "ci@example.com"},
		Committer: Person{Name: "flant_gitops", Email: "flant_gitops@localhost"},
		Trailers: []Trailer{
			{Key: "Requested-By", Value: "entity_1 (0f0e)"},
			{Key: "Vault-Request-Id", Value: "req-1"},
		},
		Signer: f.key,
	}
}

// show reads path at rev in the server's bare repository ("" when absent).
func (f *txnFixture) show(t *testing.T, rev, path string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", f.remote.Dir, "show", rev+":"+path).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func gitIn(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func createFile(path, content string) Command {
	return Command{Path: path, CreateFile: &CreateFile{Content: &content, Overwrite: true}}
}

func TestPatchCommitsSignedWithTrailers(t *testing.T) {
	f := newTxnFixture(t, map[string]string{
		"team/app/values.yaml": "image:\n  tag: \"1.0\"\n",
		"team/other.yaml":      "x: 1\n",
	})
	before := f.remote.Head(t)
	res, err := f.repo.Patch(context.Background(), f.request(createFile("team/app/values.yaml", "image:\n  tag: \"1.1\"\n")))
	if err != nil {
		t.Fatal(err)
	}
	if res.NoOp || res.Commit == "" || res.Parent != before || res.Branch != "main" || res.Attempts != 1 {
		t.Fatalf("result = %+v", res)
	}
	if head := f.remote.Head(t); head != res.Commit {
		t.Fatalf("server head %s, answered commit %s", head, res.Commit)
	}
	if got := f.show(t, res.Commit, "team/app/values.yaml"); got != "image:\n  tag: \"1.1\"\n" {
		t.Fatalf("patched file = %q", got)
	}
	if got := f.show(t, res.Commit, "team/other.yaml"); got != "x: 1\n" {
		t.Fatalf("untouched file = %q", got)
	}
	if len(res.ChangedPaths) != 1 || res.ChangedPaths[0] != "team/app/values.yaml" {
		t.Fatalf("changed paths = %v", res.ChangedPaths)
	}

	// git itself must accept the object, its parent and the signature.
	if out, err := gitIn(t, f.remote.Dir, nil, "fsck", "--strict"); err != nil {
		t.Fatalf("git fsck: %v\n%s", err, out)
	}
	msg, _ := gitIn(t, f.remote.Dir, nil, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%P|%B", res.Commit)
	for _, want := range []string{"CI <ci@example.com>|", "|flant_gitops <flant_gitops@localhost>|", "|" + before + "|", "Bump image\n\nRequested-By: entity_1 (0f0e)\nVault-Request-Id: req-1"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("commit lacks %q:\n%s", want, msg)
		}
	}
	trailers, _ := gitIn(t, f.remote.Dir, nil, "log", "-1", "--format=%(trailers:key=Requested-By,valueonly)", res.Commit)
	if trailers != "entity_1 (0f0e)" {
		t.Fatalf("git reads trailer Requested-By as %q", trailers)
	}

	f.verifyCommits(t, res.Commit)
}

func TestPatchNoOpDryRunDelete(t *testing.T) {
	f := newTxnFixture(t, map[string]string{
		"a/one.yaml":       "v: 1\n",
		"b/only.yaml":      "v: 2\n",
		"c/run.sh":         "#!/bin/sh\n",
		"c/values.yaml":    "v: 3\n",
		"d/nested/x.yaml":  "v: 4\n",
		"d/nested/y.yaml":  "v: 5\n",
		"top-level.yaml":   "v: 6\n",
		"a/sub/deep.yaml":  "v: 7\n",
		"b/other/skip.yml": "v: 8\n",
	}, gittest.Executable("c/run.sh"))
	ctx := context.Background()

	tests := []struct {
		name    string
		cmds    []Command
		dryRun  bool
		noOp    bool
		changed []string
		check   func(t *testing.T, commit string)
	}{
		{
			name: "identical content makes no commit",
			cmds: []Command{createFile("a/one.yaml", "v: 1\n")},
			noOp: true,
		},
		{
			name: "setting a field to its current value makes no commit",
			cmds: []Command{{Path: "a/one.yaml", SetField: &SetField{Field: "v", Value: []byte("1")}}},
			noOp: true,
		},
		{
			name:    "dry run answers a diff and pushes nothing",
			cmds:    []Command{createFile("a/one.yaml", "v: 10\n"), createFile("new/file.yaml", "n: 1\n")},
			dryRun:  true,
			changed: []string{"a/one.yaml", "new/file.yaml"},
		},
		{
			name:    "deleting the last file of a folder drops the folder",
			cmds:    []Command{{Path: "b/only.yaml", DeleteFile: &DeleteFile{}}},
			changed: []string{"b/only.yaml"},
			check: func(t *testing.T, commit string) {
				ls, _ := gitIn(t, f.remote.Dir, nil, "ls-tree", "-r", "--name-only", commit)
				if strings.Contains(ls, "b/only.yaml") || !strings.Contains(ls, "b/other/skip.yml") {
					t.Fatalf("tree after delete:\n%s", ls)
				}
			},
		},
		{
			name:    "an edited script keeps its executable bit; new folders are made",
			cmds:    []Command{createFile("c/run.sh", "#!/bin/sh\necho hi\n"), createFile("e/f/g/new.yaml", "g: 1\n")},
			changed: []string{"c/run.sh", "e/f/g/new.yaml"},
			check: func(t *testing.T, commit string) {
				ls, _ := gitIn(t, f.remote.Dir, nil, "ls-tree", "-r", commit)
				if !strings.Contains(ls, "100755 blob 4163036efa65bd4a469e752267498f01ea36a55c\tc/run.sh") || !strings.Contains(ls, "e/f/g/new.yaml") {
					t.Fatalf("tree:\n%s", ls)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.remote.Head(t)
			req := f.request(tc.cmds...)
			req.DryRun = tc.dryRun
			res, err := f.repo.Patch(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			after := f.remote.Head(t)
			if res.NoOp != tc.noOp {
				t.Fatalf("no_op = %v, want %v", res.NoOp, tc.noOp)
			}
			if tc.noOp || tc.dryRun {
				if after != before {
					t.Fatalf("the branch moved from %s to %s", before, after)
				}
			}
			if tc.noOp && res.Commit != before {
				t.Fatalf("a no-op answers the tip %s, got %q", before, res.Commit)
			}
			if strings.Join(res.ChangedPaths, ",") != strings.Join(tc.changed, ",") {
				t.Fatalf("changed paths = %v, want %v", res.ChangedPaths, tc.changed)
			}
			if tc.dryRun {
				for _, want := range []string{"--- a/a/one.yaml", "+++ b/a/one.yaml", "-v: 1", "+v: 10", "--- /dev/null", "+++ b/new/file.yaml", "+n: 1"} {
					if !strings.Contains(res.Diff, want) {
						t.Fatalf("diff lacks %q:\n%s", want, res.Diff)
					}
				}
				return
			}
			if tc.check != nil {
				if after != res.Commit {
					t.Fatalf("server head %s, answered %s", after, res.Commit)
				}
				if out, err := gitIn(t, f.remote.Dir, nil, "fsck", "--strict"); err != nil {
					t.Fatalf("git fsck: %v\n%s", err, out)
				}
				tc.check(t, res.Commit)
			}
		})
	}
}

// TestPatchRetriesALostRace makes another writer push between the fetch and
// the push of the first attempt (through the commit clock, which runs in
// that window).
func TestPatchRetriesALostRace(t *testing.T) {
	tests := []struct {
		name        string
		maxAttempts int
		wantErr     bool
	}{
		{"retry lands on the new tip", 3, false},
		{"no retries left answers a conflict", 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newTxnFixture(t, map[string]string{"x.yaml": "v: 1\n"})
			var intruder string
			req := f.request(createFile("mine.yaml", "m: 1\n"))
			req.MaxAttempts = tc.maxAttempts
			req.Now = func() time.Time {
				if intruder == "" {
					f.remote.Git(t, "pull", "--quiet", "--ff-only", "origin", "main")
					intruder = f.remote.Commit(t, map[string]string{"theirs.yaml": "t: 1\n"}, gittest.Message("other writer"))
				}
				return time.Now()
			}
			res, err := f.repo.Patch(context.Background(), req)
			if tc.wantErr {
				var ce *ConflictError
				if !errors.As(err, &ce) || ce.Attempts != 1 {
					t.Fatalf("err = %v, want a ConflictError after 1 attempt", err)
				}
				if head := f.remote.Head(t); head != intruder {
					t.Fatalf("server head %s, want the other writer's %s untouched", head, intruder)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Attempts != 2 || res.Parent != intruder || f.remote.Head(t) != res.Commit {
				t.Fatalf("result %+v, intruder %s, head %s", res, intruder, f.remote.Head(t))
			}
			if f.show(t, res.Commit, "theirs.yaml") == "" || f.show(t, res.Commit, "mine.yaml") == "" {
				t.Fatal("the retried commit lost one of the two writes")
			}
		})
	}
}

// TestPatchConcurrentWritersAllLand runs several mirrors (as several plugin
// nodes would) against one branch: every write lands, none is lost.
func TestPatchConcurrentWritersAllLand(t *testing.T) {
	f := newTxnFixture(t, map[string]string{"seed.yaml": "s: 1\n"})
	const writers = 6
	repos := make([]*Repo, writers)
	for i := range repos {
		repos[i] = f.open(t)
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := f.request(createFile(fmt.Sprintf("w/%d.yaml", i), fmt.Sprintf("i: %d\n", i)))
			req.MaxAttempts = 20
			_, errs[i] = repos[i].Patch(context.Background(), req)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	head := f.remote.Head(t)
	count, _ := gitIn(t, f.remote.Dir, nil, "rev-list", "--count", head)
	if count != fmt.Sprint(writers+1) {
		t.Fatalf("%s commits on the branch, want %d", count, writers+1)
	}
	for i := range writers {
		if got := f.show(t, head, fmt.Sprintf("w/%d.yaml", i)); got != fmt.Sprintf("i: %d\n", i) {
			t.Fatalf("w/%d.yaml = %q", i, got)
		}
	}
}

func TestPatchErrors(t *testing.T) {
	f := newTxnFixture(t, map[string]string{"dir/file.yaml": "v: 1\n"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + ln.Addr().String() + "/infra.git"
	ln.Close()
	dead, err := OpenRepo(context.Background(), filepath.Join(t.TempDir(), "m"), Remote{URL: deadURL, Branch: "main"})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		repo  *Repo
		req   func() TxnRequest
		check func(error) bool
	}{
		{
			name:  "git server unreachable",
			repo:  dead,
			req:   func() TxnRequest { return f.request(createFile("a.yaml", "a: 1\n")) },
			check: func(err error) bool { var re *RemoteError; return errors.As(err, &re) },
		},
		{
			name: "author with a line break",
			repo: f.repo,
			req: func() TxnRequest {
				r := f.request(createFile("a.yaml", "a: 1\n"))
				r.Author.Name = "evil\ncommitter x"
				return r
			},
			check: func(err error) bool { var pe *Error; return errors.As(err, &pe) && pe.Field == "author.name" },
		},
		{
			name:  "a file where a folder is needed",
			repo:  f.repo,
			req:   func() TxnRequest { return f.request(createFile("dir/file.yaml/x.yaml", "a: 1\n")) },
			check: func(err error) bool { return err != nil },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.remote.Head(t)
			_, err := tc.repo.Patch(context.Background(), tc.req())
			if !tc.check(err) {
				t.Fatalf("unexpected error: %v", err)
			}
			if f.remote.Head(t) != before {
				t.Fatal("something was pushed")
			}
		})
	}
}
