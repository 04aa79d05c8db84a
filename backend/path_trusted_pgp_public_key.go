package backend

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch"
)

func pathTrustedPGPPublicKey(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "configure/trusted_pgp_public_key/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "flant-gitops",
				OperationSuffix: "trusted-pgp-public-keys",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  b.pathTrustedKeyList,
					Responses: listOK(""),
					Summary:   "List the names of the trusted PGP public keys.",
				},
			},
			HelpSynopsis:    pathTrustedKeyListHelpSyn,
			HelpDescription: pathTrustedKeyHelpDesc,
		},
		{
			// NAME is matched broadly so that a bad name gets a 400 that
			// says what is allowed instead of a bare 404.
			Pattern: "configure/trusted_pgp_public_key/(?P<name>.+)",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "flant-gitops",
				OperationSuffix: "trusted-pgp-public-key",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the trusted key: letters, digits, '_', '.' or '-'.",
				},
				"public_key": {
					Type:        framework.TypeString,
					Description: "The armored public key, as `gpg --armor --export KEYID` prints it (exactly one key; private keys are refused).",
				},
			},
			ExistenceCheck: b.trustedKeyExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathTrustedKeyRead,
					Responses: okWith(trustedKeyResponseFields()),
					Summary:   "Show the key with its fingerprint and user IDs.",
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathTrustedKeyWrite,
					Responses:                   okWith(trustedKeyResponseFields()),
					Summary:                     "Trust a PGP public key.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathTrustedKeyWrite,
					Responses:                   okWith(trustedKeyResponseFields()),
					Summary:                     "Replace a trusted PGP public key.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathTrustedKeyDelete,
					Responses:                   noContent(),
					Summary:                     "Stop trusting a PGP public key.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathTrustedKeyHelpSyn,
			HelpDescription: pathTrustedKeyHelpDesc,
		},
	}
}

func (b *backend) trustedKeyExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName("trusted_pgp_public_key", name) != nil {
		return false, nil
	}
	k, err := getTrustedKey(ctx, req.Storage, name)
	return k != nil, err
}

func (b *backend) pathTrustedKeyList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, storagePrefixTrustedKey)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathTrustedKeyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("trusted_pgp_public_key", name); err != nil {
		return respondErr(err)
	}
	k, err := getTrustedKey(ctx, req.Storage, name)
	if err != nil || k == nil {
		return nil, err
	}
	return &logical.Response{Data: trustedKeyResponse(k, time.Now())}, nil
}

// trustedKeyResponse is the allow-list of what a read shows; the armored
// key is public, so showing it lets operators compare it with the source.
func trustedKeyResponse(k *trustedKeyEntry, now time.Time) map[string]any {
	data := map[string]any{
		"name":        k.Name,
		"fingerprint": k.Fingerprint,
		"user_ids":    k.UserIDs,
		"created":     k.Created.UTC().Format(time.RFC3339),
		"expires":     "",
		"revoked":     k.Revoked,
		"usable":      k.usableAt(now),
		"problem":     k.problemAt(now),
		"public_key":  k.PublicKey,
	}
	if k.Expires != nil {
		data["expires"] = k.Expires.UTC().Format(time.RFC3339)
	}
	return data
}

func (b *backend) pathTrustedKeyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("trusted_pgp_public_key", name); err != nil {
		return respondErr(err)
	}
	armored, ok := d.GetOk("public_key")
	if !ok {
		return respondErr(invalidf("public_key is missing: give the armored key, e.g. public_key=@key.asc (from `gpg --armor --export KEYID > key.asc`)"))
	}
	info, err := gitwatch.ParseKey(armored.(string))
	if err != nil {
		return respondErr(invalidf("public_key is not a valid PGP public key: %v", err))
	}
	entry := &trustedKeyEntry{
		Name:        name,
		PublicKey:   armored.(string),
		Fingerprint: info.Fingerprint,
		UserIDs:     info.UserIDs,
		Created:     info.Created,
		Expires:     info.Expires,
		Revoked:     info.Revoked,
	}

	b.configMu.Lock()
	defer b.configMu.Unlock()
	keys, err := listTrustedKeys(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.Name != name && k.Fingerprint == entry.Fingerprint {
			return respondErr(invalidf("public_key with fingerprint %s is already trusted as %q: a key counts once towards the quorum, so delete or reuse that name instead", entry.Fingerprint, k.Name))
		}
	}
	if err := putEntry(ctx, req.Storage, storagePrefixTrustedKey+name, entry); err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: trustedKeyResponse(entry, time.Now())}
	if !entry.usableAt(time.Now()) {
		resp.AddWarning("this key is expired or revoked: it is stored but counts zero towards required_number_of_verified_signatures_on_commit")
	}
	return resp, nil
}

func (b *backend) pathTrustedKeyDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("trusted_pgp_public_key", name); err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	if err := deleteEntry(ctx, req.Storage, storagePrefixTrustedKey+name); err != nil {
		return nil, err
	}
	msg, err := quorumProblem(ctx, req.Storage)
	if err != nil || msg == "" {
		return nil, err
	}
	resp := &logical.Response{}
	resp.AddWarning(msg)
	return resp, nil
}

const pathTrustedKeyListHelpSyn = `List the trusted PGP public keys.`

const pathTrustedKeyHelpSyn = `A PGP public key whose signatures count towards the commit quorum.`

const pathTrustedKeyHelpDesc = `
Each trusted key counts at most once, by its primary-key fingerprint, towards
required_number_of_verified_signatures_on_commit of flant_gitops/configure.
Signatures count whether they are the commit's own (git commit -S) or
trdl-style git notes. Expired and revoked keys count zero, and so do RSA, DSA
and ElGamal keys (primary or signing subkey) under 2048 bits: a write refuses
them, and one stored before that rule shows usable=false with its problem here
and in trusted_key_problems of flant_gitops/status.

A write validates the armored key (exactly one public key, no private
material) and answers its fingerprint and user IDs; a read shows them too.

Examples:

  gpg --armor --export alice@example.com > alice.asc
  vault write flant_gitops/configure/trusted_pgp_public_key/alice public_key=@alice.asc
  vault list  flant_gitops/configure/trusted_pgp_public_key
  vault read  flant_gitops/configure/trusted_pgp_public_key/alice
`
