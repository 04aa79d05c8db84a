#!/usr/bin/env bash
# make stop: stops what `make enable` started (dev Vault with its plugin
# processes, the dev git server, the gpg agent of .dev/gnupg, Prometheus when
# PROMETHEUS=1 started it) and checks that nothing is left. Data of the
# in-memory dev Vault is gone after it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=$PWD/.dev

stop_group() {
	local name=$1 pidfile=$DEV/$1.pid pid
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if kill -0 -- "-$pid" 2>/dev/null; then
		# Each was started with setsid: the pid is its process group.
		kill -TERM -- "-$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 -- "-$pid" 2>/dev/null || break
			sleep 0.2
		done
		if kill -0 -- "-$pid" 2>/dev/null; then
			echo "==> $name did not stop within 10s; killing it"
			kill -KILL -- "-$pid" 2>/dev/null || true
			sleep 0.5
		fi
		if kill -0 -- "-$pid" 2>/dev/null; then
			echo "make stop: processes of $name (group $pid) are still alive" >&2
			exit 1
		fi
		echo "==> stopped $name (process group $pid)"
	fi
	rm -f "$pidfile"
}

stop_group prometheus
stop_group vault
stop_group devgit
# Containers of the dev mounts (labelled by scripts/dev-enable.sh's mount ids)
# that a stopped plugin could not remove; nobody else's containers.
if [ -s "$DEV/mount_ids" ]; then
	while read -r id; do
		[ -n "$id" ] || continue
		ids=$(docker ps -aq --filter "label=flant_gitops.mount=$id") || { echo "make stop: docker ps failed; containers of mount $id may be left" >&2; continue; }
		if [ -n "$ids" ]; then
			# shellcheck disable=SC2086 # one id per word
			docker rm -f $ids >/dev/null
			echo "==> removed $(wc -w <<<"$ids") leftover container(s) of dev mount $id"
		fi
	done <"$DEV/mount_ids"
	rm -f "$DEV/mount_ids"
fi
if [ -d "$DEV/gnupg" ]; then
	gpgconf --homedir "$DEV/gnupg" --kill all 2>/dev/null || true
fi
echo "==> nothing of make enable is running (files stay in .dev/; rm -rf .dev for a fresh start)"
