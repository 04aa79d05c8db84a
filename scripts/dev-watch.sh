#!/usr/bin/env bash
# The last part of `make enable`: show the whole watch loop on the dev setup
# that scripts/dev-enable.sh made (signed commit in .dev/work, served over
# HTTP, local busybox image). Polls now instead of waiting for the period,
# waits for the run of HEAD and prints its log as
# `vault read flant_gitops/runs/<id>/log` shows it. Safe to run again: when
# HEAD already ran, it shows that run.
set -euo pipefail
cd "$(dirname "$0")/.."
export VAULT_ADDR=${VAULT_ADDR:-http://127.0.0.1:${VAULT_DEV_PORT:-8200}}
export VAULT_TOKEN=${VAULT_TOKEN:-root}
VAULT=${VAULT:-${VAULT_BINARY:-$PWD/bin/vault}}
[ -x "$VAULT" ] || VAULT=$(command -v vault) || { echo "dev-watch: no vault binary (make bin/vault)" >&2; exit 1; }

say() { printf '==> %s\n' "$*"; }
die() { printf 'make enable (watch): %s\n' "$*" >&2; exit 1; }

# The served repository, not .dev/work: the patch path pushes there too.
HEAD=$(git -C .dev/git/deploy.git rev-parse refs/heads/main 2>/dev/null) || die "no .dev/git/deploy.git repository: run scripts/dev-enable.sh first"

# newest_run prints the id of the newest run, or nothing (the list answers
# 404 while there is no run).
newest_run() {
	local ids
	ids=$("$VAULT" list -format=json flant_gitops/runs 2>/dev/null) || return 0
	sed -n '2p' <<<"$ids" | tr -d ' ",'
}

# A poll outcome counts only once it is newer than this: the plugin's poll at
# startup (before configure was written) left "not_configured" behind.
POLL_BEFORE=$("$VAULT" read -field=last_poll_at flant_gitops/status 2>/dev/null || true)

say "asking flant_gitops to poll now (vault write flant_gitops/poll) instead of at the next git_poll_period"
for _ in $(seq 1 20); do
	if out=$("$VAULT" write -f -field=message flant_gitops/poll 2>&1); then
		echo "    $out"
		break
	fi
	case $out in *429*|*rate-limited*) sleep 1 ;; *) die "poll failed: $out" ;; esac
done

say "waiting for the run of HEAD ${HEAD:0:12} (signature check, then the command in a container)"
RUN=
for _ in $(seq 1 300); do
	RUN=$(newest_run)
	if [ -n "$RUN" ] && [ "$("$VAULT" read -field=commit "flant_gitops/runs/$RUN")" = "$HEAD" ]; then
		case $("$VAULT" read -field=status "flant_gitops/runs/$RUN") in
		succeeded | failed | canceled | interrupted) break ;;
		esac
	fi
	outcome=
	if [ "$("$VAULT" read -field=last_poll_at flant_gitops/status 2>/dev/null || true)" != "$POLL_BEFORE" ]; then
		outcome=$("$VAULT" read -field=last_poll_outcome flant_gitops/status 2>/dev/null || true)
	fi
	case $outcome in
	refused | error | not_configured)
		"$VAULT" read flant_gitops/status
		die "the poll was $outcome: $("$VAULT" read -field=last_poll_result flant_gitops/status)
(the dev Vault forgets everything at make stop, the plugin's signing key too, while .dev/git keeps its commits; make stop && rm -rf .dev && make enable starts over)"
		;;
	esac
	RUN=
	sleep 0.5
done
[ -n "$RUN" ] || { "$VAULT" read flant_gitops/status; die "no run of HEAD finished within 150s; see .dev/vault.log"; }

say "vault read flant_gitops/runs/$RUN"
"$VAULT" read "flant_gitops/runs/$RUN"
say "vault read -field=log flant_gitops/runs/$RUN/log"
"$VAULT" read -field=log "flant_gitops/runs/$RUN/log"
say "vault read flant_gitops/status"
"$VAULT" read flant_gitops/status

cat <<MSG

The watch loop: commit and push a signed change, then poll (or wait for
git_poll_period) and read the new run:

  git -C .dev/work pull -q --ff-only ../git/deploy.git main
  echo change >>.dev/work/hello.txt
  GNUPGHOME=$PWD/.dev/gnupg git -C .dev/work -c user.name="flant_gitops dev" -c user.email=dev@flant-gitops.invalid commit -q -S -am change
  git -C .dev/work push -q ../git/deploy.git main
  $VAULT write -f flant_gitops/poll
  $VAULT list flant_gitops/runs
  $VAULT read flant_gitops/runs/<id>/log

Who signed a commit, and what is missing (README "Signing"; sign adds a note):

  (cd .dev/work && VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=$VAULT_TOKEN GNUPGHOME=$PWD/.dev/gnupg $PWD/bin/flant_gitops-sign show)
MSG
