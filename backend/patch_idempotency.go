package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// An idempotency key makes a retried patch safe: the first request with a
// key records its result in storage; a repeat from the same caller with the
// same request answers that result and commits nothing, for
// idempotencyTTL. Without it a retry after a lost answer applies the edit
// again, and can revert a newer release that landed in between.
//
// A repeat that arrives while the first is still in flight on this node
// waits for it: the usual repeat is a client whose connection broke while
// the plugin still works, and waiting answers it in one round trip, holds
// no queue slot, and is bounded by the repeat's own request timeout. A 409
// would only make it poll. A record left "in flight" by an instance that
// is gone (plugin restart, HA failover) cannot be waited for and may or may
// not have landed: that repeat is a 409 saying how to find out.
const (
	idempotencyKeyField = "idempotency_key"
	// maxIdempotencyKeyBytes bounds a key: a job id, the repository and a
	// hash fit many times over.
	maxIdempotencyKeyBytes = 256
	// idempotencyTTL is how long a result is answered to repeats.
	idempotencyTTL = 24 * time.Hour
	// idempotencySweepEvery spaces the periodic removal of expired records.
	idempotencySweepEvery = 10 * time.Minute
	// Bounds on the stored records (a few hundred bytes each): per caller,
	// so that one caller cannot take the others' room, and per mount.
	defaultIdempotencyPerCaller = 5000
	defaultIdempotencyTotal     = 50000
)

const idempotencyKeyDescription = `Optional key that makes a retry safe: a repeat of the request with the same key from the same caller (Vault entity, or token accessor without one) within 24 hours answers the first request's result (commit, changed_paths, no_op; idempotent_replay=true) and makes no new commit. The same key with a different request is refused with 422. Up to 256 printable ASCII characters, e.g. gitlab-job/123456/infra/<hash of the commands>. Ignored on a dry run.`

// idempotencyRecord is one key's entry in storage. Nothing in it is a secret:
// the caller and the request are kept only as digests.
type idempotencyRecord struct {
	Digest    string            `json:"digest"`     // of the canonical request
	RequestID string            `json:"request_id"` // Vault request id of the first request (its Vault-Request-Id trailer)
	Started   time.Time         `json:"started"`
	Expires   time.Time         `json:"expires"`
	Done      bool              `json:"done"`
	Result    *idempotentResult `json:"result,omitempty"`
}

// idempotentResult is the part of a patch answer a repeat gets again.
type idempotentResult struct {
	Commit       string   `json:"commit"`
	Parent       string   `json:"parent"`
	Branch       string   `json:"branch"`
	ChangedPaths []string `json:"changed_paths"`
	NoOp         bool     `json:"no_op"`
	Attempts     int      `json:"attempts"`
}

// idempotency is the patch half's in-memory share: the keys in flight on
// this node and the record counts. The zero value is ready.
type idempotency struct {
	mu       sync.Mutex
	inflight map[string]*idemFlight // by storage key
	// counts of the records in storage, by caller digest; loaded from
	// storage on first use and after each sweep.
	counted   bool
	perCaller map[string]int
	total     int
	lastSweep time.Time

	// limits; zero takes the defaults (tests set small ones).
	maxPerCaller, maxTotal int
	now                    func() time.Time
}

// idemFlight is a request holding its key; done closes when it finished.
type idemFlight struct {
	digest string
	done   chan struct{}
}

func (id *idempotency) clock() time.Time {
	if id.now != nil {
		return id.now()
	}
	return time.Now()
}

func (id *idempotency) limits() (perCaller, total int) {
	perCaller, total = id.maxPerCaller, id.maxTotal
	if perCaller <= 0 {
		perCaller = defaultIdempotencyPerCaller
	}
	if total <= 0 {
		total = defaultIdempotencyTotal
	}
	return perCaller, total
}

// parseIdempotencyKey reads the field: "" when absent.
func parseIdempotencyKey(d *framework.FieldData) (string, error) {
	raw, ok := d.GetOk(idempotencyKeyField)
	if !ok {
		return "", nil
	}
	key := raw.(string)
	if key == "" {
		return "", invalidf("%s is empty: give a key that names this change (for example the CI job and a hash of the commands), or leave the field out", idempotencyKeyField)
	}
	if len(key) > maxIdempotencyKeyBytes {
		return "", invalidf("%s is %d bytes, at most %d are allowed: hash the long part", idempotencyKeyField, len(key), maxIdempotencyKeyBytes)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return "", invalidf("%s holds the byte 0x%02x at %d: use printable ASCII only", idempotencyKeyField, key[i], i)
		}
	}
	return key, nil
}

// requestDigest is the canonical digest of what a patch request asks for:
// the parsed request re-encoded (commands in order, values compacted), so
// the same request reads the same whichever way the body was written.
func requestDigest(pr *patchRequest) (string, error) {
	canon := struct {
		Repository string `json:"repository"`
		Commands   any    `json:"commands"`
		Message    string `json:"message"`
		Author     any    `json:"author"`
		DryRun     bool   `json:"dry_run"`
	}{pr.repository, pr.commands, pr.message, [2]string{pr.author.Name, pr.author.Email}, pr.dryRun}
	b, err := json.Marshal(canon)
	if err != nil {
		return "", fmt.Errorf("encoding the request for its idempotency digest: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// idempotencyCaller names who sent the request: its Vault entity or, for a
// token without one, the token's accessor. It is kept only as a digest.
func idempotencyCaller(req *logical.Request) (string, error) {
	var who string
	switch {
	case req.EntityID != "":
		who = "entity:" + req.EntityID
	case req.ClientTokenAccessor != "":
		who = "accessor:" + req.ClientTokenAccessor
	default:
		return "", invalidf("%s needs a caller Vault can name (an entity or a token accessor), and this request has neither: leave the field out", idempotencyKeyField)
	}
	sum := sha256.Sum256([]byte("flant_gitops idempotency caller\x00" + who))
	return hex.EncodeToString(sum[:16]), nil
}

// idempotencyStorageKey is where the record of a caller's key lives: under
// the caller's digest, so a caller's records are counted with one List.
func idempotencyStorageKey(caller, key string) string {
	sum := sha256.Sum256([]byte(caller + "\x00" + key))
	return storagePrefixIdempotency + caller + "/" + hex.EncodeToString(sum[:])
}

// idemClaim is a request that holds its key while it runs. A nil claim
// (no key, or a dry run) does nothing.
type idemClaim struct {
	ps       *patchState
	s        logical.Storage
	skey     string
	caller   string
	rec      idempotencyRecord
	flight   *idemFlight
	finished bool
}

// claimIdempotency is called after the request was authorized and before it
// does anything. It answers a repeat (resp set), refuses a reused key (422)
// or a full table (429), or returns the claim the request holds until it
// ends; claim.release must be deferred, claim.complete called on success.
func (ps *patchState) claimIdempotency(ctx context.Context, req *logical.Request, d *framework.FieldData, pr *patchRequest) (*idemClaim, *logical.Response, error) {
	key, err := parseIdempotencyKey(d)
	if err != nil {
		resp, err := respondErr(err)
		return nil, resp, err
	}
	if key == "" || pr.dryRun {
		return nil, nil, nil // a dry run changes nothing: nothing to repeat
	}
	caller, err := idempotencyCaller(req)
	if err != nil {
		resp, err := respondErr(err)
		return nil, resp, err
	}
	digest, err := requestDigest(pr)
	if err != nil {
		return nil, nil, logical.CodedError(http.StatusInternalServerError, err.Error())
	}
	skey := idempotencyStorageKey(caller, key)
	id := &ps.idem
	for {
		id.mu.Lock()
		if f := id.inflight[skey]; f != nil {
			id.mu.Unlock()
			if f.digest != digest {
				return nil, nil, reusedKeyError()
			}
			select {
			case <-f.done:
				continue // its record is in storage now, or it failed and left none
			case <-ctx.Done():
				return nil, nil, logical.CodedError(http.StatusConflict, fmt.Sprintf("the first request with this %s is still in progress: retry with the same key to get its answer", idempotencyKeyField))
			}
		}
		if id.inflight == nil {
			id.inflight = map[string]*idemFlight{}
		}
		f := &idemFlight{digest: digest, done: make(chan struct{})}
		id.inflight[skey] = f
		id.mu.Unlock()

		c := &idemClaim{ps: ps, s: req.Storage, skey: skey, caller: caller, flight: f}
		resp, err := c.lookup(ctx, req, digest)
		if resp != nil || err != nil {
			c.drop()
			return nil, resp, err
		}
		return c, nil, nil
	}
}

func reusedKeyError() error {
	return logical.CodedError(http.StatusUnprocessableEntity, fmt.Sprintf("this %s was already used by you for a different request (other commands, message, author or repository): give each different change its own key", idempotencyKeyField))
}

// lookup reads the key's record while c holds the key on this node: a
// result to answer, a refusal, or (nil, nil) when the request goes ahead,
// its pending record written.
func (c *idemClaim) lookup(ctx context.Context, req *logical.Request, digest string) (*logical.Response, error) {
	id := &c.ps.idem
	now := id.clock()
	rec, err := getEntry[idempotencyRecord](ctx, c.s, c.skey)
	if err != nil {
		return nil, logical.CodedError(http.StatusInternalServerError, "reading the idempotency record: "+err.Error())
	}
	reuse := rec != nil && now.After(rec.Expires) // expired: this is a new first request in its counted place
	if reuse {
		rec = nil
	}
	if rec != nil {
		switch {
		case rec.Digest != digest:
			return nil, reusedKeyError()
		case rec.Done && rec.Result != nil:
			return replayResponse(rec.Result), nil
		default:
			return nil, logical.CodedError(http.StatusConflict, fmt.Sprintf(
				"the first request with this %s (Vault request %s, started %s) did not finish on this plugin instance (a plugin restart or an HA failover came between): whether its commit landed is not known here; look for a commit with the trailer \"Vault-Request-Id: %s\" on the branch, and if there is none, send the change again with a new key",
				idempotencyKeyField, rec.RequestID, rec.Started.UTC().Format(time.RFC3339), rec.RequestID))
		}
	}
	if !reuse {
		if err := c.ps.idemReserve(ctx, c.s, c.caller); err != nil {
			return nil, err
		}
	}
	c.rec = idempotencyRecord{Digest: digest, RequestID: req.ID, Started: now, Expires: now.Add(idempotencyTTL)}
	// Pending before anything is pushed: a repeat after a crash between the
	// push and the record must not apply the change again.
	if err := putEntry(ctx, c.s, c.skey, c.rec); err != nil {
		if !reuse {
			c.ps.idemUncount(c.caller)
		}
		return nil, logical.CodedError(http.StatusInternalServerError, "recording the idempotency key: "+err.Error())
	}
	return nil, nil
}

// idemReserve counts a new record for caller, refusing one over a bound.
func (ps *patchState) idemReserve(ctx context.Context, s logical.Storage, caller string) error {
	id := &ps.idem
	if err := ps.idemLoadCounts(ctx, s); err != nil {
		return err
	}
	perCaller, total := id.limits()
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.perCaller[caller] >= perCaller {
		return logical.CodedError(http.StatusTooManyRequests, fmt.Sprintf("you hold %d idempotency records of the last 24 hours, the most one caller may: send this request without %s, or later when older records have expired", id.perCaller[caller], idempotencyKeyField))
	}
	if id.total >= total {
		return logical.CodedError(http.StatusTooManyRequests, fmt.Sprintf("this mount holds %d idempotency records of the last 24 hours, the most it keeps: send this request without %s, or later when older records have expired", id.total, idempotencyKeyField))
	}
	id.perCaller[caller]++
	id.total++
	return nil
}

func (ps *patchState) idemUncount(caller string) {
	id := &ps.idem
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.perCaller[caller] > 0 {
		id.perCaller[caller]--
		id.total--
	}
}

// idemLoadCounts counts the stored records once per instance: on a new
// active node they are what the previous one left.
func (ps *patchState) idemLoadCounts(ctx context.Context, s logical.Storage) error {
	id := &ps.idem
	id.mu.Lock()
	counted := id.counted
	id.mu.Unlock()
	if counted {
		return nil
	}
	per, total, err := countIdempotencyRecords(ctx, s)
	if err != nil {
		return logical.CodedError(http.StatusInternalServerError, "counting the idempotency records: "+err.Error())
	}
	id.mu.Lock()
	if !id.counted {
		id.perCaller, id.total, id.counted = per, total, true
	}
	id.mu.Unlock()
	return nil
}

func countIdempotencyRecords(ctx context.Context, s logical.Storage) (map[string]int, int, error) {
	callers, err := s.List(ctx, storagePrefixIdempotency)
	if err != nil {
		return nil, 0, fmt.Errorf("list %q in storage: %w", storagePrefixIdempotency, err)
	}
	per, total := map[string]int{}, 0
	for _, c := range callers {
		keys, err := s.List(ctx, storagePrefixIdempotency+c)
		if err != nil {
			return nil, 0, fmt.Errorf("list %q in storage: %w", storagePrefixIdempotency+c, err)
		}
		if n := len(keys); n > 0 {
			per[strings.TrimSuffix(c, "/")] = n
			total += n
		}
	}
	return per, total, nil
}

// complete records the result for the repeats to come; the commit has
// landed, so a failure to record is logged, not answered.
func (c *idemClaim) complete(ctx context.Context, data map[string]any) {
	if c == nil {
		return
	}
	r := &idempotentResult{}
	r.Commit, _ = data["commit"].(string)
	r.Parent, _ = data["parent"].(string)
	r.Branch, _ = data["branch"].(string)
	r.ChangedPaths, _ = data["changed_paths"].([]string)
	r.NoOp, _ = data["no_op"].(bool)
	r.Attempts, _ = data["attempts"].(int)
	c.rec.Done, c.rec.Result = true, r
	if err := putEntry(context.WithoutCancel(ctx), c.s, c.skey, c.rec); err != nil {
		c.ps.b.Logger().Error("recording the result of an idempotent patch failed; a repeat of it is answered 409 until the record expires", "commit", r.Commit, "error", err)
	}
	c.finished = true
}

// release ends the claim. A request that did not complete pushed nothing,
// so its pending record goes and a repeat may try again.
func (c *idemClaim) release(ctx context.Context) {
	if c == nil {
		return
	}
	if !c.finished {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := deleteEntry(dctx, c.s, c.skey); err != nil {
			c.ps.b.Logger().Error("removing the idempotency record of a failed patch failed; a repeat of it is answered 409 until the record expires", "error", err)
		} else {
			c.ps.idemUncount(c.caller)
		}
		cancel()
	}
	c.drop()
}

// drop lets the waiting repeats go on.
func (c *idemClaim) drop() {
	id := &c.ps.idem
	id.mu.Lock()
	if id.inflight[c.skey] == c.flight {
		delete(id.inflight, c.skey)
	}
	id.mu.Unlock()
	close(c.flight.done)
}

func replayResponse(r *idempotentResult) *logical.Response {
	return &logical.Response{Data: map[string]any{
		"commit":            r.Commit,
		"parent":            r.Parent,
		"branch":            r.Branch,
		"changed_paths":     nonNil(r.ChangedPaths),
		"no_op":             r.NoOp,
		"attempts":          r.Attempts,
		"idempotent_replay": true,
	}}
}

// sweepIdempotency removes expired records, at most every
// idempotencySweepEvery, and recounts what is left. Called by the periodic
// function where storage is writable.
func (ps *patchState) sweepIdempotency(ctx context.Context, s logical.Storage) {
	id := &ps.idem
	now := id.clock()
	id.mu.Lock()
	due := now.Sub(id.lastSweep) >= idempotencySweepEvery
	if due {
		id.lastSweep = now
	}
	id.mu.Unlock()
	if !due {
		return
	}
	removed, err := removeExpiredIdempotencyRecords(ctx, s, now)
	if err != nil {
		ps.b.Logger().Warn("removing expired idempotency records", "removed", removed, "error", err)
		return
	}
	per, total, err := countIdempotencyRecords(ctx, s)
	if err != nil {
		ps.b.Logger().Warn("counting idempotency records", "error", err)
		return
	}
	id.mu.Lock()
	// A record claimed while the sweep listed may be missed until the next
	// sweep: a few over the bound at worst, never a refusal too many.
	id.perCaller, id.total, id.counted = per, total, true
	id.mu.Unlock()
}

func removeExpiredIdempotencyRecords(ctx context.Context, s logical.Storage, now time.Time) (int, error) {
	callers, err := s.List(ctx, storagePrefixIdempotency)
	if err != nil {
		return 0, fmt.Errorf("list %q in storage: %w", storagePrefixIdempotency, err)
	}
	removed := 0
	for _, c := range callers {
		keys, err := s.List(ctx, storagePrefixIdempotency+c)
		if err != nil {
			return removed, fmt.Errorf("list %q in storage: %w", storagePrefixIdempotency+c, err)
		}
		for _, k := range keys {
			full := storagePrefixIdempotency + c + k
			rec, err := getEntry[idempotencyRecord](ctx, s, full)
			if err != nil {
				return removed, err
			}
			if rec != nil && !now.After(rec.Expires) {
				continue
			}
			if err := deleteEntry(ctx, s, full); err != nil {
				return removed, err
			}
			removed++
		}
	}
	return removed, nil
}
