#!/usr/bin/env bash
# make release-check: is the release reproducible? Builds the release of HEAD
# twice, from two copies of the commit (git archive) at two different paths,
# each with an empty build cache of its own as on two machines, and compares
# every file of the two dist/ directories. Fails naming the first file that
# differs. 16 builds: minutes; RELEASE_CHECK_CACHE=shared reuses this
# machine's build cache (faster, still catches paths and stamps that differ).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'release-check: %s\n' "$*" >&2; exit 1; }

VERSION=${VERSION:-v0.0.0-check}
CACHE=${RELEASE_CHECK_CACHE:-fresh}
[[ $CACHE == fresh || $CACHE == shared ]] || die "RELEASE_CHECK_CACHE=$CACHE: want fresh or shared"
rev=$(git rev-parse HEAD) || die "not in a git checkout"
epoch=$(git log -1 --format=%ct "$rev")
[[ -z $(git status --porcelain --untracked-files=no) ]] ||
	printf 'release-check: note: uncommitted changes are not checked; this checks the commit %s\n' "${rev:0:12}" >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/release-check.XXXXXX")
cleanup() { chmod -R u+w "$tmp" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
a=$tmp/one/flant_gitops
b=$tmp/two/a/longer/path/elsewhere

for dir in "$a" "$b"; do
	mkdir -p "$dir"
	git archive "$rev" | tar -x -C "$dir"
	env=(VERSION="$VERSION" SOURCE_DATE_EPOCH="$epoch" DIST=dist SIGNING_KEY=)
	if [[ $CACHE == fresh ]]; then
		env+=(GOCACHE="$dir.gocache")
	fi
	printf '==> building %s of %s in %s\n' "$VERSION" "${rev:0:12}" "$dir"
	(cd "$dir" && env "${env[@]}" scripts/release.sh >"$dir.log" 2>&1) ||
		die "the build in $dir failed:
$(tail -20 "$dir.log")"
done

(cd "$a/dist" && find . -type f | LC_ALL=C sort) >"$tmp/files.one"
(cd "$b/dist" && find . -type f | LC_ALL=C sort) >"$tmp/files.two"
if ! cmp -s "$tmp/files.one" "$tmp/files.two"; then
	die "the two builds made different files:
$(diff "$tmp/files.one" "$tmp/files.two" || true)"
fi
n=0
while read -r f; do
	if ! cmp -s "$a/dist/$f" "$b/dist/$f"; then
		die "NOT REPRODUCIBLE: ${f#./} differs between the two builds
  $(sha256sum "$a/dist/$f")
  $(sha256sum "$b/dist/$f")
first difference: $(cmp "$a/dist/$f" "$b/dist/$f" 2>&1 | head -1)"
	fi
	n=$((n + 1))
done <"$tmp/files.one"
printf '==> reproducible: %d files identical (%s, %s, build cache: %s)\n' "$n" "${rev:0:12}" "$(go version)" "$CACHE"
cat "$a/dist/SHA256SUMS"
