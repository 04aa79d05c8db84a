package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

const usageText = `Usage: flant_gitops-patch [flags] REPO COMMAND ARGS... [COMMAND ARGS...]

Edits files of the repository configured at <mount>/configure/repository/REPO
in one signed commit made by the flant_gitops Vault plugin, and prints the
commit's SHA on stdout. Flags go before REPO. Commands, applied in order:

  set FILE FIELD VALUE        set FIELD of the YAML file FILE to the string VALUE
                              (1.2.3, true or "quoted" all stay strings, quotes included)
  set-json FILE FIELD JSON    set FIELD to the JSON value JSON (42, true, null, {"a": [1]})
  create FILE CONTENT         create FILE with CONTENT; @PATH reads it from the local
                              file PATH, @- from stdin (YAML never starts with @)
  delete FILE                 delete FILE

FIELD is a dot path (spec.values.image.tag) or JSONPath ($.env[?@.name == 'X'].value).

Login: with --role, the id_token in $VAULT_ID_TOKEN (see --jwt-env) is exchanged
at auth/<auth-mount>/login and the token is revoked at the end; without --role,
$VAULT_TOKEN is used. VAULT_ADDR, VAULT_CACERT and VAULT_NAMESPACE are honoured.
Tokens are never printed.

Idempotency key: in a CI job the request carries one by default, made of the
job (GitLab CI_JOB_ID; GitHub GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT and GITHUB_JOB),
the repository and a hash of the request, so two different patches of one job
differ. A repeat with the key gets the first answer (the same commit) instead
of applying the change again, for 24 hours. --idempotency-key KEY sets it,
--idempotency-key none sends none. A re-run of the job is a new job id, so a
new key.

Retries, with full jitter until --deadline: a connection that was never made,
429 (a full queue; the time it names is waited), Vault's 503, and 409 "moved
under the patch" (the branch kept moving). A lost answer (connection reset after
the request went out, no answer within 100 s of a try, a proxy's 502, 503 or 504) is retried only
when the request has an idempotency key (or is a dry run): without one, a
retry could apply the change again after a newer one. Any other answer is
final: 400, 403, 404, 413, 422, a 409 about the content, an untrusted tip or
a first request that was interrupted, the plugin's 502. Redirects are followed
only to the same host and never from https to http: every request carries the
Vault token or the id_token.

Output: the commit SHA on stdout (the branch's tip when no_op); with --dry-run
the unified diff; with --json the whole answer (commit, parent, branch,
changed_paths, no_op, attempts). Messages go to stderr.

Exit codes: 0 committed, no_op or dry run answered; 1 refused (login or patch
answered an error a retry cannot fix); 2 usage (nothing was sent); 3 gave up
(only retryable failures until the deadline).

Example (GitLab CI):
  flant_gitops-patch --role gitlab-ci --message "release $CI_COMMIT_TAG" \
      infra set "$CI_PROJECT_PATH/release.yml" spec.values.image.tag "$CI_COMMIT_TAG"

Flags:
`

// errHelp is returned for -h: the usage was printed and nothing else is done.
var errHelp = flag.ErrHelp

// errVersion is returned for --version: only the version is printed.
var errVersion = errors.New("version asked")

// invocation is what the arguments ask for.
type invocation struct {
	repo     string
	mount    string
	body     []byte // the JSON request, built by encoding/json
	dryRun   bool
	jsonOut  bool
	deadline time.Duration

	// idemKey is the idempotency key sent ("" for none); a lost answer is
	// retried only with one.
	idemKey string

	role      string // empty: use VAULT_TOKEN
	authMount string
	idToken   string
}

// patchRequest is the body of <mount>/patch/REPO (README "Request and answer").
type patchRequest struct {
	Commit   *commitOptions `json:"commit,omitempty"`
	Commands []command      `json:"commands"`
	DryRun   bool           `json:"dry_run,omitempty"`
	IdemKey  string         `json:"idempotency_key,omitempty"`
}

type commitOptions struct {
	Message string  `json:"message,omitempty"`
	Author  *person `json:"author,omitempty"`
}

type person struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

type command struct {
	Path       string      `json:"path"`
	SetField   *setField   `json:"setField,omitempty"`
	CreateFile *createFile `json:"createFile,omitempty"`
	DeleteFile *struct{}   `json:"deleteFile,omitempty"`
}

type setField struct {
	Field        string          `json:"field"`
	Value        json.RawMessage `json:"value"`
	Create       bool            `json:"create,omitempty"`
	AllowAliased bool            `json:"allowAliased,omitempty"`
}

type createFile struct {
	Content   string `json:"content"`
	Overwrite bool   `json:"overwrite,omitempty"`
}

// nameRe is the plugin's repository name rule (framework.GenericNameRegex);
// checking it here also keeps REPO from changing the URL path.
var nameRe = regexp.MustCompile(`^\w(([\w.-]+)?\w)?$`)

// mountSegRe is one segment of a mount path (ops/flant_gitops has two).
var mountSegRe = regexp.MustCompile(`^[\w.-]+$`)

// maxFileBytes is the plugin's largest file; a bigger @PATH is refused here
// instead of being uploaded to be refused there.
const maxFileBytes = 4 << 20

func parseArgs(args []string, getenv func(string) string, stdin io.Reader, stderr io.Writer) (*invocation, error) {
	fs := flag.NewFlagSet(programName, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		printf(stderr, "%s", usageText)
		fs.PrintDefaults()
	}
	inv := &invocation{}
	var message, authorName, authorEmail, jwtEnv, idemFlag string
	var allowAliased, createMissing, overwrite bool
	fs.StringVar(&inv.mount, "mount", defaultMount, "`path` of the flant_gitops secrets engine")
	fs.StringVar(&message, "message", "", "commit message (default: the repository's default_commit_message)")
	fs.StringVar(&authorName, "author-name", "", "commit author's name (with --author-email; default: the repository's)")
	fs.StringVar(&authorEmail, "author-email", "", "commit author's email (with --author-name)")
	fs.BoolVar(&inv.dryRun, "dry-run", false, "print the diff, commit and push nothing")
	fs.BoolVar(&inv.jsonOut, "json", false, "print the whole answer as JSON instead of the SHA")
	fs.DurationVar(&inv.deadline, "deadline", 5*time.Minute, "give up retrying after this long (login included)")
	fs.BoolVar(&allowAliased, "allow-aliased", false, "let set/set-json change anchored nodes, and so what their aliases read")
	fs.BoolVar(&createMissing, "create-missing", false, "let set/set-json create missing mappings on a path of keys")
	fs.BoolVar(&overwrite, "overwrite", false, "let create replace an existing file")
	fs.StringVar(&inv.role, "role", "", "log in with the JWT auth method's `role` (default: use $VAULT_TOKEN)")
	fs.StringVar(&jwtEnv, "jwt-env", "VAULT_ID_TOKEN", "environment `variable` holding the job's id_token")
	fs.StringVar(&inv.authMount, "auth-mount", "jwt", "`path` of the JWT auth method")
	fs.StringVar(&idemFlag, "idempotency-key", idemAuto, "`key` that makes a retry answer the first result: auto (from the CI job), none, or the key itself")
	showVersion := fs.Bool("version", false, "print the version of this client and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *showVersion {
		return nil, errVersion
	}

	if err := checkMount("--mount", inv.mount); err != nil {
		return nil, err
	}
	inv.mount = strings.Trim(inv.mount, "/")
	if inv.deadline <= 0 {
		return nil, fmt.Errorf("--deadline must be positive, got %s", inv.deadline)
	}
	if inv.role != "" {
		if err := checkMount("--auth-mount", inv.authMount); err != nil {
			return nil, err
		}
		inv.authMount = strings.Trim(inv.authMount, "/")
		if inv.idToken = strings.TrimSpace(getenv(jwtEnv)); inv.idToken == "" {
			return nil, fmt.Errorf("$%s is empty: declare it under id_tokens: in the job, or name the variable with --jwt-env", jwtEnv)
		}
	} else if getenv("VAULT_TOKEN") == "" {
		return nil, errors.New("no Vault token: set VAULT_TOKEN, or give --role to log in with the job's id_token")
	}

	rest := fs.Args()
	if len(rest) == 0 {
		return nil, errors.New("REPO is missing")
	}
	inv.repo, rest = rest[0], rest[1:]
	if !nameRe.MatchString(inv.repo) {
		return nil, fmt.Errorf("REPO %q is not a repository name (letters, digits, _, - and .)", inv.repo)
	}
	if len(rest) == 0 {
		return nil, errors.New("no command: give at least one of set, set-json, create, delete")
	}

	req := patchRequest{DryRun: inv.dryRun}
	stdinUsed := false
	for len(rest) > 0 {
		verb := rest[0]
		need := map[string]int{"set": 3, "set-json": 3, "create": 2, "delete": 1}[verb]
		if need == 0 {
			return nil, fmt.Errorf("unknown command %q: the commands are set, set-json, create and delete", verb)
		}
		if len(rest)-1 < need {
			return nil, fmt.Errorf("%s needs %d arguments, got %d: %s", verb, need, len(rest)-1, map[string]string{
				"set": "set FILE FIELD VALUE", "set-json": "set-json FILE FIELD JSON",
				"create": "create FILE CONTENT|@PATH", "delete": "delete FILE",
			}[verb])
		}
		a := rest[1 : 1+need]
		rest = rest[1+need:]
		for _, s := range a {
			// encoding/json would quietly turn invalid UTF-8 into U+FFFD.
			if !utf8.ValidString(s) {
				return nil, fmt.Errorf("%s: %q is not valid UTF-8", verb, s)
			}
		}
		if a[0] == "" {
			return nil, fmt.Errorf("%s: FILE is empty", verb)
		}
		c := command{Path: a[0]}
		switch verb {
		case "set", "set-json":
			if a[1] == "" {
				return nil, fmt.Errorf("%s %s: FIELD is empty", verb, a[0])
			}
			var value json.RawMessage
			if verb == "set" {
				b, err := json.Marshal(a[2])
				if err != nil {
					return nil, fmt.Errorf("set %s %s: %w", a[0], a[1], err)
				}
				value = b
			} else {
				if !json.Valid([]byte(a[2])) {
					return nil, fmt.Errorf("set-json %s %s: %q is not one JSON value (a string needs its quotes: '\"text\"', or use set)", a[0], a[1], a[2])
				}
				value = json.RawMessage(a[2])
			}
			c.SetField = &setField{Field: a[1], Value: value, Create: createMissing, AllowAliased: allowAliased}
		case "create":
			content, err := readContent(a[1], stdin, &stdinUsed)
			if err != nil {
				return nil, fmt.Errorf("create %s: %w", a[0], err)
			}
			if !utf8.ValidString(content) {
				return nil, fmt.Errorf("create %s: the content is not valid UTF-8", a[0])
			}
			c.CreateFile = &createFile{Content: content, Overwrite: overwrite}
		case "delete":
			c.DeleteFile = &struct{}{}
		}
		req.Commands = append(req.Commands, c)
	}

	for _, s := range []string{message, authorName, authorEmail} {
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("%q is not valid UTF-8", s)
		}
	}
	if (authorName == "") != (authorEmail == "") {
		return nil, errors.New("--author-name and --author-email go together")
	}
	if message != "" || authorName != "" {
		req.Commit = &commitOptions{Message: message}
		if authorName != "" {
			req.Commit.Author = &person{Name: authorName, Email: authorEmail}
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("build the request: %w", err)
	}
	if inv.idemKey, err = idempotencyKey(idemFlag, getenv, inv, body); err != nil {
		return nil, err
	}
	if inv.idemKey != "" {
		req.IdemKey = inv.idemKey
		if body, err = json.Marshal(req); err != nil {
			return nil, fmt.Errorf("build the request: %w", err)
		}
	}
	inv.body = body
	return inv, nil
}

const (
	idemAuto = "auto"
	idemNone = "none"
	// maxIdemKeyBytes is the plugin's bound on a key.
	maxIdemKeyBytes = 256
)

// idempotencyKey is the key the request carries: the flag's, or with auto
// one derived from the CI job (none outside CI). A dry run changes nothing
// and carries none.
func idempotencyKey(flagValue string, getenv func(string) string, inv *invocation, body []byte) (string, error) {
	switch {
	case flagValue == idemNone || inv.dryRun:
		return "", nil
	case flagValue != idemAuto:
		if len(flagValue) == 0 || len(flagValue) > maxIdemKeyBytes {
			return "", fmt.Errorf("--idempotency-key must be 1 to %d characters, got %d", maxIdemKeyBytes, len(flagValue))
		}
		for i := 0; i < len(flagValue); i++ {
			if flagValue[i] < 0x20 || flagValue[i] > 0x7e {
				return "", fmt.Errorf("--idempotency-key holds the byte 0x%02x: use printable ASCII only", flagValue[i])
			}
		}
		return flagValue, nil
	}
	var job string
	switch {
	case getenv("CI_JOB_ID") != "":
		job = "gitlab-job/" + getenv("CI_JOB_ID")
	case getenv("GITHUB_RUN_ID") != "":
		attempt := getenv("GITHUB_RUN_ATTEMPT")
		if attempt == "" {
			attempt = "1"
		}
		job = "github-run/" + getenv("GITHUB_RUN_ID") + "/" + attempt + "/" + getenv("GITHUB_JOB")
	default:
		return "", nil // not in a known CI: nothing names the job
	}
	// The request's hash tells two different patches of one job apart; the
	// mount and repository are in it too, so the same edits elsewhere differ.
	sum := sha256.Sum256([]byte(inv.mount + "\x00" + inv.repo + "\x00" + string(body)))
	key := job + "/" + inv.repo + "/" + hex.EncodeToString(sum[:16])
	if len(key) > maxIdemKeyBytes {
		// Job ids are short; a strange environment still gets a valid key.
		whole := sha256.Sum256([]byte(key))
		key = "ci/" + hex.EncodeToString(whole[:])
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			whole := sha256.Sum256([]byte(key))
			return "ci/" + hex.EncodeToString(whole[:]), nil
		}
	}
	return key, nil
}

// readContent is create's CONTENT: literal, or @PATH / @- read here.
func readContent(arg string, stdin io.Reader, stdinUsed *bool) (string, error) {
	name, isFile := strings.CutPrefix(arg, "@")
	if !isFile {
		return arg, nil
	}
	var r io.Reader
	if name == "-" {
		if *stdinUsed {
			return "", errors.New("@- can be given once: stdin is read only once")
		}
		*stdinUsed = true
		r = stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return "", fmt.Errorf("read the content: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("read the content from %s: %w", arg, err)
	}
	if len(b) > maxFileBytes {
		return "", fmt.Errorf("%s is larger than %d bytes, the largest file the plugin takes", arg, maxFileBytes)
	}
	return string(b), nil
}

func checkMount(flagName, m string) error {
	for _, seg := range strings.Split(strings.Trim(m, "/"), "/") {
		if !mountSegRe.MatchString(seg) || seg == "." || seg == ".." {
			return fmt.Errorf("%s %q is not a mount path (segments of letters, digits, _, - and ., separated by /)", flagName, m)
		}
	}
	return nil
}
