package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/flant/flant_gitops/backend/events"
)

// memStorage lists like Vault's storage: the names directly under a
// prefix, folders with a trailing "/".
type memStorage struct {
	mu   sync.Mutex
	m    map[string][]byte
	puts int
}

func newMem() *memStorage { return &memStorage{m: map[string][]byte{}} }

func (s *memStorage) Get(_ context.Context, k string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	if !ok {
		return nil, nil
	}
	return append([]byte{}, v...), nil
}

func (s *memStorage) Put(_ context.Context, k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = append([]byte{}, v...)
	s.puts++
	return nil
}

func (s *memStorage) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

func (s *memStorage) List(_ context.Context, prefix string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for k := range s.m {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if i := strings.Index(rest, "/"); i >= 0 {
			rest = rest[:i+1]
		}
		if !seen[rest] {
			seen[rest] = true
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s *memStorage) outbox(name string) []string {
	ids, _ := s.List(context.Background(), OutboxPrefix+name+"/")
	return ids
}

// delivery is one request an endpoint got.
type delivery struct {
	header http.Header
	body   []byte
	code   int
}

// endpointServer answers with the codes of answer in turn (the last one
// ever after) and keeps every request.
type endpointServer struct {
	*httptest.Server
	mu     sync.Mutex
	got    []delivery
	answer func(n int) (int, http.Header)
	notify chan struct{}
}

func newEndpoint(t *testing.T, answer func(n int) (int, http.Header)) *endpointServer {
	t.Helper()
	e := &endpointServer{answer: answer, notify: make(chan struct{}, 100)}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.got = append(e.got, delivery{header: r.Header.Clone(), body: body})
		code, h := e.answer(len(e.got) - 1)
		e.got[len(e.got)-1].code = code
		e.mu.Unlock()
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(code)
		e.notify <- struct{}{}
	}))
	t.Cleanup(e.Close)
	return e
}

func always(code int) func(int) (int, http.Header) {
	return func(int) (int, http.Header) { return code, nil }
}

func (e *endpointServer) deliveries() []delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]delivery(nil), e.got...)
}

// waitFor waits until the endpoint got n requests.
func (e *endpointServer) waitFor(t *testing.T, n int) []delivery {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if got := e.deliveries(); len(got) >= n {
			return got
		}
		select {
		case <-e.notify:
		case <-deadline:
			t.Fatalf("endpoint got %d requests, want %d", len(e.deliveries()), n)
		}
	}
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func fixedEndpoints(eps ...Endpoint) func(context.Context, Storage) ([]Endpoint, error) {
	return func(context.Context, Storage) ([]Endpoint, error) { return eps, nil }
}

func startNotifier(t *testing.T, s Storage, opts Options, eps ...Endpoint) *Notifier {
	t.Helper()
	if opts.FirstRetry == 0 {
		opts.FirstRetry = 10 * time.Millisecond
	}
	n := New(fixedEndpoints(eps...), opts)
	if err := n.Start(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop(context.Background()) })
	return n
}

func runFinished(id string) events.Event {
	return events.Event{ID: id, Kind: events.RunFinished, Time: time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC),
		Mount: "m1", Repository: "https://ci:hunter2@git.example/ops.git", Branch: "main", Commit: "abc",
		Run: "r1", Attempt: 1, Outcome: events.RunSucceeded, Duration: 1500 * time.Millisecond}
}

// verify checks a request with the Standard Webhooks library, timestamp
// tolerance included.
func verify(t *testing.T, secret string, d delivery) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(d.body, d.header); err != nil {
		t.Errorf("the Standard Webhooks library refuses the notification: %v\nheaders %v\nbody %s", err, d.header, d.body)
	}
}

// TestSignatureVector checks the signature against the spec libraries'
// published vector and against two independent implementations: the
// Standard Webhooks Go library and python3's hmac module.
func TestSignatureVector(t *testing.T) {
	const (
		id      = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		payload = `{"test": 2432232314}`
		want    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	ts := time.Unix(1614265330, 0)
	key, err := ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := Signature(key, id, ts, []byte(payload)); got != want {
		t.Errorf("Signature = %s, want the spec's %s", got, want)
	}
	wh, _ := standardwebhooks.NewWebhook(testSecret)
	lib, _ := wh.Sign(id, ts, []byte(payload))
	if lib != want {
		t.Errorf("library = %s", lib)
	}

	// A body of our own, signed by us and by python3.
	body := []byte(`{"type":"run.finished","timestamp":"2026-12-07T18:00:00Z","data":{"event_id":"evt_1"}}`)
	ts = time.Unix(1796666400, 0)
	py := exec.Command("python3", "-c", `import sys,hmac,hashlib,base64
key=base64.b64decode(sys.argv[1][len("whsec_"):])
msg=(sys.argv[2]+"."+sys.argv[3]+".").encode()+sys.stdin.buffer.read()
print("v1,"+base64.b64encode(hmac.new(key,msg,hashlib.sha256).digest()).decode())`, testSecret, "evt_1", "1796666400")
	py.Stdin = strings.NewReader(string(body))
	out, err := py.Output()
	if err != nil {
		t.Fatalf("python3 (needed as the independent verifier): %v", err)
	}
	if got := Signature(key, "evt_1", ts, body); got != strings.TrimSpace(string(out)) {
		t.Errorf("Signature = %s, python3's hmac = %s", got, out)
	}
}

func TestParseSecret(t *testing.T) {
	made, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		secret, wantErr string
	}{
		{made, ""},
		{testSecret, ""},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with"},
		{"whsec_not base64!", "not standard base64"},
		{"whsec_" + "c2hvcnQ=", "holds 5 bytes"},
		{"whsec_" + strings.Repeat("QUFB", 22), "holds 66 bytes"},
	} {
		_, err := ParseSecret(tc.secret)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("ParseSecret(%q) = %v, want %q", tc.secret, err, tc.wantErr)
		}
	}
}

// TestRetriedDeliveryKeepsItsID: a 503 is retried with the same id and
// body, re-signed with the attempt's timestamp; the library verifies both.
func TestRetriedDeliveryKeepsItsID(t *testing.T) {
	ep := newEndpoint(t, func(n int) (int, http.Header) {
		if n == 0 {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusNoContent, nil
	})
	s := newMem()
	var failed atomic.Int64
	n := startNotifier(t, s, Options{FailedAttempt: func() { failed.Add(1) }}, Endpoint{Name: "chat", URL: ep.URL, Types: DefaultTypes, Secret: testSecret})
	n.Handle(context.Background(), runFinished("evt_a"))
	got := ep.waitFor(t, 2)
	for _, d := range got {
		verify(t, testSecret, d)
		if d.header.Get(HeaderID) != "evt_a" || string(d.body) != string(got[0].body) {
			t.Errorf("attempt with id %q body %s, want id evt_a and the first body", d.header.Get(HeaderID), d.body)
		}
		if d.header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type = %q", d.header.Get("Content-Type"))
		}
	}
	var env struct {
		Type      string         `json:"type"`
		Timestamp string         `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}
	if err := json.Unmarshal(got[0].body, &env); err != nil {
		t.Fatal(err)
	}
	if env.Type != "run.finished" || env.Timestamp != "2026-12-07T18:00:00Z" || env.Data["outcome"] != "succeeded" || env.Data["duration_seconds"] != 1.5 {
		t.Errorf("body = %s", got[0].body)
	}
	if env.Data["repository"] != "https://git.example/ops.git" || strings.Contains(string(got[0].body), "hunter2") {
		t.Errorf("the repository URL kept its credentials: %s", got[0].body)
	}
	waitStatus(t, n, s, "chat", func(st Status) bool { return st.Delivered == 1 && st.Pending == 0 })
	st := status(t, n, s, "chat")
	if st.LastHTTPCode != 204 || st.LastAttempts != 2 || st.LastEventID != "evt_a" || st.LastType != "run.finished" || st.LastError != "" {
		t.Errorf("status = %+v", st)
	}
	if len(s.outbox("chat")) != 0 {
		t.Errorf("outbox still holds %v", s.outbox("chat"))
	}
	if n := failed.Load(); n != 1 {
		t.Errorf("%d failed attempts reported for the metrics, want the one 503", n)
	}
}

func status(t *testing.T, n *Notifier, s Storage, name string) Status {
	t.Helper()
	m, err := n.Status(context.Background(), s, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	return m[name]
}

func waitStatus(t *testing.T, n *Notifier, s Storage, name string, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := status(t, n, s, name)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s stays %+v", name, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRetryAfterIsHonoured: the next attempt of a 429 (and of a 503 with
// Retry-After) is scheduled exactly Retry-After after the attempt.
func TestRetryAfterIsHonoured(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		ep := newEndpoint(t, func(int) (int, http.Header) { return code, http.Header{"Retry-After": {"120"}} })
		s := newMem()
		n := startNotifier(t, s, Options{}, Endpoint{Name: "x", URL: ep.URL, Types: DefaultTypes, Secret: testSecret})
		n.Handle(context.Background(), runFinished("evt_r"))
		ep.waitFor(t, 1)
		st := waitStatus(t, n, s, "x", func(st Status) bool { return st.LastAttempts == 1 })
		var m message
		deadline := time.Now().Add(10 * time.Second)
		for m.NextAt.IsZero() && time.Now().Before(deadline) {
			raw, _ := s.Get(context.Background(), OutboxPrefix+"x/evt_r")
			_ = json.Unmarshal(raw, &m)
		}
		if got := m.NextAt.Sub(st.LastAttemptAt); got != 120*time.Second {
			t.Errorf("%d: next attempt %s after the first, want Retry-After's 120s", code, got)
		}
		if m.Attempts != 1 || st.LastHTTPCode != code || st.Pending != 1 {
			t.Errorf("%d: message %+v status %+v", code, m, st)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"-1", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.v, got, tc.want)
		}
	}
}

func TestBackoffGrowsWithJitterUpToTheCap(t *testing.T) {
	for attempt, full := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 4: 40 * time.Second, 30: time.Hour} {
		for range 50 {
			d := backoff(5*time.Second, time.Hour, attempt)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: wait %s outside [%s, %s]", attempt, d, full/2, full)
			}
		}
	}
}

// TestClientErrorsAreNotRetried: a 4xx other than 408/429 (410 included)
// is final: one attempt, counted as failed, gone from the outbox.
func TestClientErrorsAreNotRetried(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusGone, http.StatusFound} {
		ep := newEndpoint(t, always(code))
		s := newMem()
		n := startNotifier(t, s, Options{}, Endpoint{Name: "x", URL: ep.URL, Types: DefaultTypes, Secret: testSecret})
		n.Handle(context.Background(), runFinished("evt_c"))
		n.Handle(context.Background(), runFinished("evt_d"))
		ep.waitFor(t, 2)
		st := waitStatus(t, n, s, "x", func(st Status) bool { return st.Failed == 2 })
		if st.Pending != 0 || st.LastHTTPCode != code || st.LastError == "" || len(s.outbox("x")) != 0 {
			t.Errorf("%d: status %+v outbox %v", code, st, s.outbox("x"))
		}
		time.Sleep(50 * time.Millisecond) // five FirstRetry periods: a retry would have come
		if got := len(ep.deliveries()); got != 2 {
			t.Errorf("%d: %d requests, want 2 (no retry)", code, got)
		}
	}
}

// TestRefusalToldOncePerVerdict: the same refusal on every poll is one
// notification; a changed verdict is another; a restart remembers.
func TestRefusalToldOncePerVerdict(t *testing.T) {
	ep := newEndpoint(t, always(200))
	s := newMem()
	eps := []Endpoint{{Name: "x", URL: ep.URL, Types: []string{TypeCommitRefused}, Secret: testSecret}}
	n := startNotifier(t, s, Options{}, eps...)
	refused := func(id, commit string, missing ...string) events.Event {
		return events.Event{ID: id, Kind: events.CommitRefused, Time: time.Now(), Commit: commit, Reason: "not enough signatures", Missing: missing}
	}
	ctx := context.Background()
	for i := range 5 {
		n.Handle(ctx, refused("evt_p"+string(rune('0'+i)), "c1", "1 more"))
	}
	n.Handle(ctx, refused("evt_q", "c1", "2 more")) // another verdict
	n.Handle(ctx, refused("evt_r", "c2", "1 more")) // another commit
	n.Handle(ctx, runFinished("evt_s"))             // not asked for
	ep.waitFor(t, 3)
	waitStatus(t, n, s, "x", func(st Status) bool { return st.Delivered == 3 })
	n.Stop(ctx)
	n2 := startNotifier(t, s, Options{}, eps...)
	n2.Handle(ctx, refused("evt_t", "c2", "1 more"))
	n2.Handle(ctx, refused("evt_u", "c3", "1 more"))
	got := ep.waitFor(t, 4)
	time.Sleep(50 * time.Millisecond)
	var ids []string
	for _, d := range ep.deliveries() {
		ids = append(ids, d.header.Get(HeaderID))
	}
	if want := []string{"evt_p0", "evt_q", "evt_r", "evt_u"}; !slices.Equal(ids, want) {
		t.Errorf("notified %v, want %v", ids, want)
	}
	if !strings.Contains(string(got[0].body), `"type":"commit.refused"`) || !strings.Contains(string(got[0].body), `"missing":["1 more"]`) {
		t.Errorf("body = %s", got[0].body)
	}
}

// TestRotationOverlapSignsWithBoth: during the overlap a receiver holding
// either secret verifies; after it only the new one signs.
func TestRotationOverlapSignsWithBoth(t *testing.T) {
	newSecret, _ := NewSecret()
	for _, tc := range []struct {
		until    time.Time
		previous bool
	}{
		{time.Now().Add(time.Hour), true},
		{time.Now().Add(-time.Second), false},
	} {
		ep := newEndpoint(t, always(200))
		s := newMem()
		startNotifier(t, s, Options{}, Endpoint{Name: "x", URL: ep.URL, Types: DefaultTypes, Secret: newSecret, Previous: testSecret, PreviousUntil: tc.until}).
			Handle(context.Background(), runFinished("evt_o"))
		d := ep.waitFor(t, 1)[0]
		verify(t, newSecret, d)
		sigs := strings.Fields(d.header.Get(HeaderSignature))
		wh, _ := standardwebhooks.NewWebhook(testSecret)
		prevErr := wh.Verify(d.body, d.header)
		if tc.previous && (len(sigs) != 2 || prevErr != nil) {
			t.Errorf("in the overlap: %d signatures, previous secret verifies: %v", len(sigs), prevErr)
		}
		if !tc.previous && (len(sigs) != 1 || prevErr == nil) {
			t.Errorf("after the overlap: %d signatures, the previous secret still verifies", len(sigs))
		}
	}
}

// TestOutboxIsBounded: an endpoint that is down keeps at most MaxPending
// notifications; the oldest go first and are counted.
func TestOutboxIsBounded(t *testing.T) {
	ep := newEndpoint(t, always(http.StatusServiceUnavailable))
	s := newMem()
	n := startNotifier(t, s, Options{FirstRetry: time.Hour, MaxPending: 3}, Endpoint{Name: "x", URL: ep.URL, Types: DefaultTypes, Secret: testSecret})
	ctx := context.Background()
	for _, id := range []string{"evt_1", "evt_2", "evt_3", "evt_4", "evt_5"} {
		n.Handle(ctx, runFinished(id))
	}
	st := status(t, n, s, "x")
	if st.Pending != 3 || st.Dropped != 2 {
		t.Errorf("status %+v, want 3 pending, 2 dropped", st)
	}
	if got := s.outbox("x"); !slices.Equal(got, []string{"evt_3", "evt_4", "evt_5"}) {
		t.Errorf("outbox %v, want the 3 newest", got)
	}
}

// TestPendingSurvivesRestart: what one sender could not deliver, and what
// the bus handed it after it stopped, the next one (a reloaded plugin, a
// new active node) delivers with the same id.
func TestPendingSurvivesRestart(t *testing.T) {
	var mu sync.Mutex
	up := false
	ep := newEndpoint(t, func(int) (int, http.Header) {
		mu.Lock()
		defer mu.Unlock()
		if up {
			return 200, nil
		}
		return 503, nil
	})
	s := newMem()
	e := Endpoint{Name: "x", URL: ep.URL, Types: DefaultTypes, Secret: testSecret}
	n := New(fixedEndpoints(e), Options{FirstRetry: time.Hour})
	ctx := context.Background()
	if err := n.Start(ctx, s); err != nil {
		t.Fatal(err)
	}
	n.Handle(ctx, runFinished("evt_k"))
	ep.waitFor(t, 1)
	n.Stop(ctx)
	n.Handle(ctx, runFinished("evt_l")) // stopped: queued for the next sender
	mu.Lock()
	up = true
	mu.Unlock()
	// The next attempt is due in an hour; a new sender keeps that schedule
	// only when the record says so: here the restart is the test's clock.
	raw, _ := s.Get(ctx, OutboxPrefix+"x/evt_k")
	var m message
	_ = json.Unmarshal(raw, &m)
	m.NextAt = time.Time{}
	raw, _ = json.Marshal(m)
	_ = s.Put(ctx, OutboxPrefix+"x/evt_k", raw)

	startNotifier(t, s, Options{}, e)
	got := ep.waitFor(t, 2)
	if got[1].header.Get(HeaderID) != "evt_k" || string(got[1].body) != string(got[0].body) {
		t.Errorf("after the restart: id %q, want evt_k with the same body", got[1].header.Get(HeaderID))
	}
	verify(t, testSecret, got[1])
	if got := ep.waitFor(t, 3); got[2].header.Get(HeaderID) != "evt_l" {
		t.Errorf("the event handled after Stop: %q, want evt_l delivered by the next sender", got[2].header.Get(HeaderID))
	}
}

// TestGivesUpAfterMaxAge: a notification not delivered within MaxAge is
// dropped and counted, not retried for ever.
func TestGivesUpAfterMaxAge(t *testing.T) {
	ep := newEndpoint(t, always(http.StatusBadGateway))
	s := newMem()
	n := startNotifier(t, s, Options{FirstRetry: time.Millisecond, MaxAge: 30 * time.Millisecond}, Endpoint{Name: "x", URL: ep.URL, Types: DefaultTypes, Secret: testSecret})
	n.Handle(context.Background(), runFinished("evt_g"))
	st := waitStatus(t, n, s, "x", func(st Status) bool { return st.Dropped == 1 })
	if st.Pending != 0 || st.LastAttempts < 2 || len(s.outbox("x")) != 0 {
		t.Errorf("status %+v outbox %v", st, s.outbox("x"))
	}
}

// TestDownEndpointDelaysNoOther: each endpoint has its own queue.
func TestDownEndpointDelaysNoOther(t *testing.T) {
	block := make(chan struct{})
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer down.Close()
	defer close(block)
	up := newEndpoint(t, always(200))
	s := newMem()
	n := startNotifier(t, s, Options{Timeout: time.Hour},
		Endpoint{Name: "down", URL: down.URL, Types: DefaultTypes, Secret: testSecret},
		Endpoint{Name: "up", URL: up.URL, Types: DefaultTypes, Secret: testSecret})
	for _, id := range []string{"evt_1", "evt_2", "evt_3"} {
		n.Handle(context.Background(), runFinished(id))
	}
	up.waitFor(t, 3)
}

func TestBodyCarriesOnlyAllowListedFields(t *testing.T) {
	for _, tc := range []struct {
		e    events.Event
		typ  string
		want []string
		not  []string
	}{
		{e: runFinished("evt_1"), typ: "run.finished", want: []string{`"commit":"abc"`, `"run":"r1"`, `"duration_seconds":1.5`}, not: []string{"hunter2", "ci:"}},
		{e: events.Event{ID: "evt_2", Kind: events.RunStarted, Signers: []string{"alice"}}, typ: "run.started", want: []string{`"signers":["alice"]`}, not: []string{"duration"}},
		{e: events.Event{ID: "evt_3", Kind: events.PatchFinished, Target: "apps", Outcome: events.PatchLanded}, typ: "patch.finished", want: []string{`"target":"apps"`}},
		{e: events.Event{ID: "evt_4", Kind: events.PollFinished}, typ: ""},
		{e: events.Event{ID: "evt_5", Kind: events.WebhookDelivery}, typ: ""},
	} {
		typ, body, err := Body(tc.e)
		if err != nil || typ != tc.typ {
			t.Errorf("%s: type %q err %v, want %q", tc.e.Kind, typ, err, tc.typ)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("%s: body %s lacks %s", tc.e.Kind, body, w)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(string(body), w) {
				t.Errorf("%s: body %s holds %s", tc.e.Kind, body, w)
			}
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@git.example/r.git": "https://git.example/r.git",
		"https://token@git.example/r.git":   "https://git.example/r.git",
		"ssh://git@git.example/r.git":       "ssh://git@git.example/r.git",
		"git@git.example:r.git":             "git@git.example:r.git",
		"user:pw@git.example:r.git":         "",
		"https://git.example/r.git":         "https://git.example/r.git",
		"":                                  "",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStaleTimestampIsRefused: the receivers of these tests verify with the
// library's tolerance check, so a notification signed more than 5 minutes
// ago (a replay, or a sender with a wrong clock) is refused, not accepted.
func TestStaleTimestampIsRefused(t *testing.T) {
	wh, _ := standardwebhooks.NewWebhook(testSecret)
	ep := newEndpoint(t, func(int) (int, http.Header) { return 0, nil })
	ep.answer = func(n int) (int, http.Header) {
		d := ep.got[n]
		if err := wh.Verify(d.body, d.header); err != nil {
			return http.StatusUnauthorized, nil
		}
		return http.StatusOK, nil
	}
	for _, tc := range []struct {
		skew time.Duration
		want int
	}{{0, http.StatusOK}, {-6 * time.Minute, http.StatusUnauthorized}, {6 * time.Minute, http.StatusUnauthorized}} {
		s := newMem()
		n := startNotifier(t, s, Options{Now: func() time.Time { return time.Now().Add(tc.skew) }},
			Endpoint{Name: "x", URL: ep.URL, Types: DefaultTypes, Secret: testSecret})
		n.Handle(context.Background(), runFinished(fmt.Sprintf("evt_skew%d", int(tc.skew.Minutes()))))
		st := waitStatus(t, n, s, "x", func(st Status) bool { return st.LastAttempts == 1 })
		if st.LastHTTPCode != tc.want {
			t.Errorf("signed %s off: the receiver answered %d, want %d", tc.skew, st.LastHTTPCode, tc.want)
		}
	}
}
