// Package events is how the two halves of the plugin tell the outside what
// happened. The watch worker and the patch half publish an Event for each
// thing an operator or a pusher would want to hear about (a poll, a refused
// commit, a run starting or ending, a patch answered, a webhook delivery);
// commit statuses, signed notifications and metrics subscribe.
//
// Publishing never blocks: each subscriber has its own bounded queue served
// by its own goroutine, so a forge that is down delays nobody, and an event
// that does not fit is dropped and counted (Bus.Dropped) rather than held.
//
// An Event carries no secret, no log line and no token: only what a status
// page may show. Reason texts are the operator-facing sentences the plugin
// already answers in status and run records.
package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Kind names what happened.
type Kind string

const (
	// PollFinished: one poll ended. Outcome is the word status shows as
	// last_poll_outcome (up_to_date, refused, ran, error, backoff, held,
	// fenced, recovering, not_configured) and Reason its sentence.
	PollFinished Kind = "poll.finished"
	// CommitRefused: the watched branch's HEAD did not carry the signatures
	// its rules ask for (or is not a descendant of the last successful
	// commit). Reason says why; Missing names what is still needed. It is
	// published on every poll that refuses, so the same verdict comes again
	// and again: subscribers that tell people deduplicate.
	CommitRefused Kind = "commit.refused"
	// RunStarted: a run's container is about to start for Commit.
	RunStarted Kind = "run.started"
	// RunFinished: a run ended. Outcome is one of the Run* values; Duration
	// is how long it ran.
	RunFinished Kind = "run.finished"
	// PatchFinished: a patch request was answered. Outcome is one of the
	// Patch* values; Commit is the pushed commit when it landed.
	PatchFinished Kind = "patch.finished"
	// GroupPushed: one push of a group commit. GroupSize is the number of
	// requests it carried and Duration the push's latency.
	GroupPushed Kind = "patch.group_pushed"
	// WebhookDelivery: a forge's webhook delivery reached a receiver.
	// Outcome is "accepted" or "ignored"; Reason says why when ignored.
	WebhookDelivery Kind = "webhook.delivery"
)

// Run outcomes, as the run record's status says them (timed out is a
// failure whose Reason says so).
const (
	RunSucceeded   = "succeeded"
	RunFailed      = "failed"
	RunCanceled    = "canceled"
	RunInterrupted = "interrupted"
)

// Causes of a CommitRefused.
const (
	RefusedSignatures = "signatures" // too few trusted signers, or an untrusted base
	RefusedAncestry   = "ancestry"   // HEAD does not descend from the last successful commit
)

// Patch outcomes.
const (
	PatchLanded   = "landed"
	PatchNoop     = "noop"
	PatchDryRun   = "dry_run"
	PatchDenied   = "denied"   // policy or ACL
	PatchInvalid  = "invalid"  // the request was refused as malformed
	PatchConflict = "conflict" // the branch kept moving
	PatchRefused  = "refused"  // the git server refused the push
	PatchBusy     = "busy"     // a queue or byte budget was full (429)
	PatchError    = "error"
)

// Event is one thing that happened. Fields that do not apply are zero.
type Event struct {
	// ID is unique per event and stable across deliveries of it: receivers
	// deduplicate retries by it (webhook-id).
	ID   string    `json:"id"`
	Kind Kind      `json:"type"`
	Time time.Time `json:"timestamp"`

	// Mount is the mount's stored id; Repository and Branch the watched
	// (or patched) target, the URL without credentials.
	Mount      string `json:"mount,omitempty"`
	Repository string `json:"repository,omitempty"`
	Branch     string `json:"branch,omitempty"`

	Commit  string `json:"commit,omitempty"`
	Run     string `json:"run,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	Trigger string `json:"trigger,omitempty"`

	Outcome string `json:"outcome,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Cause is which check refused a CommitRefused: one of the Refused*
	// values, a small fixed set to count by (Reason is the sentence).
	Cause string `json:"cause,omitempty"`
	// Signers are the trusted signers that counted; Missing says what is
	// still needed, one sentence per unmet rule.
	Signers []string `json:"signers,omitempty"`
	Missing []string `json:"missing,omitempty"`

	Duration time.Duration `json:"duration_ns,omitempty"`
	// Target is the name of the patch target (configure/repository/NAME) or
	// of the webhook receiver.
	Target    string `json:"target,omitempty"`
	GroupSize int    `json:"group_size,omitempty"`
}

// NewID makes an event id: time-ordered, unique across nodes.
func NewID(now time.Time) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; keep the id
		// unique by time alone if it ever does.
		return fmt.Sprintf("evt_%d", now.UnixNano())
	}
	return "evt_" + now.UTC().Format("20060102T150405.000000000Z") + "_" + hex.EncodeToString(b[:])
}

// Publisher is what the watch worker and the patch half see.
type Publisher interface {
	Publish(Event)
}

// Discard is a Publisher that drops everything (unit tests, a backend built
// without subscribers).
var Discard Publisher = discard{}

type discard struct{}

func (discard) Publish(Event) {}

// Handler is a subscriber's work on one event. It runs on the subscriber's
// own goroutine, one event at a time, with a context cancelled when the bus
// closes; it must honour it.
type Handler func(ctx context.Context, e Event)
