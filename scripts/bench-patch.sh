#!/usr/bin/env bash
# bench-patch.sh: one patch through Vault + the plugin against the git CLI floor
# (warm clone: fetch, reset --hard, edit one value, commit, push), interleaved
# rounds on the large repository that scripts/mkrepo.sh DIR 20000 2000 makes
# (about 116 MB), plus the plugin's peak RSS and 10 concurrent patches; then
# the burst benchmark: one patch alone vs 32 and 100 at once (group commit),
# and the first patch on a cold mirror vs git clone --bare --depth 1.
#
# Environment: BENCH_REPO (an existing pristine repository to reuse; default
# $BENCH_CACHE/mkrepo-20000-2000.git, made on first run, about 30 s),
# BENCH_CACHE (default /tmp/flant_gitops-bench), BENCH_ROUNDS (default 10),
# MKREPO (default scripts/mkrepo.sh), BENCH (default both benchmarks:
# 'BenchmarkPatchVsGitCLI|BenchmarkPatchBurst').
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BENCH_CACHE:-/tmp/flant_gitops-bench}
mkrepo=${MKREPO:-$root/scripts/mkrepo.sh}
repo=${BENCH_REPO:-$cache/mkrepo-20000-2000.git}

if [ ! -d "$repo" ]; then
  [ -x "$mkrepo" ] || { echo "mkrepo.sh not found at $mkrepo; set MKREPO" >&2; exit 1; }
  mkdir -p "$(dirname "$repo")"
  echo "making the benchmark repository $repo (20000 files, 2000 commits)..." >&2
  "$mkrepo" "$repo.tmp" 20000 2000 >&2
  mv "$repo.tmp" "$repo"
fi

cd "$root"
BENCH_REPO=$repo BENCH_ROUNDS=${BENCH_ROUNDS:-10} \
  go test -run '^$' -bench "${BENCH:-BenchmarkPatchVsGitCLI|BenchmarkPatchBurst}" -benchtime 1x -timeout 30m ./scripts/bench-patch/
