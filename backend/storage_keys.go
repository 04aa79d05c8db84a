package backend

// Every storage key and prefix the plugin writes. A prefix ends in "/" and
// keeps one entry per name under it. Add a new key here and to storageKeys
// below; whether it holds a secret decides its seal wrapping.
const (
	mountIDKey = "mount_id"

	storageKeyConfig           = "config"
	storageKeyGitCredential    = "config/git_credential"
	storageKeyVaultAccess      = "config/vault_access"
	storageKeySecretIDRotation = storageKeyVaultAccess + "_rotation"
	storagePrefixTrustedKey    = "config/trusted_pgp_public_key/"
	storagePrefixVaultRequest  = "config/vault_request/"
	storageKeyDockerEngine     = "config/docker_engine"

	watchStateKey     = "watch/state"
	lastSuccessfulKey = "watch/last_successful_commit"
	runsPrefix        = "runs/"
	runLogPrefix      = "runlog/"

	storageKeyPolicy        = "patch/policy"
	storageKeySigningKey    = "patch/signing_key"
	storagePrefixRepository = "patch/repository/"
)

// storageKey describes one key or prefix of the table.
type storageKey struct {
	key string
	// secret: the entry holds a password, private key, secret_id or token,
	// so it is seal wrapped where the Vault edition supports it.
	secret bool
}

var storageKeys = []storageKey{
	{mountIDKey, false},
	{storageKeyConfig, false},
	{storageKeyGitCredential, true},    // password or SSH key
	{storageKeyVaultAccess, true},      // secret_id
	{storageKeySecretIDRotation, true}, // the old and the new secret_id
	{storagePrefixTrustedKey, false},
	{storagePrefixVaultRequest, false},
	{storageKeyDockerEngine, true}, // the client key of the engine's mutual TLS
	{watchStateKey, false},
	{lastSuccessfulKey, false},
	{runsPrefix, false},
	{runLogPrefix, false}, // container output; commands must not print secrets
	{storageKeyPolicy, false},
	{storageKeySigningKey, true},    // the plugin's private signing key
	{storagePrefixRepository, true}, // each repository's password or SSH key
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
