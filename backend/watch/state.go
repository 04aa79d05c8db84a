package watch

import (
	"context"
	"time"
)

const (
	lastSuccessfulByRun    = "run"
	lastSuccessfulOperator = "operator"
	lastSuccessfulInitial  = "initial_last_successful_commit"
)

// Poll outcomes (State.LastPollOutcome), a stable word beside the
// human-readable result.
const (
	OutcomeNotConfigured = "not_configured"
	OutcomeError         = "error"
	OutcomeUpToDate      = "up_to_date"
	OutcomeRefused       = "refused"
	OutcomeBackoff       = "backoff"
	OutcomeHeld          = "held"
	OutcomeRan           = "ran"
	// OutcomeFenced: a run a previous owner started may still be running
	// on a Docker engine this node cannot see; nothing starts (State.Fence).
	OutcomeFenced = "fenced"
	// OutcomeRecovering: a run a previous owner left cannot be checked yet
	// (the engine does not answer); nothing starts until it can be.
	OutcomeRecovering = "recovering"
)

// Fence is a run that nothing may duplicate yet: it was started on another
// Docker engine than this node's, its container cannot be seen from here,
// and its run_timeout has not passed, so it may still be running there.
type Fence struct {
	RunID  string `json:"run_id"`
	Commit string `json:"commit"`
	// EngineID is the engine the run started on; NodeEngineID this node's.
	EngineID     string `json:"engine_id"`
	NodeEngineID string `json:"node_engine_id"`
	// Until is the run's deadline (started_at + run_timeout) plus
	// container.DeadlineMargin: the fence lifts then, or earlier at an
	// operator's `poll retry=true`.
	Until   time.Time `json:"until,omitzero"`
	Message string    `json:"message"`
}

// Check is a signature check of one commit, as status (the last check of
// HEAD), the run record and the signatures read path show it: built from
// a gitwatch.Quorum by newCheck, its Text by Quorum.Verdict.
type Check struct {
	Commit   string `json:"commit"`
	OK       bool   `json:"ok,omitempty"`
	Required int    `json:"required"`
	Verified int    `json:"verified"`
	Missing  int    `json:"missing"`
	// Signers labels each signer who counted with the keys that verified.
	Signers  []string   `json:"signers,omitempty"`
	SignedBy []SignedBy `json:"signed_by,omitempty"`
	// Rules are the path rules the change touches, met or not.
	Rules []RuleCheck `json:"rules,omitempty"`
	// Changes: what change decided the rules.
	ChangedSince  string `json:"changed_since,omitempty"`
	ChangedFiles  int    `json:"changed_files,omitempty"`
	ChangedCapped bool   `json:"changed_capped,omitempty"`
	// UntrustedCommit kept the plugin's signature from counting: the first
	// commit below HEAD's run of plugin commits that is not accepted.
	UntrustedCommit string   `json:"untrusted_commit,omitempty"`
	UntrustedReason string   `json:"untrusted_reason,omitempty"`
	NotCounted      []string `json:"not_counted,omitempty"`
	// Text is the verdict in words (gitwatch.Quorum.Verdict).
	Text string `json:"text,omitempty"`
}

// SignedBy is one signer who counted and the keys of theirs that verified.
type SignedBy struct {
	Name string      `json:"name"`
	Keys []SignerKey `json:"keys"`
}

// SignerKey is a key whose signature verified, and where it was found.
type SignerKey struct {
	Fingerprint string `json:"fingerprint"`
	Kind        string `json:"kind"`
	Source      string `json:"source"`
}

// RuleCheck is how one path rule the change touches fared.
type RuleCheck struct {
	Name            string   `json:"name"`
	Paths           []string `json:"paths"`
	RequiredSigners int      `json:"required_signers"`
	Signers         []string `json:"signers,omitempty"`
	Matched         []string `json:"matched,omitempty"`
	MatchedCount    int      `json:"matched_count"`
	BeyondCap       bool     `json:"beyond_cap,omitempty"`
	Signed          []string `json:"signed,omitempty"`
	Missing         int      `json:"missing"`
	CouldSign       []string `json:"could_sign,omitempty"`
	OK              bool     `json:"ok"`
}

// State is the worker's memory across polls and restarts.
type State struct {
	HeadCommit      string    `json:"head_commit,omitempty"`
	LastPollAt      time.Time `json:"last_poll_at,omitzero"`
	LastPollResult  string    `json:"last_poll_result,omitempty"`
	LastPollOutcome string    `json:"last_poll_outcome,omitempty"`
	Quorum          *Check    `json:"quorum,omitempty"`
	CurrentRunID    string    `json:"current_run_id,omitempty"`
	LastRunID       string    `json:"last_run_id,omitempty"`
	// FailedCommit is the commit whose runs keep failing; Failures counts
	// them in a row and drives the backoff until NextAttemptAt.
	FailedCommit  string    `json:"failed_commit,omitempty"`
	Failures      int       `json:"failures,omitempty"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	// Held is set when an operator canceled FailedCommit's run: it is not
	// retried until a new commit arrives or `poll retry=true`.
	Held bool `json:"held,omitempty"`
	// FailedContent is the ContentID of FailedCommit: what its signatures
	// cover. Hold and backoff follow it, so re-wrapping the signature (a
	// new commit id for the same change) does not reset them.
	FailedContent string `json:"failed_content,omitempty"`
	// Fence is set while a run left by a previous owner is fenced.
	Fence *Fence `json:"fence,omitempty"`
}

// sameChange reports whether commit (with signed content content) is the
// failing or held one: the same id, or the same signed content under
// another id.
func (st *State) sameChange(commit, content string) bool {
	if st.FailedCommit == "" {
		return false
	}
	return commit == st.FailedCommit || (content != "" && content == st.FailedContent)
}

func getState(ctx context.Context, s Storage) (*State, error) {
	st, err := getEntry[State](ctx, s, stateKey)
	if err == nil && st == nil {
		st = &State{}
	}
	return st, err
}

func putState(ctx context.Context, s Storage, st *State) error {
	return putEntry(ctx, s, stateKey, st)
}

// LastSuccessful is the commit the next run must descend from.
type LastSuccessful struct {
	Commit string    `json:"commit"`
	Source string    `json:"source"`
	RunID  string    `json:"run_id,omitempty"`
	SetAt  time.Time `json:"set_at,omitzero"`
}

// getLastSuccessful returns the stored commit, or nil when none was ever
// recorded (then initial_last_successful_commit applies).
func getLastSuccessful(ctx context.Context, s Storage) (*LastSuccessful, error) {
	return getEntry[LastSuccessful](ctx, s, lastSuccessfulKey)
}

func putLastSuccessful(ctx context.Context, s Storage, ls *LastSuccessful) error {
	return putEntry(ctx, s, lastSuccessfulKey, ls)
}

// effectiveLastSuccessful falls back to the configured initial commit.
func effectiveLastSuccessful(ctx context.Context, s Storage, initial string) (*LastSuccessful, error) {
	ls, err := getLastSuccessful(ctx, s)
	if err != nil || ls != nil {
		return ls, err
	}
	if initial == "" {
		return &LastSuccessful{}, nil
	}
	return &LastSuccessful{Commit: initial, Source: lastSuccessfulInitial}, nil
}
