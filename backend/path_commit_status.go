package backend

import (
	"context"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events/forge"
)

// commitStatusEntry is configure/commit_status: where the statuses of the
// watched commits go. Token goes only to APIURL (secret_binding.go).
type commitStatusEntry struct {
	Provider          string `json:"provider"`
	APIURL            string `json:"api_url"`
	Token             string `json:"token"`
	Repository        string `json:"repository,omitempty"`
	ContextTemplate   string `json:"context_template,omitempty"`
	TargetURLTemplate string `json:"target_url_template,omitempty"`
	Enabled           bool   `json:"enabled"`
}

func getCommitStatus(ctx context.Context, s logical.Storage) (*commitStatusEntry, error) {
	return getEntry[commitStatusEntry](ctx, s, storageKeyCommitStatus)
}

func pathCommitStatus(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "configure/commit_status$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "flant-gitops",
			OperationSuffix: "commit-status-configuration",
		},
		Fields: map[string]*framework.FieldSchema{
			"provider": {
				Type:          framework.TypeString,
				Description:   "The forge's API: github (also GitHub Enterprise Server), gitlab, or gitea (also Forgejo). Required on first write.",
				AllowedValues: []any{"github", "gitlab", "gitea"},
			},
			"api_url": {
				Type:        framework.TypeString,
				Description: "Address of the forge's API: https://api.github.com (the default for github), https://github.example.com/api/v3 for GitHub Enterprise Server, https://gitlab.example.com, https://gitea.example.com. The token is sent only here: a write that changes api_url or provider must give token again.",
			},
			"token": {
				Type:         framework.TypeString,
				Description:  "Access token that may set commit statuses: GitHub repo:status (fine-grained: Commit statuses: write), GitLab api scope with the Developer role, Gitea write:repository. Write-only: never returned, seal-wrapped in storage. Required on first write.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"repository": {
				Type:        framework.TypeString,
				Description: "The repository the statuses go to: owner/repo (GitHub, Gitea) or the project's full path (GitLab, e.g. group/subgroup/project). Empty: taken from git_repo_url of configure (https or ssh form).",
			},
			"context_template": {
				Type:        framework.TypeString,
				Description: "The status's context (GitLab: name). Placeholders: {{mount}} (first 8 characters of the mount id), {{mount_id}}, {{branch}}, {{repository}}. Empty: " + forge.DefaultContextTemplate + ", stable and unique per mount. Change it only knowingly: GitLab keeps a status of an old context forever.",
			},
			"target_url_template": {
				Type:        framework.TypeString,
				Description: "Optional link of each status, e.g. https://dashboard.example.com/runs/{{run}}. Placeholders: {{run}}, {{commit}}, {{mount}}, {{mount_id}}, {{branch}}, {{repository}}; a status without a run (a refusal) gets no link when the template uses {{run}}.",
			},
			"enabled": {
				Type:        framework.TypeBool,
				Description: "Whether statuses are sent. Default true; false keeps the configuration and sends nothing.",
				Default:     true,
			},
		},
		ExistenceCheck: b.commitStatusExists,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:  b.pathCommitStatusRead,
				Responses: okWith(commitStatusResponseFields()),
				Summary:   "Read where commit statuses go, without the token.",
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:                    b.pathCommitStatusWrite,
				Responses:                   noContent(),
				Summary:                     "Send a commit status to the forge for each run and refusal.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathCommitStatusWrite,
				Responses:                   noContent(),
				Summary:                     "Change some fields; fields not given keep their values.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathCommitStatusDelete,
				Responses:                   noContent(),
				Summary:                     "Stop sending commit statuses and forget the token.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathCommitStatusHelpSyn,
		HelpDescription: pathCommitStatusHelpDesc,
	}}
}

func (b *backend) commitStatusExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	e, err := getCommitStatus(ctx, req.Storage)
	return e != nil, err
}

func (b *backend) pathCommitStatusRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	e, err := getCommitStatus(ctx, req.Storage)
	if err != nil || e == nil {
		return nil, err
	}
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	mountID, err := b.mount.get(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: commitStatusResponse(e, cfg, mountID)}, nil
}

// commitStatusResponse is the allow-list of what a read shows: never the
// token, only whether one is stored.
func commitStatusResponse(e *commitStatusEntry, cfg *configEntry, mountID string) map[string]any {
	repo, branch, repoURL := e.Repository, "", ""
	if cfg != nil {
		branch, repoURL = cfg.GitBranchName, cfg.GitRepoURL
	}
	effective := repo
	if effective == "" && repoURL != "" {
		effective, _ = forge.RepositoryFromURL(forge.Provider(e.Provider), repoURL)
	}
	return map[string]any{
		"provider":             e.Provider,
		"api_url":              e.APIURL,
		"token_set":            e.Token != "",
		"repository":           repo,
		"effective_repository": effective,
		"context_template":     e.ContextTemplate,
		"context":              forge.Context(e.ContextTemplate, forge.Vars{Mount: mountID, Branch: branch, Repository: effective}),
		"target_url_template":  e.TargetURLTemplate,
		"enabled":              e.Enabled,
	}
}

func (b *backend) pathCommitStatusWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := b.storeCommitStatus(ctx, req, d); err != nil {
		return respondErr(err)
	}
	// A new configuration: the next refusal is told again, perhaps on
	// another forge.
	b.statuses.Forget()
	return nil, nil
}

func (b *backend) storeCommitStatus(ctx context.Context, req *logical.Request, d *framework.FieldData) error {
	b.configMu.Lock()
	defer b.configMu.Unlock()
	e, err := getCommitStatus(ctx, req.Storage)
	if err != nil {
		return err
	}
	creating := e == nil
	if creating {
		e = &commitStatusEntry{Enabled: true}
	}
	before := *e
	given := map[string]bool{}
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"provider", &e.Provider},
		{"api_url", &e.APIURL},
		{"token", &e.Token},
		{"repository", &e.Repository},
		{"context_template", &e.ContextTemplate},
		{"target_url_template", &e.TargetURLTemplate},
	} {
		raw, ok := d.GetOk(f.name)
		if !ok {
			continue
		}
		given[f.name] = true
		// A token read from a file (token=@file) ends in a newline.
		*f.dst = strings.TrimSpace(raw.(string))
	}
	if v, ok := d.GetOk("enabled"); ok {
		e.Enabled = v.(bool)
	}
	if e.Provider == "" {
		return invalidf("provider is required: github, gitlab or gitea (also for Forgejo)")
	}
	p, err := forge.ParseProvider(e.Provider)
	if err != nil {
		return invalidf("%v", err)
	}
	if e.APIURL == "" {
		e.APIURL = forge.DefaultAPIURL(p)
	}
	if e.APIURL == "" {
		return invalidf("api_url is required for %s: the forge's address, e.g. https://%s.example.com", p, p)
	}
	e.APIURL = strings.TrimSuffix(e.APIURL, "/")
	if err := forge.CheckAPIURL(p, e.APIURL); err != nil {
		return invalidf("%v", err)
	}
	if e.Token == "" {
		if given["token"] {
			return invalidf("token is empty: give an access token that may set commit statuses; to stop sending statuses delete %sconfigure/commit_status or write enabled=false", req.MountPoint)
		}
		return invalidf("token is required: an access token that may set commit statuses (GitHub repo:status, GitLab api with the Developer role, Gitea write:repository)")
	}
	if strings.ContainsAny(e.Token, " \t\r\n") {
		return invalidf("token holds white space: give the token alone, without a \"Bearer\" or \"token\" prefix")
	}
	if !creating && !given["token"] {
		changed := changedBoundFields(
			boundField{"provider", before.Provider, e.Provider},
			boundField{"api_url", before.APIURL, e.APIURL},
		)
		if len(changed) > 0 {
			return secretMustFollow(changed, "token", "give token in the same write, or delete configure/commit_status and write it anew")
		}
	}
	if e.Repository != "" {
		e.Repository = strings.Trim(e.Repository, "/")
		if err := forge.CheckRepository(p, e.Repository); err != nil {
			return invalidf("%v", err)
		}
	} else {
		cfg, err := getConfig(ctx, req.Storage)
		if err != nil {
			return err
		}
		if cfg != nil {
			if _, err := forge.RepositoryFromURL(p, cfg.GitRepoURL); err != nil {
				return invalidf("%v", err)
			}
		}
	}
	if e.ContextTemplate != "" {
		if err := forge.CheckContextTemplate(p, e.ContextTemplate); err != nil {
			return invalidf("%v", err)
		}
	}
	if e.TargetURLTemplate != "" {
		if err := forge.CheckTargetURLTemplate(e.TargetURLTemplate); err != nil {
			return invalidf("%v", err)
		}
	}
	return putEntry(ctx, req.Storage, storageKeyCommitStatus, e)
}

func (b *backend) pathCommitStatusDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	defer b.configMu.Unlock()
	if err := deleteEntry(ctx, req.Storage, storageKeyCommitStatus); err != nil {
		return nil, err
	}
	b.statuses.Forget()
	return nil, nil
}

const pathCommitStatusHelpSyn = `Commit statuses on the forge: pending, success, failure, canceled, and why a commit was refused.`

const pathCommitStatusHelpDesc = `
For each commit the watch decides on, a commit status on the forge that
hosts the repository, so whoever pushed it sees what happened without a
Vault token:

  run started            pending (GitLab: running) "running <run id>"
  run succeeded          success
  run failed             failure (GitLab: failed) with the reason
  run canceled           error (GitLab: canceled)
  run interrupted        stays pending: the commit runs again at once
  signatures refused it  failure "refused: missing ...; signed by ..."
                         (sent once per commit and wording, not per poll)

  vault write flant_gitops/configure/commit_status provider=github token=ghp_XXXX
  vault write flant_gitops/configure/commit_status provider=gitlab \
      api_url=https://gitlab.example.com token=glpat-XXXX
  vault write flant_gitops/configure/commit_status provider=gitea \
      api_url=https://gitea.example.com token=XXXX \
      target_url_template='https://dashboard.example.com/runs/{{run}}'

The repository is taken from git_repo_url (https or ssh form) unless
repository is given. The context defaults to flant_gitops/<first 8
characters of the mount id>: stable across restarts and upgrades, and
different for two mounts that watch one repository, so their statuses never
overwrite each other. Keep it stable: GitLab never deletes a status, so a
changed context leaves the old one on every commit.

Statuses are sent in the background from the active node, never delaying a
run: a forge that is down or rate-limits (GitHub's secondary limits, 429) is
retried with backoff, honouring Retry-After, for up to an hour; only the
newest status of a commit waits. What waits is kept in storage, so a
restart or a new active node sends it. flant_gitops/status shows the last
delivery under commit_status.

A description is built only from the run id, its outcome and reason, and
the signers and missing signatures; it never holds a log line, and anything
that looks like a token is removed from it. A read never shows the token,
only token_set. A write that changes api_url or provider must give the token
again: the stored one is never sent to another address.
`
