package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

const usageText = `Usage:
  %[1]s sign [flags] [COMMIT]    sign COMMIT (default HEAD) and push the signature
  %[1]s show [flags] [COMMIT]    who signed COMMIT (default HEAD) and what is missing

sign makes your detached signature over the commit's 40-hex id, adds it as
one base64 line to the commit's note in refs/notes/signatures (where the
flant_gitops watcher and trdl read signatures), points the tag
latest-signature at the new notes commit and pushes both to the remote. The
commit must already be on the remote. Signing twice with the same key is a
no-op ("already signed"). Signers pushing at the same moment all land: a
rejected push fetches the others' notes, merges and tries again.

  With gpg (default): the key is --key, else git's user.signingkey, else
  your committer identity; gpg.program is honoured.
  With ssh-keygen (--ssh, or gpg.format=ssh in git config): the key is
  --key or user.signingkey (a key file, its .pub with the private half in
  ssh-agent, or "key::ssh-ed25519 AAAA..."); gpg.ssh.program is honoured.

A signature over a commit id vouches for that commit's whole tree.

show lists the commit's own signature and its note signatures, the trusted
signer each belongs to, and how many more are needed. The trust comes from:
  --trusted DIR: a directory of public keys, one per trusted signer:
    NAME.asc (gpg --armor --export) or NAME.pub (an SSH public key line,
    or an allowed_signers line), with --required N;
  else, with VAULT_ADDR set (and VAULT_TOKEN, VAULT_CACERT, VAULT_NAMESPACE):
    the plugin mounted at --mount, which answers with its own configuration.
show exits 0 whatever the count; with --check it exits 3 while signatures
are missing.

Exit codes: 0 done; 1 failed (git, gpg, ssh-keygen, the remote or Vault);
2 usage (nothing was changed); 3 show --check: signatures missing.

Flags:
`

var (
	errHelp    = flag.ErrHelp
	errVersion = errors.New("version asked")
)

// invocation is what the arguments ask for.
type invocation struct {
	command string
	commit  string // as given (default HEAD)
	dir     string // -C: the repository ("" is the current directory)
	remote  string

	// sign
	format  string // "openpgp" or "ssh"; "" follows gpg.format
	key     string
	retries int

	// show
	trusted  string
	required int
	noFetch  bool
	mount    string
	check    bool
}

func parseArgs(name string, args []string, stdout, stderr io.Writer) (*invocation, error) {
	inv := &invocation{}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		inv.command, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		printf(stdout, usageText, name)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.StringVar(&inv.dir, "C", "", "run in this repository instead of the current directory")
	fs.StringVar(&inv.remote, "remote", "origin", "the remote the watcher fetches from")
	gpg := fs.Bool("gpg", false, "sign: sign with gpg (the default unless gpg.format=ssh)")
	ssh := fs.Bool("ssh", false, "sign: sign with ssh-keygen (the default when gpg.format=ssh)")
	fs.StringVar(&inv.key, "key", "", "sign: the key (gpg key id or fingerprint; SSH key file or key::LITERAL); default user.signingkey")
	fs.IntVar(&inv.retries, "retries", 10, "sign: pushes tried when other signers push at the same moment")
	fs.StringVar(&inv.trusted, "trusted", "", "show without Vault: directory of trusted public keys, NAME.asc or NAME.pub each")
	fs.IntVar(&inv.required, "required", 1, "show with --trusted: signers the commit needs")
	fs.BoolVar(&inv.noFetch, "no-fetch", false, "show: use the notes already fetched instead of fetching the remote's")
	fs.StringVar(&inv.mount, "mount", "flant_gitops", "show with VAULT_ADDR: the plugin's mount path")
	fs.BoolVar(&inv.check, "check", false, "show: exit 3 while signatures are missing")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *showVersion {
		return nil, errVersion
	}
	if inv.command == "" && fs.NArg() > 0 {
		inv.command = fs.Arg(0)
		args = fs.Args()[1:]
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
	}
	switch inv.command {
	case "sign", "show":
	case "":
		return nil, errors.New("give a command: sign or show")
	default:
		return nil, fmt.Errorf("unknown command %q: use sign or show", inv.command)
	}
	switch fs.NArg() {
	case 0:
		inv.commit = "HEAD"
	case 1:
		inv.commit = fs.Arg(0)
	default:
		return nil, fmt.Errorf("%s takes one commit, got %q (flags go before the commit)", inv.command, fs.Args())
	}
	if strings.HasPrefix(inv.commit, "-") {
		return nil, fmt.Errorf("commit %q looks like a flag: flags go before the commit", inv.commit)
	}
	switch {
	case *gpg && *ssh:
		return nil, errors.New("--gpg and --ssh exclude each other")
	case *gpg:
		inv.format = "openpgp"
	case *ssh:
		inv.format = "ssh"
	}
	if inv.retries < 1 {
		return nil, fmt.Errorf("--retries must be at least 1, got %d", inv.retries)
	}
	if inv.required < 0 {
		return nil, fmt.Errorf("--required must not be negative, got %d", inv.required)
	}
	if inv.remote == "" || strings.HasPrefix(inv.remote, "-") {
		return nil, fmt.Errorf("--remote %q is not a remote name", inv.remote)
	}
	inv.mount = strings.Trim(inv.mount, "/")
	if inv.mount == "" {
		return nil, errors.New("--mount must not be empty")
	}
	return inv, nil
}
