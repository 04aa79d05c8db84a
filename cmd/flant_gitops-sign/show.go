package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"golang.org/x/crypto/ssh"

	"github.com/flant/flant_gitops/gitwatch"
	"github.com/flant/flant_gitops/gitwatch/sshsig"
)

// trust is what decides whether a commit may run: the trusted keys and the
// quorum, from a directory of exported keys or from the plugin.
type trust struct {
	source     string
	keys       []gitwatch.TrustedKey
	required   int
	accepted   []string // the last successful commit, when the plugin said
	pluginKeys []string
	target     gitwatch.Target
}

// pluginIdentity is the user ID of the plugin's own signing key (see
// backend/path_signing_key.go): such a trusted key counts only on top of
// accepted history.
const pluginIdentity = "flant_gitops <flant_gitops@localhost>"

// trustFromDir reads the trusted keys in dir: NAME.asc (gpg --armor
// --export) and NAME.pub (an SSH key line) are signers of their own; a
// subdirectory NAME/ holds the keys of one signer NAME (a person with
// several keys counts once).
func trustFromDir(dir string, required int) (*trust, error) {
	t := &trust{source: "the keys in " + dir, required: required}
	if err := readKeyDir(t, dir, ""); err != nil {
		return nil, err
	}
	if len(t.keys) == 0 {
		return nil, usagef("--trusted %s holds no NAME.asc or NAME.pub key", dir)
	}
	return t, nil
}

// readKeyDir adds the keys of dir to t, as keys of signer (or each a
// signer of its own when signer is "").
func readKeyDir(t *trust, dir, signer string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return usagef("--trusted: %v", err)
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(dir, name)
		switch {
		case strings.HasPrefix(name, "."):
			continue
		case e.IsDir() && signer == "":
			if err := readKeyDir(t, path, name); err != nil {
				return err
			}
			continue
		case e.IsDir():
			return usagef("--trusted: %s: a signer's directory holds key files, not directories", path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return usagef("--trusted: %v", err)
		}
		key := gitwatch.TrustedKey{Signer: signer}
		if base, ok := strings.CutSuffix(name, ".asc"); ok {
			if _, err := gitwatch.ParseKey(string(data)); err != nil {
				return usagef("--trusted: %s: %v", path, err)
			}
			key.Name, key.Armored = base, string(data)
		} else if base, ok := strings.CutSuffix(name, ".pub"); ok {
			line := strings.TrimSpace(string(data))
			if _, err := gitwatch.ParseSSHKey(line); err != nil {
				return usagef("--trusted: %s: %v", path, err)
			}
			key.Name, key.SSH = base, line
		} else {
			return usagef("--trusted: %s is neither NAME.asc (gpg --armor --export KEY > NAME.asc) nor NAME.pub (an SSH public key line)", path)
		}
		if signer != "" {
			key.Name = signer + "/" + key.Name
		}
		t.keys = append(t.keys, key)
	}
	return nil
}

// signerName is who a trusted key counts for.
func signerName(k gitwatch.TrustedKey) string {
	if k.Signer != "" {
		return k.Signer
	}
	return k.Name
}

// trustFromVault reads the watch's configuration the plugin shows to a
// token allowed to read it: the quorum, the trusted keys (public), the last
// successful commit.
func trustFromVault(ctx context.Context, c *vaultClient) (*trust, error) {
	var cfg struct {
		URL      string `json:"git_repo_url"`
		Branch   string `json:"git_branch_name"`
		Required int    `json:"required_number_of_verified_signatures_on_commit"`
	}
	if err := c.read(ctx, http.MethodGet, "configure", &cfg); err != nil {
		return nil, err
	}
	t := &trust{source: fmt.Sprintf("the plugin at %s/v1/%s", c.addr, c.mount), required: cfg.Required,
		target: gitwatch.Target{URL: cfg.URL, Branch: cfg.Branch}}
	var list struct {
		Keys []string `json:"keys"`
	}
	err := c.read(ctx, "LIST", "configure/trusted_pgp_public_key", &list)
	var ve *vaultError
	if err != nil && !(errors.As(err, &ve) && ve.status == http.StatusNotFound) {
		return nil, err
	}
	for _, name := range list.Keys {
		var k struct {
			PublicKey string   `json:"public_key"`
			UserIDs   []string `json:"user_ids"`
			FP        string   `json:"fingerprint"`
		}
		if err := c.read(ctx, http.MethodGet, "configure/trusted_pgp_public_key/"+name, &k); err != nil {
			return nil, err
		}
		t.keys = append(t.keys, gitwatch.TrustedKey{Name: name, Armored: k.PublicKey})
		if slices.Contains(k.UserIDs, pluginIdentity) {
			t.pluginKeys = append(t.pluginKeys, k.FP)
		}
	}
	var last struct {
		Commit string `json:"commit"`
	}
	err = c.read(ctx, http.MethodGet, "configure/last_successful_commit", &last)
	switch {
	case errors.As(err, &ve) && ve.status == http.StatusNotFound:
	case err != nil:
		return nil, err
	case last.Commit != "":
		t.accepted = []string{last.Commit}
	}
	return t, nil
}

// show is the show command; ok reports that the commit has what it needs.
func show(ctx context.Context, g *gitCmd, inv *invocation, getenv func(string) string, stdout, stderr io.Writer) (ok bool, err error) {
	id, err := g.resolveCommit(ctx, inv.commit)
	if err != nil {
		return false, err
	}
	var tr *trust
	var vc *vaultClient
	switch {
	case inv.trusted != "":
		if tr, err = trustFromDir(inv.trusted, inv.required); err != nil {
			return false, err
		}
	case getenv("VAULT_ADDR") != "":
		if vc, err = newVaultClient(getenv, inv.mount); err != nil {
			return false, err
		}
	default:
		return false, usagef("show needs to know whom to trust: set VAULT_ADDR and VAULT_TOKEN (the plugin answers), or give --trusted DIR of NAME.asc or NAME.pub public keys and --required N")
	}

	sess := newSession(g)
	defer sess.close()
	var refs signatureRefs
	if inv.noFetch {
		refs, err = localSignatureRefs(ctx, g)
	} else {
		refs, err = sess.fetchSignatureRefs(ctx, inv.remote)
	}
	if err != nil {
		return false, err
	}
	notes, err := sess.mergeNotes(ctx, refs)
	if err != nil {
		return false, err
	}
	note, err := sess.note(ctx, id)
	if err != nil {
		return false, err
	}
	own, payload, err := commitSignature(ctx, g, id)
	if err != nil {
		return false, err
	}
	sigs := parseSignatureLines(note)
	if vc != nil {
		pc, err := vc.check(ctx, id)
		if err == nil {
			printPluginCheck(stdout, id, vc, pc, own, payload, sigs)
			return pc.OK, nil
		}
		if !errors.Is(err, errNoCheckPath) {
			return false, err
		}
		// A plugin older than signatures/: count here with its trust.
		if tr, err = trustFromVault(ctx, vc); err != nil {
			return false, err
		}
	}
	q, err := quorum(ctx, g, id, notes, tr)
	if err != nil {
		return false, err
	}
	printShow(stdout, id, tr, q, own, payload, sigs)
	return q.OK, nil
}

// printPluginCheck writes the plugin's answer: the signatures on the remote
// as this clone sees them, then the plugin's judgement in its own words.
func printPluginCheck(w io.Writer, id string, c *vaultClient, pc *pluginCheck, own noteSig, payload []byte, notes []noteSig) {
	printf(w, "commit %s\n", id)
	printf(w, "trust: the plugin at %s/v1/%s\n", c.addr, c.mount)
	printf(w, "signatures on the remote:\n")
	describe := func(s noteSig) string {
		switch s.kind {
		case kindOpenPGP:
			return "OpenPGP " + s.issuer()
		case kindSSH:
			return "SSH " + s.ssh.PublicKey.Type() + " " + s.issuer()
		}
		return fmt.Sprintf("not a signature (%v)", s.err)
	}
	n := 0
	if payload != nil {
		printf(w, "  commit  %s\n", describe(own))
		n++
	}
	for _, s := range notes {
		printf(w, "  note    %s\n", describe(s))
		n++
	}
	if n == 0 {
		printf(w, "  none\n")
	}
	printf(w, "counted by the plugin:\n")
	for _, s := range pc.Signers {
		printf(w, "  %s\n", s)
	}
	if len(pc.Signers) == 0 {
		printf(w, "  nobody\n")
	}
	var names []string
	for _, s := range pc.SignedBy {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	printf(w, "verified: %d of %d required", pc.Verified, pc.Required)
	if len(names) > 0 {
		printf(w, " (%s)", strings.Join(names, ", "))
	}
	printf(w, "\n")
	for _, r := range pc.Rules {
		if r.OK {
			printf(w, "rule %s: met\n", r.Name)
			continue
		}
		could := "nobody else can sign for it"
		if len(r.CouldSign) > 0 {
			could = "who could still sign: " + strings.Join(r.CouldSign, ", ")
		}
		printf(w, "rule %s: %d more signer(s) needed; %s\n", r.Name, r.Missing, could)
	}
	switch {
	case pc.OK:
		printf(w, "ok: the plugin accepts this commit\n")
	case pc.Missing > 0:
		printf(w, "missing: %d more trusted signer(s)\n", pc.Missing)
	default:
		printf(w, "missing: what the rules above still need\n")
	}
	for _, line := range pc.NotCounted {
		printf(w, "not counted: %s\n", line)
	}
	printf(w, "verdict: %s\n", pc.Verdict)
	if !pc.OK {
		// The plugin answers from the notes it fetched at its last poll.
		printf(w, "note: a signature pushed since the plugin's last poll counts once it polls again (vault write -f %s/poll, or at the next git_poll_period)\n", c.mount)
	}
}

// localSignatureRefs are the signature refs as last fetched into this
// clone (show --no-fetch).
func localSignatureRefs(ctx context.Context, g *gitCmd) (signatureRefs, error) {
	var refs signatureRefs
	var err error
	if refs.notes, err = g.revParse(ctx, notesRef); err != nil {
		return refs, err
	}
	if refs.tag, err = g.revParse(ctx, tagRef); err != nil || refs.tag == "" {
		return refs, err
	}
	refs.tagCommit, err = g.revParse(ctx, tagRef+"^{commit}")
	return refs, err
}

// quorum counts the signatures on id the way the watcher does: the
// gitwatch package reads a mirror of a scratch repository that borrows this
// clone's objects (no copy) and holds the commit and the merged notes.
func quorum(ctx context.Context, g *gitCmd, id, notes string, tr *trust) (gitwatch.Quorum, error) {
	tmp, err := os.MkdirTemp("", "flant_gitops-sign-")
	if err != nil {
		return gitwatch.Quorum{}, err
	}
	defer os.RemoveAll(tmp)
	objects, err := g.run(ctx, nil, "rev-parse", "--git-path", "objects")
	if err != nil {
		return gitwatch.Quorum{}, err
	}
	if !filepath.IsAbs(objects) { // relative to the repository's directory
		if objects, err = filepath.Abs(filepath.Join(g.dir, objects)); err != nil {
			return gitwatch.Quorum{}, err
		}
	}
	src := filepath.Join(tmp, "src.git")
	scratch := &gitCmd{dir: src}
	if _, err := g.run(ctx, nil, "init", "--quiet", "--bare", src); err != nil {
		return gitwatch.Quorum{}, err
	}
	if err := os.WriteFile(filepath.Join(src, "objects", "info", "alternates"), []byte(objects+"\n"), 0o644); err != nil {
		return gitwatch.Quorum{}, err
	}
	const branch = "flant-sign-show"
	if _, err := scratch.run(ctx, nil, "update-ref", "refs/heads/"+branch, id); err != nil {
		return gitwatch.Quorum{}, err
	}
	if notes != "" {
		if _, err := scratch.run(ctx, nil, "update-ref", notesRef, notes); err != nil {
			return gitwatch.Quorum{}, err
		}
	}
	m, err := gitwatch.OpenMirror(ctx, filepath.Join(tmp, "mirror"), src, branch, gitwatch.Auth{})
	if err != nil {
		return gitwatch.Quorum{}, err
	}
	// The tip and what a walk down plugin commits reaches, not the history.
	m.Shallow = true
	if _, err := m.Fetch(ctx); err != nil {
		return gitwatch.Quorum{}, fmt.Errorf("read the commit and its notes: %w", err)
	}
	return m.Accept(ctx, id, gitwatch.Rule{
		Trusted: tr.keys, Required: tr.required, PluginKeys: tr.pluginKeys,
		Accepted: tr.accepted, Target: tr.target,
	})
}

// printShow writes what show found, for people.
func printShow(w io.Writer, id string, tr *trust, q gitwatch.Quorum, own noteSig, payload []byte, notes []noteSig) {
	var keyring openpgp.EntityList
	names := map[*openpgp.Entity]string{}
	type sshKey struct {
		name string
		key  ssh.PublicKey
	}
	var sshKeys []sshKey
	for _, k := range tr.keys {
		if k.SSH != "" {
			if a, err := sshsig.ParseKeyWithOptions(k.SSH); err == nil {
				sshKeys = append(sshKeys, sshKey{signerName(k), a.Key})
			} else if a, err := sshsig.ParseAllowedSigner(k.SSH); err == nil {
				sshKeys = append(sshKeys, sshKey{signerName(k), a.Key})
			}
			continue
		}
		el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(k.Armored))
		if err != nil {
			continue
		}
		for _, e := range el {
			keyring = append(keyring, e)
			names[e] = signerName(k)
		}
	}
	describe := func(s noteSig, msg []byte) string {
		switch s.kind {
		case kindOpenPGP:
			if e, err := pgpSignedBy(keyring, s.raw, msg); err == nil {
				return fmt.Sprintf("OpenPGP %s: trusted signer %s", pgpFingerprint(e), names[e])
			}
			return fmt.Sprintf("OpenPGP %s: not a trusted key", s.issuer())
		case kindSSH:
			for _, k := range sshKeys {
				if sshsig.Verify(s.ssh, msg, sshNamespace, k.key) == nil {
					return fmt.Sprintf("SSH %s %s: trusted signer %s", s.ssh.PublicKey.Type(), s.issuer(), k.name)
				}
			}
			return fmt.Sprintf("SSH %s %s: not a trusted key", s.ssh.PublicKey.Type(), s.issuer())
		}
		return fmt.Sprintf("not a signature (%v)", s.err)
	}

	printf(w, "commit %s\n", id)
	printf(w, "trust: %s\n", tr.source)
	printf(w, "signatures:\n")
	n := 0
	if payload != nil {
		printf(w, "  commit  %s\n", describe(own, payload))
		n++
	}
	for _, s := range notes {
		printf(w, "  note    %s\n", describe(s, []byte(id)))
		n++
	}
	if n == 0 {
		printf(w, "  none\n")
	}

	signed := map[string]bool{}
	var who []string
	for _, s := range q.Signers {
		signed[s.Name] = true
		who = append(who, s.Name)
	}
	var could []string
	for _, k := range tr.keys {
		if name := signerName(k); !signed[name] && !slices.Contains(could, name) && !slices.Contains(tr.pluginKeys, keyFingerprint(k)) {
			could = append(could, name)
		}
	}
	sort.Strings(could)
	sort.Strings(who)
	printf(w, "verified: %d of %d required", q.Verified, q.Required)
	if len(who) > 0 {
		printf(w, " (%s)", strings.Join(who, ", "))
	}
	printf(w, "\n")
	switch {
	case q.Anchored:
		printf(w, "ok: this is the last successful commit\n")
	case q.OK:
		printf(w, "ok: enough trusted signers\n")
	default:
		printf(w, "missing: %d more trusted signer(s)", q.Missing)
		if len(could) > 0 {
			printf(w, "; who could still sign: %s", strings.Join(could, ", "))
		}
		printf(w, "\n")
	}
	printf(w, "verdict: %s\n", q.Verdict())
}

// keyFingerprint is a trusted key's primary fingerprint ("" when unreadable).
func keyFingerprint(k gitwatch.TrustedKey) string {
	if k.SSH != "" {
		info, err := gitwatch.ParseSSHKey(k.SSH)
		if err != nil {
			return ""
		}
		return info.Fingerprint
	}
	info, err := gitwatch.ParseKey(k.Armored)
	if err != nil {
		return ""
	}
	return info.Fingerprint
}
