# flant_gitops: Vault secrets-engine plugin. `make` builds the plugin,
# `make test` runs everything, `make enable` starts a dev Vault with the plugin.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go

PLUGIN := flant_gitops
# The version linked into the plugin and used to register it must agree, so
# both come from backend/version.go unless VERSION is given.
VERSION ?= $(shell sed -n 's/^var Version = "\(.*\)"/\1/p' backend/version.go)
LDFLAGS := -X github.com/flant/flant_gitops/backend.Version=$(VERSION)

# Extra flags for `go test`, e.g. TESTFLAGS='-run TestX -v'.
TESTFLAGS ?=
FUZZTIME ?= 5s

.PHONY: all build vault-binary test vet unit fuzz enable stop bench clean release release-check

all: build

build: bin/$(PLUGIN) bin/$(PLUGIN)-patch bin/$(PLUGIN)-sign bin/git-flant-sign

# Always handed to `go build`, which knows best whether anything changed.
# Static (no cgo): the same binary is the init of every run's container,
# whatever the image's libc.
.PHONY: bin/$(PLUGIN)
bin/$(PLUGIN):
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$(PLUGIN)

# The CI client: static (no cgo), stripped, for jobs to download.
.PHONY: bin/$(PLUGIN)-patch
bin/$(PLUGIN)-patch:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ ./cmd/$(PLUGIN)-patch

# The signer's tool: static (no cgo), stripped, like the CI client; as
# git-flant-sign on PATH it is also `git flant-sign` (README "Signing").
.PHONY: bin/$(PLUGIN)-sign
bin/$(PLUGIN)-sign:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ ./cmd/$(PLUGIN)-sign

bin/git-flant-sign: bin/$(PLUGIN)-sign
	cp -f $< $@

# The release into dist/: the three commands for linux and darwin on amd64 and
# arm64, plain and zipped, SHA256SUMS and, with SIGNING_KEY=<gpg key id>, its
# detached signature SHA256SUMS.sig. Reproducible: README "Install" says how
# to check a release against its tag. VERSION must be given (vX.Y.Z).
release:
	@[ -n "$(filter command line environment,$(origin VERSION))" ] || { echo "make release: give the version: make release VERSION=v1.2.3" >&2; exit 2; }
	VERSION=$(VERSION) SIGNING_KEY=$(SIGNING_KEY) scripts/release.sh

# Builds the release twice, from copies of HEAD at two different paths with
# two build caches, and compares every file (16 builds: minutes, not part of
# `make test`; scripts/release_test.go checks one target there).
release-check:
	scripts/release-check.sh

# A real Vault for tests and `make enable`, from the pinned module (about 8
# minutes and 4 GB of module cache when cold).
bin/vault: scripts/vaultbin/go.mod scripts/vaultbin/go.sum scripts/vaultbin/main.go
	@mkdir -p bin
	cd scripts/vaultbin && $(GO) build -o ../../bin/vault.tmp . && mv ../../bin/vault.tmp ../../bin/vault

# What the tests and `make enable` use: $$VAULT_BINARY, bin/vault or vault on
# PATH; only when there is none is bin/vault built.
vault-binary:
	@if [ -n "$${VAULT_BINARY:-}" ] || [ -x bin/vault ] || command -v vault >/dev/null; then :; \
	else $(MAKE) bin/vault; fi

vet:
	$(GO) vet ./...

# Packages run two at a time (GOMAXPROCS on this kind of machine); each
# real-Vault test starts its own server on a free port, so they do not clash.
unit:
	$(GO) test ./... -count=1 -timeout 60m $(TESTFLAGS)

fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz-smoke.sh

test: build vault-binary vet unit fuzz

# The needs check runs before anything is built, so a fresh machine hears
# everything it lacks in one message.
enable:
	scripts/dev-enable.sh --check
	$(MAKE) build vault-binary
	VERSION=$(VERSION) scripts/dev-enable.sh

stop:
	scripts/dev-stop.sh

bench:
	@if [ -x scripts/bench ]; then scripts/bench; \
	elif [ -f scripts/bench.sh ]; then bash scripts/bench.sh; \
	else $(GO) test ./... -run '^$$' -bench . -benchtime 1x; fi

clean:
	rm -rf bin/$(PLUGIN) bin/$(PLUGIN)-patch bin/$(PLUGIN)-sign bin/git-flant-sign .cache dist
