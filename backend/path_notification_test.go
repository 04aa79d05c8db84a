package backend

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/backend/events/notify"
)

func TestNotificationWriteValidation(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	for _, tc := range []struct {
		name    string
		data    map[string]any
		wantErr string
	}{
		{"no url", map[string]any{}, "url is missing"},
		{"http elsewhere", map[string]any{"url": "http://relay.example.com/x"}, "is http"},
		{"credentials", map[string]any{"url": "https://u:p@relay.example.com/x"}, "must not hold user:password@"},
		{"not absolute", map[string]any{"url": "relay.example.com/x"}, "not an absolute"},
		{"fragment", map[string]any{"url": "https://relay.example.com/x#y"}, "#fragment"},
		{"unknown type", map[string]any{"url": "https://relay.example.com/x", "events": "run.finished,poll.finished"}, `"poll.finished" is not a notification type`},
		{"bad secret", map[string]any{"url": "https://relay.example.com/x", "secret": "hunter2"}, "must start with"},
		{"short secret", map[string]any{"url": "https://relay.example.com/x", "secret": "whsec_c2hvcnQ="}, "24 to 64"},
		{"bad name", map[string]any{"url": "https://relay.example.com/x"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "configure/notification/n"
			if tc.name == "bad name" {
				path = "configure/notification/a b"
				resp, err := rawConfigReq(b, s, logical.UpdateOperation, path, tc.data)
				if err == nil && (resp == nil || !resp.IsError()) {
					t.Fatalf("a name with a space was accepted: %v", resp)
				}
				return
			}
			resp := configReq(t, b, s, logical.UpdateOperation, path, tc.data)
			if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.wantErr) {
				t.Fatalf("answer %v, want a 400 saying %q", resp, tc.wantErr)
			}
		})
	}
	if names, _ := s.List(context.Background(), storagePrefixNotification); len(names) != 0 {
		t.Errorf("refused writes stored %v", names)
	}
}

func TestNotificationSecretAnsweredOnceAndBoundToURL(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	ctx := context.Background()
	created := configReq(t, b, s, logical.UpdateOperation, "configure/notification/chat", map[string]any{"url": "https://relay.example.com/hook"})
	secret, _ := created.Data["generated_secret"].(string)
	if _, err := notify.ParseSecret(secret); err != nil || len(created.Warnings) == 0 {
		t.Fatalf("create answered secret %q (%v), warnings %v", secret, err, created.Warnings)
	}
	if !slices.Equal(created.Data["events"].([]string), notify.DefaultTypes) {
		t.Errorf("default events = %v", created.Data["events"])
	}
	read := configReq(t, b, s, logical.ReadOperation, "configure/notification/chat", nil)
	raw, _ := json.Marshal(read.Data)
	if strings.Contains(string(raw), strings.TrimPrefix(secret, notify.SecretPrefix)) || read.Data["secret_set"] != true {
		t.Fatalf("read shows the secret or no secret_set: %s", raw)
	}
	// The URL decides where the signatures go: it moves only with the secret.
	resp := configReq(t, b, s, logical.UpdateOperation, "configure/notification/chat", map[string]any{"url": "https://other.example.com/hook"})
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "give secret with the new url") {
		t.Fatalf("url change without secret: %v", resp)
	}
	if e, _ := getEntry[notificationEntry](ctx, s, storagePrefixNotification+"chat"); e.URL != "https://relay.example.com/hook" {
		t.Fatalf("the refused write changed url to %s", e.URL)
	}
	given, _ := notify.NewSecret()
	resp = configReq(t, b, s, logical.UpdateOperation, "configure/notification/chat", map[string]any{"url": "https://other.example.com/hook", "secret": given})
	if resp.IsError() || resp.Data["generated_secret"] != nil || resp.Data["url"] != "https://other.example.com/hook" {
		t.Fatalf("url change with secret: %v", resp.Data)
	}
	// Events alone need no secret.
	resp = configReq(t, b, s, logical.UpdateOperation, "configure/notification/chat", map[string]any{"events": "run.finished"})
	if resp.IsError() || !slices.Equal(resp.Data["events"].([]string), []string{"run.finished"}) {
		t.Fatalf("events change: %v", resp)
	}

	rotated := configReq(t, b, s, logical.UpdateOperation, "configure/notification/chat/rotate", map[string]any{"overlap": "1h"})
	newSecret, _ := rotated.Data["generated_secret"].(string)
	if newSecret == "" || newSecret == given || rotated.Data["previous_secret_until"] == "" {
		t.Fatalf("rotate answered %v", rotated.Data)
	}
	e, _ := getEntry[notificationEntry](ctx, s, storagePrefixNotification+"chat")
	if e.Secret != newSecret || e.PreviousSecret != given || e.PreviousUntil.Sub(e.RotatedAt) != time.Hour {
		t.Fatalf("stored after rotate: previous kept %v, overlap %s", e.PreviousSecret == given, e.PreviousUntil.Sub(e.RotatedAt))
	}
	if resp := configReq(t, b, s, logical.UpdateOperation, "configure/notification/nope/rotate", nil); resp == nil || resp.Data[logical.HTTPStatusCode] != http.StatusNotFound {
		t.Fatalf("rotate of a missing endpoint: %v", resp)
	}
	if !slices.Contains(sealWrapStorage(), storagePrefixNotification) {
		t.Error("notification endpoints are not seal wrapped")
	}
	configReq(t, b, s, logical.DeleteOperation, "configure/notification/chat", nil)
	if e, _ := getEntry[notificationEntry](ctx, s, storagePrefixNotification+"chat"); e != nil {
		t.Error("delete left the endpoint")
	}
}

// TestNotificationInProcess: an event published on the bus reaches a
// configured endpoint, signed so the Standard Webhooks library verifies it,
// and status shows the delivery.
func TestNotificationInProcess(t *testing.T) {
	var mu sync.Mutex
	var got []*http.Request
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, bodies = append(got, r), append(bodies, body)
		mu.Unlock()
	}))
	defer srv.Close()
	b, s := newTestBackend(t, nil, nil)
	if err := b.notify.Start(context.Background(), watchStorage{s}); err != nil {
		t.Fatal(err)
	}
	created := configReq(t, b, s, logical.UpdateOperation, "configure/notification/relay", map[string]any{"url": srv.URL + "/in"})
	b.events.Publish(events.Event{Kind: events.RunFinished, Commit: "abc", Run: "r1", Outcome: events.RunSucceeded})
	b.events.Publish(events.Event{Kind: events.PollFinished}) // not a notification
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := configReq(t, b, s, logical.ReadOperation, "status", nil)
		d, _ := st.Data["notifications"].(map[string]any)["relay"].(map[string]any)
		if d != nil && d["delivered"] == uint64(1) {
			if d["last_http_code"] != 200 || d["last_type"] != "run.finished" || d["pending"] != 0 {
				t.Errorf("status notifications.relay = %v", d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no delivery in status: %v", st.Data["notifications"])
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].URL.Path != "/in" {
		t.Fatalf("%d requests", len(got))
	}
	wh, _ := standardwebhooks.NewWebhook(created.Data["generated_secret"].(string))
	if err := wh.Verify(bodies[0], got[0].Header); err != nil {
		t.Errorf("the library refuses the notification: %v", err)
	}
	if ua := got[0].Header.Get("User-Agent"); ua != "flant_gitops/"+Version {
		t.Errorf("User-Agent = %q", ua)
	}
}
