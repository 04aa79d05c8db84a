package gitwatch

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

func serverAuth(srv *gittest.Server) Auth {
	return Auth{Username: srv.Username(), Password: srv.Password()}
}

func openMirror(t *testing.T, srv *gittest.Server, repo *gittest.Repo, dir string) *Mirror {
	t.Helper()
	m, err := OpenMirror(context.Background(), dir, repo.URL(), "main", serverAuth(srv))
	if err != nil {
		t.Fatalf("OpenMirror: %v", err)
	}
	return m
}

func mustFetch(t *testing.T, m *Mirror) FetchResult {
	t.Helper()
	res, err := m.Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return res
}

func TestFetchIsIncremental(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "inc")
	first := repo.Commit(t, map[string]string{"a.txt": "one"})
	m := openMirror(t, srv, repo, filepath.Join(t.TempDir(), "m"))

	res := mustFetch(t, m)
	if res.Head != first || res.Previous != "" || !res.Changed {
		t.Fatalf("first fetch = %+v, want head %s changed from nothing", res, first)
	}

	srv.ResetStats()
	res = mustFetch(t, m)
	if res.Head != first || res.Changed || res.SignaturesChanged {
		t.Errorf("idle fetch = %+v, want unchanged head %s", res, first)
	}
	if st := srv.Stats(); st.RefAdvertisements != 1 || st.UploadPacks != 0 {
		t.Errorf("idle fetch cost %+v, want exactly one ref advertisement and no upload-pack", st)
	}

	second := repo.Commit(t, map[string]string{"b.txt": "two"})
	srv.ResetStats()
	res = mustFetch(t, m)
	if res.Head != second || res.Previous != first || !res.Changed {
		t.Errorf("fetch after commit = %+v, want %s -> %s", res, first, second)
	}
	if st := srv.Stats(); st.UploadPacks != 1 {
		t.Errorf("fetch of one commit cost %+v, want one upload-pack", st)
	}

	repo.NoteSignature(t, second, pgptest.NewKey(t, "Nina"))
	res = mustFetch(t, m)
	if res.Changed || !res.SignaturesChanged {
		t.Errorf("fetch after a new note = %+v, want SignaturesChanged only", res)
	}
	if m.Head() != second {
		t.Errorf("Head() = %s, want %s", m.Head(), second)
	}
}

func TestFetchOnlyMirrorsBranchAndSignatureRefs(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "refs")
	head := repo.Commit(t, map[string]string{"a.txt": "main"})
	repo.Git(t, "checkout", "--quiet", "-b", "other")
	other := repo.Commit(t, map[string]string{"secret.txt": "other branch"})
	repo.Git(t, "push", "--quiet", "origin", "other:refs/heads/other")
	repo.Git(t, "tag", "v1", other)
	repo.Git(t, "push", "--quiet", "origin", "v1")
	repo.Git(t, "checkout", "--quiet", "main")
	repo.ForcePush(t, head)

	m := openMirror(t, srv, repo, filepath.Join(t.TempDir(), "m"))
	mustFetch(t, m)
	refs, err := m.Repository().References()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	_ = refs.ForEach(func(r *plumbing.Reference) error {
		if r.Type() == plumbing.HashReference {
			names = append(names, r.Name().String())
		}
		return nil
	})
	if strings.Join(names, " ") != m.branchRef().String() {
		t.Errorf("mirror refs = %v, want only %s", names, m.branchRef())
	}
	if _, err := m.Repository().CommitObject(plumbing.NewHash(other)); err == nil {
		t.Errorf("commit %s of another branch was fetched", other)
	}
}

func TestForcePushIsReported(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "force")
	a := repo.Commit(t, map[string]string{"f": "a"})
	b := repo.Commit(t, map[string]string{"f": "b"})
	m := openMirror(t, srv, repo, filepath.Join(t.TempDir(), "m"))
	mustFetch(t, m)
	lastProcessed := b

	repo.Reset(t, a)
	c := repo.Commit(t, map[string]string{"f": "c"})
	res := mustFetch(t, m)
	if res.Head != c || res.Previous != b || !res.Changed {
		t.Fatalf("fetch after force-push = %+v, want %s -> %s", res, b, c)
	}

	ctx := context.Background()
	// Forcing main back to a commit the mirror already has moves the head
	// without a pack.
	repo.ForcePush(t, a)
	if res := mustFetch(t, m); res.Head != a || res.Previous != c || !res.Changed {
		t.Errorf("fetch after reset to an old commit = %+v, want %s -> %s", res, c, a)
	}
	repo.ForcePush(t, c)
	mustFetch(t, m)

	tests := []struct {
		name             string
		ancestor, head   string
		want             bool
		wantErrSubstring string
	}{
		{name: "rewritten last processed commit is not an ancestor", ancestor: lastProcessed, head: c, want: false},
		{name: "common base is an ancestor", ancestor: a, head: c, want: true},
		{name: "a commit is its own ancestor", ancestor: c, head: c, want: true},
		{name: "descendant is not an ancestor", ancestor: c, head: a, want: false},
		{name: "unknown commit is not an ancestor", ancestor: strings.Repeat("ab", 20), head: c, want: false},
		{name: "unknown head is an error", ancestor: a, head: strings.Repeat("cd", 20), wantErrSubstring: "not in the mirror"},
		{name: "short id is an error", ancestor: a[:7], head: c, wantErrSubstring: "40 hex"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.IsAncestor(ctx, tc.ancestor, tc.head)
			if tc.wantErrSubstring != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) {
					t.Fatalf("IsAncestor error = %v, want %q", err, tc.wantErrSubstring)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("IsAncestor(%s, %s) = %v, %v; want %v", tc.ancestor[:7], tc.head[:7], got, err, tc.want)
			}
		})
	}
}

func TestMirrorCacheIsRebuilt(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "cache")
	head := repo.Commit(t, map[string]string{"a.txt": "x"})
	other := srv.NewRepo(t, "other")
	other.Commit(t, map[string]string{"b.txt": "y"})

	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{name: "missing directory", damage: func(t *testing.T, dir string) { os.RemoveAll(dir) }},
		{name: "objects deleted", damage: func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, "objects")); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dir, "objects", "pack"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "config garbage", damage: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "config"), []byte("[[[ not git config"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "not a repository", damage: func(t *testing.T, dir string) {
			os.RemoveAll(dir)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "junk"), []byte("junk"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "cache of another remote", damage: func(t *testing.T, dir string) {
			os.RemoveAll(dir)
			m := openMirror(t, srv, other, dir)
			mustFetch(t, m)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m")
			mustFetch(t, openMirror(t, srv, repo, dir))
			tc.damage(t, dir)
			m := openMirror(t, srv, repo, dir)
			res := mustFetch(t, m)
			if res.Head != head {
				t.Fatalf("fetch after damage = %+v, want head %s", res, head)
			}
			var buf bytes.Buffer
			if err := m.WriteTar(context.Background(), head, &buf); err != nil {
				t.Fatalf("WriteTar after rebuild: %v", err)
			}
		})
	}
}

func TestFetchErrors(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "errs")
	repo.Commit(t, map[string]string{"a.txt": "x"})
	empty := srv.NewRepo(t, "empty")

	// A server that accepts the connection and never answers.
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(stuck.Close)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		url     string
		branch  string
		auth    Auth
		ctx     context.Context
		timeout time.Duration
		want    string
		wantIs  error
	}{
		{name: "wrong password", url: repo.URL(), branch: "main", auth: Auth{Username: srv.Username(), Password: "wrong"}, want: "authentication"},
		{name: "missing branch", url: repo.URL(), branch: "nope", auth: serverAuth(srv), want: "branch nope not found"},
		{name: "empty repository", url: empty.URL(), branch: "main", auth: serverAuth(srv), want: "empty"},
		{name: "cancelled context", url: repo.URL(), branch: "main", auth: serverAuth(srv), ctx: cancelled, wantIs: context.Canceled},
		{name: "timeout on a stuck server", url: stuck.URL + "/x.git", branch: "main", timeout: 300 * time.Millisecond, wantIs: context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := OpenMirror(context.Background(), filepath.Join(t.TempDir(), "m"), tc.url, tc.branch, tc.auth)
			if err != nil {
				t.Fatalf("OpenMirror: %v", err)
			}
			m.FetchTimeout = tc.timeout
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			_, err = m.Fetch(ctx)
			if err == nil {
				t.Fatal("Fetch succeeded, want an error")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Fetch error = %v, want it to mention %q", err, tc.want)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("Fetch error = %v, want errors.Is %v", err, tc.wantIs)
			}
			if strings.Contains(err.Error(), srv.Password()) {
				t.Errorf("Fetch error leaks the password: %v", err)
			}
		})
	}
}

func TestOpenMirrorRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "m")
	tests := []struct {
		name, dir, url, branch string
		auth                   Auth
		want                   string
	}{
		{name: "empty dir", url: "https://example.com/r.git", branch: "main", want: "directory"},
		{name: "empty url", dir: dir, branch: "main", want: "URL"},
		{name: "bad branch", dir: dir, url: "https://example.com/r.git", branch: "a..b", want: "branch name"},
		{name: "ssh without key", dir: dir, url: "ssh://git@example.com/r.git", branch: "main", want: "no SSH private key"},
		{name: "ssh key without known_hosts", dir: dir, url: "git@example.com:r.git", branch: "main", auth: Auth{SSHPrivateKey: testSSHKey(t)}, want: "known_hosts is required"},
		{name: "ssh key with https", dir: dir, url: "https://example.com/r.git", branch: "main", auth: Auth{SSHPrivateKey: testSSHKey(t)}, want: "SSH private key is configured"},
		{name: "unsupported scheme", dir: dir, url: "ftp://example.com/r.git", branch: "main", want: "not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenMirror(ctx, tc.dir, tc.url, tc.branch, tc.auth)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenMirror error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestWriteTar(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "tar")
	head := repo.Commit(t, map[string]string{
		"README.md":        "hello\n",
		"bin/run.sh":       "#!/bin/sh\necho hi\n",
		"deep/a/b/c.yaml":  "k: v\n",
		"empty-file.txt":   "",
		"with space/x.txt": "spaces",
	}, gittest.Executable("bin/run.sh"), gittest.Symlink("link-to-readme", "README.md"))
	m := openMirror(t, srv, repo, filepath.Join(t.TempDir(), "m"))
	mustFetch(t, m)

	var buf bytes.Buffer
	if err := m.WriteTar(context.Background(), head, &buf); err != nil {
		t.Fatalf("WriteTar: %v", err)
	}
	type entry struct {
		typ      byte
		mode     int64
		body     string
		linkname string
	}
	got := map[string]entry{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		body, _ := io.ReadAll(tr)
		got[h.Name] = entry{h.Typeflag, h.Mode, string(body), h.Linkname}
	}
	want := map[string]entry{
		"README.md":        {tar.TypeReg, 0o644, "hello\n", ""},
		"bin/":             {tar.TypeDir, 0o755, "", ""},
		"bin/run.sh":       {tar.TypeReg, 0o755, "#!/bin/sh\necho hi\n", ""},
		"deep/":            {tar.TypeDir, 0o755, "", ""},
		"deep/a/":          {tar.TypeDir, 0o755, "", ""},
		"deep/a/b/":        {tar.TypeDir, 0o755, "", ""},
		"deep/a/b/c.yaml":  {tar.TypeReg, 0o644, "k: v\n", ""},
		"empty-file.txt":   {tar.TypeReg, 0o644, "", ""},
		"link-to-readme":   {tar.TypeSymlink, 0o777, "", "README.md"},
		"with space/":      {tar.TypeDir, 0o755, "", ""},
		"with space/x.txt": {tar.TypeReg, 0o644, "spaces", ""},
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("tar entry %q = %+v (present %v), want %+v", name, g, ok, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("tar has %d entries, want %d: %v", len(got), len(want), got)
	}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.WriteTar(cancelled, head, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("WriteTar with a cancelled context = %v, want context.Canceled", err)
	}
}
