package backend

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/backend/receiver"
)

// maxDeliveryBytes caps the payload a receiver reads: push payloads are a
// few kB (GitHub lists at most 20 commits), far below Vault's 32 MiB
// request limit.
const maxDeliveryBytes = 1 << 20

// deliveryPersistEvery throttles the storage write of a receiver's last
// delivery: a burst of deliveries costs one write, unless the outcome
// changes.
const deliveryPersistEvery = 10 * time.Second

// receiverEntry is one receiver. Only digests of its id and token are
// stored: neither can be read back, from the API or from storage.
type receiverEntry struct {
	Name        string            `json:"name"`
	Provider    receiver.Provider `json:"provider"`
	Events      []string          `json:"events"`
	IDDigest    string            `json:"id_digest"`
	TokenDigest string            `json:"token_digest,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	RotatedAt   time.Time         `json:"rotated_at"`
}

// deliveryRecord is the last delivery a receiver got, for status.
type deliveryRecord struct {
	At         time.Time `json:"at"`
	Provider   string    `json:"provider"`
	Event      string    `json:"event"`
	DeliveryID string    `json:"delivery_id,omitempty"`
	Accepted   bool      `json:"accepted"`
	Outcome    string    `json:"outcome"`
}

// hookState keeps each receiver's last delivery in memory and writes it
// to storage at most every deliveryPersistEvery, whatever the outcomes, so
// a storm of deliveries (or one alternating between outcomes) is not a
// storm of storage writes.
//
// It also caches what a delivery reads: every receiver, by the digest of
// its id, loaded whole on first use, and the watched branch. Answering a
// delivery, or a guessed id, then costs no storage read. Every write of a
// receiver or of configure drops the cache, on this node through the paths
// and on the others through Vault's invalidation.
type hookState struct {
	mu        sync.Mutex
	last      map[string]deliveryRecord
	writtenAt map[string]time.Time

	cacheMu   sync.Mutex
	byDigest  map[string]*receiverEntry
	branch    string
	branchSet bool
}

// invalidate drops what the cache holds.
func (h *hookState) invalidate() {
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	h.byDigest, h.branch, h.branchSet = nil, "", false
}

// receiverByDigest is the receiver whose id has this digest, nil when none.
func (h *hookState) receiverByDigest(ctx context.Context, s logical.Storage, digest string) (*receiverEntry, error) {
	h.cacheMu.Lock()
	all := h.byDigest
	h.cacheMu.Unlock()
	if all == nil {
		names, err := s.List(ctx, storagePrefixReceiver)
		if err != nil {
			return nil, err
		}
		all = make(map[string]*receiverEntry, len(names))
		for _, name := range names {
			e, err := getEntry[receiverEntry](ctx, s, storagePrefixReceiver+name)
			if err != nil {
				return nil, err
			}
			if e != nil {
				all[e.IDDigest] = e
			}
		}
		h.cacheMu.Lock()
		h.byDigest = all
		h.cacheMu.Unlock()
	}
	return all[digest], nil
}

// watchedBranch is configure's git_branch_name, "" when not configured.
func (h *hookState) watchedBranch(ctx context.Context, s logical.Storage) (string, error) {
	h.cacheMu.Lock()
	branch, ok := h.branch, h.branchSet
	h.cacheMu.Unlock()
	if ok {
		return branch, nil
	}
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return "", err
	}
	if cfg != nil {
		branch = cfg.GitBranchName
	}
	h.cacheMu.Lock()
	h.branch, h.branchSet = branch, true
	h.cacheMu.Unlock()
	return branch, nil
}

// invalidatesHooks says whether a change of storage key drops the cache.
func invalidatesHooks(key string) bool {
	return key == storageKeyConfig || strings.HasPrefix(key, storagePrefixReceiver)
}

func (h *hookState) record(ctx context.Context, s logical.Storage, name string, r deliveryRecord) {
	h.mu.Lock()
	if h.last == nil {
		h.last, h.writtenAt = map[string]deliveryRecord{}, map[string]time.Time{}
	}
	h.last[name] = r
	written, ok := h.writtenAt[name]
	write := !ok || r.At.Sub(written) >= deliveryPersistEvery
	if write {
		h.writtenAt[name] = r.At
	}
	h.mu.Unlock()
	if write {
		// The delivery's answer does not depend on this write; a failure
		// only leaves status one delivery behind.
		_ = putEntry(ctx, s, storagePrefixReceiverDelivery+name, &r)
	}
}

func (h *hookState) lastDelivery(ctx context.Context, s logical.Storage, name string) (*deliveryRecord, error) {
	h.mu.Lock()
	r, ok := h.last[name]
	h.mu.Unlock()
	if ok {
		return &r, nil
	}
	return getEntry[deliveryRecord](ctx, s, storagePrefixReceiverDelivery+name)
}

func (h *hookState) forget(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.last, name)
	delete(h.writtenAt, name)
}

func pathReceiver(b *backend) []*framework.Path {
	nameField := &framework.FieldSchema{
		Type:        framework.TypeString,
		Description: "Name of the receiver: letters, digits, '_', '.' or '-', for example github or gitlab-main.",
	}
	return []*framework.Path{
		{
			Pattern:      "configure/receiver/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "receivers"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  b.pathReceiverList,
					Responses: listOK(""),
					Summary:   "List the names of the webhook receivers.",
				},
			},
			HelpSynopsis:    pathReceiverListHelpSyn,
			HelpDescription: pathReceiverHelpDesc,
		},
		{
			Pattern:      "configure/receiver/" + framework.GenericNameRegex("name") + "/rotate$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationVerb: "rotate", OperationSuffix: "receiver"},
			Fields:       map[string]*framework.FieldSchema{"name": nameField},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathReceiverRotate,
					Responses:                   okWith(receiverCreatedFields()),
					Summary:                     "Give the receiver a new URL (and token); the old ones stop working at once.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathReceiverRotateHelpSyn,
			HelpDescription: pathReceiverHelpDesc,
		},
		{
			Pattern:      "configure/receiver/" + framework.GenericNameRegex("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "receiver"},
			Fields: map[string]*framework.FieldSchema{
				"name": nameField,
				"provider": {
					Type:          framework.TypeString,
					AllowedValues: []any{"github", "gitlab", "gitea", "bitbucket", "bitbucket_server", "generic"},
					Description:   "Who sends the deliveries: github, gitlab, gitea (also Forgejo and Gogs), bitbucket (Cloud), bitbucket_server (Data Center) or generic. Required on create; fixed afterwards (delete and create the receiver again to change it).",
				},
				"events": {
					Type:        framework.TypeCommaStringSlice,
					Description: "The forge's event names that wake the poll. Default: the provider's push event (github, gitea, generic: push; gitlab: Push Hook; bitbucket: repo:push; bitbucket_server: repo:refs_changed). Pushes to other branches than the watched one never wake it; a push of the signature refs (refs/tags/latest-signature, refs/notes/signatures) does, as a new signature may make HEAD runnable (on gitlab add Tag Push Hook for it).",
				},
			},
			ExistenceCheck: b.receiverExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:                    b.pathReceiverRead,
					Responses:                   okWith(receiverResponseFields()),
					Summary:                     "Read a receiver: provider, events, its last delivery; never its URL or token.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathReceiverWrite,
					Responses:                   okWith(receiverCreatedFields()),
					Summary:                     "Create a webhook receiver; the answer holds its URL (and token), shown this once.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathReceiverWrite,
					Responses:                   okWith(receiverResponseFields()),
					Summary:                     "Change the events of a receiver; its URL and token stay.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathReceiverDelete,
					Responses:                   noContent(),
					Summary:                     "Delete a receiver; its URL stops working at once.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathReceiverHelpSyn,
			HelpDescription: pathReceiverHelpDesc,
		},
		{
			// Unauthenticated (PathsSpecial): the forges call it without a
			// Vault token.
			Pattern: "hooks/(?P<id>.+)",
			// The body is the forge's payload, not fields of ours: no
			// "unrecognized parameters" warning in every answer.
			TakesArbitraryInput: true,
			DisplayAttrs:        &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationVerb: "deliver", OperationSuffix: "webhook"},
			Fields: map[string]*framework.FieldSchema{
				"id": {Type: framework.TypeString, Description: "The receiver's id, from the URL its creation answered."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathHookDeliver,
					Responses:                   okWith(deliveryResponseFields()),
					Summary:                     "A forge's webhook delivery: wakes the poll when it is a push to the watched branch.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathHooksHelpSyn,
			HelpDescription: pathHooksHelpDesc,
		},
	}
}

// hooksUnauthenticated are the receiver URLs, which forges call without a
// Vault token.
func hooksUnauthenticated() []string { return []string{"hooks/*"} }

func receiverResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name":          respString("The receiver's name."),
		"provider":      respString("Who sends the deliveries."),
		"events":        respStrings("The event names that wake the poll."),
		"token_header":  respOptString("The header that must carry the receiver's token; empty when the provider sends none the plugin can check (then the URL alone authenticates)."),
		"created_at":    respString("When the receiver was created."),
		"rotated_at":    respString("When its URL (and token) were last made."),
		"last_delivery": {Type: framework.TypeMap, Description: "The last delivery: at, provider, event, delivery_id, accepted, outcome; absent when none came."},
	}
}

func receiverCreatedFields() map[string]*framework.FieldSchema {
	f := receiverResponseFields()
	f["url_path"] = &framework.FieldSchema{Type: framework.TypeString, Required: true, DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		Description: "The path to give the forge, after the Vault address: https://<vault>/v1/... It holds the receiver's id, the secret part of the URL; shown only in this answer."}
	f["token"] = &framework.FieldSchema{Type: framework.TypeString, DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		Description: "The token the forge must send in token_header (GitLab: Secret token); shown only in this answer; absent when the provider has none."}
	return f
}

func deliveryResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"accepted": respBool("Whether the delivery woke the poll."),
		"message":  respString("What the delivery caused, or why nothing."),
	}
}

func (b *backend) receiverExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	e, err := getEntry[receiverEntry](ctx, req.Storage, storagePrefixReceiver+d.Get("name").(string))
	return e != nil, err
}

func (b *backend) pathReceiverList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, storagePrefixReceiver)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathReceiverRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	e, err := getEntry[receiverEntry](ctx, req.Storage, storagePrefixReceiver+d.Get("name").(string))
	if err != nil || e == nil {
		return nil, err
	}
	data, err := b.receiverResponse(ctx, req.Storage, e)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: data}, nil
}

// receiverResponse is the allow-list of what a read shows: never the id
// or the token, nor their digests.
func (b *backend) receiverResponse(ctx context.Context, s logical.Storage, e *receiverEntry) (map[string]any, error) {
	data := map[string]any{
		"name":         e.Name,
		"provider":     string(e.Provider),
		"events":       e.Events,
		"token_header": e.Provider.TokenHeader(),
		"created_at":   formatTime(e.CreatedAt),
		"rotated_at":   formatTime(e.RotatedAt),
	}
	last, err := b.hooks.lastDelivery(ctx, s, e.Name)
	if err != nil {
		return nil, err
	}
	if last != nil {
		data["last_delivery"] = deliveryResponse(last)
	}
	return data, nil
}

func deliveryResponse(r *deliveryRecord) map[string]any {
	out := map[string]any{
		"at":       formatTime(r.At),
		"provider": r.Provider,
		"event":    r.Event,
		"accepted": r.Accepted,
		"outcome":  r.Outcome,
	}
	if r.DeliveryID != "" {
		out["delivery_id"] = r.DeliveryID
	}
	return out
}

func (b *backend) pathReceiverWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("receiver", name); err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	defer b.hooks.invalidate()
	e, err := getEntry[receiverEntry](ctx, req.Storage, storagePrefixReceiver+name)
	if err != nil {
		return nil, err
	}
	creating := e == nil
	if creating {
		raw, ok := d.GetOk("provider")
		if !ok {
			return errorResponse("provider is missing: give who sends the deliveries, e.g. provider=github (github, gitlab, gitea, bitbucket, bitbucket_server or generic)")
		}
		p, err := receiver.ParseProvider(raw.(string))
		if err != nil {
			return errorResponse("%v", err)
		}
		e = &receiverEntry{Name: name, Provider: p, Events: p.DefaultEvents(), CreatedAt: time.Now().UTC()}
	} else if raw, ok := d.GetOk("provider"); ok {
		if p, _ := receiver.ParseProvider(raw.(string)); p != e.Provider {
			return errorResponse("receiver %q is for %s: a receiver's provider cannot change; delete it and create it again for %s", name, e.Provider, raw)
		}
	}
	if raw, ok := d.GetOk("events"); ok {
		var events []string
		for _, ev := range raw.([]string) {
			if ev = strings.TrimSpace(ev); ev != "" && !slices.Contains(events, ev) {
				events = append(events, ev)
			}
		}
		if len(events) == 0 {
			return errorResponse("events is empty: give the event names that wake the poll, e.g. events=%s", strings.Join(e.Provider.DefaultEvents(), ","))
		}
		e.Events = events
	}
	if !creating {
		if err := putEntry(ctx, req.Storage, storagePrefixReceiver+name, e); err != nil {
			return nil, err
		}
		data, err := b.receiverResponse(ctx, req.Storage, e)
		if err != nil {
			return nil, err
		}
		return &logical.Response{Data: data}, nil
	}
	return b.issueReceiverSecrets(ctx, req, e)
}

func (b *backend) pathReceiverRotate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.configMu.Lock()
	defer b.configMu.Unlock()
	defer b.hooks.invalidate()
	e, err := getEntry[receiverEntry](ctx, req.Storage, storagePrefixReceiver+name)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return logical.RespondWithStatusCode(logical.ErrorResponse("receiver %q does not exist: create it with provider=...", name), req, http.StatusNotFound)
	}
	return b.issueReceiverSecrets(ctx, req, e)
}

// issueReceiverSecrets gives e a new id (and token), stores their digests
// in its one entry (so the old URL stops working with the same write) and
// answers them this once.
func (b *backend) issueReceiverSecrets(ctx context.Context, req *logical.Request, e *receiverEntry) (*logical.Response, error) {
	id, err := receiver.NewSecret()
	if err != nil {
		return nil, err
	}
	var token string
	if e.Provider.TokenHeader() != "" {
		if token, err = receiver.NewSecret(); err != nil {
			return nil, err
		}
		e.TokenDigest = receiver.Digest(token)
	}
	e.IDDigest, e.RotatedAt = receiver.Digest(id), time.Now().UTC()
	if err := putEntry(ctx, req.Storage, storagePrefixReceiver+e.Name, e); err != nil {
		return nil, err
	}
	data, err := b.receiverResponse(ctx, req.Storage, e)
	if err != nil {
		return nil, err
	}
	data["url_path"] = "/v1/" + req.MountPoint + "hooks/" + id
	if token != "" {
		data["token"] = token
	}
	resp := &logical.Response{Data: data}
	resp.AddWarning("url_path (and token) are shown only in this answer: put them into the forge's webhook settings now; `configure/receiver/" + e.Name + "/rotate` makes new ones.")
	return resp, nil
}

func (b *backend) pathReceiverDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.configMu.Lock()
	defer b.configMu.Unlock()
	defer b.hooks.invalidate()
	e, err := getEntry[receiverEntry](ctx, req.Storage, storagePrefixReceiver+name)
	if err != nil || e == nil {
		return nil, err
	}
	if err := deleteEntry(ctx, req.Storage, storagePrefixReceiver+name); err != nil {
		return nil, err
	}
	b.hooks.forget(name)
	return nil, deleteEntry(ctx, req.Storage, storagePrefixReceiverDelivery+name)
}

// errNoReceiver is the one answer for an unknown receiver and a wrong or
// missing token, so the answer tells an outsider nothing.
func errNoReceiver() error {
	return logical.CodedError(http.StatusNotFound, "no receiver at this address accepts this delivery")
}

// receiverForDelivery finds the receiver of a delivery and checks its
// token. It returns nil (and the same work either way) when the id is
// unknown or the token wrong; why, for a known receiver, says which.
func (b *backend) receiverForDelivery(ctx context.Context, s logical.Storage, id string, headers map[string][]string) (*receiverEntry, string, error) {
	var e *receiverEntry
	if receiver.WellFormedID(id) {
		var err error
		if e, err = b.hooks.receiverByDigest(ctx, s, receiver.Digest(id)); err != nil {
			return nil, "", err
		}
	}
	header, digest := "", ""
	if e != nil {
		header, digest = e.Provider.TokenHeader(), e.TokenDigest
	}
	if e == nil || header == "" {
		receiver.SameSecret("", strings.Repeat("0", 64)) // the same work as a token check
		return e, "", nil
	}
	presented := receiver.Header(headers, header)
	if receiver.SameSecret(presented, digest) {
		return e, "", nil
	}
	if presented == "" {
		return nil, fmt.Sprintf("refused: no %s header reached the plugin: set the receiver's token in the forge (GitLab: Secret token) and pass the header through to the mount (%s)", header, passthroughHint), nil
	}
	return nil, fmt.Sprintf("refused: the %s header does not hold the receiver's token: set the token of the creating (or last rotate) answer in the forge", header), nil
}

var passthroughHint = "vault secrets tune -passthrough-request-headers=" + strings.Join(receiver.PassthroughHeaders(), " -passthrough-request-headers=") + " <mount>"

// pathHookDeliver answers a forge's delivery, fast: it only reads the
// receiver and wakes the worker, whatever the poll then does.
//
// It does not ask Vault for the replication state, as other writes do: the
// operation is forwarded from performance standbys and secondaries, and
// the one storage write it may make (the last delivery) is best effort.
func (b *backend) pathHookDeliver(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id := d.Get("id").(string)
	e, refused, err := b.receiverForDelivery(ctx, req.Storage, id, req.Headers)
	if err != nil {
		return nil, err
	}
	if e == nil {
		if refused != "" {
			if known, _ := b.hooks.receiverByDigest(ctx, req.Storage, receiver.Digest(id)); known != nil {
				r := deliveryRecord{At: time.Now().UTC(), Provider: string(known.Provider), Outcome: refused}
				r.Event, r.DeliveryID = receiver.Identify(known.Provider, req.Headers)
				b.hooks.record(ctx, req.Storage, known.Name, r)
			}
		}
		return nil, errNoReceiver()
	}
	rec := deliveryRecord{At: time.Now().UTC(), Provider: string(e.Provider)}
	rec.Event, rec.DeliveryID = receiver.Identify(e.Provider, req.Headers)
	answer := func(accepted bool, code int, msg string) (*logical.Response, error) {
		rec.Accepted, rec.Outcome = accepted, msg
		if !accepted && code == http.StatusOK {
			rec.Outcome = "ignored: " + msg
		}
		b.hooks.record(ctx, req.Storage, e.Name, rec)
		outcome := "accepted"
		if !accepted {
			outcome = "ignored"
		}
		b.events.Publish(events.Event{Kind: events.WebhookDelivery, Time: rec.At, Target: e.Name, Outcome: outcome, Reason: rec.Outcome, Trigger: string(e.Provider)})
		if code != http.StatusOK {
			return nil, logical.CodedError(code, msg)
		}
		return &logical.Response{Data: map[string]any{"accepted": accepted, "message": msg}}, nil
	}
	if receiver.SizeOver(req.Data, maxDeliveryBytes) {
		return answer(false, http.StatusRequestEntityTooLarge, fmt.Sprintf("refused: the payload is larger than %d bytes; a push notification is a few kB (limit the forge's event to pushes)", maxDeliveryBytes))
	}
	dl, err := receiver.Parse(e.Provider, req.Headers, req.Data)
	if err != nil {
		return answer(false, http.StatusBadRequest, fmt.Sprintf("refused: not a %s delivery: %v", e.Provider, err))
	}
	if dl.Ping {
		return answer(false, http.StatusOK, fmt.Sprintf("pong: receiver %s is set up; %s events wake its poll", e.Name, strings.Join(e.Events, ", ")))
	}
	if dl.Event == "" {
		return answer(false, http.StatusBadRequest, fmt.Sprintf("refused: the delivery's event header did not reach the plugin: pass the forge's headers through to the mount (%s)", passthroughHint))
	}
	if !slices.Contains(e.Events, dl.Event) {
		return answer(false, http.StatusOK, fmt.Sprintf("event %q is not one receiver %s acts on (%s)", dl.Event, e.Name, strings.Join(e.Events, ", ")))
	}
	branch, err := b.hooks.watchedBranch(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if branch == "" {
		return answer(false, http.StatusOK, "the watch is not configured yet (flant_gitops/configure)")
	}
	commit, ok, why := dl.ForBranch(branch)
	if !ok {
		return answer(false, http.StatusOK, why)
	}
	a := b.watch.Notify(watchStorage{req.Storage}, commit)
	return answer(true, http.StatusOK, a.Message)
}

// receiversStatus is each receiver's last delivery, for status.
func (b *backend) receiversStatus(ctx context.Context, s logical.Storage) (map[string]any, error) {
	names, err := s.List(ctx, storagePrefixReceiver)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(names))
	for _, name := range names {
		last, err := b.hooks.lastDelivery(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if last == nil {
			out[name] = map[string]any{"last_delivery": nil}
			continue
		}
		out[name] = map[string]any{"last_delivery": deliveryResponse(last)}
	}
	return out, nil
}

const pathReceiverListHelpSyn = `List the webhook receivers.`

const pathReceiverHelpSyn = `A webhook receiver: a URL a forge calls on push, which wakes the poll.`

const pathReceiverRotateHelpSyn = `Give a receiver a new URL (and token); the old ones stop working.`

const pathReceiverHelpDesc = `
A receiver lets a forge (GitHub, GitLab, Gitea/Forgejo, Bitbucket Cloud or
Data Center, or anything that can POST) tell the plugin that the branch may
have moved, so that a signed push runs in seconds instead of at the next
git_poll_period. A delivery only wakes the poll: the poll fetches the branch
and verifies signatures as always, and nothing in the payload is trusted.
Polling stays the backstop for deliveries that never come.

Creating a receiver answers its url_path (and, for gitlab and generic, a
token) once; put them in the forge's webhook settings. Neither can be read
back: a lost URL is replaced with configure/receiver/NAME/rotate. Reads show
the provider, the events and the last delivery (when, which event, accepted
or why not), as status does for every receiver.

Vault hands plugins the parsed body, never its bytes, so body signatures
(GitHub's X-Hub-Signature-256 and the like) cannot be checked: the URL's id
(256 random bits) authenticates the forge, and gitlab and generic receivers
also need their token in X-Gitlab-Token or X-Flant-Gitops-Token. The mount
must pass the forges' headers through:

  vault secrets tune -passthrough-request-headers=X-GitHub-Event \
      -passthrough-request-headers=X-GitHub-Delivery -passthrough-request-headers=X-Gitlab-Event \
      -passthrough-request-headers=X-Gitlab-Token ... flant_gitops/

(the README lists them all). Example:

  vault write flant_gitops/configure/receiver/github provider=github
  vault write flant_gitops/configure/receiver/gitlab provider=gitlab
`

const pathHooksHelpSyn = `Where forges deliver webhooks (no Vault token needed).`

const pathHooksHelpDesc = `
The URL of a receiver, called by the forge without a Vault token. A push to
the watched branch wakes the poll (deliveries within 2 seconds fold into one
poll; one naming the commit the last fetch saw costs nothing); other events,
branches and tags are answered 200 with accepted=false and the reason. An
unknown receiver and a wrong token get the same 404. Payloads over 1 MiB are
refused with 413.
`
