package gitwatch

import (
	"fmt"
	"strings"
)

// Verdict explains a check in the words status, the run record and the
// signatures read path share: who signed (each signer with the key that
// verified), the quorum, each path rule the change touches with what it
// still misses and who could still sign, and what did not count.
func (q Quorum) Verdict() string {
	if q.Anchored {
		return fmt.Sprintf("commit %s is the last successful commit: it is accepted whatever its signatures", q.Commit)
	}
	signed := "nobody trusted"
	if len(q.Signers) > 0 {
		labels := make([]string, 0, len(q.Signers))
		for _, s := range q.Signers {
			labels = append(labels, s.Label())
		}
		signed = strings.Join(labels, "; ")
	}
	var b strings.Builder
	if q.Verified >= q.Required {
		fmt.Fprintf(&b, "commit %s has %d of %d required verified signatures (signed by: %s)", q.Commit, q.Verified, q.Required, signed)
	} else {
		fmt.Fprintf(&b, "commit %s has %d of %d required verified signatures, %d more needed (signed by: %s)", q.Commit, q.Verified, q.Required, q.Required-q.Verified, signed)
	}
	for _, r := range q.Rules {
		b.WriteString("; ")
		b.WriteString(r.Text(q.Changes))
	}
	if q.Untrusted != "" {
		b.WriteString("; ")
		b.WriteString(q.UntrustedChainText(q.Commit))
	}
	if len(q.Ignored) > 0 {
		b.WriteString("; not counted: ")
		b.WriteString(strings.Join(q.Ignored, "; "))
	}
	return b.String()
}

// Text says how one path rule fared: which changed files make it apply,
// how many signers it needs and from whom, who signed, and when it is not
// met, how many are missing and who could still sign.
func (r RuleOutcome) Text(ch Changes) string {
	from := ""
	if len(r.Signers) > 0 {
		from = " from " + strings.Join(r.Signers, ", ")
	}
	head := fmt.Sprintf("rule %q (%s) applies to %s and needs %d signer(s)%s", r.Name, strings.Join(r.Paths, ", "), r.appliesTo(ch), r.Required, from)
	signed := "signed by none of them"
	if len(r.Signed) > 0 {
		signed = "signed by " + strings.Join(r.Signed, ", ")
	}
	if r.OK {
		return head + ": met, " + signed
	}
	could := "nobody else can sign for it (add signers or change the rule)"
	if len(r.CouldSign) > 0 {
		could = "could still sign: " + strings.Join(r.CouldSign, ", ")
	}
	return fmt.Sprintf("%s: not met, %s, %d more needed; %s", head, signed, r.Missing, could)
}

func (r RuleOutcome) appliesTo(ch Changes) string {
	switch {
	case r.MatchedCount > 0 && !r.BeyondCap:
		s := strings.Join(r.Matched, ", ")
		if more := r.MatchedCount - len(r.Matched); more > 0 {
			s += fmt.Sprintf(" and %d more file(s)", more)
		}
		return s
	case ch.Problem != "":
		return "every file (" + ch.Problem + ")"
	}
	return fmt.Sprintf("every file (more than %d files changed, more than a check lists)", ch.Files)
}
