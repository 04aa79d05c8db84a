package backend

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/patch"
)

// The identity the plugin commits and signs as.
const (
	pluginCommitterName  = "flant_gitops"
	pluginCommitterEmail = "flant_gitops@localhost"
)

// signingKeyEntry holds the plugin's commit signing key. The private part
// never leaves storage.
type signingKeyEntry struct {
	PrivateKey  string    `json:"private_key"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	// Previous are the public parts of the keys rotated away, oldest first:
	// the watch must still know their signatures as the plugin's.
	Previous []retiredSigningKey `json:"previous,omitempty"`
}

// retiredSigningKey is an earlier signing key, public part only.
type retiredSigningKey struct {
	PublicKey   string    `json:"public_key,omitempty"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	RetiredAt   time.Time `json:"retired_at"`
}

// pluginIdentity is the user ID of every key the plugin makes; a trusted key
// carrying it is treated as a plugin key even when this mount does not know
// it (a key rotated away before earlier keys were kept, another mount's key).
const pluginIdentity = pluginCommitterName + " <" + pluginCommitterEmail + ">"

// pluginKeyFingerprints are the keys whose signatures vouch only for the
// plugin's own change: this mount's signing key, current and earlier, and
// every trusted key with the plugin's user ID, whatever name it is stored
// under. It never generates a key.
func pluginKeyFingerprints(ctx context.Context, s logical.Storage, trusted []*trustedKeyEntry) ([]string, error) {
	e, err := getEntry[signingKeyEntry](ctx, s, storageKeySigningKey)
	if err != nil {
		return nil, err
	}
	var out []string
	if e != nil {
		out = append(out, e.Fingerprint)
		for _, p := range e.Previous {
			out = append(out, p.Fingerprint)
		}
	}
	for _, k := range trusted {
		if slices.Contains(k.UserIDs, pluginIdentity) {
			out = append(out, k.Fingerprint)
		}
	}
	return out, nil
}

func pathSigningKey(ps *patchState) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "configure/signing_key$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "flant-gitops",
				OperationSuffix: "signing-key",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:                    ps.pathSigningKeyRead,
					Responses:                   okWith(signingKeyResponseFields()),
					Summary:                     "Read the public part of the plugin's commit signing key, generating the key on first use.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathSigningKeyHelpSyn,
			HelpDescription: pathSigningKeyHelpDesc,
		},
		{
			Pattern: "configure/signing_key/rotate$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "flant-gitops",
				OperationVerb:   "rotate",
				OperationSuffix: "signing-key",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    ps.pathSigningKeyRotate,
					Responses:                   okWith(signingKeyResponseFields()),
					Summary:                     "Replace the commit signing key with a new one.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathSigningKeyRotateHelpSyn,
			HelpDescription: pathSigningKeyRotateHelpDesc,
		},
	}
}

func (ps *patchState) pathSigningKeyRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	k, e, err := ps.signingKey(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return signingKeyResponse(k, e)
}

func (ps *patchState) pathSigningKeyRotate(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ps.keyMu.Lock()
	defer ps.keyMu.Unlock()
	old, err := getEntry[signingKeyEntry](ctx, req.Storage, storageKeySigningKey)
	if err != nil {
		return nil, err
	}
	var previous []retiredSigningKey
	if old != nil {
		previous = append(previous, old.Previous...)
		r := retiredSigningKey{Fingerprint: old.Fingerprint, CreatedAt: old.CreatedAt, RetiredAt: time.Now().UTC()}
		// An unreadable old key still leaves its fingerprint, which is what
		// the watch needs.
		if k, err := patch.ParseSigningKey([]byte(old.PrivateKey)); err == nil {
			if pub, err := k.ArmoredPublic(); err == nil {
				r.PublicKey = string(pub)
			}
		}
		previous = append(previous, r)
	}
	k, e, err := generateSigningKey(ctx, req.Storage, previous)
	if err != nil {
		return nil, err
	}
	ps.key, ps.keyFingerprint = k, e.Fingerprint
	return signingKeyResponse(k, e)
}

func signingKeyResponse(k *patch.SigningKey, e *signingKeyEntry) (*logical.Response, error) {
	pub, err := k.ArmoredPublic()
	if err != nil {
		return nil, err
	}
	previous := make([]map[string]any, 0, len(e.Previous))
	for _, p := range e.Previous {
		previous = append(previous, map[string]any{
			"public_key":  p.PublicKey,
			"fingerprint": p.Fingerprint,
			"created_at":  p.CreatedAt.Format(time.RFC3339),
			"retired_at":  p.RetiredAt.Format(time.RFC3339),
		})
	}
	return &logical.Response{Data: map[string]any{
		"public_key":    string(pub),
		"fingerprint":   e.Fingerprint,
		"created_at":    e.CreatedAt.Format(time.RFC3339),
		"previous_keys": previous,
	}}, nil
}

// signingKey returns the current key, generating it on first need. The key
// is read from storage on every call (cheap) so that a rotation made through
// another node is picked up; parsing is skipped while the fingerprint is the
// cached one.
func (ps *patchState) signingKey(ctx context.Context, s logical.Storage) (*patch.SigningKey, *signingKeyEntry, error) {
	ps.keyMu.Lock()
	defer ps.keyMu.Unlock()
	e, err := getEntry[signingKeyEntry](ctx, s, storageKeySigningKey)
	if err != nil {
		return nil, nil, err
	}
	if e == nil {
		k, e, err := generateSigningKey(ctx, s, nil)
		if err != nil {
			return nil, nil, err
		}
		ps.key, ps.keyFingerprint = k, e.Fingerprint
		return k, e, nil
	}
	if ps.key != nil && ps.keyFingerprint == e.Fingerprint {
		return ps.key, e, nil
	}
	k, err := patch.ParseSigningKey([]byte(e.PrivateKey))
	if err != nil {
		return nil, nil, fmt.Errorf("the stored commit signing key is unusable; rotate it with `vault write -f flant_gitops/configure/signing_key/rotate`: %w", err)
	}
	ps.key, ps.keyFingerprint = k, e.Fingerprint
	return k, e, nil
}

func generateSigningKey(ctx context.Context, s logical.Storage, previous []retiredSigningKey) (*patch.SigningKey, *signingKeyEntry, error) {
	now := time.Now().UTC()
	k, err := patch.GenerateSigningKey(pluginCommitterName, pluginCommitterEmail, now)
	if err != nil {
		return nil, nil, err
	}
	priv, err := k.ArmoredPrivate()
	if err != nil {
		return nil, nil, err
	}
	e := &signingKeyEntry{PrivateKey: string(priv), Fingerprint: k.Fingerprint(), CreatedAt: now, Previous: previous}
	if err := putEntry(ctx, s, storageKeySigningKey, e); err != nil {
		return nil, nil, err
	}
	return k, e, nil
}

const pathSigningKeyHelpSyn = `The public part of the PGP key the plugin signs its commits with.`

const pathSigningKeyHelpDesc = `
The plugin makes its own PGP key (EdDSA, Curve25519) the first time it is
needed and keeps the private part in Vault storage only. Reading this path
returns the armored public_key and its fingerprint.

The plugin signs whatever tip it builds on, so its signature vouches only for
the change it made. Trusted in the watcher, it counts as one verified signature
only on a commit with one parent that is itself accepted: the last successful
commit, a commit signed by the quorum of trusted persons (commit or notes), or
a plugin commit accepted by this same rule (at most 256 in a row); never on a
merge. The watcher knows this key, and every earlier one listed in
previous_keys, as the plugin's under whatever name it is trusted:

  vault read -field=public_key flant_gitops/configure/signing_key > plugin.asc
  vault write flant_gitops/configure/trusted_pgp_public_key/patch-path public_key=@plugin.asc

For branches that others verify by HEAD alone with this key, set
require_trusted_tip=true on configure/repository/NAME.

Verify a commit with git:

  gpg --import plugin.asc && git verify-commit <sha>
`

const pathSigningKeyRotateHelpSyn = `Replace the commit signing key with a new one.`

const pathSigningKeyRotateHelpDesc = `
Generates a new key and answers its public part. Commits made from now on are
signed with it; update the watcher's trusted key (and anyone verifying with
git) with the new public key. The old private key is discarded; its public
part is kept in previous_keys of configure/signing_key, so the watcher still
counts its signatures as the plugin's (only on top of accepted history).
`
