package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flant/flant_gitops/internal/tokenredirect"
)

// maxAnswerBytes bounds what is read of an answer: a dry run's diff of the
// largest files fits many times over.
const maxAnswerBytes = 64 << 20

// client talks to Vault's HTTP API.
type client struct {
	addr      string // without a trailing slash
	namespace string
	token     string // $VAULT_TOKEN, used when there is no --role
	http      *http.Client
	backoff   backoff
	// attempt bounds one try: an answer that has not come by then is lost,
	// and the request is sent again if it may be (see retryable).
	attempt time.Duration
}

// attemptTimeout is a little over Vault's default max_request_duration
// (90 s), after which Vault itself would have answered.
var attemptTimeout = 100 * time.Second

// backoff is full jitter: a wait drawn from [0, min(max, base·2^attempt)),
// after the time the answer names, if any.
type backoff struct {
	base, max time.Duration
	rand      func(n int64) int64 // [0, n)
}

// defaultBackoff spreads the retries of many jobs over up to 20 s each.
var defaultBackoff = backoff{base: 500 * time.Millisecond, max: 20 * time.Second, rand: rand.Int64N}

func (b backoff) delay(attempt int, hint time.Duration) time.Duration {
	ceil := b.max
	if attempt < 30 && b.base<<attempt < ceil {
		ceil = b.base << attempt
	}
	if hint > 0 {
		// Callers told the same time would all come back together.
		ceil = min(ceil, hint)
	}
	var j time.Duration
	if ceil > 0 {
		j = time.Duration(b.rand(int64(ceil)))
	}
	return hint + j
}

func newClient(inv *invocation, getenv func(string) string) (*client, error) {
	addr := strings.TrimRight(getenv("VAULT_ADDR"), "/")
	if addr == "" {
		addr = "https://127.0.0.1:8200" // Vault's own default
	}
	if u, err := url.Parse(addr); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("VAULT_ADDR %q is not an http(s) URL such as https://vault.example.com:8200", addr)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile := getenv("VAULT_CACERT"); caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("VAULT_CACERT: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("VAULT_CACERT: no PEM certificate in %s", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &client{
		addr:      addr,
		namespace: getenv("VAULT_NAMESPACE"),
		token:     getenv("VAULT_TOKEN"),
		http:      &http.Client{Transport: tr, CheckRedirect: tokenredirect.Check},
		backoff:   defaultBackoff,
		attempt:   attemptTimeout,
	}, nil
}

// answer is Vault's JSON answer, success or error.
type answer struct {
	Data json.RawMessage `json:"data"`
	Auth *struct {
		ClientToken string `json:"client_token"`
	} `json:"auth"`
	Warnings []string `json:"warnings"`
	Errors   []string `json:"errors"`
}

// patchAnswer is the data of a patch answer.
type patchAnswer struct {
	Commit       string   `json:"commit"`
	Parent       string   `json:"parent"`
	Branch       string   `json:"branch"`
	ChangedPaths []string `json:"changed_paths"`
	NoOp         bool     `json:"no_op"`
	Attempts     int      `json:"attempts"`
	Replay       bool     `json:"idempotent_replay"`
	DryRun       bool     `json:"dry_run"`
	Diff         string   `json:"diff"`
}

// failure is a request that did not succeed: an answer with a status, or no
// answer at all (status 0, err set).
type failure struct {
	status     int
	msg        string
	retryAfter time.Duration // Retry-After header
	err        error
	// sent: the request was written out, so without an answer Vault may
	// have acted on it.
	sent bool
	// fromVault: the answer is Vault's JSON, not a proxy's page.
	fromVault bool
}

// lostAnswer says whether the request may have been acted on although no
// answer of Vault's came back: the connection broke after the request went
// out, or a proxy answered that it got none.
func (f *failure) lostAnswer() bool {
	switch f.status {
	case 0:
		return f.sent
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return !f.fromVault
	}
	return false
}

func (f *failure) Error() string {
	if f.err != nil {
		return f.err.Error()
	}
	return fmt.Sprintf("HTTP %d: %s", f.status, f.msg)
}

// retryInRe finds the wait a full queue names: "... retry in 1.5s".
var retryInRe = regexp.MustCompile(`retry in ([0-9][0-9.]*(?:ns|us|µs|ms|s|m|h)(?:[0-9.]+(?:ns|us|µs|ms|s|m|h))*)`)

// retryable says whether the failure may pass later, and the least wait the
// answer names. repeatable: sending the request twice cannot apply it twice
// (it has an idempotency key, or changes nothing).
func retryable(f *failure, repeatable bool) (bool, time.Duration) {
	if f.status == 0 {
		// No answer: refused, reset, timed out. A certificate that does not
		// verify, an address that is not a URL or a refused redirect stays so.
		var cv *tls.CertificateVerificationError
		var ua x509.UnknownAuthorityError
		var hn x509.HostnameError
		var ci x509.CertificateInvalidError
		if errors.As(f.err, &cv) || errors.As(f.err, &ua) || errors.As(f.err, &hn) || errors.As(f.err, &ci) || errors.Is(f.err, errBadAddr) || errors.Is(f.err, errRedirect) {
			return false, 0
		}
	}
	if f.lostAnswer() {
		return repeatable, f.retryAfter
	}
	switch f.status {
	case 0:
		return true, 0 // never reached Vault
	case http.StatusTooManyRequests:
		hint := f.retryAfter
		if m := retryInRe.FindStringSubmatch(f.msg); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil && d > hint {
				hint = d
			}
		}
		return true, hint
	case http.StatusServiceUnavailable:
		return true, f.retryAfter
	case http.StatusConflict:
		// Only the branch that kept moving; a conflict with the content or an
		// untrusted tip answers the same next time.
		return strings.Contains(f.msg, "moved under the patch"), 0
	}
	return false, 0
}

// send makes one request and reads its answer.
func (c *client) send(ctx context.Context, path, token string, body []byte) (*answer, *failure) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.addr+"/v1/"+path, bytes.NewReader(body))
	if err != nil {
		return nil, &failure{err: fmt.Errorf("%w %q: %v", errBadAddr, c.addr, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	if c.namespace != "" {
		req.Header.Set("X-Vault-Namespace", c.namespace)
	}
	var wrote atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				wrote.Store(true)
			}
		},
	}))
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &failure{err: err, sent: wrote.Load()}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, &failure{err: fmt.Errorf("read the answer: %w", err)}
	}
	var a answer
	jsonErr := json.Unmarshal(raw, &a)
	if resp.StatusCode/100 == 2 {
		if resp.StatusCode == http.StatusNoContent {
			return &a, nil
		}
		if jsonErr != nil {
			return nil, &failure{status: resp.StatusCode, msg: "the answer is not Vault's JSON: " + jsonErr.Error()}
		}
		return &a, nil
	}
	f := &failure{status: resp.StatusCode, sent: true, fromVault: jsonErr == nil && len(a.Errors) > 0}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		f.retryAfter = time.Duration(s) * time.Second
	}
	if f.fromVault {
		msgs := make([]string, 0, len(a.Errors))
		for _, e := range a.Errors {
			msgs = append(msgs, cleanError(e))
		}
		f.msg = strings.Join(msgs, "; ")
	} else {
		// Not Vault (a proxy, a load balancer): its first words.
		f.msg = strings.TrimSpace(string(raw[:min(len(raw), 300)]))
		if f.msg == "" {
			f.msg = http.StatusText(resp.StatusCode)
		}
	}
	return nil, f
}

// cleanError unwraps Vault's "1 error occurred:\n\t* msg\n\n".
func cleanError(s string) string {
	var items []string
	for line := range strings.SplitSeq(s, "\n") {
		if item, ok := strings.CutPrefix(line, "\t* "); ok {
			items = append(items, item)
		}
	}
	if len(items) > 0 && strings.Contains(s, " occurred:") {
		return strings.Join(items, "; ")
	}
	return strings.TrimSpace(s)
}

// errBadAddr is a VAULT_ADDR that does not make a request.
var errBadAddr = errors.New("VAULT_ADDR")

// errRedirect is a redirect refused: it would carry the token away.
var errRedirect = tokenredirect.ErrRefused

// errGaveUp ends the retries: the deadline (or a signal) came first.
var errGaveUp = errors.New("gave up")

// call sends the request until it succeeds, fails for good, or the deadline
// leaves no room for another try.
// repeatable: the request may be sent again after a lost answer (see
// retryable).
func (c *client) call(ctx context.Context, what, path, token string, body []byte, repeatable bool, stderr io.Writer) (*answer, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.attempt)
		a, f := c.send(actx, path, token, body)
		cancel()
		if f == nil {
			return a, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s: %v (deadline or interrupt)", errGaveUp, what, f)
		}
		again, hint := retryable(f, repeatable)
		if !again && f.lostAnswer() {
			return nil, fmt.Errorf("%s: the answer was lost (%w) and the request has no idempotency key, so it is not sent again: it may have been applied; look at the branch, or run with --idempotency-key so a retry is safe", what, f)
		}
		if !again {
			return nil, fmt.Errorf("%s refused: %w", what, f)
		}
		wait := c.backoff.delay(attempt, hint)
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
			return nil, fmt.Errorf("%w: %s: %v; the next try (in %s) would be after the deadline", errGaveUp, what, f, wait.Round(time.Millisecond))
		}
		printf(stderr, "%s: %s: %v; trying again in %s\n", programName, what, f, wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %s: %v (deadline or interrupt)", errGaveUp, what, f)
		case <-t.C:
		}
	}
}

// patch logs in if asked to, sends the patch and prints the outcome.
func (c *client) patch(ctx context.Context, inv *invocation, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, inv.deadline)
	defer cancel()

	token := c.token
	if inv.role != "" {
		login, err := json.Marshal(map[string]string{"role": inv.role, "jwt": inv.idToken})
		if err != nil {
			printf(stderr, "%s: build the login: %v\n", programName, err)
			return exitUsage
		}
		a, err := c.call(ctx, "login at auth/"+inv.authMount, "auth/"+inv.authMount+"/login", "", login, true, stderr)
		if err != nil {
			return c.fail(err, stderr)
		}
		if a.Auth == nil || a.Auth.ClientToken == "" {
			printf(stderr, "%s: login at auth/%s answered no token\n", programName, inv.authMount)
			return exitRefused
		}
		token = a.Auth.ClientToken
		defer c.revoke(context.WithoutCancel(ctx), token, stderr)
	}

	// A login sent twice makes one more token, never a second commit; a
	// patch is sent again after a lost answer only with a key.
	a, err := c.call(ctx, "patch "+inv.mount+"/patch/"+inv.repo, inv.mount+"/patch/"+inv.repo, token, inv.body, inv.idemKey != "" || inv.dryRun, stderr)
	if err != nil {
		return c.fail(err, stderr)
	}
	for _, w := range a.Warnings {
		printf(stderr, "%s: warning: %s\n", programName, w)
	}
	var pa patchAnswer
	if err := json.Unmarshal(a.Data, &pa); err != nil {
		printf(stderr, "%s: the answer carries no patch result: %v\n", programName, err)
		return exitRefused
	}
	switch {
	case inv.jsonOut:
		out, err := json.MarshalIndent(json.RawMessage(a.Data), "", "  ")
		if err != nil {
			printf(stderr, "%s: print the answer: %v\n", programName, err)
			return exitRefused
		}
		printf(stdout, "%s\n", out)
	case inv.dryRun:
		printf(stdout, "%s", pa.Diff)
	default:
		printf(stdout, "%s\n", pa.Commit)
	}
	switch {
	case inv.dryRun && pa.NoOp:
		printf(stderr, "dry run: nothing would change on %s at %s\n", pa.Branch, short(pa.Commit))
	case inv.dryRun:
		printf(stderr, "dry run: would change %s on %s at %s; nothing was pushed\n", strings.Join(pa.ChangedPaths, ", "), pa.Branch, short(pa.Parent))
	case pa.Replay && pa.NoOp:
		printf(stderr, "repeat of an earlier request with the same idempotency key: it changed nothing; %s was at %s, no commit made\n", pa.Branch, short(pa.Commit))
	case pa.Replay:
		printf(stderr, "repeat of an earlier request with the same idempotency key: it committed %s on %s (changed %s); no new commit\n", short(pa.Commit), pa.Branch, strings.Join(pa.ChangedPaths, ", "))
	case pa.NoOp:
		printf(stderr, "no_op: the files already read as requested; %s is at %s, no commit made\n", pa.Branch, short(pa.Commit))
	default:
		printf(stderr, "committed %s on %s (changed %s; %d push attempts)\n", short(pa.Commit), pa.Branch, strings.Join(pa.ChangedPaths, ", "), pa.Attempts)
	}
	return exitOK
}

func (c *client) fail(err error, stderr io.Writer) int {
	printf(stderr, "%s: %v\n", programName, err)
	if errors.Is(err, errGaveUp) {
		return exitGaveUp
	}
	return exitRefused
}

// revoke ends the token this run logged in for; it would otherwise live out
// its TTL. A failure only costs that.
func (c *client) revoke(ctx context.Context, token string, stderr io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, f := c.send(ctx, "auth/token/revoke-self", token, nil); f != nil {
		printf(stderr, "%s: revoking the login token: %v (it expires with its TTL)\n", programName, f)
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
