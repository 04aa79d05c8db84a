package backend

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch"
)

// signerEntry is a trusted signer: a person or role with any number of
// keys. The quorum counts signers, so one person's keys count once.
type signerEntry struct {
	Name    string             `json:"name"`
	PGPKeys []*trustedKeyEntry `json:"pgp_keys,omitempty"`
	SSHKeys []signerSSHKey     `json:"ssh_keys,omitempty"`
	// RevokedKeys are fingerprints (PGP hex, SSH SHA256:...) whose
	// signatures count zero from now on, wherever the key is trusted.
	RevokedKeys []string `json:"revoked_keys,omitempty"`
}

func getSigner(ctx context.Context, s logical.Storage, name string) (*signerEntry, error) {
	return getEntry[signerEntry](ctx, s, storagePrefixSigner+name)
}

func listSigners(ctx context.Context, s logical.Storage) ([]*signerEntry, error) {
	return listEntries[signerEntry](ctx, s, storagePrefixSigner)
}

func pathSigner(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "configure/signer/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "signers"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  b.pathSignerList,
					Responses: listOK(""),
					Summary:   "List the names of the trusted signers.",
				},
			},
			HelpSynopsis:    pathSignerListHelpSyn,
			HelpDescription: pathSignerHelpDesc,
		},
		{
			// NAME is matched broadly so that a bad name gets a 400 that
			// says what is allowed instead of a bare 404.
			Pattern:      "configure/signer/(?P<name>.+)",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "signer"},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the signer (a person or role): letters, digits, '_', '.' or '-'. Path rules name signers by it.",
				},
				"pgp_public_keys": {
					Type: framework.TypeStringSlice,
					Description: "The signer's armored PGP public keys, one per item (`pgp_public_keys=@laptop.asc pgp_public_keys=@token.asc`); " +
						"a single text may also hold several armored blocks. Replaces the signer's PGP keys; left out, they stay.",
				},
				"ssh_public_keys": {
					Type: framework.TypeStringSlice,
					Description: "The signer's SSH public keys, one line each as `ssh-keygen` writes the .pub file, optionally led by the allowed_signers " +
						"options valid-after, valid-before and namespaces. Replaces the signer's SSH keys; left out, they stay.",
				},
				"revoked_keys": {
					Type: framework.TypeStringSlice,
					Description: "Fingerprints of keys that no longer count (PGP: 40 or 64 hex digits; SSH: SHA256:...), wherever they are trusted. " +
						"Replaces the list; left out, it stays.",
				},
			},
			ExistenceCheck: b.signerExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathSignerRead,
					Responses: okWith(signerResponseFields()),
					Summary:   "Show the signer's keys: fingerprints, kinds, user IDs, expiry.",
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.keepsFormat(b.pathSignerWrite),
					Responses:                   okWith(signerResponseFields()),
					Summary:                     "Trust a signer with its keys.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.keepsFormat(b.pathSignerWrite),
					Responses:                   okWith(signerResponseFields()),
					Summary:                     "Change a signer's keys or revoked keys.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.keepsFormat(b.pathSignerDelete),
					Responses:                   noContent(),
					Summary:                     "Stop trusting a signer.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathSignerHelpSyn,
			HelpDescription: pathSignerHelpDesc,
		},
	}
}

func (b *backend) signerExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName("signer", name) != nil {
		return false, nil
	}
	e, err := getSigner(ctx, req.Storage, name)
	return e != nil, err
}

func (b *backend) pathSignerList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, storagePrefixSigner)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathSignerRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("signer", name); err != nil {
		return respondErr(err)
	}
	e, err := getSigner(ctx, req.Storage, name)
	if err != nil || e == nil {
		return nil, err
	}
	return &logical.Response{Data: signerResponse(e, time.Now())}, nil
}

// signerResponse is the allow-list of what a read shows: public keys and
// the facts read from them.
func signerResponse(e *signerEntry, now time.Time) map[string]any {
	pgp := make([]map[string]any, 0, len(e.PGPKeys))
	usable := false
	var problems []string
	for _, k := range e.PGPKeys {
		data := trustedKeyResponse(k, now)
		delete(data, "name")
		data["kind"] = gitwatch.KindPGP
		if slices.Contains(e.RevokedKeys, k.Fingerprint) {
			data["usable"], data["problem"] = false, "listed in revoked_keys"
		}
		if data["usable"] == true {
			usable = true
		} else {
			problems = append(problems, fmt.Sprintf("PGP key %s: %s", k.Fingerprint, data["problem"]))
		}
		pgp = append(pgp, data)
	}
	ssh := make([]map[string]any, 0, len(e.SSHKeys))
	for _, k := range e.SSHKeys {
		problem := k.problemAt(now)
		if slices.Contains(e.RevokedKeys, k.Fingerprint) {
			problem = "listed in revoked_keys"
		}
		if problem == "" {
			usable = true
		} else {
			problems = append(problems, fmt.Sprintf("SSH key %s: %s", k.Fingerprint, problem))
		}
		ssh = append(ssh, map[string]any{
			"kind":         gitwatch.KindSSH,
			"type":         k.Type,
			"fingerprint":  k.Fingerprint,
			"comment":      k.Comment,
			"valid_after":  k.ValidAfter,
			"valid_before": k.ValidBefore,
			"namespaces":   k.Namespaces,
			"public_key":   k.PublicKey,
			"usable":       problem == "",
			"problem":      problem,
		})
	}
	revoked := e.RevokedKeys
	if revoked == nil {
		revoked = []string{}
	}
	if problems == nil {
		problems = []string{}
	}
	return map[string]any{
		"name":            e.Name,
		"pgp_public_keys": pgp,
		"ssh_public_keys": ssh,
		"revoked_keys":    revoked,
		"usable":          usable,
		"problems":        problems,
	}
}

// rawStrings reads a list field given either as a list or as one string.
// One string is split by split (armored blocks, lines), never on commas:
// an armored key's comment may hold one.
func rawStrings(req *logical.Request, d *framework.FieldData, field string, split func(string) []string) ([]string, bool) {
	raw, ok := req.Data[field]
	if !ok {
		return nil, false
	}
	if s, isString := raw.(string); isString {
		return split(s), true
	}
	return d.Get(field).([]string), true
}

var armorBegin = regexp.MustCompile(`(?m)^-----BEGIN PGP `)

// splitArmored splits a text into its armored blocks (the text whole when
// it has none, so that ParseKey says what is wrong with it).
func splitArmored(s string) []string {
	idx := armorBegin.FindAllStringIndex(s, -1)
	if len(idx) <= 1 {
		if strings.TrimSpace(s) == "" {
			return nil
		}
		return []string{s}
	}
	var out []string
	for i, loc := range idx {
		end := len(s)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		out = append(out, s[loc[0]:end])
	}
	return out
}

func splitLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

var (
	pgpFingerprintRe = regexp.MustCompile(`^(?:[0-9A-F]{40}|[0-9A-F]{64})$`)
	sshFingerprintRe = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)
)

// normalizeFingerprint accepts a PGP fingerprint (spaces allowed, any
// case) or an SSH SHA256 fingerprint.
func normalizeFingerprint(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if strings.HasPrefix(s, "SHA256:") {
		if sshFingerprintRe.MatchString(strings.TrimRight(s, "=")) {
			return strings.TrimRight(s, "="), nil
		}
	} else if pgp := strings.ToUpper(strings.ReplaceAll(s, " ", "")); pgpFingerprintRe.MatchString(pgp) {
		return pgp, nil
	}
	return "", invalidf("revoked_keys item %q is not a key fingerprint: give a PGP fingerprint (40 or 64 hex digits, as `gpg --fingerprint` prints it) or an SSH one (SHA256:..., as `ssh-keygen -lf key.pub` prints it)", raw)
}

func (b *backend) pathSignerWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("signer", name); err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	old, err := getSigner(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	e := &signerEntry{Name: name}
	if old != nil {
		e.PGPKeys, e.SSHKeys, e.RevokedKeys = old.PGPKeys, old.SSHKeys, old.RevokedKeys
	}
	seen := make(map[string]string) // fingerprint -> which item holds it
	if texts, ok := rawStrings(req, d, "pgp_public_keys", splitArmored); ok {
		e.PGPKeys = nil
		for i, text := range texts {
			info, err := gitwatch.ParseKey(text)
			if err != nil {
				return respondErr(invalidf("pgp_public_keys item %d is not a valid PGP public key: %v", i+1, err))
			}
			e.PGPKeys = append(e.PGPKeys, &trustedKeyEntry{Name: name, PublicKey: text, Fingerprint: info.Fingerprint,
				UserIDs: info.UserIDs, Created: info.Created, Expires: info.Expires, Revoked: info.Revoked})
		}
	}
	if lines, ok := rawStrings(req, d, "ssh_public_keys", splitLines); ok {
		e.SSHKeys = nil
		for i, line := range lines {
			k, err := parseSignerSSHKey(line)
			if err == nil {
				// What the watch will read, read the watch's way.
				_, err = gitwatch.ParseSSHKey(k.PublicKey)
			}
			if err != nil {
				return respondErr(invalidf("ssh_public_keys item %d: %v", i+1, err))
			}
			e.SSHKeys = append(e.SSHKeys, k)
		}
	}
	if list, ok := rawStrings(req, d, "revoked_keys", splitLines); ok {
		e.RevokedKeys = nil
		for _, raw := range list {
			fp, err := normalizeFingerprint(raw)
			if err != nil {
				return respondErr(err)
			}
			if !slices.Contains(e.RevokedKeys, fp) {
				e.RevokedKeys = append(e.RevokedKeys, fp)
			}
		}
		sort.Strings(e.RevokedKeys)
	}
	if len(e.PGPKeys)+len(e.SSHKeys) == 0 {
		return respondErr(invalidf("signer %q has no keys: give pgp_public_keys (`gpg --armor --export KEYID`) and/or ssh_public_keys (the .pub line)", name))
	}
	for i, k := range e.PGPKeys {
		item := fmt.Sprintf("pgp_public_keys item %d", i+1)
		if prev, dup := seen[k.Fingerprint]; dup {
			return respondErr(invalidf("%s is the same key as %s (%s): give each key once", item, prev, k.Fingerprint))
		}
		seen[k.Fingerprint] = item
	}
	for i, k := range e.SSHKeys {
		item := fmt.Sprintf("ssh_public_keys item %d", i+1)
		if prev, dup := seen[k.Fingerprint]; dup {
			return respondErr(invalidf("%s is the same key as %s (%s): give each key once", item, prev, k.Fingerprint))
		}
		seen[k.Fingerprint] = item
	}
	if err := b.checkSignerKeys(ctx, req.Storage, e); err != nil {
		return respondErr(err)
	}
	warnings, err := signerWarnings(ctx, req.Storage, e, time.Now())
	if err != nil {
		return nil, err
	}
	if err := putEntry(ctx, req.Storage, storagePrefixSigner+name, e); err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: signerResponse(e, time.Now())}
	for _, w := range warnings {
		resp.AddWarning(w)
	}
	return resp, nil
}

// checkSignerKeys refuses a key another signer holds (it would count for
// two people) and the plugin's own key (it vouches only for the plugin's
// change, never as a person).
func (b *backend) checkSignerKeys(ctx context.Context, s logical.Storage, e *signerEntry) error {
	others, err := listSigners(ctx, s)
	if err != nil {
		return err
	}
	for _, o := range others {
		if o.Name == e.Name {
			continue
		}
		for _, fp := range o.fingerprints() {
			if slices.Contains(e.fingerprints(), fp) {
				return invalidf("key %s is already held by signer %q: a key belongs to one signer, or it could count for two people; remove it there first", fp, o.Name)
			}
		}
	}
	plugin, err := pluginKeyFingerprints(ctx, s, nil)
	if err != nil {
		return err
	}
	for _, k := range e.PGPKeys {
		if slices.Contains(plugin, k.Fingerprint) || slices.Contains(k.UserIDs, pluginIdentity) {
			return invalidf("key %s is the plugin's own signing key: it vouches only for the plugin's change, never as a person; trust it with configure/trusted_pgp_public_key instead", k.Fingerprint)
		}
	}
	return nil
}

// fingerprints are the fingerprints of every key the signer holds.
func (e *signerEntry) fingerprints() []string {
	out := make([]string, 0, len(e.PGPKeys)+len(e.SSHKeys))
	for _, k := range e.PGPKeys {
		out = append(out, k.Fingerprint)
	}
	for _, k := range e.SSHKeys {
		out = append(out, k.Fingerprint)
	}
	return out
}

// signerWarnings says what the operator may not expect of the write.
func signerWarnings(ctx context.Context, s logical.Storage, e *signerEntry, now time.Time) ([]string, error) {
	keys, err := listTrustedKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, k := range keys {
		switch {
		case slices.Contains(e.fingerprints(), k.Fingerprint):
			out = append(out, fmt.Sprintf("key %s is also trusted as configure/trusted_pgp_public_key/%s: it counts once, as signer %q", k.Fingerprint, k.Name, e.Name))
		case k.Name == e.Name:
			out = append(out, fmt.Sprintf("configure/trusted_pgp_public_key/%s has this signer's name, so its key %s counts as one of signer %q's keys", k.Name, k.Fingerprint, e.Name))
		}
	}
	for _, k := range e.PGPKeys {
		if p := k.problemAt(now); p != "" {
			out = append(out, fmt.Sprintf("PGP key %s counts zero: %s", k.Fingerprint, p))
		}
	}
	for _, k := range e.SSHKeys {
		if p := k.problemAt(now); p != "" {
			out = append(out, fmt.Sprintf("SSH key %s counts zero: %s", k.Fingerprint, p))
		}
	}
	return out, nil
}

func (b *backend) pathSignerDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("signer", name); err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	if err := deleteEntry(ctx, req.Storage, storagePrefixSigner+name); err != nil {
		return nil, err
	}
	resp := &logical.Response{}
	rules, err := listSignatureRules(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		if slices.Contains(r.Signers, name) {
			resp.AddWarning(fmt.Sprintf("signature rule %q still names signer %q, who can no longer sign for it", r.Name, name))
		}
	}
	msg, err := quorumProblem(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if msg != "" {
		resp.AddWarning(msg)
	}
	if len(resp.Warnings) == 0 {
		return nil, nil
	}
	return resp, nil
}

// trustedForRule gathers every trusted key for a check: each
// configure/trusted_pgp_public_key (a signer of its own) and each
// signer's PGP and SSH keys, and the revocations of every signer (a
// revoked key counts zero wherever it is trusted).
func trustedForRule(ctx context.Context, s logical.Storage) ([]gitwatch.TrustedKey, []*trustedKeyEntry, error) {
	keys, err := listTrustedKeys(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	signers, err := listSigners(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	revoked := make(map[string]bool)
	for _, e := range signers {
		for _, fp := range e.RevokedKeys {
			revoked[fp] = true
		}
	}
	var out []gitwatch.TrustedKey
	// A PGP revocation names the key by its armored text (its fingerprint
	// is read from it), once.
	revokedPGP := make(map[string]bool)
	revokePGP := func(fp, armored string) {
		if revoked[fp] && !revokedPGP[fp] {
			revokedPGP[fp] = true
			out = append(out, gitwatch.TrustedKey{Name: "revoked " + fp, Armored: armored, Revoked: true})
		}
	}
	for _, k := range keys {
		out = append(out, gitwatch.TrustedKey{Name: k.Name, Armored: k.PublicKey})
		revokePGP(k.Fingerprint, k.PublicKey)
	}
	for _, e := range signers {
		for _, k := range e.PGPKeys {
			out = append(out, gitwatch.TrustedKey{Name: e.Name + "/" + shortFingerprint(k.Fingerprint), Armored: k.PublicKey, Signer: e.Name})
			revokePGP(k.Fingerprint, k.PublicKey)
		}
		for _, k := range e.SSHKeys {
			out = append(out, gitwatch.TrustedKey{Name: e.Name + "/" + k.Fingerprint, SSH: k.PublicKey, Signer: e.Name})
		}
	}
	// In a fixed order: the rule's digest keys a remembered refusal.
	var sshRevoked []string
	for fp := range revoked {
		if strings.HasPrefix(fp, "SHA256:") {
			sshRevoked = append(sshRevoked, fp)
		}
	}
	sort.Strings(sshRevoked)
	for _, fp := range sshRevoked {
		out = append(out, gitwatch.TrustedKey{Name: "revoked " + fp, SSH: fp, Revoked: true})
	}
	return out, keys, nil
}

func shortFingerprint(fp string) string {
	if len(fp) > 16 {
		return fp[len(fp)-16:]
	}
	return fp
}

// usableSigners counts the distinct signers that can sign now: each
// usable trusted key on its own (by name), each signer with a usable key,
// a key named like a signer counting as that signer's.
func usableSigners(keys []*trustedKeyEntry, signers []*signerEntry, now time.Time) (usable, unusable int) {
	revoked := make(map[string]bool)
	for _, e := range signers {
		for _, fp := range e.RevokedKeys {
			revoked[fp] = true
		}
	}
	held := make(map[string]bool)
	units := make(map[string]bool)
	all := make(map[string]bool)
	for _, e := range signers {
		all[e.Name] = true
		for _, k := range e.PGPKeys {
			held[k.Fingerprint] = true
			if k.usableAt(now) && !revoked[k.Fingerprint] {
				units[e.Name] = true
			}
		}
		for _, k := range e.SSHKeys {
			if k.problemAt(now) == "" && !revoked[k.Fingerprint] {
				units[e.Name] = true
			}
		}
	}
	for _, k := range keys {
		if held[k.Fingerprint] {
			continue
		}
		all[k.Name] = true
		if k.usableAt(now) && !revoked[k.Fingerprint] {
			units[k.Name] = true
		}
	}
	return len(units), len(all) - len(units)
}

const pathSignerListHelpSyn = `List the trusted signers.`

const pathSignerHelpSyn = `A trusted signer: a person or role with any number of PGP and SSH keys, counted once.`

const pathSignerHelpDesc = `
A signer is the unit the quorum counts: required_number_of_verified_signatures_on_commit
of flant_gitops/configure and required_signers of each signature rule count
signers, not keys. A person who signs with a laptop key and again with a
hardware key counts once.

A key belongs to one signer: a write that gives a key another signer holds
is refused, naming that signer. A key also stored as a
configure/trusted_pgp_public_key counts once, as this signer's; a
trusted_pgp_public_key named like a signer counts as that signer's key. The
plugin's own signing key is refused: it is never a person.

pgp_public_keys, ssh_public_keys and revoked_keys each replace what was
stored when given, and stay when left out. revoked_keys lists fingerprints
whose signatures count zero from now on, wherever the key is trusted (also
as a trusted_pgp_public_key); a read shows the key with usable=false.

SSH keys are one line each, as the .pub file holds them, optionally led by
the allowed_signers options valid-after, valid-before (YYYYMMDD[HHMM[SS]])
and namespaces (which must include "git"). RSA keys under 2048 bits and DSA
keys are refused.

A read shows only public data: each key's kind, fingerprint, user IDs or
comment, creation and expiry, whether it counts now and why not.

Examples:

  vault write flant_gitops/configure/signer/alice \
      pgp_public_keys=@alice-laptop.asc pgp_public_keys=@alice-token.asc \
      ssh_public_keys=@alice_ed25519.pub
  vault write flant_gitops/configure/signer/alice revoked_keys=0123...CDEF
  vault list  flant_gitops/configure/signer
  vault read  flant_gitops/configure/signer/alice
`

func signerResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name": respString("Name of the signer."),
		"pgp_public_keys": {Type: framework.TypeSlice, Required: true, Description: "The PGP keys: kind, fingerprint, user_ids, created, expires, " +
			"revoked, usable, problem and the armored public_key of each."},
		"ssh_public_keys": {Type: framework.TypeSlice, Required: true, Description: "The SSH keys: kind, type, fingerprint, comment, valid_after, " +
			"valid_before, namespaces, usable, problem and the public_key line of each."},
		"revoked_keys": respStrings("Fingerprints whose signatures count zero."),
		"usable":       respBool("Whether at least one of the signer's keys counts now."),
		"problems":     respStrings("Each key that does not count now, and why."),
	}
}
