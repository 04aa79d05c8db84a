package gitwatch

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// TrustedKey is one configured trusted public key.
type TrustedKey struct {
	// Name is the operator's name for the key (the storage entry name).
	Name string
	// Armored is the armored public key, as validated by ParseKey.
	Armored string
}

// Signature sources reported in Signer.Sources.
const (
	SourceCommit = "commit" // the commit's own gpgsig header
	SourceNotes  = "notes"  // a line in refs/notes/signatures
)

// Signer is one trusted person who signed, identified by primary key.
type Signer struct {
	// Fingerprint of the primary key, upper-case hex.
	Fingerprint string
	// UserIDs of the key, sorted.
	UserIDs []string
	// Names under which the key is trusted, sorted.
	Names []string
	// Sources where valid signatures by this key were found, sorted
	// (SourceCommit, SourceNotes).
	Sources []string
}

// Quorum is the outcome of counting signatures on one commit.
type Quorum struct {
	Commit   string
	Required int
	// Verified is the number of distinct trusted primary keys with at least
	// one valid signature.
	Verified int
	Signers  []Signer
	// Missing is how many more signers are needed (0 when OK).
	Missing int
	OK      bool
	// Ignored explains, for the operator, signatures by trusted keys that did
	// not count (expired, revoked, bad signature...) and trusted keys that
	// could not be used. Signatures by unknown keys are not listed.
	Ignored []string

	// Set by Accept only.
	//
	// Anchored: the commit is one of Rule.Accepted.
	Anchored bool
	// PluginCounted: a plugin key's signature counted, its chain being
	// accepted.
	PluginCounted bool
	// Untrusted is the commit that kept a plugin key's signature from
	// counting (the first one in the walk down that no trusted person
	// signed enough), and UntrustedReason says why.
	Untrusted       string
	UntrustedReason string
}

// maxSignaturesPerCommit bounds the verification work an attacker who can
// push notes may cause; real commits carry a handful.
const maxSignaturesPerCommit = 256

// signedBlob is one signature container found for a commit: the signed
// payload and the binary OpenPGP data (possibly several signature packets).
type signedBlob struct {
	source  string
	payload []byte
	sig     []byte
}

// trustedSigner is the set of trusted keys sharing one primary fingerprint.
type trustedSigner struct {
	fingerprint string
	names       []string
	entities    []*openpgp.Entity
}

// loadTrusted parses and groups trusted keys by primary fingerprint, so that
// one person stored under two names counts once.
func loadTrusted(keys []TrustedKey) (map[string]*trustedSigner, []string) {
	byFP := make(map[string]*trustedSigner)
	var problems []string
	for _, k := range keys {
		e, err := parseEntity(k.Armored)
		if err != nil {
			problems = append(problems, fmt.Sprintf("trusted key %q is unusable: %v", k.Name, err))
			continue
		}
		fp := fingerprint(e)
		ts := byFP[fp]
		if ts == nil {
			ts = &trustedSigner{fingerprint: fp}
			byFP[fp] = ts
		}
		ts.names = append(ts.names, k.Name)
		ts.entities = append(ts.entities, e)
	}
	return byFP, problems
}

// countQuorum verifies every signature in blobs against the trusted keys at
// time now and counts distinct signers.
func countQuorum(commit string, trusted []TrustedKey, required int, blobs []signedBlob, now time.Time) (Quorum, error) {
	if required < 0 {
		return Quorum{}, fmt.Errorf("required number of signatures must not be negative, got %d", required)
	}
	signers, problems := loadTrusted(trusted)
	return countLoaded(commit, signers, problems, required, blobs, now), nil
}

// countLoaded is countQuorum with the trusted keys already parsed, so a walk
// over many commits parses them once.
func countLoaded(commit string, signers map[string]*trustedSigner, problems []string, required int, blobs []signedBlob, now time.Time) Quorum {
	q := Quorum{Commit: commit, Required: required}
	q.Ignored = append(q.Ignored, problems...)
	if required > len(signers) {
		q.Ignored = append(q.Ignored, fmt.Sprintf("%d signatures are required but only %d distinct trusted keys are configured", required, len(signers)))
	}

	// A fixed order keeps the Ignored lines stable from poll to poll.
	order := make([]*trustedSigner, 0, len(signers))
	for _, ts := range signers {
		order = append(order, ts)
	}
	sort.Slice(order, func(i, j int) bool { return order[i].fingerprint < order[j].fingerprint })

	found := make(map[string]map[string]bool) // fingerprint -> sources
	checked := 0
blobs:
	for _, b := range blobs {
		for _, pkt := range splitSignaturePackets(b.sig) {
			if checked >= maxSignaturesPerCommit {
				q.Ignored = append(q.Ignored, fmt.Sprintf("more than %d signatures on the commit; the rest were not checked", maxSignaturesPerCommit))
				break blobs
			}
			checked++
			claimed := false
			for _, ts := range order {
				ok, reason := ts.verify(b.payload, pkt, b.source == SourceNotes, now)
				claimed = claimed || ok || reason != ""
				if reason != "" {
					q.Ignored = append(q.Ignored, fmt.Sprintf("%s signature by trusted key %s (%s) does not count: %s",
						b.source, ts.fingerprint, strings.Join(ts.names, ", "), reason))
				}
				if ok {
					if found[ts.fingerprint] == nil {
						found[ts.fingerprint] = make(map[string]bool)
					}
					found[ts.fingerprint][b.source] = true
				}
			}
			if !claimed {
				q.Ignored = append(q.Ignored, fmt.Sprintf("%s signature by %s does not count: not a trusted key", b.source, issuerOf(pkt)))
			}
		}
	}
	for fp, sources := range found {
		ts := signers[fp]
		s := Signer{Fingerprint: fp, Names: append([]string(nil), ts.names...)}
		uids := make(map[string]bool)
		for _, e := range ts.entities {
			for name := range e.Identities {
				uids[name] = true
			}
		}
		for u := range uids {
			s.UserIDs = append(s.UserIDs, u)
		}
		for src := range sources {
			s.Sources = append(s.Sources, src)
		}
		sort.Strings(s.UserIDs)
		sort.Strings(s.Names)
		sort.Strings(s.Sources)
		q.Signers = append(q.Signers, s)
	}
	sort.Slice(q.Signers, func(i, j int) bool { return q.Signers[i].Fingerprint < q.Signers[j].Fingerprint })
	q.Verified = len(q.Signers)
	q.OK = q.Verified >= required
	if !q.OK {
		q.Missing = required - q.Verified
	}
	return q
}

// verify checks one signature packet against every stored copy of this
// trusted key. It returns ok when some copy verifies it, and a reason when
// the packet was made by this key but must not count. A packet by another
// key gives neither.
func (ts *trustedSigner) verify(payload, sigPacket []byte, allowText bool, now time.Time) (bool, string) {
	for _, e := range ts.entities {
		// A revocation is final: if any stored copy carries it, the person's
		// key is revoked whatever the other copies say.
		if e.Revoked(now) && issuedBy(sigPacket, e) {
			return false, "the key is revoked"
		}
	}
	var reason string
	for _, e := range ts.entities {
		ok, r := verifyWithEntity(e, payload, sigPacket, allowText, now)
		if ok {
			return true, ""
		}
		if r != "" {
			reason = r
		}
	}
	return false, reason
}

// verifyWithEntity verifies a detached signature packet over payload with
// one entity, with every time check made against now explicitly.
// Text-mode signatures are allowed only when asked (notes: the payload has
// no line ends); over a commit they would also match the commit with its
// line endings changed, which is a different commit id.
func verifyWithEntity(e *openpgp.Entity, payload, sigPacket []byte, allowText bool, now time.Time) (bool, string) {
	cfg := &packet.Config{Time: func() time.Time { return now }}
	sig, signer, err := openpgp.VerifyDetachedSignature(openpgp.EntityList{e}, bytes.NewReader(payload), bytes.NewReader(sigPacket), cfg)
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return false, ""
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return false, "the key or its signing subkey is revoked"
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return false, "the key or its signing subkey has expired or is not yet valid"
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return false, "the signature has expired or is dated in the future"
	case err != nil:
		if !issuedBy(sigPacket, e) {
			return false, ""
		}
		return false, "the signature does not verify: " + err.Error()
	}
	if signer == nil || sig == nil || fingerprint(signer) != fingerprint(e) {
		return false, "the signature was attributed to another key"
	}
	// The library checks these too; repeating them keeps the rules visible
	// and independent of library defaults.
	switch {
	case sig.SigType == packet.SigTypeText && !allowText:
		return false, "a text-mode signature cannot sign a commit object (sign in binary mode, as git does)"
	case sig.SigType != packet.SigTypeBinary && sig.SigType != packet.SigTypeText:
		return false, fmt.Sprintf("signature type %#x is not a document signature", uint8(sig.SigType))
	case !strongHash(sig.Hash):
		return false, fmt.Sprintf("signature uses weak hash %v", sig.Hash)
	case sig.CreationTime.After(now):
		return false, "the signature is dated in the future"
	case e.PrimaryKey.CreationTime.After(now):
		return false, "the key is not yet valid"
	case sig.CreationTime.Before(e.PrimaryKey.CreationTime):
		return false, "the signature predates the key"
	}
	if self, _ := e.PrimarySelfSignature(); self == nil || e.PrimaryKey.KeyExpired(self, now) {
		return false, "the key has expired"
	}
	return true, ""
}

func strongHash(h crypto.Hash) bool {
	switch h {
	case crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA3_256, crypto.SHA3_512:
		return true
	}
	return false
}

// issuedBy reports whether a signature packet names one of e's keys as
// issuer, to tell "bad signature by this key" from "another key's signature".
func issuedBy(sigPacket []byte, e *openpgp.Entity) bool {
	p, err := packet.Read(bytes.NewReader(sigPacket))
	if err != nil {
		return false
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		return false
	}
	matches := func(pk *packet.PublicKey) bool {
		if sig.IssuerFingerprint != nil {
			return bytes.Equal(sig.IssuerFingerprint, pk.Fingerprint)
		}
		return sig.IssuerKeyId != nil && *sig.IssuerKeyId == pk.KeyId
	}
	if matches(e.PrimaryKey) {
		return true
	}
	for _, sk := range e.Subkeys {
		if matches(sk.PublicKey) {
			return true
		}
	}
	return false
}

// issuerOf names the issuer of a signature packet for messages.
func issuerOf(sigPacket []byte) string {
	p, err := packet.Read(bytes.NewReader(sigPacket))
	if err != nil {
		return "an unreadable signature packet"
	}
	sig, ok := p.(*packet.Signature)
	switch {
	case !ok:
		return "a non-signature packet"
	case sig.IssuerFingerprint != nil:
		return "key " + strings.ToUpper(hex.EncodeToString(sig.IssuerFingerprint))
	case sig.IssuerKeyId != nil:
		return fmt.Sprintf("key ID %016X", *sig.IssuerKeyId)
	}
	return "an unknown key"
}

// splitSignaturePackets returns each signature packet of a binary OpenPGP
// stream re-serialized on its own, so that every packet is verified (the
// library stops at the first packet with a known issuer). Other packets
// and trailing garbage are dropped.
func splitSignaturePackets(data []byte) [][]byte {
	const tagSignature = 2
	r := packet.NewOpaqueReader(bytes.NewReader(data))
	var out [][]byte
	for {
		p, err := r.Next()
		if err != nil {
			return out
		}
		if p.Tag != tagSignature {
			continue
		}
		var buf bytes.Buffer
		if err := p.Serialize(&buf); err != nil {
			continue
		}
		out = append(out, buf.Bytes())
	}
}

// dearmorSignature decodes an armored "PGP SIGNATURE" block (a commit's
// gpgsig header). Other signature formats (SSH, X.509) are not OpenPGP and
// give an error.
func dearmorSignature(armored string) ([]byte, error) {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return nil, fmt.Errorf("not an armored OpenPGP signature: %w", err)
	}
	if block.Type != openpgp.SignatureType {
		return nil, fmt.Errorf("armor block is %q, not an OpenPGP signature", block.Type)
	}
	data, err := io.ReadAll(io.LimitReader(block.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("damaged OpenPGP signature armor: %w", err)
	}
	return data, nil
}
