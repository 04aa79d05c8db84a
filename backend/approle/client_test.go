package approle

import (
	"testing"
	"time"
)

func TestTargetTokenUsable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		tok  *targetToken
		want bool
	}{
		{"no token", nil, false},
		{"empty token", &targetToken{}, false},
		{"fresh", &targetToken{token: "t", obtained: now, ttl: 90 * time.Second}, true},
		{"two thirds left", &targetToken{token: "t", obtained: now.Add(-29 * time.Second), ttl: 90 * time.Second}, true},
		{"one third left", &targetToken{token: "t", obtained: now.Add(-60 * time.Second), ttl: 90 * time.Second}, false},
		{"expired", &targetToken{token: "t", obtained: now.Add(-2 * time.Minute), ttl: 90 * time.Second}, false},
		{"short ttl keeps the floor", &targetToken{token: "t", obtained: now.Add(-4 * time.Second), ttl: 9 * time.Second}, false},
		{"no ttl never expires", &targetToken{token: "t", obtained: now.Add(-24 * time.Hour)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.usable(now); got != tt.want {
				t.Fatalf("usable = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSecretIDRotationDue(t *testing.T) {
	issued := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	entry := func(ttl time.Duration) *Target {
		return &Target{SecretID: "s", SecretIDTTL: ttl, SecretIDIssuedAt: issued}
	}
	tests := []struct {
		name  string
		entry *Target
		at    time.Time
		want  bool
	}{
		{"not configured", nil, issued, false},
		{"no ttl", entry(0), issued.Add(1000 * time.Hour), false},
		{"fresh", entry(90 * time.Minute), issued.Add(time.Minute), false},
		{"just before two thirds", entry(90 * time.Minute), issued.Add(60*time.Minute - time.Second), false},
		{"at two thirds", entry(90 * time.Minute), issued.Add(60 * time.Minute), true},
		{"expired", entry(90 * time.Minute), issued.Add(2 * time.Hour), true},
		{"no secret_id", &Target{SecretIDTTL: time.Minute}, issued.Add(time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := secretIDRotationDue(tt.entry, tt.at); got != tt.want {
				t.Fatalf("due = %v, want %v", got, tt.want)
			}
		})
	}
}

// The plugin process may run with VAULT_* variables meant for something
// else; none of them may change which Vault, token, namespace, wrapping or
// TLS verification the target client uses.
func TestNewTargetClientIgnoresEnvironment(t *testing.T) {
	for k, v := range map[string]string{
		"VAULT_ADDR":            "https://elsewhere.example:8200",
		"VAULT_TOKEN":           "env-token",
		"VAULT_NAMESPACE":       "env-ns",
		"VAULT_SKIP_VERIFY":     "true",
		"VAULT_WRAP_TTL":        "5m",
		"VAULT_TLS_SERVER_NAME": "elsewhere.example",
		"VAULT_HEADERS":         `{"X-Env":"1"}`,
	} {
		t.Setenv(k, v)
	}
	c, err := newTargetClient(Target{Addr: "https://127.0.0.1:8200"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Address(); got != "https://127.0.0.1:8200" {
		t.Errorf("address = %q, want the configured one", got)
	}
	if c.Token() != "" || c.Namespace() != "" {
		t.Errorf("token %q / namespace %q leaked from the environment", c.Token(), c.Namespace())
	}
	if h := c.Headers(); h.Get("X-Env") != "" {
		t.Errorf("headers from the environment: %v", h)
	}
	if ttl := c.NewRequest("GET", "/v1/secret/data/x").WrapTTL; ttl != "" {
		t.Errorf("wrap TTL %q from the environment", ttl)
	}
	if _, err := newTargetClient(Target{Addr: "ftp://x"}); err == nil {
		t.Error("an ftp:// vault_addr was accepted")
	}
}
