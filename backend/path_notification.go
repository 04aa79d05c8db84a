package backend

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events/metrics"
	"github.com/flant/flant_gitops/backend/events/notify"
)

// defaultRotationOverlap is how long the previous secret still signs after
// a rotation: a day for every receiver to take the new one.
const defaultRotationOverlap = 24 * time.Hour

// maxRotationOverlap bounds the overlap: an old secret is not kept for ever.
const maxRotationOverlap = 30 * 24 * time.Hour

// notificationEntry is one endpoint of signed notifications. The secrets
// are never answered by a read; the entry is seal wrapped.
type notificationEntry struct {
	Name           string    `json:"name"`
	URL            string    `json:"url"`
	Events         []string  `json:"events"`
	Secret         string    `json:"secret"`
	PreviousSecret string    `json:"previous_secret,omitempty"`
	PreviousUntil  time.Time `json:"previous_until"`
	CreatedAt      time.Time `json:"created_at"`
	RotatedAt      time.Time `json:"rotated_at"`
}

// setupNotify makes the notifier, subscribes it to the bus and ties it to
// the backend's lifecycle: it sends only where this node may write.
func (b *backend) setupNotify() {
	b.notify = notify.New(b.loadNotificationEndpoints, notify.Options{
		UserAgent: "flant_gitops/" + Version,
		Logger:    b.Backend.Logger,
		FailedAttempt: func() {
			b.metrics.DeliveryFailed(metrics.DeliveryNotification)
		},
	})
	b.events.Subscribe("notifications", 0, b.notify.Handle, notify.Kinds()...)
	b.onInit = append(b.onInit, b.initNotify)
	b.onClean = append(b.onClean, b.notify.Stop)
}

func (b *backend) initNotify(ctx context.Context, req *logical.InitializationRequest) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	if err := b.notify.Start(ctx, watchStorage{req.Storage}); err != nil {
		// Notifications wait for the next start (reload, new active node);
		// the mount itself works.
		b.Logger().Error("notifications are not sent", "error", err)
	}
	return nil
}

func (b *backend) loadNotificationEndpoints(ctx context.Context, s notify.Storage) ([]notify.Endpoint, error) {
	entries, err := listEntries[notificationEntry](ctx, vaultStorage(s), storagePrefixNotification)
	if err != nil {
		return nil, err
	}
	out := make([]notify.Endpoint, 0, len(entries))
	for _, e := range entries {
		out = append(out, notify.Endpoint{Name: e.Name, URL: e.URL, Types: e.Events, Secret: e.Secret, Previous: e.PreviousSecret, PreviousUntil: e.PreviousUntil})
	}
	return out, nil
}

// notificationsChanged makes the notifier read the endpoints again.
func (b *backend) notificationsChanged(ctx context.Context) {
	b.notify.Invalidate()
	if err := b.notify.Sync(ctx); err != nil {
		b.Logger().Warn("notification endpoints not reloaded", "error", err)
	}
}

func pathNotification(b *backend) []*framework.Path {
	nameField := &framework.FieldSchema{
		Type:        framework.TypeString,
		Description: "Name of the endpoint: letters, digits, '_', '.' or '-', for example chat or alerts.",
	}
	return []*framework.Path{
		{
			Pattern:      "configure/notification/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "notifications"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  b.pathNotificationList,
					Responses: listOK(""),
					Summary:   "List the names of the notification endpoints.",
				},
			},
			HelpSynopsis:    pathNotificationListHelpSyn,
			HelpDescription: pathNotificationHelpDesc,
		},
		{
			Pattern:      "configure/notification/" + framework.GenericNameRegex("name") + "/rotate$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationVerb: "rotate", OperationSuffix: "notification"},
			Fields: map[string]*framework.FieldSchema{
				"name": nameField,
				"overlap": {
					Type:        framework.TypeDurationSecond,
					Default:     int(defaultRotationOverlap.Seconds()),
					Description: "How long the previous secret still signs next to the new one, so receivers can switch without losing a notification (default 24h, at most 720h; 0 stops it at once).",
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathNotificationRotate,
					Responses:                   okWith(notificationCreatedFields()),
					Summary:                     "Give the endpoint a new signing secret, answered once; the previous one signs too for the overlap.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathNotificationRotateHelpSyn,
			HelpDescription: pathNotificationHelpDesc,
		},
		{
			Pattern:      "configure/notification/" + framework.GenericNameRegex("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "notification"},
			Fields: map[string]*framework.FieldSchema{
				"name": nameField,
				"url": {
					Type:        framework.TypeString,
					Description: "Where notifications are POSTed: an https URL (http only to a loopback address), without user:password@. Required on create. Changing it needs secret again.",
				},
				"events": {
					Type:        framework.TypeCommaStringSlice,
					Description: "The notification types sent: run.started, run.finished, commit.refused (once per commit and verdict), patch.finished. Default: run.started, run.finished, commit.refused.",
				},
				"secret": {
					Type:         framework.TypeString,
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
					Description:  "The signing secret, whsec_ followed by the base64 of 24 to 64 random bytes. Optional on create: left out, one is made and answered once as generated_secret. Write-only. Giving it replaces the current and any previous secret at once (use rotate for an overlap).",
				},
			},
			ExistenceCheck: b.notificationExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:                    b.pathNotificationRead,
					Responses:                   okWith(notificationResponseFields()),
					Summary:                     "Read an endpoint: URL, events, its delivery; never its secret.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathNotificationWrite,
					Responses:                   okWith(notificationCreatedFields()),
					Summary:                     "Create a notification endpoint; a secret made by the plugin is answered this once.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathNotificationWrite,
					Responses:                   okWith(notificationResponseFields()),
					Summary:                     "Change an endpoint's URL (with its secret), events or secret.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathNotificationDelete,
					Responses:                   noContent(),
					Summary:                     "Delete an endpoint and the notifications still pending for it.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathNotificationHelpSyn,
			HelpDescription: pathNotificationHelpDesc,
		},
	}
}

func notificationResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name":                  respString("The endpoint's name."),
		"url":                   respString("Where notifications are POSTed."),
		"events":                respStrings("The notification types sent."),
		"secret_set":            respBool("Always true: a secret signs every notification; it is never answered by a read."),
		"previous_secret_until": respOptString("Until when the previous secret signs too, after a rotation; empty when it no longer does."),
		"created_at":            respString("When the endpoint was created."),
		"rotated_at":            respString("When its secret was last set."),
		"delivery":              {Type: framework.TypeMap, Description: "Its delivery: last_attempt_at, last_event_id, last_type, last_http_code, last_error, last_attempts, last_delivered_at, delivered, failed, dropped, pending."},
	}
}

func notificationCreatedFields() map[string]*framework.FieldSchema {
	f := notificationResponseFields()
	f["generated_secret"] = &framework.FieldSchema{Type: framework.TypeString, DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		Description: "The signing secret the plugin made (whsec_...), shown only in this answer; absent when the write gave one."}
	return f
}

func (b *backend) notificationExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	e, err := getEntry[notificationEntry](ctx, req.Storage, storagePrefixNotification+d.Get("name").(string))
	return e != nil, err
}

func (b *backend) pathNotificationList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, storagePrefixNotification)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathNotificationRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	e, err := getEntry[notificationEntry](ctx, req.Storage, storagePrefixNotification+d.Get("name").(string))
	if err != nil || e == nil {
		return nil, err
	}
	data, err := b.notificationResponse(ctx, req.Storage, e)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: data}, nil
}

// notificationResponse is the allow-list of what a read shows: never a
// secret.
func (b *backend) notificationResponse(ctx context.Context, s logical.Storage, e *notificationEntry) (map[string]any, error) {
	until := ""
	if e.PreviousSecret != "" && time.Now().Before(e.PreviousUntil) {
		until = formatTime(e.PreviousUntil)
	}
	st, err := b.notify.Status(ctx, watchStorage{s}, []string{e.Name})
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"name":                  e.Name,
		"url":                   e.URL,
		"events":                e.Events,
		"secret_set":            e.Secret != "",
		"previous_secret_until": until,
		"created_at":            formatTime(e.CreatedAt),
		"rotated_at":            formatTime(e.RotatedAt),
		"delivery":              notificationDelivery(st[e.Name]),
	}, nil
}

func notificationDelivery(st notify.Status) map[string]any {
	return map[string]any{
		"last_attempt_at":   formatTime(st.LastAttemptAt),
		"last_event_id":     st.LastEventID,
		"last_type":         st.LastType,
		"last_http_code":    st.LastHTTPCode,
		"last_error":        st.LastError,
		"last_attempts":     st.LastAttempts,
		"last_delivered_at": formatTime(st.LastDeliveredAt),
		"delivered":         st.Delivered,
		"failed":            st.Failed,
		"dropped":           st.Dropped,
		"pending":           st.Pending,
	}
}

func (b *backend) pathNotificationWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("notification endpoint", name); err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	e, err := getEntry[notificationEntry](ctx, req.Storage, storagePrefixNotification+name)
	if err != nil {
		return nil, err
	}
	creating := e == nil
	if creating {
		e = &notificationEntry{Name: name, Events: slices.Clone(notify.DefaultTypes), CreatedAt: time.Now().UTC()}
	}
	oldURL := e.URL
	if raw, ok := d.GetOk("url"); ok {
		u, err := validateNotificationURL(raw.(string))
		if err != nil {
			return respondErr(err)
		}
		e.URL = u
	} else if creating {
		return errorResponse("url is missing: give where notifications are POSTed, e.g. url=https://relay.example.com/flant_gitops")
	}
	if raw, ok := d.GetOk("events"); ok {
		types, err := parseNotificationTypes(raw.([]string))
		if err != nil {
			return respondErr(err)
		}
		e.Events = types
	}
	madeSecret := ""
	if raw, ok := d.GetOk("secret"); ok {
		if _, err := notify.ParseSecret(raw.(string)); err != nil {
			return errorResponse("secret: %v", err)
		}
		e.Secret, e.PreviousSecret, e.PreviousUntil, e.RotatedAt = raw.(string), "", time.Time{}, time.Now().UTC()
	} else if creating {
		if madeSecret, err = notify.NewSecret(); err != nil {
			return nil, err
		}
		e.Secret, e.RotatedAt = madeSecret, time.Now().UTC()
	} else if changed := changedBoundFields(boundField{"url", oldURL, e.URL}); len(changed) > 0 {
		return respondErr(secretMustFollow(changed, "notification secret", "give secret with the new url (the receiver must verify with it), or rotate after the change is written"))
	}
	if err := putEntry(ctx, req.Storage, storagePrefixNotification+name, e); err != nil {
		return nil, err
	}
	b.notificationsChanged(ctx)
	data, err := b.notificationResponse(ctx, req.Storage, e)
	if err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: data}
	if madeSecret != "" {
		data["generated_secret"] = madeSecret
		resp.AddWarning("generated_secret is shown only in this answer: give it to the receiver now; `configure/notification/" + name + "/rotate` makes a new one.")
	}
	return resp, nil
}

func (b *backend) pathNotificationRotate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	overlap := time.Duration(d.Get("overlap").(int)) * time.Second
	if overlap < 0 || overlap > maxRotationOverlap {
		return errorResponse("overlap is %s: give 0 to %s (how long the previous secret signs next to the new one)", overlap, maxRotationOverlap)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	e, err := getEntry[notificationEntry](ctx, req.Storage, storagePrefixNotification+name)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return logical.RespondWithStatusCode(logical.ErrorResponse("notification endpoint %q does not exist: create it with url=...", name), req, http.StatusNotFound)
	}
	secret, err := notify.NewSecret()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	e.PreviousSecret, e.PreviousUntil = e.Secret, now.Add(overlap)
	if overlap == 0 {
		e.PreviousSecret, e.PreviousUntil = "", time.Time{}
	}
	e.Secret, e.RotatedAt = secret, now
	if err := putEntry(ctx, req.Storage, storagePrefixNotification+name, e); err != nil {
		return nil, err
	}
	b.notificationsChanged(ctx)
	data, err := b.notificationResponse(ctx, req.Storage, e)
	if err != nil {
		return nil, err
	}
	data["generated_secret"] = secret
	resp := &logical.Response{Data: data}
	resp.AddWarning("generated_secret is shown only in this answer: give it to the receiver before previous_secret_until; until then both secrets sign every notification.")
	return resp, nil
}

func (b *backend) pathNotificationDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.configMu.Lock()
	defer b.configMu.Unlock()
	e, err := getEntry[notificationEntry](ctx, req.Storage, storagePrefixNotification+name)
	if err != nil || e == nil {
		return nil, err
	}
	if err := deleteEntry(ctx, req.Storage, storagePrefixNotification+name); err != nil {
		return nil, err
	}
	if err := b.notify.Forget(ctx, watchStorage{req.Storage}, name); err != nil {
		return nil, err
	}
	b.notificationsChanged(ctx)
	return nil, nil
}

// validateNotificationURL accepts an absolute https URL, or http to a
// loopback address (a relay on the same host, tests), without user info.
func validateNotificationURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return "", invalidf("url %q does not parse: %v", raw, err)
	}
	if u.User != nil {
		return "", invalidf("url must not hold user:password@: notifications are authenticated by their signature; put any credential of the receiver in its own URL path or in a relay")
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", invalidf("url %q is not an absolute http(s) URL: give e.g. https://relay.example.com/flant_gitops", raw)
	}
	if u.Fragment != "" {
		return "", invalidf("url %q has a #fragment, which is never sent: leave it out", raw)
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return "", invalidf("url %q is http: notifications go over https (http only to a loopback address such as 127.0.0.1)", raw)
	}
	return u.String(), nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func parseNotificationTypes(raw []string) ([]string, error) {
	var out []string
	for _, t := range raw {
		t = strings.TrimSpace(t)
		if t == "" || slices.Contains(out, t) {
			continue
		}
		if !slices.Contains(notify.Types, t) {
			return nil, invalidf("events: %q is not a notification type; give some of %s", t, strings.Join(notify.Types, ", "))
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, invalidf("events is empty: give some of %s", strings.Join(notify.Types, ", "))
	}
	return out, nil
}

// notificationsStatus is each endpoint's delivery, for status.
func (b *backend) notificationsStatus(ctx context.Context, s logical.Storage) (map[string]any, error) {
	names, err := s.List(ctx, storagePrefixNotification)
	if err != nil {
		return nil, err
	}
	st, err := b.notify.Status(ctx, watchStorage{s}, names)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(names))
	for _, name := range names {
		out[name] = notificationDelivery(st[name])
	}
	return out, nil
}

const pathNotificationListHelpSyn = `List the notification endpoints.`

const pathNotificationHelpSyn = `An endpoint that gets signed notifications of runs, refusals and patches.`

const pathNotificationRotateHelpSyn = `Give a notification endpoint a new signing secret; the previous one signs too for an overlap.`

var pathNotificationHelpDesc = fmt.Sprintf(`
The plugin POSTs a notification to each endpoint when a run starts
(run.started) and ends (run.finished), when the watched branch's HEAD is
refused (commit.refused: once per commit and verdict, not once per poll) and,
when asked, when a patch request is answered (patch.finished).

Notifications follow Standard Webhooks (https://www.standardwebhooks.com/):
the body is {"type", "timestamp", "data"}, and the headers webhook-id (the
event's id, the same on every retry: deduplicate by it), webhook-timestamp
and webhook-signature ("v1,<base64 HMAC-SHA256 of id.timestamp.body>"; two,
space-separated, during a rotation's overlap) let the receiver verify it with
the standard libraries and the secret. A signature vouches that the holder
of the secret (this plugin) sent this body at that time, nothing about the
commit: a run's trust comes from the commit's signatures.

Data holds ids, names, outcomes and the plugin's own sentences: never a log
line, a token or a credential.

Delivery is at least once: each notification is stored before it is sent
and retried on network errors, 408, 429 and 5xx, with exponential backoff
from 5s up to 1h between attempts (jittered; Retry-After honoured), for up to
24h, then dropped and counted. Other answers (4xx, redirects; 410 Gone
included) end that notification as failed: the endpoint stays configured,
and status shows the answer. Each endpoint has its own queue, at most 1000
notifications (the oldest dropped first). Only the active node sends; a
restart or a new active node carries on with what is pending. Neither a slow
nor a failing endpoint delays a run.

The secret is made by the plugin and answered once (generated_secret) when
the write gives none; it is never readable. Rotate makes a new one and keeps the previous
signing for the overlap (default %s). Changing url needs the secret again.

Example:

  vault write flant_gitops/configure/notification/chat \
      url=https://relay.example.com/flant_gitops events=run.finished,commit.refused
`, defaultRotationOverlap)
