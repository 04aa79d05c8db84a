package backend

import (
	"github.com/flant/flant_gitops/backend/approle"
	"github.com/flant/flant_gitops/backend/events/notify"
	"github.com/flant/flant_gitops/backend/watch"
)

// Every storage key and prefix the plugin writes. A prefix ends in "/" and
// keeps one entry per name under it. Add a new key here and to storageKeys
// below; whether it holds a secret decides its seal wrapping. The watch
// worker's keys (watch/state, watch/last_successful_commit, runs/, runlog/)
// are its own, listed by watch.StorageKeys; the AppRole client's
// (config/vault_access_rotation) by approle.StorageKeys.
const (
	mountIDKey = "mount_id"
	// storageKeyFormat ("storage_format") is in storage_format.go.

	storageKeyConfig          = "config"
	storageKeyGitCredential   = "config/git_credential"
	storageKeyVaultAccess     = "config/vault_access"
	storagePrefixTrustedKey   = "config/trusted_pgp_public_key/"
	storagePrefixVaultRequest = "config/vault_request/"
	storageKeyDockerEngine    = "config/docker_engine"
	storageKeyCommitStatus    = "config/commit_status"
	storagePrefixReceiver     = "config/receiver/"
	// One notification endpoint each: URL, events, signing secrets.
	storagePrefixNotification = "config/notification/"

	// The commit statuses waiting to be sent (commit_status.go).
	storageKeyCommitStatusOutbox = "commit_status/outbox"
	storagePrefixSigner          = "config/signer/"
	// storagePrefixSignatureRule keeps the path rules (configure/signature_rule).
	storagePrefixSignatureRule = "config/signature_rule/"

	// The receivers' last deliveries.
	storagePrefixReceiverDelivery = "receiver_delivery/"

	storageKeyPolicy        = "patch/policy"
	storageKeySigningKey    = "patch/signing_key"
	storagePrefixRepository = "patch/repository/"
	// storagePrefixIdempotency keeps one record per caller digest and key:
	// patch/idempotency/<caller>/<key digest> (patch_idempotency.go).
	storagePrefixIdempotency = "patch/idempotency/"
)

// storageKey describes one key or prefix of the table.
type storageKey struct {
	key string
	// secret: the entry holds a password, private key, secret_id or token,
	// so it is seal wrapped where the Vault edition supports it.
	secret bool
}

var storageKeys = append([]storageKey{
	{mountIDKey, false},
	{storageKeyFormat, false},
	{storageKeyConfig, false},
	{storageKeyGitCredential, true}, // password or SSH key
	{storageKeyVaultAccess, true},   // secret_id
	{storagePrefixTrustedKey, false},
	{storagePrefixSigner, false}, // public keys only
	{storagePrefixSignatureRule, false},
	{storagePrefixVaultRequest, false},
	{storageKeyDockerEngine, true}, // the client key of the engine's mutual TLS
	{storageKeyCommitStatus, true}, // the forge token
	// Digests of the receivers' ids and tokens: 256 random bits each, so a
	// digest gives nothing to replay; wrapped all the same.
	{storagePrefixReceiver, true},
	{storagePrefixReceiverDelivery, false},
	{storagePrefixNotification, true},     // the signing secrets
	{storageKeyCommitStatusOutbox, false}, // statuses: commit, state, context, description, link
	{storageKeyPolicy, false},
	{storageKeySigningKey, true},      // the plugin's private signing key
	{storagePrefixRepository, true},   // each repository's password or SSH key
	{storagePrefixIdempotency, false}, // commit SHAs, paths and digests only
}, append(append(watchKeys(), approleKeys()...), notifyKeys()...)...)

// notifyKeys are the notifier's: pending notification bodies (allow-listed
// event fields), delivery counters and the refusals told; none a secret.
func notifyKeys() []storageKey {
	var out []storageKey
	for _, k := range notify.StorageKeys() {
		out = append(out, storageKey{k, false})
	}
	return out
}

// watchKeys are the worker's: state, runs and run logs (container output;
// commands must not print secrets), none a secret.
func watchKeys() []storageKey {
	var out []storageKey
	for _, k := range watch.StorageKeys() {
		out = append(out, storageKey{k, false})
	}
	return out
}

// approleKeys are the AppRole client's: the secret_id rotation record,
// which holds the old and the new secret_id.
func approleKeys() []storageKey {
	var out []storageKey
	for _, k := range approle.StorageKeys() {
		out = append(out, storageKey{k, true})
	}
	return out
}

// sealWrapStorage lists every storage entry that holds a secret. Vault
// matches an entry exactly unless it ends in "/", which makes it a prefix.
func sealWrapStorage() []string {
	var paths []string
	for _, k := range storageKeys {
		if k.secret {
			paths = append(paths, k.key)
		}
	}
	return paths
}
