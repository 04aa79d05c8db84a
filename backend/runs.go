package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Run statuses. A run is written as queued before anything that may fail
// slowly (vault requests, Docker), so a restart always finds it.
const (
	runQueued      = "queued"
	runRunning     = "running"
	runSucceeded   = "succeeded"
	runFailed      = "failed"
	runCanceled    = "canceled"
	runInterrupted = "interrupted"
)

// runsRetained bounds the history kept in storage; older runs and their
// logs are deleted after each run finishes.
const runsRetained = 50

// runRecord is one attempt to run the commands for one commit.
type runRecord struct {
	ID          string    `json:"id"`
	Commit      string    `json:"commit"`
	Status      string    `json:"status"`
	Reason      string    `json:"reason,omitempty"`
	ExitCode    *int      `json:"exit_code,omitempty"`
	Attempt     int       `json:"attempt"`
	Signers     []string  `json:"signers,omitempty"`
	ContainerID string    `json:"container_id,omitempty"`
	Trigger     string    `json:"trigger,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	// Deadline is when the run's timeout expires; a re-attached run keeps it.
	Deadline time.Time `json:"deadline,omitzero"`
	// Content is the commit's ContentID (what its signatures cover), which
	// the retry state follows.
	Content string `json:"content_id,omitempty"`
}

func (r *runRecord) finished() bool {
	switch r.Status {
	case runSucceeded, runFailed, runCanceled, runInterrupted:
		return true
	}
	return false
}

// responseData is what `vault read runs/ID` shows.
func (r *runRecord) responseData() map[string]any {
	d := map[string]any{
		"id":         r.ID,
		"commit":     r.Commit,
		"status":     r.Status,
		"reason":     r.Reason,
		"attempt":    r.Attempt,
		"signers":    r.Signers,
		"trigger":    r.Trigger,
		"created_at": r.CreatedAt.Format(time.RFC3339Nano),
	}
	if r.ExitCode != nil {
		d["exit_code"] = *r.ExitCode
	}
	if r.ContainerID != "" {
		d["container_id"] = r.ContainerID
	}
	for k, t := range map[string]time.Time{"started_at": r.StartedAt, "finished_at": r.FinishedAt} {
		if !t.IsZero() {
			d[k] = t.Format(time.RFC3339Nano)
		}
	}
	return d
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

func putRun(ctx context.Context, s logical.Storage, r *runRecord) error {
	return putEntry(ctx, s, runsPrefix+r.ID, r)
}

// errRunNotFound lets path handlers answer 404 instead of 500.
var errRunNotFound = errors.New("run not found")

func getRun(ctx context.Context, s logical.Storage, id string) (*runRecord, error) {
	if !validRunID(id) {
		return nil, fmt.Errorf("run %q: %w", id, errRunNotFound)
	}
	r, err := getEntry[runRecord](ctx, s, runsPrefix+id)
	if err == nil && r == nil {
		err = fmt.Errorf("run %q: %w", id, errRunNotFound)
	}
	return r, err
}

// listRunIDs returns run ids, newest first.
func listRunIDs(ctx context.Context, s logical.Storage) ([]string, error) {
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
func pruneRuns(ctx context.Context, s logical.Storage, retained int) error {
	ids, err := listRunIDs(ctx, s)
	if err != nil {
		return err
	}
	if len(ids) <= retained {
		return nil
	}
	for _, id := range ids[retained:] {
		r, err := getRun(ctx, s, id)
		if err != nil && !errors.Is(err, errRunNotFound) {
			return err
		}
		if r != nil && !r.finished() {
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
