package backend

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/watch"
)

func pathStatus(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern:      "status/?$",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "status"},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:                    b.pathStatusRead,
				Responses:                   okWith(statusResponseFields()),
				Summary:                     "Show what the watch last saw and did.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "Where the watch stands: last successful commit, HEAD, last poll, current run.",
		HelpDescription: pathStatusHelpDesc,
	}}
}

func (b *backend) pathStatusRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	s := req.Storage
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	initial := ""
	if cfg != nil {
		initial = cfg.InitialLastSuccessfulCommit
	}
	ls, err := b.watch.LastSuccessful(ctx, watchStorage{s}, initial)
	if err != nil {
		return nil, err
	}
	st, err := b.watch.State(ctx, watchStorage{s})
	if err != nil {
		return nil, err
	}
	problem, err := quorumProblem(ctx, s)
	if err != nil {
		return nil, err
	}
	keyProblems, err := trustedKeyProblems(ctx, s, time.Now())
	if err != nil {
		return nil, err
	}
	mountID, err := s.Get(ctx, mountIDKey)
	if err != nil {
		return nil, fmt.Errorf("reading the mount id: %w", err)
	}
	engine, err := b.engine.status(ctx, s)
	if err != nil {
		return nil, err
	}
	receivers, err := b.receiversStatus(ctx, s)
	if err != nil {
		return nil, err
	}
	notifications, err := b.notificationsStatus(ctx, s)
	commitStatus, err := b.commitStatusStatus(ctx, s)
	if err != nil {
		return nil, err
	}
	busy, _ := b.watch.Snapshot()
	worker := "idle"
	if busy {
		worker = "busy"
	}
	format, _ := b.format.get()
	data := map[string]any{
		"version":                       Version,
		"storage_format":                format,
		"configured":                    cfg != nil,
		"last_successful_commit":        ls.Commit,
		"last_successful_commit_source": ls.Source,
		"head_commit":                   st.HeadCommit,
		"last_poll_at":                  formatTime(st.LastPollAt),
		"last_poll_result":              st.LastPollResult,
		"last_poll_outcome":             st.LastPollOutcome,
		"current_run":                   nil,
		"last_run":                      nil,
		"quorum_problem":                problem,
		"trusted_key_problems":          keyProblems,
		"worker":                        worker,
		"engine":                        engine,
		"next_poll_at":                  formatTime(b.watch.NextPollAt()),
		"receivers":                     receivers,
		"notifications":                 notifications,
		"commit_status":                 commitStatus,
	}
	if mountID != nil {
		// Containers carry it: docker ps --filter label=flant_gitops.mount=<id>
		data["mount_id"] = string(mountID.Value)
	}
	if st.Quorum != nil {
		data["signatures"] = checkData(st.Quorum)
	}
	if st.FailedCommit != "" {
		retry := map[string]any{
			"commit":               st.FailedCommit,
			"consecutive_failures": st.Failures,
			"held_after_cancel":    st.Held,
		}
		if !st.Held {
			retry["next_attempt_at"] = formatTime(st.NextAttemptAt)
		}
		data["retry"] = retry
	}
	if f := st.Fence; f != nil {
		data["fenced"] = map[string]any{
			"run_id":         f.RunID,
			"commit":         f.Commit,
			"engine_id":      f.EngineID,
			"node_engine_id": f.NodeEngineID,
			"until":          formatTime(f.Until),
			"message":        f.Message,
		}
	}
	for field, id := range map[string]string{"current_run": st.CurrentRunID, "last_run": st.LastRunID} {
		if id == "" {
			continue
		}
		r, err := b.watch.Run(ctx, watchStorage{s}, id)
		if errors.Is(err, watch.ErrRunNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		data[field] = runData(r)
	}
	return &logical.Response{Data: data}, nil
}

// trustedKeyProblems names each trusted key that counts zero, and why.
func trustedKeyProblems(ctx context.Context, s logical.Storage, now time.Time) ([]string, error) {
	keys, err := listTrustedKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, k := range keys {
		if p := k.problemAt(now); p != "" {
			out = append(out, fmt.Sprintf("%s (%s): %s", k.Name, k.Fingerprint, p))
		}
	}
	signers, err := listSigners(ctx, s)
	if err != nil {
		return nil, err
	}
	for _, e := range signers {
		for _, p := range signerResponse(e, now)["problems"].([]string) {
			out = append(out, fmt.Sprintf("signer %s: %s", e.Name, p))
		}
	}
	return out, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

const pathStatusHelpDesc = `
Reads what the watch last saw and did:

  last_successful_commit  the commit the next run must descend from, and its
                          source (a run, an operator, or
                          initial_last_successful_commit)
  head_commit             the branch HEAD seen by the last poll
  last_poll_at, last_poll_result, last_poll_outcome
                          when the branch was last polled and what came of it
                          (up_to_date, ran, refused, backoff, held, error,
                          not_configured, fenced, recovering); a refusal says
                          why: how many signatures are missing and who
                          signed, or a force-push with the recovery path;
                          recovering: a run left by the previous active node
                          cannot be checked (its engine does not answer), so
                          nothing starts until it can
  signatures              the last signature check of HEAD, as
                          signatures/COMMIT answers it: the signers who
                          counted with the keys that verified, each
                          signature rule the change touches with what it
                          misses and who could still sign; when the plugin's
                          own signature did not count, untrusted_commit names
                          the commit below it that no trusted person signed
  retry                   a failing commit: failures in a row and when it is
                          tried again
  current_run, last_run   the run in progress and the last one
  fenced                  set while nothing may start because a run was
                          started on another Docker engine than this node's:
                          its container cannot be seen from here, so it may
                          still be running there. It lifts at until (the
                          run's started_at + run_timeout + 1m margin) or when an operator
                          who checked that it ended writes
                          "vault write flant_gitops/poll retry=true"; then the
                          run is marked interrupted and the commit runs again.
                          If the container becomes visible (the engine is
                          back), it is re-attached instead.
  quorum_problem          set when the quorum cannot be met by the
                          configured trusted keys
  trusted_key_problems    each trusted key that counts zero (expired,
                          revoked, or RSA/DSA/ElGamal under 2048 bits) and why
  worker                  busy while a poll or a run is in progress
  mount_id                the value of the flant_gitops.mount label on this
                          mount's containers
  engine                  the Docker engine the runs go to (configure/
                          docker_engine, or "local"), checked by this read:
                          its id, name and version, or why it cannot be used
                          (e.g. it refused the client certificate); no run
                          starts while it cannot
  commit_status           the commit statuses sent to the forge
                          (configure/commit_status): whether configured and
                          enabled, counts delivered, failed and queued, and
                          the last delivery (at, commit, state, context,
                          result, http_code, error, attempts,
                          next_attempt_at while retrying); counts start
                          anew when a node becomes active
  version                 the plugin version serving this mount
  notifications           each notification endpoint's delivery: its last
                          attempt (when, event id and type, HTTP code or
                          error, attempts), delivered, failed (refused by
                          the endpoint), dropped (outbox full or 24h of
                          retries) and pending counts
  storage_format          the format of this mount's storage (README
                          "Upgrades"); an older version that cannot read it
                          refuses every request naming the version that
                          wrote it
`
