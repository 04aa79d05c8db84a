package gitwatch

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/flant/flant_gitops/gitwatch/sshsig"
)

// TrustedKey is one configured trusted public key.
type TrustedKey struct {
	// Name is the operator's name for the key (the storage entry name).
	Name string
	// Armored is the armored public key, as validated by ParseKey.
	Armored string
	// SSH, set instead of Armored, is an SSH public key line or an
	// allowed_signers line, as validated by ParseSSHKey.
	SSH string `json:",omitempty"`
	// Signer is the trusted person or role holding the key
	// (configure/signer/NAME): all keys of one signer count once together.
	// Empty: the key is a signer of its own, named Name.
	Signer string `json:",omitempty"`
	// Revoked marks a key whose signatures count zero wherever it is
	// trusted (under any name); it makes nothing trusted. For an SSH key,
	// SSH may then be its "SHA256:..." fingerprint alone.
	Revoked bool `json:",omitempty"`
}

// Signature sources reported in Signer.Sources.
const (
	SourceCommit = "commit" // the commit's own gpgsig header
	SourceNotes  = "notes"  // a line in refs/notes/signatures
)

// Signer is one trusted signer (person or role) who signed: the unit a
// quorum counts, whatever number of their keys signed.
type Signer struct {
	// Name of the signer: the configure/signer name, or for a key trusted
	// on its own, its name.
	Name string
	// Kind is KindPGP or KindSSH: the kind of the key that verified.
	Kind string
	// Fingerprint of the key that verified (the first of Keys): upper-case
	// hex for PGP (primary key), "SHA256:..." for SSH as ssh-keygen
	// prints it.
	Fingerprint string
	// Keys are every key of the signer with a signature that verified,
	// each with where it was found (first the commit's own, then by
	// fingerprint).
	Keys []SignerKey
	// UserIDs of the keys, sorted; for an SSH key, the principals of its
	// allowed_signers line and its comment.
	UserIDs []string
	// Names under which the keys are trusted, sorted.
	Names []string
	// Sources holds where the signatures that counted were found
	// (SourceCommit or SourceNotes). Each key is checked once per commit,
	// the commit's own signature first.
	Sources []string
}

// Quorum is the outcome of counting signatures on one commit.
type Quorum struct {
	Commit   string
	Required int
	// Verified is the number of distinct trusted signers (people: all the
	// keys of one count once) with at least one valid signature.
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
	// Rules are the path rules the change touches, each with its outcome;
	// OK needs every one of them. Changes says what change decided them.
	Rules   []RuleOutcome
	Changes Changes
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

	// checks is how many signature verifications (cryptography) the count
	// made, for the tests of the budget.
	checks int
}

// Digest identifies everything the rule decides with (keys, quorum,
// plugin keys, anchors, bounds), for remembering a verdict: two rules with
// the same digest give the same answer on the same commit and signature
// refs, until time makes a key or signature expire or become valid. It is
// "" when the rule cannot be digested; then nothing may be remembered.
func (r Rule) Digest() string {
	b, err := json.Marshal(r)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// maxSignaturesPerCommit bounds how many signature packets of one commit
// are looked at (their issuer read); real commits carry a handful. What
// costs cryptography is bounded by the trusted keys instead: see
// countLoaded.
const maxSignaturesPerCommit = 256

// signedBlob is one signature container found for a commit: the signed
// payload and the binary OpenPGP data (possibly several signature packets).
type signedBlob struct {
	source  string
	payload []byte
	sig     []byte
	// signTime is the commit's committer time: what an SSH key's
	// valid-after/valid-before options are checked against, as git does.
	signTime time.Time
}

// trustedSigner is the set of trusted keys sharing one primary fingerprint.
type trustedSigner struct {
	fingerprint string
	names       []string
	entities    []*openpgp.Entity
	ssh         *sshTrust // an SSH key instead of entities
	// unit is the signer the key counts for and name how it is shown
	// (people.go); holders are the signers that hold the key.
	unit, name string
	holders    []string
}

// trustedSet is the trusted keys of one check, parsed once, with every
// primary key and subkey indexed by fingerprint and key ID, so that a
// signature packet finds the one person it names without any cryptography.
type trustedSet struct {
	signers       map[string]*trustedSigner // by primary fingerprint
	byFingerprint map[string][]*trustedSigner
	byKeyID       map[uint64][]*trustedSigner
	revoked       map[string]bool // fingerprints of TrustedKey.Revoked keys
}

// loadTrusted parses and groups trusted keys by primary fingerprint, so that
// one person stored under two names counts once.
func loadTrusted(keys []TrustedKey) (*trustedSet, []string) {
	set := &trustedSet{
		signers:       make(map[string]*trustedSigner),
		byFingerprint: make(map[string][]*trustedSigner),
		byKeyID:       make(map[uint64][]*trustedSigner),
	}
	var problems []string
	for _, k := range keys {
		if k.SSH != "" {
			if err := set.addSSH(k); err != nil {
				problems = append(problems, fmt.Sprintf("trusted SSH key %q is unusable: %v", k.Name, err))
			}
			continue
		}
		e, err := parseEntity(k.Armored)
		if err != nil {
			problems = append(problems, fmt.Sprintf("trusted key %q is unusable: %v", k.Name, err))
			continue
		}
		fp := fingerprint(e)
		if k.Revoked {
			set.revoke(fp)
			continue
		}
		ts := set.signers[fp]
		if ts == nil {
			ts = &trustedSigner{fingerprint: fp}
			set.signers[fp] = ts
		}
		ts.names = append(ts.names, k.Name)
		ts.entities = append(ts.entities, e)
		ts.holdBy(k)
		set.index(ts, e.PrimaryKey)
		for _, sk := range e.Subkeys {
			set.index(ts, sk.PublicKey)
		}
	}
	return set, append(problems, set.assignUnits()...)
}

func (s *trustedSet) index(ts *trustedSigner, pk *packet.PublicKey) {
	if pk == nil {
		return
	}
	if fp := string(pk.Fingerprint); !slices.Contains(s.byFingerprint[fp], ts) {
		s.byFingerprint[fp] = append(s.byFingerprint[fp], ts)
	}
	if !slices.Contains(s.byKeyID[pk.KeyId], ts) {
		s.byKeyID[pk.KeyId] = append(s.byKeyID[pk.KeyId], ts)
	}
}

// named returns the trusted signers a signature packet names as its issuer
// (by the issuer fingerprint when the packet has one, else by key ID): a map
// lookup, no cryptography. Usually one; none for anybody else's packet.
func (s *trustedSet) named(pkt sigPacket) []*trustedSigner {
	switch {
	case !pkt.readable:
		return nil
	case len(pkt.fingerprint) > 0:
		return s.byFingerprint[string(pkt.fingerprint)]
	case pkt.hasKeyID:
		return s.byKeyID[pkt.keyID]
	}
	return nil
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
//
// Whoever may push notes can attach any number of packets, so the work has
// a budget they do not control: a packet costs cryptography only when its
// issuer is a trusted key, and each trusted key is verified at most once
// per commit, on the first packet naming it (the commit's own signature
// comes first). Further packets naming a key already checked are skipped
// and reported in one line.
func countLoaded(commit string, set *trustedSet, problems []string, required int, blobs []signedBlob, now time.Time) Quorum {
	q := Quorum{Commit: commit, Required: required}
	q.Ignored = append(q.Ignored, problems...)
	if n := set.units(); required > n {
		q.Ignored = append(q.Ignored, fmt.Sprintf("%d signatures are required but only %d distinct trusted signers are configured", required, n))
	}

	found := make(map[string]string)          // fingerprint -> source of the signature that counted
	checked := make(map[*trustedSigner]bool)  // verified once on this commit, whatever the outcome
	skipped := make(map[*trustedSigner]*skip) // packets not checked
	var unknown []untrustedPackets            // by source, in order of appearance
	var damaged sshDamage                     // unreadable SSH signatures
	// consider verifies one signature naming ts, unless ts was checked on
	// this commit already.
	consider := func(ts *trustedSigner, source string, verify func() (bool, string)) {
		if checked[ts] {
			sk := skipped[ts]
			if sk == nil {
				sk = &skip{}
				skipped[ts] = sk
			}
			sk.n++
			if !slices.Contains(sk.sources, source) {
				sk.sources = append(sk.sources, source)
			}
			return
		}
		checked[ts] = true
		if set.revoked[ts.fingerprint] {
			q.Ignored = append(q.Ignored, fmt.Sprintf("%s signature by trusted key %s (%s) does not count: the key is revoked",
				source, ts.fingerprint, strings.Join(ts.names, ", ")))
			return
		}
		q.checks++
		if ok, reason := verify(); ok {
			found[ts.fingerprint] = source
		} else {
			q.Ignored = append(q.Ignored, fmt.Sprintf("%s signature by trusted key %s (%s) does not count: %s",
				source, ts.fingerprint, strings.Join(ts.names, ", "), reason))
		}
	}
	seen := 0
	for _, b := range blobs {
		if sshsig.IsSSHSIG(b.sig) {
			if seen >= maxSignaturesPerCommit {
				q.Ignored = append(q.Ignored, fmt.Sprintf("more than %d signatures on the commit; the rest were not checked", maxSignaturesPerCommit))
				break
			}
			seen++
			ts, sig, fp, err := set.sshSigner(b.sig)
			switch {
			case err != nil:
				damaged.add(b.source, err)
			case ts == nil && set.revoked[fp]:
				unknown = addUntrusted(unknown, b.source, "revoked SSH key "+fp)
			case ts == nil:
				unknown = addUntrusted(unknown, b.source, "SSH key "+fp)
			default:
				consider(ts, b.source, func() (bool, string) { return ts.verifySSH(sig, b.payload, b.signTime) })
			}
			continue
		}
		n, more := signaturePackets(b.sig, maxSignaturesPerCommit-seen, func(pkt sigPacket) {
			named := set.named(pkt)
			if len(named) == 0 {
				unknown = addUntrusted(unknown, b.source, issuerOf(pkt))
				return
			}
			for _, ts := range named {
				consider(ts, b.source, func() (bool, string) {
					ok, reason := ts.verify(b.payload, pkt.raw, b.source == SourceNotes, now)
					if !ok && reason == "" {
						// Named by the packet, refused by the library without a
						// reason of its own: the issuer's key cannot sign.
						reason = "it names this key as its issuer, but the key has no signing key with that ID"
					}
					return ok, reason
				})
			}
		})
		seen += n
		if more {
			q.Ignored = append(q.Ignored, fmt.Sprintf("more than %d signatures on the commit; the rest were not checked", maxSignaturesPerCommit))
			break
		}
	}
	for _, u := range unknown {
		q.Ignored = append(q.Ignored, u.String())
	}
	q.Ignored = append(q.Ignored, damaged.lines()...)
	q.Ignored = append(q.Ignored, skippedLines(skipped, found)...)

	q.Signers = set.signersOf(found)
	q.Verified = len(q.Signers)
	q.OK = q.Verified >= required
	if !q.OK {
		q.Missing = required - q.Verified
	}
	return q
}

// skip counts the packets naming one trusted key that were not checked.
type skip struct {
	n       int
	sources []string
}

// skippedLines reports, once per trusted key, the packets naming it that
// were not checked, in a fixed order so the lines stay stable from poll to
// poll.
func skippedLines(skipped map[*trustedSigner]*skip, found map[string]string) []string {
	order := make([]*trustedSigner, 0, len(skipped))
	for ts := range skipped {
		order = append(order, ts)
	}
	sort.Slice(order, func(i, j int) bool { return order[i].fingerprint < order[j].fingerprint })
	var lines []string
	for _, ts := range order {
		sk := skipped[ts]
		outcome := "it did not count"
		if src, ok := found[ts.fingerprint]; ok {
			outcome = "its " + src + " signature counted"
		}
		lines = append(lines, fmt.Sprintf("%d more signature(s) naming trusted key %s (%s) in %s were not checked: each trusted key is checked once per commit and %s",
			sk.n, ts.fingerprint, strings.Join(ts.names, ", "), strings.Join(sk.sources, " and "), outcome))
	}
	return lines
}

// untrustedPackets sums up the packets of one source whose issuer is not a
// trusted key: one line, whatever their number.
type untrustedPackets struct {
	source  string
	n       int
	issuers []string // the first few, distinct
}

// maxNamedIssuers bounds how many unknown issuers one line names.
const maxNamedIssuers = 3

func addUntrusted(list []untrustedPackets, source string, who string) []untrustedPackets {
	i := slices.IndexFunc(list, func(u untrustedPackets) bool { return u.source == source })
	if i < 0 {
		list = append(list, untrustedPackets{source: source})
		i = len(list) - 1
	}
	u := &list[i]
	u.n++
	if len(u.issuers) < maxNamedIssuers && !slices.Contains(u.issuers, who) {
		u.issuers = append(u.issuers, who)
	}
	return list
}

func (u untrustedPackets) String() string {
	if u.n == 1 {
		return fmt.Sprintf("%s signature by %s does not count: not a trusted key", u.source, u.issuers[0])
	}
	by := strings.Join(u.issuers, ", ")
	if u.n > len(u.issuers) {
		by += ", ..."
	}
	return fmt.Sprintf("%d %s signatures do not count: not a trusted key (by %s)", u.n, u.source, by)
}

// verify checks one signature packet naming this trusted key against every
// stored copy of it (the operator's copies, not the pusher's packets, set
// how many). It returns ok when some copy verifies it, else a reason when
// the packet must not count; a copy that does not hold the issuer gives
// neither.
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
func issuerOf(pkt sigPacket) string {
	switch {
	case !pkt.readable:
		return "an unreadable signature packet"
	case pkt.fingerprint != nil:
		return "key " + strings.ToUpper(hex.EncodeToString(pkt.fingerprint))
	case pkt.hasKeyID:
		return fmt.Sprintf("key ID %016X", pkt.keyID)
	}
	return "an unknown key"
}

// sigPacket is one signature packet (header included, as found) and the
// issuer it names, read without any cryptography.
type sigPacket struct {
	raw         []byte
	readable    bool   // a v4, v5 or v6 signature whose subpackets parse
	fingerprint []byte // issuer fingerprint subpacket, nil when absent
	keyID       uint64 // issuer key ID subpacket, when hasKeyID
	hasKeyID    bool
}

// signaturePackets calls fn with each of up to limit signature packets of
// a binary OpenPGP stream, each on its own, so that every packet is
// considered (the library stops at the first packet with a known issuer).
// It returns how many it passed and whether there were others past the
// limit. Other packets are dropped; framing stops at the first damaged one.
// A pusher sets how many packets there are, so each costs a few byte
// comparisons: no parsing beyond the issuer, no copies.
func signaturePackets(data []byte, limit int, fn func(sigPacket)) (n int, more bool) {
	const tagSignature = 2
	for len(data) > 0 {
		tag, whole, body, rest, ok := nextPacket(data)
		if !ok {
			return n, false
		}
		data = rest
		if tag != tagSignature {
			continue
		}
		if n >= limit {
			return n, true
		}
		pkt := sigPacket{raw: whole}
		pkt.readIssuer(body)
		fn(pkt)
		n++
	}
	return n, false
}

// nextPacket frames the OpenPGP packet at the start of data (RFC 9580
// section 4.2): its tag, its whole encoding, its body and what follows.
// Partial body lengths are refused: they are for data packets only, and
// git and gpg never write them for signatures.
func nextPacket(data []byte) (tag byte, whole, body, rest []byte, ok bool) {
	if len(data) < 2 || data[0]&0x80 == 0 {
		return 0, nil, nil, nil, false
	}
	var hdr, n int
	if data[0]&0x40 == 0 { // legacy format
		tag = (data[0] & 0x3f) >> 2
		switch data[0] & 3 {
		case 0:
			hdr, n = 2, int(data[1])
		case 1:
			if len(data) < 3 {
				return 0, nil, nil, nil, false
			}
			hdr, n = 3, int(data[1])<<8|int(data[2])
		case 2:
			if len(data) < 5 {
				return 0, nil, nil, nil, false
			}
			hdr, n = 5, int(data[1])<<24|int(data[2])<<16|int(data[3])<<8|int(data[4])
		default: // indeterminate: to the end
			hdr, n = 1, len(data)-1
		}
	} else {
		tag = data[0] & 0x3f
		switch b := data[1]; {
		case b < 192:
			hdr, n = 2, int(b)
		case b < 224:
			if len(data) < 3 {
				return 0, nil, nil, nil, false
			}
			hdr, n = 3, (int(b)-192)<<8+int(data[2])+192
		case b == 255:
			if len(data) < 6 {
				return 0, nil, nil, nil, false
			}
			hdr, n = 6, int(data[2])<<24|int(data[3])<<16|int(data[4])<<8|int(data[5])
		default:
			return 0, nil, nil, nil, false
		}
	}
	if n < 0 || n > len(data)-hdr {
		return 0, nil, nil, nil, false
	}
	return tag, data[:hdr+n], data[hdr : hdr+n], data[hdr+n:], true
}

// readIssuer reads the issuer subpackets of a signature packet body (RFC
// 9580 section 5.2.3), hashed and unhashed alike: the lookup only picks the
// key to verify with, the verification itself decides.
func (p *sigPacket) readIssuer(body []byte) {
	if len(body) < 4 {
		return
	}
	lenBytes := 2
	switch body[0] {
	case 4, 5:
	case 6:
		lenBytes = 4
	default:
		return
	}
	rest := body[4:]
	for range 2 { // hashed, then unhashed subpackets
		if len(rest) < lenBytes {
			return
		}
		n := 0
		for _, b := range rest[:lenBytes] {
			n = n<<8 | int(b)
		}
		rest = rest[lenBytes:]
		if n < 0 || n > len(rest) {
			return
		}
		if !p.readSubpackets(rest[:n]) {
			return
		}
		rest = rest[n:]
	}
	p.readable = true
}

func (p *sigPacket) readSubpackets(area []byte) bool {
	const (
		issuerKeyID       = 16
		issuerFingerprint = 33
	)
	for len(area) > 0 {
		var hdr, n int
		switch b := area[0]; {
		case b < 192:
			hdr, n = 1, int(b)
		case b < 255:
			if len(area) < 2 {
				return false
			}
			hdr, n = 2, (int(b)-192)<<8+int(area[1])+192
		default:
			if len(area) < 5 {
				return false
			}
			hdr, n = 5, int(area[1])<<24|int(area[2])<<16|int(area[3])<<8|int(area[4])
		}
		if n < 1 || n > len(area)-hdr {
			return false
		}
		sub := area[hdr : hdr+n]
		area = area[hdr+n:]
		switch data := sub[1:]; sub[0] & 0x7f {
		case issuerKeyID:
			if len(data) == 8 {
				p.keyID, p.hasKeyID = binary.BigEndian.Uint64(data), true
			}
		case issuerFingerprint:
			if len(data) > 1 {
				p.fingerprint = data[1:] // after the key version
			}
		}
	}
	return true
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
