#!/usr/bin/env bash
# bench-gitwatch.sh: poll benchmarks of the gitwatch mirror against a real
# smart-HTTP git server, with go-git's bare Remote.List as the floor.
#
#   scripts/bench-gitwatch.sh            # the ~1 MB repository (200 files, 50 commits)
#   LARGE=1 scripts/bench-gitwatch.sh    # also the ~116 MB one (20000 files, 2000 commits)
#
# Repositories are generated once by scripts/mkrepo.sh and cached in
# $FLANT_GITOPS_BENCH_DIR (default: $TMPDIR/flant_gitops-bench-repos).
# BENCHTIME (default 2s) is passed to -benchtime.
set -euo pipefail
cd "$(dirname "$0")/../gitwatch"
export FLANT_GITOPS_BENCH_LARGE=${LARGE:-${FLANT_GITOPS_BENCH_LARGE:-0}}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench 'BenchmarkPoll' -benchmem -benchtime "${BENCHTIME:-2s}" -timeout 60m . | tee "$out"
echo
echo "ratios to the Remote.List floor (same run):"
awk '
  /^BenchmarkPoll\// {
    split($1, p, "/"); size = p[2]; kind = p[3]; sub(/-[0-9]+$/, "", kind)
    ns[size "/" kind] = $3
    for (i = 4; i < NF; i++) {
      if ($(i+1) == "upload-pack-bytes/op") bytes[size] = $i
      if ($(i+1) == "idle/floor") paired[size] = $i
    }
    sizes[size] = 1
  }
  END {
    for (s in sizes) {
      f = ns[s "/list-floor"]
      if (f == 0) continue
      printf "  %-6s idle/floor alternated in one loop: %.2fx\n", s, paired[s]
      printf "  %-6s floor %8.2f ms   idle %8.2f ms (%.2fx)   one-commit %8.2f ms (%.2fx, %d pack bytes)   initial fetch %8.0f ms\n",
        s, f / 1e6, ns[s "/idle"] / 1e6, ns[s "/idle"] / f, ns[s "/one-commit"] / 1e6, ns[s "/one-commit"] / f, bytes[s], ns[s "/initial-fetch"] / 1e6
    }
  }' "$out"
