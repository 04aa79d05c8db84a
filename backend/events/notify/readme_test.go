package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flant/flant_gitops/backend/events"
)

// TestReadmeChatRelay runs the README's chat relay, as written there, with
// the Standard Webhooks Python library (from the Go module, which carries
// every language's library): it verifies what the notifier signs and
// posts one chat line per finished run and refusal.
func TestReadmeChatRelay(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	section = section[strings.Index(section, "## Notifications"):]
	var relay string
	for _, m := range regexp.MustCompile("(?s)```python\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if strings.Contains(m[1], "CHAT_WEBHOOK_URL") {
			relay = m[1]
			break
		}
	}
	if relay == "" {
		t.Fatal("the README has no chat relay in its Notifications section")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/standard-webhooks/standard-webhooks/libraries").Output()
	if err != nil {
		t.Fatalf("locating the Standard Webhooks libraries: %v", err)
	}
	pyLib := filepath.Join(strings.TrimSpace(string(out)), "python")
	script := filepath.Join(t.TempDir(), "relay.py")
	if err := os.WriteFile(script, []byte(relay), 0o600); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var texts []string
	chat := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct{ Text string }
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &msg)
		mu.Lock()
		texts = append(texts, msg.Text)
		mu.Unlock()
	}))
	defer chat.Close()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("python3", script)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pyLib, "FLANT_GITOPS_WEBHOOK_SECRET="+testSecret,
		"CHAT_WEBHOOK_URL="+chat.URL, fmt.Sprintf("PORT=%d", port))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("python3: %v", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	relayURL := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay does not listen: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	s := newMem()
	n := startNotifier(t, s, Options{}, Endpoint{Name: "chat", URL: relayURL, Types: DefaultTypes, Secret: testSecret},
		Endpoint{Name: "forged", URL: relayURL, Types: DefaultTypes, Secret: "whsec_" + strings.Repeat("QUJD", 8)})
	ctx := context.Background()
	failed := events.Event{ID: "evt_1", Kind: events.RunFinished, Time: time.Now(), Branch: "main", Commit: strings.Repeat("a", 40),
		Run: "r1", Outcome: events.RunFailed, Reason: "the command exited with code 3"}
	n.Handle(ctx, failed)
	n.Handle(ctx, events.Event{ID: "evt_2", Kind: events.CommitRefused, Time: time.Now(), Branch: "main", Commit: strings.Repeat("b", 40),
		Missing: []string{"1 more verified signature(s) of trusted signers (1 of 2)"}})
	waitStatus(t, n, s, "chat", func(st Status) bool { return st.Delivered == 2 })
	// The relay refuses what another secret signed: 401, not retried.
	if st := waitStatus(t, n, s, "forged", func(st Status) bool { return st.Failed == 2 }); st.LastHTTPCode != http.StatusUnauthorized {
		t.Errorf("forged: %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		":x: run r1 of `aaaaaaaaaaaa` on main: failed (the command exited with code 3)",
		":lock: `bbbbbbbbbbbb` on main refused: 1 more verified signature(s) of trusted signers (1 of 2)",
	}
	if strings.Join(texts, "\n") != strings.Join(want, "\n") {
		t.Errorf("chat got\n%s\nwant\n%s\nrelay stderr: %s", strings.Join(texts, "\n"), strings.Join(want, "\n"), stderr.String())
	}
}
