package backend

import (
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
)

// The response schemas of the paths, kept apart from the handlers so the
// OpenAPI document (and API.md generated from it) says what each operation
// answers. openapi_test.go checks real answers against them. A field is
// Required when the handler always sets it.

// apiPrefix starts every operation id: flant-gitops-<verb>-<suffix>.
const apiPrefix = "flant-gitops"

// noContent is the answer of writes and deletes that return no data; Vault
// still answers 200 when the plugin adds warnings.
func noContent() map[int][]framework.Response {
	return map[int][]framework.Response{http.StatusNoContent: {{
		Description: "No Content (200 with only `warnings` when there is something to warn about)",
	}}}
}

// okWith is a 200 answer with the given data fields.
func okWith(fields map[string]*framework.FieldSchema) map[int][]framework.Response {
	return map[int][]framework.Response{http.StatusOK: {{Description: "OK", Fields: fields}}}
}

// listOK is the answer of a LIST: the keys, and key_info when given.
func listOK(keyInfo string) map[int][]framework.Response {
	f := map[string]*framework.FieldSchema{
		"keys": {Type: framework.TypeStringSlice, Required: true, Description: "The names, each as given at write."},
	}
	if keyInfo != "" {
		f["keys"].Description = "The ids."
		f["key_info"] = &framework.FieldSchema{Type: framework.TypeMap, Description: keyInfo}
	}
	return okWith(f)
}

func respString(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeString, Required: true, Description: desc}
}

func respOptString(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeString, Description: desc}
}

func respBool(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeBool, Required: true, Description: desc}
}

func respInt(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeInt, Required: true, Description: desc}
}

// respSeconds is a duration the handlers answer as whole seconds.
func respSeconds(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeInt, Required: true, Description: desc}
}

func respStrings(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeStringSlice, Required: true, Description: desc}
}

func configResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"git_repo_url":    respString("URL of the watched Git repository."),
		"git_branch_name": respString("The watched branch."),
		"git_poll_period": respSeconds("Seconds between polls."),
		"required_number_of_verified_signatures_on_commit": respInt("How many trusted keys must sign a commit."),
		"initial_last_successful_commit":                   respString("The commit the first run starts after; empty when not set."),
		"docker_image":                                     respString("The pinned image the commands run in."),
		"commands":                                         respStrings("The commands, run in order, each with `sh -c`."),
		"run_timeout":                                      respSeconds("Seconds a run may take."),
		"memory_limit":                                     respString("Memory limit of the run container; empty for none."),
		"cpu_limit":                                        respString("CPU limit of the run container; empty for none."),
		"network_mode":                                     respString("Docker network mode of the run container."),
	}
}

func vaultAccessResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"vault_addr":            respString("Address of the target Vault."),
		"vault_tls_server_name": respString("TLS server name used for the target Vault; empty for the host of vault_addr."),
		"vault_cacert":          respString("PEM CA certificate for the target Vault; empty for the system roots."),
		"approle_mount_point":   respString("Mount of the AppRole auth method."),
		"role_name":             respString("AppRole role name."),
		"role_id":               respString("AppRole role_id. The secret_id is never returned."),
		"secret_id_ttl":         respSeconds("TTL of the secret_id in seconds; 0 when it does not expire."),
		"secret_id_issued_at":   respString("When the current secret_id was stored (RFC 3339)."),
		"secret_id_expires_at":  respString("When the current secret_id expires (RFC 3339); empty when it does not."),
	}
}

func dockerEngineResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"host":            respString("Address of the Docker engine (tcp://host:port or unix:///path)."),
		"ca_cert":         respString("PEM CA certificate(s) trusted for the engine's certificate; empty for a unix socket."),
		"client_cert":     respString("PEM client certificate presented to the engine; empty for a unix socket."),
		"client_key_set":  respBool("Whether a client key is stored. The key itself is never returned."),
		"tls_server_name": respString("Name the engine's certificate is checked against; empty for the host of host."),
	}
}

func commitStatusResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"provider":             respString("github, gitlab or gitea."),
		"api_url":              respString("Address of the forge's API; the token is sent only there."),
		"token_set":            respBool("Whether a token is stored. The token itself is never returned."),
		"repository":           respString("The repository as configured; empty when taken from git_repo_url."),
		"effective_repository": respString("The repository the statuses go to (owner/repo or the GitLab project path); empty when it cannot be told."),
		"context_template":     respString("The context template as configured; empty for the default."),
		"context":              respString("The context this mount's statuses carry now."),
		"target_url_template":  respString("The link template; empty for none."),
		"enabled":              respBool("Whether statuses are sent."),
	}
}

func lastSuccessfulResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"commit": respString("SHA of the last successful commit."),
		"source": respString("Where it comes from: `run`, `operator` or `initial_last_successful_commit`."),
		"run_id": respOptString("The run that succeeded on it, when source is `run`."),
		"set_at": respOptString("When it was recorded (RFC 3339); absent for initial_last_successful_commit."),
	}
}

func policyResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"policy":                       respString("The Rego source in force (the built-in one when builtin is true)."),
		"builtin":                      respBool("Whether the built-in policy is in force."),
		"trusted_auth_mount_accessors": respStrings("Accessors of the auth mounts whose logins the built-in policy trusts."),
		"version":                      respOptString("Version (hash) of a custom policy."),
		"updated_at":                   respOptString("When the policy entry was last written (RFC 3339)."),
	}
}

func repositoryResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name":                   respString("The repository's name in patch/<name>."),
		"url":                    respString("Clone URL."),
		"branch":                 respString("The branch patches are pushed to."),
		"credential_type":        respString("`none`, `password` or `ssh_private_key`; the secret itself is never returned."),
		"default_commit_message": respString("Commit message when a patch gives none."),
		"default_author_name":    respString("Author name when a patch gives none."),
		"default_author_email":   respString("Author email when a patch gives none."),
		"sign_commits":           respBool("Whether the plugin signs its commits."),
		"require_trusted_tip":    respBool("Whether a patch is refused unless the branch tip carries the trusted signatures."),
	}
}

func signingKeyResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"public_key":  respString("The armored public key of the plugin's commit signing key."),
		"fingerprint": respString("Its fingerprint."),
		"created_at":  respString("When it was generated (RFC 3339)."),
		"previous_keys": {Type: framework.TypeSlice, Required: true,
			Description: `Retired keys, each {"public_key", "fingerprint", "created_at", "retired_at"} (strings, times RFC 3339).`},
	}
}

func trustedKeyResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name":        respString("Name of the key entry."),
		"fingerprint": respString("Fingerprint of the primary key."),
		"user_ids":    respStrings("User ids of the key."),
		"created":     respString("Creation time of the key (RFC 3339)."),
		"expires":     respString("Expiry of the key (RFC 3339); empty when it does not expire."),
		"revoked":     respBool("Whether the key carries a revocation."),
		"usable":      respBool("Whether signatures by this key count now."),
		"problem":     respString("Why the key does not count; empty when usable."),
		"public_key":  respString("The armored public key as stored."),
	}
}

func vaultRequestResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name":     respString("Name of the vault request."),
		"path":     respString("Vault API path requested."),
		"method":   respString("HTTP method."),
		"options":  {Type: framework.TypeMap, Required: true, Description: "Request body sent with the request."},
		"wrap_ttl": respSeconds("TTL of the response wrapping token in seconds."),
		"env_var":  respString("Environment variable that carries the wrapping token into the run."),
	}
}

func patchResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"commit":            respString("SHA of the pushed commit; on a no-op the tip that already holds the content; empty on a dry run that would change something."),
		"parent":            respString("SHA of the commit it was built on."),
		"branch":            respString("The branch pushed to."),
		"changed_paths":     respStrings("Files the commit changes."),
		"no_op":             respBool("True when the edits changed nothing and no commit was made."),
		"attempts":          respInt("How many times the commands were applied (more than 1 when the branch moved under the push)."),
		"dry_run":           {Type: framework.TypeBool, Description: "Present and true on a dry run: nothing was pushed."},
		"diff":              respOptString("Unified diff of the change, on a dry run."),
		"idempotent_replay": {Type: framework.TypeBool, Description: "Present and true when this answers a repeat of an earlier request with the same idempotency_key: its result, no new commit."},
	}
}

func pollResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"started":     respBool("True: a poll was started, or queued behind the run in progress (a refused poll is answered 429)."),
		"message":     respString("What happened, for the operator."),
		"current_run": respOptString("Id of the run in progress the queued poll waits for."),
	}
}

// runResponseFields is one run record as runs/<id> and runs/<id>/cancel
// answer it, and as status embeds it.
func runResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"id":      respString("Run id."),
		"commit":  respString("The commit run."),
		"status":  respString("`queued`, `running`, `succeeded`, `failed`, `canceled` or `interrupted`."),
		"reason":  respString("Why it ended as it did; empty while running or on success."),
		"attempt": respInt("Attempt number for this commit (1 for the first run)."),
		"signers": respStrings("The trusted signers who counted, each with the keys that verified: \"alice (pgp key FINGERPRINT in commit)\" (null when no signature was required)."),
		"signed_by": {Type: framework.TypeSlice, Description: "The signers who counted: name and keys (fingerprint, kind, source), as signatures/COMMIT shows them; " +
			"absent on runs recorded before signers were kept."},
		"rules":        {Type: framework.TypeSlice, Description: "The signature rules the run's change touched, as signatures/COMMIT shows them; absent when none applied."},
		"trigger":      respString("What started the run (a poll, a retry, ...)."),
		"created_at":   respString("When the run was created (RFC 3339)."),
		"exit_code":    {Type: framework.TypeInt, Description: "Exit code of the commands, once they ended."},
		"container_id": respOptString("Docker container id, once created."),
		"engine_id":    respOptString("Id of the Docker engine the container was started on (docker info's ID), once started."),
		"started_at":   respOptString("When the container started (RFC 3339)."),
		"finished_at":  respOptString("When the run ended (RFC 3339)."),
	}
}

func runLogResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"log":           respString("The log text from offset, at most limit bytes."),
		"offset":        respInt("Byte offset this page starts at."),
		"next_offset":   respInt("Offset of the next page; pass it as offset to follow the run."),
		"size":          respInt("Bytes of log stored so far."),
		"dropped_bytes": respInt("Bytes dropped from the start of the log to keep it within its cap."),
		"status":        respString("Status of the run."),
		"complete":      respBool("True when the run ended and this page reaches the end of its log."),
	}
}

func statusResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"version": respString("Version of the plugin serving this mount (what `vault plugin info` and sys/mounts show as its running version)."),
		"storage_format": {Type: framework.TypeInt, Required: true,
			Description: "Format of this mount's storage, marked under storage_format with the version that wrote it; a version that reads only older formats refuses the mount naming that version."},
		"configured":                    respBool("Whether configure is written."),
		"last_successful_commit":        respString("SHA of the last successful commit; empty when none."),
		"last_successful_commit_source": respString("Where it comes from: `run`, `operator`, `initial_last_successful_commit`, or empty."),
		"head_commit":                   respString("HEAD of the watched branch at the last poll."),
		"last_poll_at":                  respString("When the last poll ended (RFC 3339); empty before the first."),
		"last_poll_result":              respString("What the last poll found, for the operator."),
		"last_poll_outcome":             respString("Machine-readable outcome of the last poll."),
		"current_run": {Type: framework.TypeMap, Required: true,
			Description: "The run in progress as runs/<id> shows it, or null."},
		"last_run": {Type: framework.TypeMap, Required: true,
			Description: "The last run that ended, as runs/<id> shows it, or null."},
		"quorum_problem":       respString("Why the trusted keys cannot reach the required signatures; empty when they can."),
		"trusted_key_problems": respStrings("Problems of single trusted keys (expired, revoked, ...)."),
		"worker":               respString("`idle` or `busy`."),
		"next_poll_at":         respOptString("When the next periodic poll is due (RFC 3339): each mount has a fixed place within git_poll_period, so the mounts of one Vault do not all fetch at once; empty until the first poll of this active node."),
		"receivers": {Type: framework.TypeMap, Required: true,
			Description: `Each webhook receiver's last delivery: {"<name>": {"last_delivery": {"at", "provider", "event", "delivery_id", "accepted", "outcome"} or null}}, so a broken hook can be told from a quiet repository.`},
		"notifications": {Type: framework.TypeMap, Required: true,
			Description: `Each notification endpoint's delivery: {"<name>": {"last_attempt_at", "last_event_id", "last_type", "last_http_code", "last_error", "last_attempts", "last_delivered_at", "delivered", "failed", "dropped", "pending"}}.`},
		"mount_id": respOptString("Id of this mount; run containers carry it as label flant_gitops.mount."),
		"engine": {Type: framework.TypeMap, Required: true,
			Description: `The Docker engine the runs go to, checked now: {"host" ("local" or the address of configure/docker_engine), "reachable", and when reachable "id", "name", "version" of the engine, else "error" saying why it cannot be used}.`},
		"commit_status": {Type: framework.TypeMap, Required: true,
			Description: `The commit statuses sent to the forge since this node became active: {"configured", "enabled", "provider", "delivering" (the delivery loop runs here), "queued", "delivered", "failed", "repeats_skipped", "dropped_events", "last": {"at", "commit", "state", "context", "result" (delivered, already_set, retrying, refused, gave_up, dropped), "http_code", "error", "attempts", "next_attempt_at"} or null}.`},
		"signatures": {Type: framework.TypeMap,
			Description: `Signature check of the last polled commit, the same fields as signatures/COMMIT: {"commit", "ok", "verdict", "required", "verified", "missing", "signers", ` +
				`"signed_by", "rules" (each rule the change touches, with "missing" and "could_sign"), "not_counted", "untrusted_commit", "untrusted_reason", "changed_since", "changed_files", "changed_capped"}.`},
		"retry": {Type: framework.TypeMap,
			Description: `Failed commit waiting for a retry: {"commit", "consecutive_failures", "held_after_cancel", "next_attempt_at" (absent when held)}.`},
		"fenced": {Type: framework.TypeMap,
			Description: `Present while nothing starts because a run may still be running on another Docker engine than this node's: {"run_id", "commit", "engine_id" (the engine it started on), "node_engine_id" (this node's), "until" (its started_at + run_timeout + a 1m margin for stopping it, RFC 3339), "message" (what happens and how to lift it: ` + "`poll retry=true`" + `)}.`},
	}
}
