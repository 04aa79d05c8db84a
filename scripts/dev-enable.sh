#!/usr/bin/env bash
# make enable: a dev Vault with the flant_gitops plugin and the fixture data
# of the README's "Examples", all under the git-ignored .dev/. Safe to run
# again: running servers are reused, the plugin is re-registered and reloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEV=$ROOT/.dev
VAULT_PORT=${VAULT_DEV_PORT:-8200}
GIT_PORT=${DEVGIT_PORT:-8280}
VERSION=${VERSION:-$(sed -n 's/^var Version = "\(.*\)"/\1/p' backend/version.go)}
export VAULT_ADDR=http://127.0.0.1:$VAULT_PORT
export VAULT_TOKEN=root # the dev server's root token id, nothing secret
unset VAULT_NAMESPACE VAULT_CACERT

say() { printf '==> %s\n' "$*"; }
die() { printf 'make enable: %s\n' "$*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# check_needs looks at everything `make enable` needs before anything starts
# and names all that is missing in one message, so a fresh machine is fixed
# in one round instead of one failure at a time.
check_needs() {
	local missing=() tool
	for tool in go git gpg docker make openssl sha256sum; do
		command -v "$tool" >/dev/null || missing+=("$tool is not installed")
	done
	if command -v go >/dev/null; then
		local gov
		gov=$(go env GOVERSION 2>/dev/null || true)
		gov=${gov#go}
		case $gov in
		1.2[6-9]* | 1.[3-9][0-9]* | [2-9].*) ;;
		*) missing+=("Go ${gov:-of unknown version} is too old: install Go 1.26 from https://go.dev/dl/") ;;
		esac
	fi
	if command -v docker >/dev/null && ! docker info >/dev/null 2>&1; then
		missing+=("Docker is not reachable (docker info failed): start dockerd or fix DOCKER_HOST")
	fi
	[ -x /bin/busybox ] || missing+=("/bin/busybox is missing: install Debian's busybox-static (the dev image is built from it)")
	if [ "${#missing[@]}" -gt 0 ]; then
		{
			printf 'make enable: cannot start, %d thing(s) missing:\n' "${#missing[@]}"
			printf '  - %s\n' "${missing[@]}"
			printf 'Debian packages: git gnupg make openssl busybox-static (.ci/run installs them); a Docker engine; Go 1.26 from https://go.dev/dl/\n'
		} >&2
		exit 1
	fi
	if [ -z "${VAULT_BINARY:-}" ] && [ ! -x bin/vault ] && ! command -v vault >/dev/null; then
		say "no Vault binary (\$VAULT_BINARY, bin/vault or vault on PATH): this first run builds bin/vault," \
			"about 8 minutes on 2 idle cores and ~4 GB of module downloads, up to 30 minutes on a busy machine"
	fi
}
check_needs
# `make enable` checks first, then builds, then runs the rest.
[ "${1:-}" = --check ] && exit 0

mkdir -p "$DEV/plugins" "$DEV/git"

# --- binaries --------------------------------------------------------------
VAULT=${VAULT_BINARY:-$ROOT/bin/vault}
if [ ! -x "$VAULT" ]; then
	if command -v vault >/dev/null; then VAULT=$(command -v vault); else
		say "building bin/vault"
		make bin/vault
	fi
fi
[ -x bin/flant_gitops ] || make build
go build -o bin/devgit ./scripts/devgit
# Copy then rename, so a plugin process still running keeps its binary.
cp bin/flant_gitops "$DEV/plugins/.flant_gitops.new"
mv "$DEV/plugins/.flant_gitops.new" "$DEV/plugins/flant_gitops"
SHA=$(sha256sum "$DEV/plugins/flant_gitops" | cut -d' ' -f1)

# --- Vault -----------------------------------------------------------------
if alive "$DEV/vault.pid"; then
	say "dev Vault already running (pid $(cat "$DEV/vault.pid")) at $VAULT_ADDR"
else
	if "$VAULT" status >/dev/null 2>&1; then
		die "something else answers at $VAULT_ADDR; stop it or set VAULT_DEV_PORT"
	fi
	say "starting dev Vault at $VAULT_ADDR (log: .dev/vault.log)"
	# setsid: own process group, so `make stop` takes Vault and its plugin
	# processes together.
	setsid "$VAULT" server -dev -dev-root-token-id=root -dev-no-store-token \
		-dev-listen-address="127.0.0.1:$VAULT_PORT" -dev-plugin-dir="$DEV/plugins" \
		-log-level=debug >>"$DEV/vault.log" 2>&1 </dev/null &
	echo $! >"$DEV/vault.pid"
fi
for _ in $(seq 1 150); do
	"$VAULT" status >/dev/null 2>&1 && break
	alive "$DEV/vault.pid" || die "Vault exited; see .dev/vault.log"
	sleep 0.2
done
"$VAULT" status >/dev/null || die "Vault did not become ready; see .dev/vault.log"

say "registering flant_gitops $VERSION (sha256 ${SHA:0:12}...)"
"$VAULT" plugin register -sha256="$SHA" -version="$VERSION" secret flant_gitops >/dev/null
# Outputs are captured before grep: with pipefail, `grep -q` closing the pipe
# early makes the writer die of SIGPIPE and the whole test false.
mounts=$("$VAULT" secrets list)
if grep -q '^flant_gitops/' <<<"$mounts"; then
	"$VAULT" secrets tune -plugin-version="$VERSION" flant_gitops/ >/dev/null
	"$VAULT" plugin reload -plugin=flant_gitops >/dev/null
else
	"$VAULT" secrets enable -path=flant_gitops -plugin-version="$VERSION" flant_gitops >/dev/null
fi
# The forges' webhook headers reach the plugin only when the mount passes
# them through (receiver.PassthroughHeaders; scripts/dev_enable_test.go
# keeps this list equal to it).
hook_headers=(X-Event-Key X-Flant-Gitops-Token X-Forgejo-Delivery X-Forgejo-Event X-GitHub-Delivery
	X-GitHub-Event X-Gitea-Delivery X-Gitea-Event X-Gitlab-Event X-Gitlab-Event-UUID X-Gitlab-Token
	X-Gogs-Delivery X-Gogs-Event X-Request-Id X-Request-UUID)
"$VAULT" secrets tune "${hook_headers[@]/#/-passthrough-request-headers=}" flant_gitops/ >/dev/null

# --- image -----------------------------------------------------------------
say "building the local busybox image (no registry needed)"
IMAGE=$(go run ./container/dockertest/cmd/mkimage)
[[ $IMAGE =~ ^sha256:[0-9a-f]{64}$ ]] || die "mkimage printed '$IMAGE', want an image ID sha256:<64 hex>"

# --- signing key and repository -------------------------------------------
export GNUPGHOME=$DEV/gnupg
mkdir -p -m 700 "$GNUPGHOME"
if [ -z "$(gpg --batch --list-secret-keys 2>/dev/null)" ]; then
	say "making a dev PGP key in .dev/gnupg"
	gpg --batch --quiet --passphrase '' --quick-gen-key "flant_gitops dev <dev@flant-gitops.invalid>" ed25519 sign never
fi
FPR=$(gpg --batch --quiet --no-auto-check-trustdb --with-colons --list-secret-keys | awk -F: '/^fpr:/ && !seen {print $10; seen=1}')
gpg --batch --armor --export "$FPR" >"$DEV/trusted-key.asc"

REPO=$DEV/git/deploy.git
WORK=$DEV/work
if [ ! -d "$REPO" ]; then
	say "creating .dev/git/deploy.git with one signed commit"
	git init -q --bare -b main "$REPO"
	rm -rf "$WORK"
	git init -q -b main "$WORK"
	echo "hello from a signed commit" >"$WORK/hello.txt"
	printf '#!/bin/sh\n# run by flant_gitops in the container, with this repository at /git\ncat /git/hello.txt\n' >"$WORK/deploy.sh"
	git -C "$WORK" add hello.txt deploy.sh
	git -C "$WORK" -c user.name="flant_gitops dev" -c user.email=dev@flant-gitops.invalid \
		-c user.signingkey="$FPR" -c gpg.program=gpg commit -q -S -m "Initial signed commit"
	git -C "$WORK" push -q "$REPO" main
fi
# origin, so flant_gitops-sign (sign, show) works in the work tree as in a signer's clone.
git -C "$WORK" remote get-url origin >/dev/null 2>&1 || git -C "$WORK" remote add origin "$REPO"
git -C "$WORK" verify-commit HEAD 2>/dev/null || die "the dev commit's signature does not verify with .dev/gnupg"

if [ ! -s "$DEV/git-password" ]; then
	(umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DEV/git-password")
fi
GIT_PASSWORD=$(cat "$DEV/git-password")
GIT_URL=http://127.0.0.1:$GIT_PORT/deploy.git
if alive "$DEV/devgit.pid"; then
	say "dev git server already running (pid $(cat "$DEV/devgit.pid")) at $GIT_URL"
else
	say "serving .dev/git at $GIT_URL (log: .dev/devgit.log)"
	DEVGIT_PASSWORD=$GIT_PASSWORD setsid bin/devgit -root "$DEV/git" -addr "127.0.0.1:$GIT_PORT" -user dev \
		>>"$DEV/devgit.log" 2>&1 </dev/null &
	echo $! >"$DEV/devgit.pid"
fi
AUTH="Authorization: Basic $(printf 'dev:%s' "$GIT_PASSWORD" | base64)"
for _ in $(seq 1 50); do
	git -c http.extraHeader="$AUTH" ls-remote "$GIT_URL" >/dev/null 2>&1 && break
	alive "$DEV/devgit.pid" || die "the dev git server exited; see .dev/devgit.log"
	sleep 0.2
done
refs=$(git -c http.extraHeader="$AUTH" ls-remote "$GIT_URL") || die "cannot fetch $GIT_URL; see .dev/devgit.log"
grep -q refs/heads/main <<<"$refs" || die "$GIT_URL has no branch main; rm -rf .dev for a fresh start"

# --- AppRole on this same Vault, as the README's "Configure vault access" --
auths=$("$VAULT" auth list)
grep -q '^approle/' <<<"$auths" || "$VAULT" auth enable approle >/dev/null
"$VAULT" policy write flant_gitops-dev - >/dev/null <<'HCL'
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
HCL
"$VAULT" write auth/approle/role/flant_gitops-dev secret_id_ttl=120m token_ttl=90s token_policies=flant_gitops-dev >/dev/null
ROLE_ID=$("$VAULT" read -field=role_id auth/approle/role/flant_gitops-dev/role-id)
SECRET_ID=$("$VAULT" write -f -field=secret_id auth/approle/role/flant_gitops-dev/secret-id)

# --- fixture data -----------------------------------------------------------
say "loading the fixture data into flant_gitops/"
# make stop removes the containers of these mounts: a run cut by a plugin
# reload is cleaned up only by a later poll, which a stopped dev Vault never makes.
MOUNT_ID=$("$VAULT" read -field=mount_id flant_gitops/status)
grep -qxF "$MOUNT_ID" "$DEV/mount_ids" 2>/dev/null || echo "$MOUNT_ID" >>"$DEV/mount_ids"
"$VAULT" write flant_gitops/configure/trusted_pgp_public_key/dev public_key=@"$DEV/trusted-key.asc" >/dev/null
# Secrets go on stdin, not into process arguments.
"$VAULT" write flant_gitops/configure/git_credential - >/dev/null <<JSON
{"username": "dev", "password": "$GIT_PASSWORD"}
JSON
"$VAULT" write flant_gitops/configure_vault_access - >/dev/null <<JSON
{"vault_addr": "$VAULT_ADDR", "role_name": "flant_gitops-dev", "approle_mount_point": "auth/approle",
 "role_id": "$ROLE_ID", "secret_id": "$SECRET_ID", "secret_id_ttl": "120m"}
JSON
"$VAULT" write flant_gitops/configure/vault_request/whoami path=auth/token/lookup-self method=GET wrap_ttl=1m >/dev/null
"$VAULT" write flant_gitops/configure \
	git_repo_url="$GIT_URL" git_branch_name=main git_poll_period=1m \
	required_number_of_verified_signatures_on_commit=1 \
	docker_image="$IMAGE" commands="sh /git/deploy.sh" run_timeout=5m memory_limit=64m cpu_limit=0.5 >/dev/null

# --- Prometheus on request (PROMETHEUS=1 make enable) ---------------------
# Debian's prometheus scraping flant_gitops/metrics as the README's "Metrics"
# says: a token of the metrics policy only, sent as a bearer token.
PROM_MSG=""
if [ "${PROMETHEUS:-}" = 1 ]; then
	PROM_PORT=${PROMETHEUS_PORT:-9090}
	[ -x /usr/bin/prometheus ] || die "PROMETHEUS=1 needs Debian's prometheus package: apt-get install prometheus"
	command -v curl >/dev/null || die "PROMETHEUS=1 needs curl to wait for Prometheus"
	"$VAULT" policy write flant-gitops-metrics - >/dev/null <<'HCL'
path "flant_gitops/metrics" {
  capabilities = ["read"]
}
HCL
	# A fresh token each time: the dev Vault forgets its tokens when it
	# restarts, and Prometheus reads the file again at every scrape.
	(umask 077 && "$VAULT" token create -policy=flant-gitops-metrics -no-default-policy -ttl=768h -field=token >"$DEV/prometheus-token")
	cat >"$DEV/prometheus.yml" <<YAML
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: flant_gitops
    metrics_path: /v1/flant_gitops/metrics
    params:
      format: [prometheus]
    authorization:
      credentials_file: $DEV/prometheus-token
    static_configs:
      - targets: ["127.0.0.1:$VAULT_PORT"]
YAML
	if alive "$DEV/prometheus.pid"; then
		say "Prometheus already running (pid $(cat "$DEV/prometheus.pid")); reloading its configuration"
		kill -HUP "$(cat "$DEV/prometheus.pid")"
	else
		say "starting Prometheus at http://127.0.0.1:$PROM_PORT (log: .dev/prometheus.log)"
		setsid /usr/bin/prometheus --config.file="$DEV/prometheus.yml" --storage.tsdb.path="$DEV/prometheus" \
			--web.listen-address="127.0.0.1:$PROM_PORT" >>"$DEV/prometheus.log" 2>&1 </dev/null &
		echo $! >"$DEV/prometheus.pid"
	fi
	for _ in $(seq 1 150); do
		curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null && break
		alive "$DEV/prometheus.pid" || die "Prometheus exited; see .dev/prometheus.log"
		sleep 0.2
	done
	curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null || die "Prometheus did not become ready; see .dev/prometheus.log"
	PROM_MSG="
Prometheus scrapes flant_gitops/metrics every 15s: http://127.0.0.1:$PROM_PORT/graph?g0.expr=flant_gitops_runs_total
  curl -s -H \"Authorization: Bearer \$(cat .dev/prometheus-token)\" $VAULT_ADDR/v1/flant_gitops/metrics
"
fi

cat <<MSG

flant_gitops is enabled at $VAULT_ADDR (root token: root).

  export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=root
  $VAULT read flant_gitops/configure
  $VAULT list flant_gitops/configure/trusted_pgp_public_key
  $VAULT read flant_gitops/configure/vault_request/whoami
  $VAULT read flant_gitops/configure_vault_access
  $VAULT path-help flant_gitops/configure
  tail -f .dev/vault.log

The watched repository is $GIT_URL (work tree: .dev/work, signing key in
.dev/gnupg: GNUPGHOME=$GNUPGHOME git -C .dev/work commit -S ...; then
git -C .dev/work push ../git/deploy.git main). Stop everything with: make stop
$PROM_MSG
MSG

# --- watch loop (issue 4, scripts/dev-watch.sh): poll now, wait for the run of
# HEAD, print `vault read flant_gitops/runs/<id>/log`.
VAULT="$VAULT" scripts/dev-watch.sh
