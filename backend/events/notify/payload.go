package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/flant/flant_gitops/backend/events"
)

// Event types sent, as the body's "type" says them.
const (
	TypeRunStarted    = "run.started"
	TypeRunFinished   = "run.finished"
	TypeCommitRefused = "commit.refused"
	TypePatchFinished = "patch.finished"
)

// Types are the event types an endpoint may ask for.
var Types = []string{TypeRunStarted, TypeRunFinished, TypeCommitRefused, TypePatchFinished}

// DefaultTypes are those an endpoint gets when it names none: what happened
// to the watched branch.
var DefaultTypes = []string{TypeRunStarted, TypeRunFinished, TypeCommitRefused}

// typeOf is the notification type of an event kind, "" when none is sent.
// Kinds are the events a notification can be made of: the notifier
// subscribes to these only.
func Kinds() []events.Kind {
	return []events.Kind{events.RunStarted, events.RunFinished, events.CommitRefused, events.PatchFinished}
}

func typeOf(k events.Kind) string {
	switch k {
	case events.RunStarted:
		return TypeRunStarted
	case events.RunFinished:
		return TypeRunFinished
	case events.CommitRefused:
		return TypeCommitRefused
	case events.PatchFinished:
		return TypePatchFinished
	}
	return ""
}

// envelope is the body the spec recommends: type, timestamp, data.
type envelope struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      data   `json:"data"`
}

// data is the allow-list of what a notification tells: ids, names,
// outcomes and the plugin's own sentences. Never a log line, a token or a
// credential: Event carries none, and a repository URL loses any user
// info it was written with.
type data struct {
	EventID         string   `json:"event_id"`
	Mount           string   `json:"mount,omitempty"`
	Repository      string   `json:"repository,omitempty"`
	Branch          string   `json:"branch,omitempty"`
	Commit          string   `json:"commit,omitempty"`
	Run             string   `json:"run,omitempty"`
	Attempt         int      `json:"attempt,omitempty"`
	Trigger         string   `json:"trigger,omitempty"`
	Outcome         string   `json:"outcome,omitempty"`
	Reason          string   `json:"reason,omitempty"`
	Signers         []string `json:"signers,omitempty"`
	Missing         []string `json:"missing,omitempty"`
	DurationSeconds *float64 `json:"duration_seconds,omitempty"`
	Target          string   `json:"target,omitempty"`
}

// Body is the notification body of e: its type and the JSON, "" and nil
// when e is not sent as a notification.
func Body(e events.Event) (string, []byte, error) {
	typ := typeOf(e.Kind)
	if typ == "" {
		return "", nil, nil
	}
	d := data{
		EventID: e.ID, Mount: e.Mount, Repository: redactURL(e.Repository), Branch: e.Branch,
		Commit: e.Commit, Run: e.Run, Attempt: e.Attempt, Trigger: e.Trigger,
		Outcome: e.Outcome, Reason: e.Reason, Signers: e.Signers, Missing: e.Missing, Target: e.Target,
	}
	if e.Kind == events.RunFinished || e.Kind == events.PatchFinished {
		s := e.Duration.Seconds()
		d.DurationSeconds = &s
	}
	body, err := json.Marshal(envelope{Type: typ, Timestamp: e.Time.UTC().Format(time.RFC3339Nano), Data: d})
	if err != nil {
		return "", nil, fmt.Errorf("encoding the %s notification: %w", typ, err)
	}
	return typ, body, nil
}

// redactURL drops user info (user:password@) from a URL; a value that does
// not parse is left out rather than risked.
func redactURL(raw string) string {
	if !strings.Contains(raw, "://") {
		// scp-like user@host:path has no password; anything else with an
		// @ is left out rather than risked.
		if user, _, found := strings.Cut(raw, "@"); !found || !strings.Contains(user, ":") {
			return raw
		}
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	if u.User != nil {
		// ssh://git@host keeps its user name, which is no secret; any
		// other user info may be a token.
		if _, hasPassword := u.User.Password(); hasPassword || u.Scheme != "ssh" {
			u.User = nil
		}
	}
	return u.String()
}

// refusalKey names a refusal verdict: the commit and what was missing, so
// the same verdict on the next poll is told once, and a changed one (a
// signature came, another is still missing) again.
func refusalKey(e events.Event) string {
	h := sha256.New()
	h.Write([]byte(e.Reason))
	for _, m := range e.Missing {
		h.Write([]byte{0})
		h.Write([]byte(m))
	}
	return e.Commit + ":" + hex.EncodeToString(h.Sum(nil))[:16]
}
