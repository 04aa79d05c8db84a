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

// memStore is configure_vault_access and the rotation record in memory.
type memStore struct {
	target *Target
	rot    *Rotation
	writes int
}

// clone hands out a copy, as storage does: the caller's edits stay its own.
func clone[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func (m *memStore) Target(context.Context) (*Target, error) { return clone(m.target), nil }

func (m *memStore) SetSecretID(_ context.Context, secretID string, issuedAt time.Time) error {
	m.writes++
	m.target.SecretID, m.target.SecretIDIssuedAt = secretID, issuedAt
	return nil
}

func (m *memStore) Rotation(context.Context) (*Rotation, error) { return clone(m.rot), nil }

func (m *memStore) PutRotation(_ context.Context, rot *Rotation) error {
	m.writes++
	m.rot = clone(rot)
	return nil
}

func (m *memStore) DropRotation(context.Context) error {
	m.writes++
	m.rot = nil
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
			s := &memStore{target: tt.target, rot: &tt.rot}
			var log strings.Builder
			if err := newTestClient(&log).RotateSecretID(ctx, s); err != nil {
				t.Fatalf("recover: %v", err)
			}
			if s.rot != nil {
				t.Fatalf("record after recovery: %+v", s.rot)
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
	s := &memStore{target: &Target{Addr: closedAddr, SecretID: "s", SecretIDTTL: time.Hour, SecretIDIssuedAt: time.Now()}}
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
