package backend

import (
	"context"
	"errors"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/patch"
)

// Defaults of a patch target when the operator gives none.
const (
	defaultPatchBranch        = "main"
	defaultPatchCommitMessage = "Automated update through flant_gitops"
	// Without a default author, commits are authored by the plugin itself.
	defaultPatchAuthorName  = pluginCommitterName
	defaultPatchAuthorEmail = pluginCommitterEmail
)

// repositoryEntry is one patch target written at configure/repository/NAME.
type repositoryEntry struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	Branch string `json:"branch"`
	gitCredential
	DefaultCommitMessage string `json:"default_commit_message"`
	DefaultAuthorName    string `json:"default_author_name"`
	DefaultAuthorEmail   string `json:"default_author_email"`
	SignCommits          bool   `json:"sign_commits"`
	// RequireTrustedTip refuses a patch on a tip the watch's rule does not
	// accept (see patch_trusted_tip.go).
	RequireTrustedTip bool `json:"require_trusted_tip,omitempty"`
}

func (r *repositoryEntry) credentialType() string {
	switch {
	case r.SSHPrivateKey != "":
		return "ssh_private_key"
	case r.Username != "" || r.Password != "":
		return "password"
	}
	return "none"
}

func getRepository(ctx context.Context, s logical.Storage, name string) (*repositoryEntry, error) {
	return getEntry[repositoryEntry](ctx, s, storagePrefixRepository+name)
}

func pathRepository(ps *patchState) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "configure/repository/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "flant-gitops",
				OperationSuffix: "repositories",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  ps.pathRepositoryList,
					Responses: listOK(""),
					Summary:   "List the repositories the patch path can write to.",
				},
			},
			HelpSynopsis:    pathRepositoryListHelpSyn,
			HelpDescription: pathRepositoryListHelpDesc,
		},
		{
			Pattern: "configure/repository/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "flant-gitops",
				OperationSuffix: "repository",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the patch target; CI writes to flant_gitops/patch/NAME.",
					Required:    true,
				},
				"url": {
					Type:        framework.TypeString,
					Description: "Repository URL: https://host/path.git, http://host/path.git, ssh://git@host/path.git or git@host:path.git. Credentials do not belong in the URL.",
				},
				"branch": {
					Type:        framework.TypeString,
					Description: "Branch the patches are committed to. Default main.",
					Default:     defaultPatchBranch,
				},
				"username": {
					Type:        framework.TypeString,
					Description: "User name for HTTP(S) basic authentication (GitLab accepts any non-empty name with an access token). Given together with password. Write-only.",
				},
				"password": {
					Type:         framework.TypeString,
					Description:  "Password or access token (scopes read_repository and write_repository) for HTTP(S) basic authentication. Write-only: never returned.",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				"ssh_private_key": {
					Type:         framework.TypeString,
					Description:  "Unencrypted SSH private key for ssh URLs; needs known_hosts. Write-only: never returned.",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				"known_hosts": {
					Type:        framework.TypeString,
					Description: "known_hosts lines (as ssh-keyscan prints them) the SSH server's host key must match. Required with ssh_private_key. Write-only.",
				},
				"default_commit_message": {
					Type:        framework.TypeString,
					Description: "Commit message used when a patch request gives none. Default \"Automated update through flant_gitops\".",
					Default:     defaultPatchCommitMessage,
				},
				"default_author_name": {
					Type:        framework.TypeString,
					Description: "Commit author name used when a patch request gives none. Default flant_gitops.",
					Default:     defaultPatchAuthorName,
				},
				"default_author_email": {
					Type:        framework.TypeString,
					Description: "Commit author email used when a patch request gives none. Default flant_gitops@localhost.",
					Default:     defaultPatchAuthorEmail,
				},
				"sign_commits": {
					Type:        framework.TypeBool,
					Description: "Sign every commit with the plugin's key (see configure/signing_key). Default true; turn off only if the branch's consumers do not verify signatures.",
					Default:     true,
				},
				"require_trusted_tip": {
					Type: framework.TypeBool,
					Description: "Refuse (409, nothing pushed) a patch whose branch tip is not accepted: signed by the quorum of the mount's trusted keys " +
						"(required_number_of_verified_signatures_on_commit, at least 1), the watch's last successful commit, or a run of the plugin's own commits on one of those. " +
						"For branches that others verify by their HEAD alone with the plugin's public key. Default false: signers who add notes after a push must not block CI.",
					Default: false,
				},
			},
			ExistenceCheck: ps.repositoryExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    ps.pathRepositoryWrite,
					Responses:                   noContent(),
					Summary:                     "Configure a patch target.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    ps.pathRepositoryWrite,
					Responses:                   noContent(),
					Summary:                     "Change a patch target; omitted fields keep their values.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.ReadOperation: &framework.PathOperation{
					Callback:  ps.pathRepositoryRead,
					Responses: okWith(repositoryResponseFields()),
					Summary:   "Read a patch target without its credentials.",
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    ps.pathRepositoryDelete,
					Responses:                   noContent(),
					Summary:                     "Remove a patch target and its local mirror.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathRepositoryHelpSyn,
			HelpDescription: pathRepositoryHelpDesc,
		},
	}
}

func (ps *patchState) repositoryExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	e, err := getRepository(ctx, req.Storage, d.Get("name").(string))
	return e != nil, err
}

func (ps *patchState) pathRepositoryList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, storagePrefixRepository)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (ps *patchState) pathRepositoryRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	e, err := getRepository(ctx, req.Storage, d.Get("name").(string))
	if err != nil || e == nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"name":                   e.Name,
		"url":                    e.URL,
		"branch":                 e.Branch,
		"credential_type":        e.credentialType(),
		"default_commit_message": e.DefaultCommitMessage,
		"default_author_name":    e.DefaultAuthorName,
		"default_author_email":   e.DefaultAuthorEmail,
		"sign_commits":           e.SignCommits,
		"require_trusted_tip":    e.RequireTrustedTip,
	}}, nil
}

func (ps *patchState) pathRepositoryWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("repository", name); err != nil {
		return respondErr(err)
	}
	ps.configMu.Lock()
	defer ps.configMu.Unlock()
	e, err := getRepository(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if e == nil {
		e = &repositoryEntry{Name: name}
	}
	if err := e.update(d, req.Operation == logical.CreateOperation); err != nil {
		return respondErr(err)
	}
	// The next patch reopens the mirror when the URL, branch or credentials
	// changed: the slot compares the entry's fingerprint.
	return nil, putEntry(ctx, req.Storage, storagePrefixRepository+name, e)
}

// update applies the written fields (all of them on create, where defaults
// count as given) and validates the result as a whole.
func (e *repositoryEntry) update(d *framework.FieldData, create bool) error {
	str := func(field string, dst *string) {
		if v, ok := d.GetOk(field); ok {
			*dst = strings.TrimSpace(v.(string))
		} else if create {
			*dst = strings.TrimSpace(d.Get(field).(string))
		}
	}
	previousURL, hadSecret := e.URL, e.Password != "" || e.SSHPrivateKey != ""
	str("url", &e.URL)
	str("branch", &e.Branch)
	str("default_commit_message", &e.DefaultCommitMessage)
	str("default_author_name", &e.DefaultAuthorName)
	str("default_author_email", &e.DefaultAuthorEmail)
	if v, ok := d.GetOk("sign_commits"); ok {
		e.SignCommits = v.(bool)
	} else if create {
		e.SignCommits = true
	}
	if v, ok := d.GetOk("require_trusted_tip"); ok {
		e.RequireTrustedTip = v.(bool)
	}

	if e.URL == "" {
		return invalidf("url is empty: give the repository to patch, e.g. https://gitlab.example.com/group/infra.git")
	}
	if _, err := validateGitRepoURL(patchGitFields, e.URL); err != nil {
		return err
	}
	if _, err := validateBranchName(patchGitFields, e.Branch); err != nil {
		return err
	}
	_, hasPassword := d.GetOk("password")
	_, hasKey := d.GetOk("ssh_private_key")
	if !create && hadSecret && e.URL != previousURL && !hasPassword && !hasKey {
		return secretMustFollow([]string{"url"}, "password or ssh_private_key",
			"give password (or ssh_private_key) for the new url in the same write")
	}
	// A credential is replaced as a whole, by the same rules as
	// configure/git_credential, so half of an old pair never survives next
	// to half of a new one; a write that gives none of the four fields
	// keeps the stored credential.
	var cred [4]string
	written := false
	for i, field := range []string{"username", "password", "ssh_private_key", "known_hosts"} {
		if v, ok := d.GetOk(field); ok {
			cred[i], written = v.(string), true
		}
	}
	if written {
		c, err := newGitCredential(cred[0], cred[1], cred[2], cred[3])
		if errors.Is(err, errNoCredential) {
			return invalidf("no credential given: write username and password for HTTPS, or ssh_private_key and known_hosts for SSH; leave all four out to keep the stored credential")
		}
		if err != nil {
			return err
		}
		e.gitCredential = c
	}
	if err := patch.CheckAuth(e.URL, e.auth()); err != nil {
		return invalidf("credentials for url %q: %v", e.URL, err)
	}
	if e.DefaultCommitMessage == "" {
		return invalidf("default_commit_message is empty: give the message used when a request has none")
	}
	return validateAuthor("default_author_name", "default_author_email", e.DefaultAuthorName, e.DefaultAuthorEmail)
}

func (ps *patchState) pathRepositoryDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	ps.configMu.Lock()
	defer ps.configMu.Unlock()
	e, err := getRepository(ctx, req.Storage, name)
	if err != nil || e == nil {
		return nil, err
	}
	if err := deleteEntry(ctx, req.Storage, storagePrefixRepository+name); err != nil {
		return nil, err
	}
	return nil, ps.dropMirror(ctx, req.Storage, e)
}

const pathRepositoryListHelpSyn = `List the repositories the patch path can write to.`

const pathRepositoryListHelpDesc = `
Each name is a patch target configured at configure/repository/NAME; CI
patches it by writing flant_gitops/patch/NAME.
`

const pathRepositoryHelpSyn = `Configure a repository that CI may patch through flant_gitops/patch/NAME.`

const pathRepositoryHelpDesc = `
A patch target: the Git repository and branch the plugin commits to, the
credential it pushes with (username/password for HTTP(S), or ssh_private_key
with known_hosts for SSH), and the commit defaults used when a request does
not give them. Credentials are write-only: reads show only credential_type.
A write that changes url must give the password (or ssh_private_key) again:
a stored credential is never sent to another address.

The plugin keeps a mirror of the branch on local disk, fetched incrementally,
so a patch costs one fetch of what changed and one push of one commit.
Commits are signed with the plugin's key (configure/signing_key) unless
sign_commits is false. With require_trusted_tip=true a patch is refused with
409, naming the tip and why, unless the tip is accepted as the watch accepts
a commit (signed by the quorum of this mount's trusted keys, at least one; the
watch's last successful commit when url and branch are the watched ones; or
the plugin's own commits on top of one of those).

  vault write flant_gitops/configure/repository/infra \
      url=https://gitlab.example.com/ops/infra.git branch=main \
      username=gitlab password=@token.txt \
      default_author_name="Git autopilot" default_author_email=bot@example.com
`
