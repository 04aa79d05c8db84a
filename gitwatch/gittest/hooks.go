package gittest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// PreReceive installs a pre-receive hook in the bare repository made of
// steps run in order, each a POSIX shell fragment run in its own subshell
// with the pushed updates ("old new ref" lines, as git gives a hook on its
// stdin) in the file "$UPDATES". A step that exits non-zero refuses the
// whole push, as a forge's rule does; what it prints on stderr reaches the
// pusher on the sideband ("remote: ..."). Installing again replaces the
// hook. Commits written straight into the repository (CommitDirect) pass by
// it, as another writer's would.
func (r *Repo) PreReceive(t testing.TB, steps ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("#!/bin/sh\nUPDATES=$(mktemp) || exit 1\nexport UPDATES\ntrap 'rm -f \"$UPDATES\"' EXIT\ncat >\"$UPDATES\"\n")
	for _, s := range steps {
		b.WriteString("(\n" + s + "\n) || exit 1\n")
	}
	path := filepath.Join(r.Dir, "hooks", "pre-receive")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("gittest: %v", err)
	}
	// Written aside and renamed, so that a push running now sees the old
	// hook or the new one, never half of it.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o755); err != nil {
		t.Fatalf("gittest: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("gittest: %v", err)
	}
}

// RefuseContent is a PreReceive step that refuses a push one of whose new
// commits adds a line containing marker, printing reason and the commit on
// stderr: the way secret push protection or a content rule of a forge
// refuses one commit, and with it the whole push.
func RefuseContent(marker, reason string) string {
	return `zero=0000000000000000000000000000000000000000
while read old new ref; do
  [ "$new" = "$zero" ] && continue
  if [ "$old" = "$zero" ]; then commits=$(git rev-list "$new" --not --all); else commits=$(git rev-list "$old..$new"); fi
  for c in $commits; do
    if git diff-tree -p -r --root --no-commit-id "$c" | grep '^+' | grep -qF -- ` + shellQuote(marker) + `; then
      echo ` + shellQuote(reason) + `" (commit $c)" >&2
      exit 1
    fi
  done
done <"$UPDATES"`
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
