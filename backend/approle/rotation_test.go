package approle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// memStore is a mount's storage and configure_vault_access in memory.
type memStore struct {
	entries map[string][]byte
	target  *Target
	writes  int
}

func (m *memStore) Get(_ context.Context, key string) ([]byte, error) { return m.entries[key], nil }

func (m *memStore) Put(_ context.Context, key string, value []byte) error {
	m.writes++
	m.entries[key] = value
	return nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.writes++
	delete(m.entries, key)
	return nil
}

func (m *memStore) Target(context.Context) (*Target, error) {
	if m.target == nil {
		return nil, nil
	}
	t := *m.target
	return &t, nil
}

func (m *memStore) SetSecretID(_ context.Context, secretID string, issuedAt time.Time) error {
	m.writes++
	m.target.SecretID, m.target.SecretIDIssuedAt = secretID, issuedAt
	return nil
}

func newTestClient(log *strings.Builder) *Client {
	return New(Config{
		Logger:   func() hclog.Logger { return hclog.New(&hclog.LoggerOptions{Output: log}) },
		ConfigMu: &sync.Mutex{},
	})
}

// closedAddr is a target nothing listens on: a test that would talk to it
// fails with a connection error.
const closedAddr = "http://127.0.0.1:1"

// A record the client can not use is dropped without a word to any target:
// its secret_ids go nowhere but where they were made.
func TestRecoverDropsRecordsOfNoTarget(t *testing.T) {
	const configured, unused = "sid-configured-5f1c", "sid-unused-9a2e"
	current := &Target{Addr: closedAddr, RoleName: "r", RoleID: "id", SecretID: configured}
	other := Target{Addr: "https://old.example:8200"}
	tests := []struct {
		name    string
		target  *Target
		rot     Rotation
		wantLog string
	}{
		{"access deleted", nil, Rotation{OldSecretID: configured, NewSecretID: unused}, ""},
		{"access moved to another target", current, Rotation{OldSecretID: configured, NewSecretID: unused, Target: other.Key()}, "made for a target Vault that is no longer configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := &memStore{entries: map[string][]byte{}, target: tt.target}
			if err := saveRotation(ctx, s, &tt.rot); err != nil {
				t.Fatal(err)
			}
			var log strings.Builder
			if err := newTestClient(&log).RotateSecretID(ctx, s); err != nil {
				t.Fatalf("recover: %v", err)
			}
			if rot, err := loadRotation(ctx, s); err != nil || rot != nil {
				t.Fatalf("record after recovery: %+v, %v", rot, err)
			}
			if !strings.Contains(log.String(), tt.wantLog) {
				t.Errorf("log %q does not say %q", log.String(), tt.wantLog)
			}
			if strings.Contains(log.String(), configured) || strings.Contains(log.String(), unused) {
				t.Errorf("log names a secret_id: %s", log.String())
			}
		})
	}
}

// The periodic tick reads and writes nothing more, and talks to no one,
// while no rotation is due or in flight.
func TestPeriodicRotationNotDue(t *testing.T) {
	ctx := context.Background()
	s := &memStore{entries: map[string][]byte{}, target: &Target{Addr: closedAddr, SecretID: "s", SecretIDTTL: time.Hour, SecretIDIssuedAt: time.Now()}}
	var log strings.Builder
	newTestClient(&log).PeriodicRotation(ctx, s)
	if s.writes != 0 || log.Len() != 0 {
		t.Fatalf("a tick with nothing due wrote %d time(s) and logged %q", s.writes, log.String())
	}
}

// Stored records name their target by Key: it must not change.
func TestTargetKeyIsStable(t *testing.T) {
	tg := Target{Addr: "https://v:8200", CACert: "ca", TLSServerName: "v", MountPoint: "auth/approle", RoleID: "id", SecretID: "s"}
	sum := sha256.Sum256([]byte("14:https://v:8200;2:ca;1:v;12:auth/approle;"))
	if got := tg.Key(); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("Key = %q, want the sha256 of the length-prefixed address, CA, server name and mount", got)
	}
	moved := tg
	moved.SecretID = "other"
	if moved.Key() != tg.Key() || moved.identity() == tg.identity() {
		t.Error("a new secret_id must keep the Key and change the identity")
	}
}

// A record stored before the client had its own package reads the same.
func TestRotationRecordFormat(t *testing.T) {
	ctx := context.Background()
	s := &memStore{entries: map[string][]byte{
		RotationKey: []byte(`{"old_secret_id":"o","new_secret_id":"n","new_secret_id_accessor":"a","started_at":"2026-01-01T12:00:00Z"}` + "\n"),
	}}
	rot, err := loadRotation(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	want := Rotation{OldSecretID: "o", NewSecretID: "n", NewSecretIDAccessor: "a", StartedAt: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	if *rot != want {
		t.Fatalf("decoded %+v, want %+v", *rot, want)
	}
	if err := saveRotation(ctx, s, rot); err != nil {
		t.Fatal(err)
	}
	if got := string(s.entries[RotationKey]); got != `{"old_secret_id":"o","new_secret_id":"n","new_secret_id_accessor":"a","started_at":"2026-01-01T12:00:00Z"}`+"\n" {
		t.Errorf("stored %q", got)
	}
}
