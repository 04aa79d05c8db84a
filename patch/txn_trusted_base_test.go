package patch

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/gitwatch"
)

// A request whose CheckBase accepts the fetched tip is not built on an
// unsigned commit that another member of its group made first (a sibling
// repository entry with signing off, on the same branch): it is refused
// alone, naming that commit, and the others land.
func TestGroupTrustedBaseUnderUnsignedSibling(t *testing.T) {
	tests := []struct {
		name         string
		siblingSigns bool
		checkedIsDry bool
		wantRefused  bool
		wantLanded   int // commits of the second group on the server
	}{
		{"an unsigned sibling commit below: refused", false, false, true, 2},
		{"a signed sibling commit below: lands", true, false, false, 3},
		{"a dry run answers for the tip: not refused", false, true, false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTxnFixture(t, map[string]string{"seed.yaml": "s: 1\n"})
			ctx := context.Background()
			g := newGate()
			first := f.requestN(0, createFile("first.yaml", "f: 1\n"))
			first.CheckBase = g.check
			firstDone := submit(t, ctx, f.repo, first, 0)
			<-g.started

			sibling := f.requestN(1, createFile("sibling.yaml", "s: 1\n"))
			if !tt.siblingSigns {
				sibling.Signer = nil // its repository entry has sign_commits=false
			}
			tips := 0
			checked := f.requestN(2, createFile("checked.yaml", "c: 1\n"))
			checked.CheckBase = func(context.Context, string, *gitwatch.Mirror) error { tips++; return nil } // the tip itself is trusted
			checked.DryRun = tt.checkedIsDry
			after := f.requestN(3, createFile("after.yaml", "a: 1\n"))
			siblingDone := submit(t, ctx, f.repo, sibling, 1)
			checkedDone := submit(t, ctx, f.repo, checked, 2)
			afterDone := submit(t, ctx, f.repo, after, 3)
			close(g.release)
			if o := <-firstDone; o.err != nil {
				t.Fatal(o.err)
			}

			s := <-siblingDone
			if s.err != nil {
				t.Fatalf("sibling: %v", s.err)
			}
			c := <-checkedDone
			var base *BaseError
			switch {
			case tt.wantRefused && !errors.As(c.err, &base):
				t.Fatalf("checked request on the unsigned sibling commit: %+v %v, want a BaseError", c.res, c.err)
			case tt.wantRefused && (!strings.Contains(c.err.Error(), s.res.Commit) || !strings.Contains(c.err.Error(), "sign_commits=false")):
				t.Errorf("refusal %q does not name the unsigned commit %s and why", c.err, s.res.Commit)
			case !tt.wantRefused && c.err != nil:
				t.Fatalf("checked request: %v", c.err)
			}
			if tips != 1 {
				t.Errorf("CheckBase asked %d times, want once", tips)
			}
			if o := <-afterDone; o.err != nil {
				t.Fatalf("the member after it: %v", o.err)
			}
			head := f.remote.Head(t)
			if got := f.show(t, head, "checked.yaml"); (got != "") != (!tt.wantRefused && !tt.checkedIsDry) {
				t.Errorf("checked.yaml on the server = %q", got)
			}
			want := strconv.Itoa(2 + tt.wantLanded)
			if n, _ := gitIn(t, f.remote.Dir, nil, "rev-list", "--count", head); n != want {
				t.Errorf("%s commits on the branch, want %s: initial, first and %d of the second group", n, want, tt.wantLanded)
			}
		})
	}
}
