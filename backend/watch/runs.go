package watch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Run statuses. A run is written as queued before anything that may fail
// slowly (vault requests, Docker), so a restart always finds it.
const (
	RunQueued      = "queued"
	RunRunning     = "running"
	RunSucceeded   = "succeeded"
	RunFailed      = "failed"
	RunCanceled    = "canceled"
	RunInterrupted = "interrupted"
)

// runsRetained bounds the history kept in storage; older runs and their
// logs are deleted after each run finishes.
const runsRetained = 50

// Run is one attempt to run the commands for one commit.
type Run struct {
	ID       string `json:"id"`
	Commit   string `json:"commit"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Attempt  int    `json:"attempt"`
	// Signers labels each signer who counted with the keys that verified;
	// SignedBy says the same as data, Rules the path rules that applied.
	Signers     []string    `json:"signers,omitempty"`
	SignedBy    []SignedBy  `json:"signed_by,omitempty"`
	Rules       []RuleCheck `json:"rules,omitempty"`
	ContainerID string      `json:"container_id,omitempty"`
	Trigger     string      `json:"trigger,omitempty"`
	CreatedAt   time.Time   `json:"created_at"`
	StartedAt   time.Time   `json:"started_at,omitzero"`
	FinishedAt  time.Time   `json:"finished_at,omitzero"`
	// Deadline is when the run's timeout expires; a re-attached run keeps it.
	Deadline time.Time `json:"deadline,omitzero"`
	// Content is the commit's ContentID (what its signatures cover), which
	// the retry state follows.
	Content string `json:"content_id,omitempty"`
	// EngineID is the Docker engine the container was started on (docker
	// info's ID); empty on runs recorded before it was kept. A new owner
	// that cannot find the container tells "gone" from "elsewhere" by it.
	EngineID string `json:"engine_id,omitempty"`
}

// Finished reports whether the run ended (its status is final).
func (r *Run) Finished() bool {
	switch r.Status {
	case RunSucceeded, RunFailed, RunCanceled, RunInterrupted:
		return true
	}
	return false
}

// newRunID makes an id that sorts by creation time as a string, so listing
// newest first needs no record reads. The random suffix keeps two instances
// of the plugin (old one shutting down, new one starting) from colliding.
func newRunID(now time.Time) (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating a run id: %w", err)
	}
	return now.UTC().Format("20060102T150405.000000Z") + "-" + hex.EncodeToString(b[:]), nil
}

// validRunID refuses ids that could address other storage keys.
func validRunID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '_'
		if !ok {
			return false
		}
	}
	return !strings.Contains(id, "..")
}

func putRun(ctx context.Context, s Storage, r *Run) error {
	return putEntry(ctx, s, runsPrefix+r.ID, r)
}

// ErrRunNotFound lets path handlers answer 404 instead of 500.
var ErrRunNotFound = errors.New("run not found")

func getRun(ctx context.Context, s Storage, id string) (*Run, error) {
	if !validRunID(id) {
		return nil, fmt.Errorf("run %q: %w", id, ErrRunNotFound)
	}
	r, err := getEntry[Run](ctx, s, runsPrefix+id)
	if err == nil && r == nil {
		err = fmt.Errorf("run %q: %w", id, ErrRunNotFound)
	}
	return r, err
}

// listRunIDs returns run ids, newest first.
func listRunIDs(ctx context.Context, s Storage) ([]string, error) {
	keys, err := s.List(ctx, runsPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing runs: %w", err)
	}
	ids := keys[:0]
	for _, k := range keys {
		if !strings.HasSuffix(k, "/") {
			ids = append(ids, k)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	return ids, nil
}

// pruneRuns deletes the oldest runs beyond runsRetained, with their logs.
// Unfinished runs are kept whatever their age: recovery needs them.
func pruneRuns(ctx context.Context, s Storage, retained int) error {
	ids, err := listRunIDs(ctx, s)
	if err != nil {
		return err
	}
	if len(ids) <= retained {
		return nil
	}
	for _, id := range ids[retained:] {
		r, err := getRun(ctx, s, id)
		if err != nil && !errors.Is(err, ErrRunNotFound) {
			return err
		}
		if r != nil && !r.Finished() {
			continue
		}
		if err := deleteRunLog(ctx, s, id); err != nil {
			return err
		}
		if err := s.Delete(ctx, runsPrefix+id); err != nil {
			return fmt.Errorf("deleting old run %s: %w", id, err)
		}
	}
	return nil
}
