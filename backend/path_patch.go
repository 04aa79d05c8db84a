package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/patch"
	"github.com/flant/flant_gitops/policy"
)

// maxCommitMessageBytes bounds a requested commit message.
const maxCommitMessageBytes = 64 << 10

// The trailers naming who asked. With the target trailers the patch.Repo
// adds after them they are the message's last paragraph, and no line of the
// message above may read as one of them (patch.CheckMessage).
const (
	trailerRequestedBy    = "Requested-By"
	trailerVaultRequestID = "Vault-Request-Id"
)

// pathsPatch lists the patch half's paths, sharing the backend's patchState.
func pathsPatch(ps *patchState) []*framework.Path {
	return framework.PathAppend(
		pathRepository(ps),
		pathSigningKey(ps),
		pathPolicy(ps),
		[]*framework.Path{pathPatch(ps)},
	)
}

func pathPatch(ps *patchState) *framework.Path {
	return &framework.Path{
		Pattern: "patch/" + framework.GenericNameRegex("repository"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "flant-gitops",
			OperationVerb:   "patch",
			OperationSuffix: "repository",
		},
		Fields: map[string]*framework.FieldSchema{
			"repository": {
				Type:        framework.TypeString,
				Description: "Name of the patch target configured at configure/repository/NAME.",
				Required:    true,
			},
			"commit": {
				Type:        framework.TypeMap,
				Description: `Optional commit options: {"message": "...", "author": {"name": "...", "email": "..."}}. Defaults come from the repository configuration; the committer is always the plugin.`,
			},
			"commands": {
				Type:        framework.TypeSlice,
				Description: `Edits applied together in one commit, each {"path": "...", and one of "setField": {"field": "spec.values.image.tag", "value": ..., "create": false}, "createFile": {"content": "...", "overwrite": false}, "deleteFile": {}}. Fields take dot paths or JSONPath (indexes, filters).`,
				Required:    true,
			},
			"dry_run": {
				Type:        framework.TypeBool,
				Description: "Compute the change and answer its unified diff without committing or pushing.",
			},
			idempotencyKeyField: {
				Type:        framework.TypeString,
				Description: idempotencyKeyDescription,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    ps.b.publishPatch(ps.pathPatchWrite),
				Responses:                   okWith(patchResponseFields()),
				Summary:                     "Apply edits to a repository in one signed commit and push it.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathPatchHelpSyn,
		HelpDescription: pathPatchHelpDesc,
	}
}

// patchRequest is a validated patch request.
type patchRequest struct {
	repository string
	commands   []patch.Command
	message    string
	author     patch.Person // zero fields take the repository's defaults
	dryRun     bool
}

func (ps *patchState) pathPatchWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	// 0. The plugin's byte budget, before anything is parsed: a request's
	// copies (re-encoded, decoded, its blobs in a group) live until its
	// answer, and a flood of big requests is refused before it costs them.
	caller, size := callerKey(req), rawSize(req.Data)
	if !ps.budget.Take(caller, size) {
		return patchErrorResponse(&patch.QueueFullError{Kind: patch.PluginBytes, Held: ps.budget.Used(), Budget: ps.budget.Limit(), Size: size, RetryAfter: time.Second})
	}
	defer ps.budget.Give(caller, size)

	// 1. Validate everything before anything else happens.
	pr, err := parsePatchRequest(req, d)
	var pe *patch.Error
	if errors.As(err, &pe) {
		// The same status as when the transaction finds it: too many
		// commands or too big a file is a 413 either way.
		return patchErrorResponse(err)
	}
	if err != nil {
		return respondErr(err)
	}

	// 2. Authorize: identity + policy. Nothing about the repository's
	// existence is revealed before this point.
	id, err := callerIdentity(ps.b.System(), req.EntityID)
	if err != nil {
		return nil, logical.CodedError(http.StatusInternalServerError, err.Error())
	}
	engine, err := ps.policyEngine(ctx, req.Storage)
	if err != nil {
		return nil, logical.CodedError(http.StatusInternalServerError, "patch denied: "+err.Error())
	}
	decision, err := engine.Decide(ctx, policyInput(pr, id))
	if err != nil {
		return nil, logical.CodedError(http.StatusServiceUnavailable, err.Error())
	}
	if !decision.Allowed {
		return nil, logical.CodedError(http.StatusForbidden, "patch denied by the policy: "+strings.Join(decision.Violations, "; "))
	}

	// A repeat with the request's idempotency key answers the first's
	// result (patch_idempotency.go).
	claim, resp, err := ps.claimIdempotency(ctx, req, d, pr)
	if resp != nil || err != nil {
		return resp, err
	}
	defer claim.release(ctx)

	// 3. The target.
	repo, err := getRepository(ctx, req.Storage, pr.repository)
	if err != nil {
		return nil, err
	}
	if repo == nil {
		return nil, logical.CodedError(http.StatusNotFound, fmt.Sprintf("repository %q is not configured: write flant_gitops/configure/repository/%s first", pr.repository, pr.repository))
	}
	txn := patch.TxnRequest{
		Commands:  pr.commands,
		Limits:    patch.DefaultLimits(),
		Message:   pr.message,
		Author:    pr.author,
		Committer: patch.Person{Name: pluginCommitterName, Email: pluginCommitterEmail},
		Trailers: []patch.Trailer{
			{Key: trailerRequestedBy, Value: trailerIdentity(id)},
			{Key: trailerVaultRequestID, Value: req.ID},
		},
		DryRun: pr.dryRun,
		Caller: caller,
	}
	if txn.Message == "" {
		txn.Message = repo.DefaultCommitMessage
		if err := patch.CheckMessage(txn.Message, trailerRequestedBy, trailerVaultRequestID); err != nil {
			return logical.ErrorResponse(fmt.Sprintf("the default_commit_message of repository %q cannot be used: %v; give commit.message, or an operator rewrites default_commit_message on configure/repository/%s", repo.Name, err, repo.Name)), nil
		}
	}
	if txn.Author.Name == "" {
		txn.Author.Name = repo.DefaultAuthorName
	}
	if txn.Author.Email == "" {
		txn.Author.Email = repo.DefaultAuthorEmail
	}
	if repo.SignCommits && !pr.dryRun {
		k, _, err := ps.signingKey(ctx, req.Storage)
		if err != nil {
			return nil, logical.CodedError(http.StatusInternalServerError, err.Error())
		}
		txn.Signer = k
	}

	// The tip the commit is built on (the remote head just fetched) is
	// checked in the branch's worker; its refusal is this request's alone.
	if repo.RequireTrustedTip {
		if txn.CheckBase, err = ps.trustedTipCheck(ctx, req.Storage, repo); err != nil {
			return nil, err
		}
	}

	// 4. The transaction, grouped with the other requests for the branch.
	res, err := ps.transact(ctx, req.Storage, repo, txn)
	if err != nil {
		return patchErrorResponse(err)
	}
	data := map[string]any{
		"commit":        res.Commit,
		"parent":        res.Parent,
		"branch":        res.Branch,
		"changed_paths": nonNil(res.ChangedPaths),
		"no_op":         res.NoOp,
		"attempts":      res.Attempts,
	}
	if pr.dryRun {
		data["dry_run"] = true
		data["diff"] = res.Diff
	}
	claim.complete(ctx, data)
	return &logical.Response{Data: data}, nil
}

// callerKey names who asks, for sharing the patch queues fairly: the Vault
// entity, else the token (by its accessor), so that one CI project cannot
// take the room of the others.
func callerKey(req *logical.Request) string {
	if req.EntityID != "" {
		return "entity:" + req.EntityID
	}
	return "accessor:" + req.ClientTokenAccessor
}

// rawSize is what a request's data weighs as it arrived: the bytes of its
// strings and a fixed cost per value, without copying anything.
func rawSize(v any) int64 {
	const perValue = 16
	switch v := v.(type) {
	case string:
		return perValue + int64(len(v))
	case map[string]any:
		n := int64(1 << 10)
		for k, e := range v {
			n += int64(len(k)) + rawSize(e)
		}
		return n
	case []any:
		n := int64(perValue)
		for _, e := range v {
			n += rawSize(e)
		}
		return n
	}
	return perValue
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// parsePatchRequest validates the whole request; every error names its field.
func parsePatchRequest(req *logical.Request, d *framework.FieldData) (*patchRequest, error) {
	pr := &patchRequest{repository: d.Get("repository").(string)}
	if err := validateName("repository", pr.repository); err != nil {
		return nil, err
	}
	for k := range req.Data {
		if _, ok := d.Schema[k]; !ok {
			return nil, invalidf("unknown field %q: a patch request has commit, commands, dry_run and %s", k, idempotencyKeyField)
		}
	}

	raw, ok := req.Data["commands"]
	if !ok || raw == nil {
		return nil, invalidf("commands is missing: give the list of edits, e.g. [{\"path\": \"group/project/release.yml\", \"setField\": {\"field\": \"spec.values.image.tag\", \"value\": \"1.2.5\"}}]")
	}
	var data []byte
	if s, isString := raw.(string); isString {
		data = []byte(s) // commands='[...]' on the vault CLI arrives as a string
	} else {
		var err error
		if data, err = json.Marshal(raw); err != nil {
			return nil, invalidf("commands: cannot be read as JSON: %v", err)
		}
	}
	cmds, err := patch.DecodeCommands(data, patch.DefaultLimits())
	if err != nil {
		return nil, err
	}
	pr.commands = cmds

	if v, ok := req.Data["commit"]; ok && v != nil {
		if err := parseCommitOptions(v, pr); err != nil {
			return nil, err
		}
	}
	if v, ok := d.GetOk("dry_run"); ok {
		pr.dryRun = v.(bool)
	}
	return pr, nil
}

// commitOptions is the request's commit object, Vignet-shaped.
type commitOptions struct {
	Message   string          `json:"message"`
	Author    *commitPerson   `json:"author"`
	Committer json.RawMessage `json:"committer"`
}

type commitPerson struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

func parseCommitOptions(v any, pr *patchRequest) error {
	data, err := json.Marshal(v)
	if err != nil {
		return invalidf("commit: cannot be read as JSON: %v", err)
	}
	var co commitOptions
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&co); err != nil {
		return invalidf("commit: %s (expected {\"message\": \"...\", \"author\": {\"name\": \"...\", \"email\": \"...\"}})", patch.JSONErrorText(err))
	}
	if len(co.Committer) > 0 && string(co.Committer) != "null" {
		return invalidf("commit.committer cannot be set: the committer is always the plugin, which signs the commit; set commit.author instead")
	}
	if len(co.Message) > maxCommitMessageBytes {
		return invalidf("commit.message is %d bytes, at most %d are allowed", len(co.Message), maxCommitMessageBytes)
	}
	if strings.ContainsRune(co.Message, 0) {
		return invalidf("commit.message contains a NUL byte")
	}
	pr.message = strings.TrimSpace(co.Message)
	if err := patch.CheckMessage(pr.message, trailerRequestedBy, trailerVaultRequestID); err != nil {
		return invalidf("commit.message: %v", err)
	}
	if co.Author != nil {
		name, email := strings.TrimSpace(co.Author.Name), strings.TrimSpace(co.Author.Email)
		if err := validateAuthor("commit.author.name", "commit.author.email", name, email); err != nil {
			return err
		}
		pr.author = patch.Person{Name: name, Email: email}
	}
	return nil
}

func policyInput(pr *patchRequest, id *policy.Identity) policy.Input {
	in := policy.Input{
		Repository: pr.repository,
		Identity:   id,
		Commit:     policy.CommitInput{Message: pr.message, Author: policy.Person{Name: pr.author.Name, Email: pr.author.Email}},
		Commands:   make([]policy.CommandInput, 0, len(pr.commands)),
	}
	for _, c := range pr.commands {
		ci := policy.CommandInput{Path: c.Path}
		switch {
		case c.SetField != nil:
			ci.Op, ci.Field = "setField", c.SetField.Field
		case c.CreateFile != nil:
			ci.Op = "createFile"
		case c.DeleteFile != nil:
			ci.Op = "deleteFile"
		}
		in.Commands = append(in.Commands, ci)
	}
	return in
}

// patchErrorResponse maps a transaction failure to its status: never a bare 500.
func patchErrorResponse(err error) (*logical.Response, error) {
	var pe *patch.Error
	var conflict *patch.ConflictError
	var remote *patch.RemoteError
	var full *patch.QueueFullError
	var base *patch.BaseError
	var closed *patch.ClosedError
	var refused *patch.RefusedError
	var coded logical.HTTPCodedError
	switch {
	case errors.As(err, &full):
		// 429 as Vault's own rate limits: the caller should slow down. A 503
		// would make Vault's clients retry at once into the full queue.
		return nil, logical.CodedError(http.StatusTooManyRequests, full.Error())
	case errors.As(err, &base) && errors.As(err, &coded):
		return nil, logical.CodedError(coded.Code(), base.Error())
	case errors.As(err, &base):
		return nil, logical.CodedError(http.StatusConflict, base.Error())
	case errors.As(err, &closed):
		return nil, logical.CodedError(http.StatusServiceUnavailable, closed.Error())
	case errors.As(err, &pe):
		code := http.StatusBadRequest
		switch pe.Kind {
		case patch.KindNotFound:
			code = http.StatusNotFound
		case patch.KindConflict:
			code = http.StatusConflict
		case patch.KindLimit:
			code = http.StatusRequestEntityTooLarge
		}
		if code == http.StatusBadRequest {
			// An error response, not an error: Vault then answers the message
			// as it is instead of inside "1 error occurred: * ...".
			return logical.ErrorResponse(pe.Error()), nil
		}
		return nil, logical.CodedError(code, pe.Error())
	case errors.As(err, &conflict):
		return nil, logical.CodedError(http.StatusConflict, conflict.Error())
	case errors.As(err, &refused):
		// 422: the request is well formed, but the server's rule refuses
		// its content, and the same request would be refused again (a 409
		// or 5xx would invite a retry). The reason is the server's own.
		return nil, logical.CodedError(http.StatusUnprocessableEntity, refused.Error())
	case errors.As(err, &remote):
		return nil, logical.CodedError(http.StatusBadGateway, "git server: "+remote.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, logical.CodedError(http.StatusServiceUnavailable, "the patch was cancelled before it completed, nothing was pushed: "+err.Error())
	default:
		return nil, logical.CodedError(http.StatusInternalServerError, "patch failed, nothing was pushed: "+err.Error())
	}
}

const pathPatchHelpSyn = `Edit YAML files of a repository in one signed commit, authorized by the caller's Vault identity.`

const pathPatchHelpDesc = `
CI writes here after logging in to Vault (for example GitLab CI id_tokens or
GitHub Actions OIDC through Vault's JWT auth method). The request is checked in
this order:

  1. validation: every command and field, paths cleaned (relative, inside the
     repository, never under .git) - 400 naming the field;
  2. the patch policy (configure/policy) on the caller's identity and the
     cleaned commands - 403 with the violations;
  3. the repository must be configured - 404 (only after the policy allowed it);
  4. grouped per repository and branch (group commit): fetch the tip, apply
     all commands, commit once (author from the request or the default,
     committer and signature the plugin's, trailers as below), push.
     Requests that arrive while a push for the branch
     is in flight wait; then all of them (up to 64 per push) are applied in
     arrival order, each as its own signed commit with its own trailers on top
     of the previous one, and the chain goes out in one push. A request whose
     edit fails on the tip it lands on fails alone with its own status; the
     others go on. A push that lost a race re-fetches and re-applies the whole
     group a few times; after that - 409. Git server unreachable or refusing
     the plugin's credentials - 502. A push the server refuses by a rule of
     its own (a pre-receive hook, a size limit) is pushed again in halves
     until each refused commit is alone: that request is answered 422 with
     the server's reason, the others land. A request whose caller has gone (timeout, disconnect) before its
     group's push starts is dropped, never committed later. A repository with
     require_trusted_tip refuses a tip it does not accept - 409 naming it.

At most 256 requests wait per branch (FLANT_GITOPS_PATCH_QUEUE in Vault's
environment changes it); one more is answered 429 with a time to retry in,
and nothing is done. 429, as Vault's own rate limits answer: the caller should
slow down (a 503 would make Vault's clients retry at once into the full
queue). The queues are bounded in bytes too, sized from the plugin's memory
limit (GOMEMLIMIT, else 256 MiB): an eighth of it for all patches of the
plugin (half of that at most for one caller), half of that for one branch; a
request bigger than that goes only when there is nothing else. They are
shared fairly: the caller (Vault entity, else token) is key; at a bound, a
caller holding less than its share takes the place of the newest waiting
request of the caller holding the most, which is answered 429; a caller over
its share while others wait is answered 429. Groups are taken round robin
between callers. Groups of all branches share a pool of a few workers and take turns,
so one busy branch does not starve the others.

The message ends with the trailers Requested-By (the Vault entity and its
aliases, e.g. the GitLab project_path), Vault-Request-Id,
Flant-Gitops-Repository and Flant-Gitops-Branch. The signature covers the
target these two name: the watch counts it only for that repository and
branch. A commit.message line that reads as one of these trailers, or a "---"
or scissors line (after which git stops reading), is 400 naming the line.

Identical content makes no commit: the answer has no_op=true. dry_run=true
answers the unified diff and pushes nothing. The answer carries commit (SHA),
parent, branch, changed_paths and no_op.

idempotency_key makes a retry safe: a repeat with the same key and the same
request from the same caller (Vault entity, or token accessor without one)
within 24 hours answers the first result with idempotent_replay=true and
commits nothing, so a retry after a lost answer cannot revert a newer change
made in between. A repeat while the first is still running waits for it. The
same key with another request - 422. A first request that a plugin restart or
failover interrupted cannot be answered - 409 naming its Vault-Request-Id.
Records are kept in storage (at most 5000 per caller and 50000 per mount -
429 beyond) and removed after 24 hours. The CI client sends one by default.

  vault write flant_gitops/patch/infra @request.json

with request.json:

  {"commit": {"message": "Bump image to 1.2.5"},
   "commands": [{"path": "my-group/my-project/release.yml",
                 "setField": {"field": "spec.values.image.tag", "value": "1.2.5"}}]}
`
