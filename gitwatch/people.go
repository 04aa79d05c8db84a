package gitwatch

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// A quorum counts signers (people or roles), not keys: a person with a
// laptop key and a hardware key who signs with both counts once. A key
// belongs to the signer named in TrustedKey.Signer; a key trusted on its
// own (no Signer) is a signer of its own, named by its name. A key trusted
// both on its own and by a signer counts as the signer's, and a key trusted
// under a name that is also a signer's name counts for that signer.

// SignerKey is one key of a signer whose signature verified.
type SignerKey struct {
	// Fingerprint of the key: upper-case hex for PGP (primary key),
	// "SHA256:..." for SSH.
	Fingerprint string
	// Kind is KindPGP or KindSSH.
	Kind string
	// Source is where the signature was found: SourceCommit or SourceNotes.
	Source string
}

// holdBy records what the configuration says about one copy of the key.
func (ts *trustedSigner) holdBy(k TrustedKey) {
	if k.Signer != "" && !slices.Contains(ts.holders, k.Signer) {
		ts.holders = append(ts.holders, k.Signer)
	}
}

// assignUnits decides which signer each key counts for, and reports a key
// held by two signers (the configuration refuses it; a key must not count
// twice all the same, so it counts for the first by name).
func (s *trustedSet) assignUnits() []string {
	var problems []string
	for _, ts := range s.sortedSigners() {
		sort.Strings(ts.holders)
		names := slices.Clone(ts.names)
		sort.Strings(names)
		switch {
		case len(ts.holders) > 0:
			ts.unit = ts.holders[0]
		case len(names) > 0:
			ts.unit = names[0]
		default:
			ts.unit = ts.fingerprint
		}
		ts.name = ts.unit
		if len(ts.holders) > 1 {
			problems = append(problems, fmt.Sprintf("key %s is held by signers %s; it counts for %s only",
				ts.fingerprint, strings.Join(ts.holders, " and "), ts.holders[0]))
		}
	}
	return problems
}

// isolate makes each plugin key a signer of its own, whoever holds it: the
// plugin's signature counts only as the plugin (chain.go), never as a
// person's.
func (s *trustedSet) isolate(plugin map[string]bool) {
	for fp, ts := range s.signers {
		if plugin[fp] {
			ts.unit = "\x00plugin " + fp
		}
	}
}

func (s *trustedSet) sortedSigners() []*trustedSigner {
	out := make([]*trustedSigner, 0, len(s.signers))
	for _, ts := range s.signers {
		out = append(out, ts)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].fingerprint < out[j].fingerprint })
	return out
}

// units is how many distinct signers could sign: those with a key that is
// not revoked.
func (s *trustedSet) units() int {
	seen := make(map[string]bool)
	for fp, ts := range s.signers {
		if !s.revoked[fp] {
			seen[ts.unit] = true
		}
	}
	return len(seen)
}

// signerNames are the names of every signer that could sign (a key not
// revoked by the operator), plugin keys left out, sorted.
func (s *trustedSet) signerNames(plugin map[string]bool) []string {
	var out []string
	for fp, ts := range s.signers {
		if !s.revoked[fp] && !plugin[fp] && !slices.Contains(out, ts.name) {
			out = append(out, ts.name)
		}
	}
	sort.Strings(out)
	return out
}

// signersOf groups the keys whose signature verified (fingerprint to
// source) into signers, sorted by name.
func (s *trustedSet) signersOf(found map[string]string) []Signer {
	byUnit := make(map[string]*Signer)
	var order []string
	for _, fp := range sortedKeys(found) {
		ts := s.signers[fp]
		sg := byUnit[ts.unit]
		if sg == nil {
			sg = &Signer{Name: ts.name}
			byUnit[ts.unit] = sg
			order = append(order, ts.unit)
		}
		sg.Keys = append(sg.Keys, SignerKey{Fingerprint: fp, Kind: ts.kind(), Source: found[fp]})
		for _, n := range ts.names {
			if !slices.Contains(sg.Names, n) {
				sg.Names = append(sg.Names, n)
			}
		}
		uids := ts.sshIdentities()
		for _, e := range ts.entities {
			for uid := range e.Identities {
				uids = append(uids, uid)
			}
		}
		for _, uid := range uids {
			if !slices.Contains(sg.UserIDs, uid) {
				sg.UserIDs = append(sg.UserIDs, uid)
			}
		}
	}
	out := make([]Signer, 0, len(order))
	for _, u := range order {
		sg := byUnit[u]
		// The commit's own signature first, then by fingerprint.
		sort.SliceStable(sg.Keys, func(i, j int) bool {
			return sg.Keys[i].Source == SourceCommit && sg.Keys[j].Source != SourceCommit
		})
		sg.Fingerprint, sg.Kind = sg.Keys[0].Fingerprint, sg.Keys[0].Kind
		for _, k := range sg.Keys {
			if !slices.Contains(sg.Sources, k.Source) {
				sg.Sources = append(sg.Sources, k.Source)
			}
		}
		sort.Strings(sg.Names)
		sort.Strings(sg.UserIDs)
		out = append(out, *sg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Label names the signer and the keys that verified, for status and the
// run record: "alice (key 0123…ABCD in commit, key 4567…EF01 in notes)".
func (s Signer) Label() string {
	keys := make([]string, 0, len(s.Keys))
	for _, k := range s.Keys {
		keys = append(keys, fmt.Sprintf("%s key %s in %s", k.Kind, k.Fingerprint, k.Source))
	}
	if len(keys) == 0 && s.Fingerprint != "" {
		keys = append(keys, "key "+s.Fingerprint)
	}
	name := s.Name
	if name == "" {
		name = strings.Join(s.Names, ",")
	}
	return strings.TrimSpace(name + " (" + strings.Join(keys, ", ") + ")")
}
