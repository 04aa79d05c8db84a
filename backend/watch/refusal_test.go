package watch

import (
	"context"
	"encoding/base64"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/flant/flant_gitops/gitwatch"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// A refused HEAD is checked once: the polls that follow give the same
// refusal without checking again, until HEAD, the rule, the signature refs
// or the time the verdict may hold change, or an operator asks.
func TestRefusedHeadVerdictIsRemembered(t *testing.T) {
	tests := []struct {
		name      string
		change    func(h *harness)
		wantCheck bool // the change makes the poll check again
	}{
		{"nothing changes", func(h *harness) {}, false},
		{"a poll just before the verdict expires", func(h *harness) { h.clock.advance(refusalTTL - time.Minute - time.Second) }, false},
		{"HEAD moves", func(h *harness) { h.mirror.setHead(commitC) }, true},
		{"a note signature is added or removed", func(h *harness) { h.mirror.signatures = "tag x notes y" }, true},
		{"a trusted key is added", func(h *harness) {
			h.settings.Keys = append(h.settings.Keys, gitwatch.TrustedKey{Name: "bob", Armored: "BOB"})
		}, true},
		{"a trusted key changes", func(h *harness) { h.settings.Keys[0].Armored = "ALICE, extended" }, true},
		{"the quorum changes", func(h *harness) { h.settings.Required = 1 }, true},
		{"a plugin key is added", func(h *harness) { h.settings.PluginKeys = append(h.settings.PluginKeys, "NEWPLUGINFP") }, true},
		{"the last successful commit changes", func(h *harness) { h.settings.InitialLastSuccessful = commitC }, true},
		{"the verdict expires", func(h *harness) { h.clock.advance(refusalTTL) }, true},
		{"an operator polls", func(h *harness) {
			h.w.mu.Lock()
			h.w.trigger = triggerPoll
			h.w.mu.Unlock()
		}, true},
		// Anyone holding a receiver's URL can send deliveries: they never
		// buy a new check of a refused HEAD.
		{"a webhook delivery", func(h *harness) {
			h.w.mu.Lock()
			h.w.trigger = triggerWebhook
			h.w.mu.Unlock()
		}, false},
		{"an operator retries", func(h *harness) {
			h.w.mu.Lock()
			h.w.forceRetry = true
			h.w.mu.Unlock()
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.settings.Required, h.mirror.verified = 2, 0
			h.settings.Keys = []gitwatch.TrustedKey{{Name: "alice", Armored: "ALICE"}}
			h.settings.PluginKeys = []string{"PLUGINFP"}
			h.mirror.signatures = "tag a notes b"
			h.pollOnce()
			first := h.state()
			if first.LastPollOutcome != OutcomeRefused || len(h.mirror.rules) != 1 {
				t.Fatalf("first poll: %q (%s) after %d checks, want one refusal", first.LastPollOutcome, first.LastPollResult, len(h.mirror.rules))
			}
			h.clock.advance(time.Minute)
			h.pollOnce()
			again := h.state()
			if len(h.mirror.rules) != 1 {
				t.Fatalf("the same refused HEAD was checked %d times", len(h.mirror.rules))
			}
			if again.LastPollOutcome != first.LastPollOutcome || again.LastPollResult != first.LastPollResult || !reflect.DeepEqual(again.Quorum, first.Quorum) {
				t.Errorf("remembered refusal differs:\n%q %q %+v\nwant\n%q %q %+v", again.LastPollOutcome, again.LastPollResult, again.Quorum,
					first.LastPollOutcome, first.LastPollResult, first.Quorum)
			}

			tt.change(h)
			h.pollOnce()
			checks := len(h.mirror.rules)
			if tt.wantCheck != (checks == 2) {
				t.Errorf("after the change: %d checks in all, want a new check: %v", checks, tt.wantCheck)
			}
		})
	}
}

// An accepted HEAD is not remembered: it runs, and the next HEAD is checked.
func TestAcceptedHeadIsNotRemembered(t *testing.T) {
	h := newHarness(t)
	h.settings.Required, h.mirror.verified = 1, 0
	h.pollOnce()
	h.mirror.verified = 1
	h.mirror.signatures = "a note signature was added"
	h.pollOnce()
	if st := h.state(); st.LastPollOutcome != OutcomeRan || h.lastSuccessful() != commitB {
		t.Fatalf("signed HEAD: %q (%s), want it run", st.LastPollOutcome, st.LastPollResult)
	}
	h.mirror.setHead(commitC)
	h.pollOnce()
	if n := len(h.mirror.rules); n != 3 {
		t.Errorf("%d checks, want one per poll: refused, accepted, new HEAD", n)
	}
}

// countingMirror is a real mirror that counts its signature checks.
type countingMirror struct {
	Mirror
	mu      sync.Mutex
	accepts int
}

func (c *countingMirror) Accept(ctx context.Context, commit string, rule gitwatch.Rule) (gitwatch.Quorum, error) {
	c.mu.Lock()
	c.accepts++
	c.mu.Unlock()
	return c.Mirror.Accept(ctx, commit, rule)
}

func (c *countingMirror) count() int { c.mu.Lock(); defer c.mu.Unlock(); return c.accepts }

// Issue 19 item 3 through real git: whoever may push refs/notes/signatures
// attaches 256 forged packets naming a trusted key to a refused HEAD. The
// watch checks it once, not on every poll, and a real note signature that
// replaces them is seen at the next poll.
func TestRefusedHeadWithForgedNotesIsCheckedOnceRealGit(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	alice, bob := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Bob")
	base := repo.Commit(t, map[string]string{"deploy.sh": "echo base\n"})
	head := repo.Commit(t, map[string]string{"deploy.sh": "echo unsigned\n"})
	var lines []string
	for _, p := range pgptest.Forged(t, alice.Entity.PrimaryKey.Fingerprint, 256) {
		lines = append(lines, base64.StdEncoding.EncodeToString(p))
	}
	repo.AddNoteLines(t, head, lines...)

	h := newHarness(t)
	h.settings.RepoURL, h.settings.InitialLastSuccessful, h.settings.Required = repo.URL(), base, 1
	h.settings.Auth = gitwatch.Auth{Username: srv.Username(), Password: srv.Password()}
	h.settings.Keys = []gitwatch.TrustedKey{{Name: "alice", Armored: alice.PublicArmored(t)}, {Name: "bob", Armored: bob.PublicArmored(t)}}
	var counted *countingMirror
	h.w.deps.OpenMirror = func(ctx context.Context, dir string, ws *Settings) (Mirror, error) {
		m, err := gitwatch.OpenMirror(ctx, dir, ws.RepoURL, ws.Branch, ws.Auth)
		if err != nil {
			return nil, err
		}
		counted = &countingMirror{Mirror: m}
		return counted, nil
	}

	var results []string
	for range 3 {
		h.pollOnce()
		st := h.state()
		if st.LastPollOutcome != OutcomeRefused {
			t.Fatalf("unsigned HEAD with forged notes: %q (%s), want refused", st.LastPollOutcome, st.LastPollResult)
		}
		results = append(results, st.LastPollResult)
		h.clock.advance(time.Minute)
	}
	if n := counted.count(); n != 1 {
		t.Errorf("the refused HEAD was checked %d times in 3 polls, want once", n)
	}
	if results[1] != results[0] || results[2] != results[0] {
		t.Errorf("the refusal changed from poll to poll: %q", results)
	}

	// The forged note is larger than what is read of a note, so a signature
	// appended to it would not be read: Bob does what the refusal says,
	// removes it, and signs.
	repo.Git(t, "notes", "--ref", "signatures", "remove", head)
	repo.Git(t, "push", "--quiet", "--force", "origin", "refs/notes/signatures")
	repo.NoteSignature(t, head, bob)
	h.pollOnce()
	if st := h.state(); st.LastPollOutcome != OutcomeRan || h.lastSuccessful() != head {
		t.Errorf("after Bob's note signature: %q (%s), want %s run", st.LastPollOutcome, st.LastPollResult, head)
	}
	if n := counted.count(); n != 2 {
		t.Errorf("%d checks in all, want a new one after the notes moved", n)
	}
}
