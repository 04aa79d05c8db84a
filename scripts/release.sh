#!/usr/bin/env bash
# make release VERSION=vX.Y.Z: the release of the current tree into dist/
# (README "Install"). For linux and darwin on amd64 and arm64, each command
# (the plugin flant_gitops, the CI client flant_gitops-patch and the
# signer's tool flant_gitops-sign) as a plain
# binary NAME_VERSION_OS_ARCH and as NAME_VERSION_OS_ARCH.zip holding it,
# then SHA256SUMS over all of them and, with SIGNING_KEY set, its detached
# gpg signature SHA256SUMS.sig.
#
# The plain binaries are listed because Vault registers a plugin by the
# sha256 of the binary itself, so that is the sum a signed file must carry;
# the archives are what one downloads. Both are reproducible: the same commit
# built with the same Go version gives the same bytes anywhere.
#
#   scripts/release.sh --one OS/ARCH CMD OUT   builds one binary the same way
#                                              (the reproducibility test)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'make release: %s\n' "$*" >&2; exit 1; }

VERSION=${VERSION:-}
[[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
	die "VERSION=${VERSION@Q} is not a version like v1.2.3 (Vault registers plugins by semantic version); run: make release VERSION=v1.2.3"

PLATFORMS=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}
COMMANDS="flant_gitops flant_gitops-patch flant_gitops-sign"
DIST=${DIST:-dist}

# build_one OS ARCH CMD OUT. Nothing of the builder may reach the bytes:
# -trimpath drops the directory, -buildvcs=false the checkout's state (a
# tarball and a clone must agree), -buildid= the build id, CGO_ENABLED=0 the C
# toolchain; GOFLAGS, GOAMD64, GOARM64 and GOEXPERIMENT from the environment
# would change the code, so they are fixed here. -s -w drop the symbol table
# and DWARF (tracebacks still name functions and lines).
build_one() {
	local goos=$1 goarch=$2 cmd=$3 out=$4 x
	case $cmd in
	flant_gitops) x="-X github.com/flant/flant_gitops/backend.Version=$VERSION" ;;
	flant_gitops-patch | flant_gitops-sign) x="-X main.version=$VERSION" ;;
	*) die "unknown command $cmd (one of: $COMMANDS)" ;;
	esac
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOFLAGS= GOAMD64=v1 GOARM64=v8.0 GOEXPERIMENT= \
		go build -trimpath -buildvcs=false -ldflags "-s -w -buildid= $x" -o "$out" "./cmd/$cmd"
	chmod 0755 "$out"
}

if [[ ${1:-} == --one ]]; then
	[[ $# == 4 && $2 == */* ]] || die "usage: scripts/release.sh --one OS/ARCH CMD OUT"
	build_one "${2%/*}" "${2#*/}" "$3" "$4"
	exit 0
fi

# The archives' time is the commit's, so that every builder stamps the same;
# a source tree without git must be given SOURCE_DATE_EPOCH.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) ||
		die "no git history to date the archives: set SOURCE_DATE_EPOCH (the commit's time, git log -1 --format=%ct)"
fi
if git rev-parse --git-dir >/dev/null 2>&1 && [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
	printf 'make release: warning: the tree has uncommitted changes; this release is not the commit %s and will not match a build of it\n' \
		"$(git rev-parse --short HEAD)" >&2
fi

rm -rf "$DIST"
mkdir -p "$DIST"
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
# The archiver is built for this machine, outside dist/.
GOFLAGS= CGO_ENABLED=0 go build -trimpath -o "$tools/releasezip" ./scripts/releasezip

printf '==> %s with %s, archives dated %s\n' "$VERSION" "$(go version)" "$SOURCE_DATE_EPOCH"
for platform in $PLATFORMS; do
	goos=${platform%/*} goarch=${platform#*/}
	for cmd in $COMMANDS; do
		base=${cmd}_${VERSION}_${goos}_${goarch}
		printf '==> %s\n' "$base"
		build_one "$goos" "$goarch" "$cmd" "$DIST/$base"
		"$tools/releasezip" -mtime "$SOURCE_DATE_EPOCH" -name "$cmd" "$DIST/$base.zip" "$DIST/$base"
	done
done

(cd "$DIST" && LC_ALL=C sha256sum -- *_"$VERSION"_* | LC_ALL=C sort -k2 >SHA256SUMS)
if [[ -n ${SIGNING_KEY:-} ]]; then
	gpg --batch --yes --local-user "$SIGNING_KEY" --detach-sign --output "$DIST/SHA256SUMS.sig" "$DIST/SHA256SUMS" ||
		die "gpg could not sign $DIST/SHA256SUMS with SIGNING_KEY=$SIGNING_KEY: is the secret key in this keyring (gpg --list-secret-keys)?"
	printf '==> signed by %s: %s/SHA256SUMS.sig\n' "$SIGNING_KEY" "$DIST"
fi
printf '==> %s/SHA256SUMS\n' "$DIST"
cat "$DIST/SHA256SUMS"
