package backend

import (
	"context"
	"errors"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathGitCredential(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "configure/git_credential$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "flant-gitops",
			OperationSuffix: "git-credential",
		},
		Fields: map[string]*framework.FieldSchema{
			"username": {
				Type:        framework.TypeString,
				Description: "User name for HTTP(S) basic authentication (for GitLab tokens any non-empty name, e.g. oauth2). Given together with password.",
			},
			"password": {
				Type:         framework.TypeString,
				Description:  "Password or access token for HTTP(S) basic authentication. Write-only: never returned.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"ssh_private_key": {
				Type:         framework.TypeString,
				Description:  "Unencrypted SSH private key in PEM/OpenSSH form for ssh:// repositories; needs known_hosts. Write-only: never returned.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"known_hosts": {
				Type:        framework.TypeString,
				Description: "known_hosts lines (as ssh-keyscan prints them) that the SSH server's host key must match. Required with ssh_private_key.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathGitCredentialWrite,
				Responses:                   noContent(),
				Summary:                     "Set the credential used to fetch the repository, replacing the previous one.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathGitCredentialDelete,
				Responses:                   noContent(),
				Summary:                     "Remove the credential; the repository is fetched anonymously.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathGitCredentialHelpSyn,
		HelpDescription: pathGitCredentialHelpDesc,
	}}
}

func (b *backend) pathGitCredentialWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cred, err := gitCredentialFromFields(d)
	if err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	// The credential is for the repository configured now; without
	// configure it is bound by configure's first write.
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		cred.GitRepoURL = cfg.GitRepoURL
	}
	return nil, putEntry(ctx, req.Storage, storageKeyGitCredential, cred)
}

// gitCredentialFromFields validates a complete credential: a write
// replaces the previous credential as a whole, so a half-changed pair can
// never be stored.
func gitCredentialFromFields(d *framework.FieldData) (*gitCredentialEntry, error) {
	c, err := newGitCredential(d.Get("username").(string), d.Get("password").(string), d.Get("ssh_private_key").(string), d.Get("known_hosts").(string))
	if errors.Is(err, errNoCredential) {
		return nil, invalidf("no credential given: write username and password for HTTPS, or ssh_private_key and known_hosts for SSH; to fetch anonymously delete this path instead")
	}
	if err != nil {
		return nil, err
	}
	return &gitCredentialEntry{gitCredential: c}, nil
}

func (b *backend) pathGitCredentialDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	defer b.configMu.Unlock()
	return nil, deleteEntry(ctx, req.Storage, storageKeyGitCredential)
}

const pathGitCredentialHelpSyn = `Write-only credential for fetching the watched repository.`

const pathGitCredentialHelpDesc = `
The credential the plugin uses to fetch git_repo_url: either username and
password (or access token) for https:// and http:// URLs, or an unencrypted
SSH private key with the server's known_hosts lines for ssh:// URLs.

This path cannot be read: the credential never leaves Vault's storage. A write
replaces the whole credential; delete it to fetch anonymously. The credential
is bound to the git_repo_url of configure when it is written (or to the first
one written, if configure does not exist yet) and is never sent to another
URL: to move to another repository, delete it, change git_repo_url, and write
it again.

Examples:

  vault write flant_gitops/configure/git_credential username=oauth2 password=glpat-XXXX
  vault write flant_gitops/configure/git_credential \
      ssh_private_key=@deploy_key known_hosts="$(ssh-keyscan gitlab.example.com)"
`
