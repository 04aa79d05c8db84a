package backend

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch"
)

// configEntry is the main configuration written at flant_gitops/configure.
type configEntry struct {
	GitRepoURL                  string        `json:"git_repo_url"`
	GitBranchName               string        `json:"git_branch_name"`
	GitPollPeriod               time.Duration `json:"git_poll_period"`
	RequiredSignatures          int           `json:"required_number_of_verified_signatures_on_commit"`
	InitialLastSuccessfulCommit string        `json:"initial_last_successful_commit,omitempty"`
	DockerImage                 string        `json:"docker_image"`
	Commands                    []string      `json:"commands"`
	RunTimeout                  time.Duration `json:"run_timeout"`
	// MemoryLimit is the operator's text ("512m"); MemoryLimitBytes its
	// value. Zero means no limit.
	MemoryLimit      string `json:"memory_limit,omitempty"`
	MemoryLimitBytes int64  `json:"memory_limit_bytes,omitempty"`
	// CPULimit is the normalised text ("1.5"); NanoCPUs what Docker takes.
	// Zero means no limit.
	CPULimit    string `json:"cpu_limit,omitempty"`
	NanoCPUs    int64  `json:"nano_cpus,omitempty"`
	NetworkMode string `json:"network_mode"`
}

// gitCredentialEntry authenticates fetches of git_repo_url. Either the
// username/password pair or the SSH key (with known_hosts) is set.
type gitCredentialEntry struct {
	gitCredential
	// GitRepoURL is the git_repo_url the credential was written for; it is
	// never sent to another. Empty until configure is first written.
	GitRepoURL string `json:"git_repo_url,omitempty"`
}

// trustedKeyEntry is one trusted PGP public key with the facts read from it
// when it was written.
type trustedKeyEntry struct {
	Name        string     `json:"name"`
	PublicKey   string     `json:"public_key"`
	Fingerprint string     `json:"fingerprint"`
	UserIDs     []string   `json:"user_ids"`
	Created     time.Time  `json:"created"`
	Expires     *time.Time `json:"expires,omitempty"`
	Revoked     bool       `json:"revoked"`
}

// usableAt reports whether the key can count towards the signature quorum
// at time now: expired, revoked and weak keys count zero.
func (k *trustedKeyEntry) usableAt(now time.Time) bool {
	return k.problemAt(now) == ""
}

// problemAt says why the key counts zero at time now, "" when it counts.
// The key is checked again, so a key stored before a rule was added (for
// example RSA under 2048 bits) is reported too.
func (k *trustedKeyEntry) problemAt(now time.Time) string {
	switch {
	case k.Revoked:
		return "the key is revoked"
	case k.Expires != nil && !now.Before(*k.Expires):
		return "the key expired at " + k.Expires.UTC().Format(time.RFC3339)
	}
	if _, err := gitwatch.ParseKey(k.PublicKey); err != nil {
		return "the key is not usable: " + err.Error()
	}
	return ""
}

// vaultAccessEntry is how the plugin logs in to the target Vault with
// AppRole to make the configured vault requests.
type vaultAccessEntry struct {
	VaultAddr          string        `json:"vault_addr"`
	VaultTLSServerName string        `json:"vault_tls_server_name,omitempty"`
	VaultCACert        string        `json:"vault_cacert,omitempty"`
	ApproleMountPoint  string        `json:"approle_mount_point"`
	RoleName           string        `json:"role_name"`
	RoleID             string        `json:"role_id"`
	SecretID           string        `json:"secret_id"`
	SecretIDTTL        time.Duration `json:"secret_id_ttl"`
	// SecretIDIssuedAt is when the current secret_id was written (by the
	// operator or by rotation); with SecretIDTTL it tells when it expires.
	SecretIDIssuedAt time.Time `json:"secret_id_issued_at"`
}

// secretIDExpiresAt is when the current secret_id stops working; the zero
// time when it does not expire.
func (v *vaultAccessEntry) secretIDExpiresAt() time.Time {
	if v.SecretIDTTL <= 0 {
		return time.Time{}
	}
	return v.SecretIDIssuedAt.Add(v.SecretIDTTL)
}

// vaultRequestEntry is one request made, wrapped, before each run.
type vaultRequestEntry struct {
	Name    string         `json:"name"`
	Path    string         `json:"path"`
	Method  string         `json:"method"`
	Options map[string]any `json:"options,omitempty"`
	WrapTTL time.Duration  `json:"wrap_ttl"`
	// EnvVar is VAULT_REQUEST_TOKEN_<NAME>, derived from Name.
	EnvVar string `json:"env_var"`
}

// getEntry reads one JSON entry; nil without error when it does not exist.
func getEntry[T any](ctx context.Context, s logical.Storage, key string) (*T, error) {
	raw, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %q from storage: %w", key, err)
	}
	if raw == nil {
		return nil, nil
	}
	v := new(T)
	if err := raw.DecodeJSON(v); err != nil {
		return nil, fmt.Errorf("decode %q from storage: %w", key, err)
	}
	return v, nil
}

func putEntry(ctx context.Context, s logical.Storage, key string, v any) error {
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		return fmt.Errorf("encode %q for storage: %w", key, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("write %q to storage: %w", key, err)
	}
	return nil
}

func deleteEntry(ctx context.Context, s logical.Storage, key string) error {
	if err := s.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete %q from storage: %w", key, err)
	}
	return nil
}

// listEntries reads every entry under prefix, sorted by name.
func listEntries[T any](ctx context.Context, s logical.Storage, prefix string) ([]*T, error) {
	names, err := s.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list %q in storage: %w", prefix, err)
	}
	sort.Strings(names)
	out := make([]*T, 0, len(names))
	for _, name := range names {
		if strings.HasSuffix(name, "/") {
			continue
		}
		v, err := getEntry[T](ctx, s, prefix+name)
		if err != nil {
			return nil, err
		}
		if v != nil {
			out = append(out, v)
		}
	}
	return out, nil
}

// getConfig returns the main configuration, nil when not configured yet.
func getConfig(ctx context.Context, s logical.Storage) (*configEntry, error) {
	return getEntry[configEntry](ctx, s, storageKeyConfig)
}

// getGitCredential returns the git credential, nil when none is set
// (anonymous fetch).
func getGitCredential(ctx context.Context, s logical.Storage) (*gitCredentialEntry, error) {
	return getEntry[gitCredentialEntry](ctx, s, storageKeyGitCredential)
}

// getTrustedKey returns one trusted key, nil when NAME is unknown.
func getTrustedKey(ctx context.Context, s logical.Storage, name string) (*trustedKeyEntry, error) {
	return getEntry[trustedKeyEntry](ctx, s, storagePrefixTrustedKey+name)
}

// listTrustedKeys returns all trusted keys sorted by name.
func listTrustedKeys(ctx context.Context, s logical.Storage) ([]*trustedKeyEntry, error) {
	return listEntries[trustedKeyEntry](ctx, s, storagePrefixTrustedKey)
}

// getVaultAccess returns the AppRole access to the target Vault, nil when
// not configured.
func getVaultAccess(ctx context.Context, s logical.Storage) (*vaultAccessEntry, error) {
	return getEntry[vaultAccessEntry](ctx, s, storageKeyVaultAccess)
}

// putVaultAccess stores the access entry; the AppRole client writes its
// rotated secret_id through approleStore.SetSecretID.
func putVaultAccess(ctx context.Context, s logical.Storage, v *vaultAccessEntry) error {
	return putEntry(ctx, s, storageKeyVaultAccess, v)
}

// getVaultRequest returns one vault request, nil when NAME is unknown.
func getVaultRequest(ctx context.Context, s logical.Storage, name string) (*vaultRequestEntry, error) {
	return getEntry[vaultRequestEntry](ctx, s, storagePrefixVaultRequest+name)
}

// listVaultRequests returns all vault requests sorted by name.
func listVaultRequests(ctx context.Context, s logical.Storage) ([]*vaultRequestEntry, error) {
	return listEntries[vaultRequestEntry](ctx, s, storagePrefixVaultRequest)
}

// quorumProblem explains why no commit can currently be accepted because
// the quorum asks for more signers than there are usable trusted signers.
// It returns "" when the quorum is reachable or nothing is configured.
func quorumProblem(ctx context.Context, s logical.Storage) (string, error) {
	cfg, err := getConfig(ctx, s)
	if err != nil || cfg == nil || cfg.RequiredSignatures == 0 {
		return "", err
	}
	keys, err := listTrustedKeys(ctx, s)
	if err != nil {
		return "", err
	}
	signers, err := listSigners(ctx, s)
	if err != nil {
		return "", err
	}
	return quorumMessage(cfg.RequiredSignatures, keys, signers, time.Now()), nil
}

// quorumMessage counts signers, not keys: a configure/signer with several
// keys is one, each trusted_pgp_public_key of its own another.
func quorumMessage(required int, keys []*trustedKeyEntry, signers []*signerEntry, now time.Time) string {
	usable, unusableN := usableSigners(keys, signers, now)
	if required <= usable {
		return ""
	}
	unusable := ""
	if unusableN > 0 {
		unusable = fmt.Sprintf(" (%d more with only expired, revoked or too weak keys; see trusted_key_problems in flant_gitops/status)", unusableN)
	}
	return fmt.Sprintf("required_number_of_verified_signatures_on_commit is %d but only %d usable trusted signer(s) are configured%s, so no commit can be accepted: "+
		"add signers with `vault write flant_gitops/configure/signer/NAME pgp_public_keys=@key.asc` (or keys with `vault write flant_gitops/configure/trusted_pgp_public_key/NAME public_key=@key.asc`) "+
		"or lower the quorum with `vault write flant_gitops/configure required_number_of_verified_signatures_on_commit=%d`",
		required, usable, unusable, usable)
}
