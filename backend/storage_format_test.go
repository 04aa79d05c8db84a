package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// TestStorageFormat: an absent marker is format 1 and gets marked; a newer
// format is refused naming the version that wrote it and left as it is; an
// older one is migrated step by step, the marker written after each step, so
// a failed step is the only one run again.
func TestStorageFormat(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		stored     string // raw marker, "" for none
		current    int
		readable   int // 0: current
		failStep   int // the migration from this format fails once
		write      bool
		wantFormat int
		wantErr    []string
		wantMarker string // "" for the stored bytes unchanged
		wantCalls  []int
		wantLog    string
	}{
		{name: "absent marker is format 1 and is marked", current: 1, write: true,
			wantFormat: 1, wantMarker: `{"format":1,"written_by":"v1.0.0"}`},
		{name: "absent marker on a read-only node is format 1, nothing written", current: 1,
			wantFormat: 1},
		{name: "marker without a format is format 1", stored: `{"written_by":"v0.9.0"}`, current: 1, write: true,
			wantFormat: 1},
		{name: "same format is read as it is", stored: `{"format":1,"written_by":"v0.9.0"}`, current: 1, write: true,
			wantFormat: 1},
		{name: "newer format is refused naming who wrote it", stored: `{"format":3,"written_by":"v9.9.9"}`, current: 2, write: true,
			wantFormat: 3, wantErr: []string{"stored by flant_gitops v9.9.9 in format 3", "this is v1.0.0, which reads up to format 2", "upgrade the plugin again", "nothing was read or changed"}},
		{name: "older format is migrated step by step and marked", stored: `{"format":1,"written_by":"v0.9.0"}`, current: 3, write: true,
			wantFormat: 3, wantMarker: `{"format":3,"written_by":"v1.0.0"}`, wantCalls: []int{1, 2}, wantLog: "upgraded this mount's storage"},
		{name: "a failed step leaves the marker at the last done", stored: `{"format":1,"written_by":"v0.9.0"}`, current: 3, failStep: 2, write: true,
			wantFormat: 2, wantErr: []string{"from format 2 to 3", "stays in format 2"}, wantMarker: `{"format":2,"written_by":"v1.0.0"}`, wantCalls: []int{1, 2}},
		{name: "a format this build reads but does not start at is served as it is", stored: `{"format":2,"written_by":"v1.1.0"}`, current: 1, readable: 2, write: true,
			wantFormat: 2},
		{name: "a build reading only format 1 refuses format 2", stored: `{"format":2,"written_by":"v1.1.0"}`, current: 1, write: true,
			wantFormat: 2, wantErr: []string{"stored by flant_gitops v1.1.0 in format 2", "reads up to format 1"}},
		{name: "a read-only node does not migrate", stored: `{"format":1,"written_by":"v0.9.0"}`, current: 3,
			wantFormat: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &logical.InmemStorage{}
			if tt.stored != "" {
				if err := s.Put(ctx, &logical.StorageEntry{Key: storageKeyFormat, Value: []byte(tt.stored)}); err != nil {
					t.Fatal(err)
				}
			}
			var calls []int
			migrations := map[int]storageMigration{}
			for f := 1; f < tt.current; f++ {
				migrations[f] = func(ctx context.Context, s logical.Storage) error {
					calls = append(calls, f)
					if f == tt.failStep {
						return errors.New("disk full")
					}
					return s.Put(ctx, &logical.StorageEntry{Key: fmt.Sprintf("migrated/%d", f), Value: []byte("x")})
				}
			}
			var logBuf bytes.Buffer
			log := hclog.New(&hclog.LoggerOptions{Output: &logBuf})
			got, err := checkStorageFormat(ctx, s, tt.current, max(tt.current, tt.readable), migrations, "v1.0.0", tt.write, log)
			if got != tt.wantFormat {
				t.Errorf("format = %d, want %d", got, tt.wantFormat)
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Fatalf("error: %v", err)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want it to say %q", err, w)
				}
			}
			raw, _ := s.Get(ctx, storageKeyFormat)
			want := tt.wantMarker
			if want == "" {
				want = tt.stored
			}
			gotMarker := ""
			if raw != nil {
				gotMarker = strings.TrimSpace(string(raw.Value))
			}
			if gotMarker != want {
				t.Errorf("stored marker %q, want %q", gotMarker, want)
			}
			if fmt.Sprint(calls) != fmt.Sprint(tt.wantCalls) && !(len(calls) == 0 && len(tt.wantCalls) == 0) {
				t.Errorf("migrations run %v, want %v", calls, tt.wantCalls)
			}
			if tt.wantLog != "" && !strings.Contains(logBuf.String(), tt.wantLog) {
				t.Errorf("log does not say %q:\n%s", tt.wantLog, logBuf.String())
			}
		})
	}
}

// TestNewerFormatRefusesEveryRequest: a backend over storage marked by a
// newer version starts nothing, answers every request 503 with the refusal
// and keeps the marker and the entries as they were.
func TestNewerFormatRefusesEveryRequest(t *testing.T) {
	ctx := context.Background()
	s := &logical.InmemStorage{}
	marker := []byte(`{"format":3,"written_by":"v9.9.9"}`)
	for _, e := range []*logical.StorageEntry{
		{Key: storageKeyFormat, Value: marker},
		{Key: storageKeyConfig, Value: []byte(`{"git_repo_url":"https://example.invalid/ops.git"}`)},
	} {
		if err := s.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	conf := logical.TestBackendConfig()
	conf.StorageView = s
	lb, err := Factory(ctx, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Cleanup(ctx)
	if err := lb.Initialize(ctx, &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatalf("initialize: %v", err)
	}
	for _, req := range []*logical.Request{
		{Operation: logical.ReadOperation, Path: "configure"},
		{Operation: logical.ReadOperation, Path: "status"},
		{Operation: logical.UpdateOperation, Path: "configure", Data: map[string]any{"git_repo_url": "https://example.invalid/other.git"}},
	} {
		req.Storage = s
		_, err := lb.HandleRequest(ctx, req)
		var coded logical.HTTPCodedError
		if !errors.As(err, &coded) || coded.Code() != 503 || !strings.Contains(err.Error(), "stored by flant_gitops v9.9.9 in format 3") {
			t.Errorf("%s %s answered %v, want 503 naming v9.9.9 and format 3", req.Operation, req.Path, err)
		}
	}
	if _, err := lb.HandleRequest(ctx, &logical.Request{Operation: logical.RollbackOperation, Path: "", Storage: s}); err != nil {
		t.Errorf("the periodic tick answered %v, want it dropped quietly", err)
	}
	for key, want := range map[string]string{storageKeyFormat: string(marker), storageKeyConfig: `{"git_repo_url":"https://example.invalid/ops.git"}`} {
		raw, _ := s.Get(ctx, key)
		if raw == nil || string(raw.Value) != want {
			t.Errorf("%s is %v after the refusal, want it unchanged", key, raw)
		}
	}
}

// TestTrustEntriesRaiseTheStorageFormat: a signature rule or a revoked key
// marks the mount format 2, which a build reading only format 1 refuses
// (it would ignore them and accept what they refuse); with none left the
// mount is format 1 again, so a roll-back works once the operator removed
// them.
func TestTrustEntriesRaiseTheStorageFormat(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	ctx := t.Context()
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", minimalConfig()), "configure")
	key := pgptest.NewKey(t, "Alice")
	oldBuild := func() error {
		_, err := checkStorageFormat(ctx, s, 1, 1, nil, "v0.1.0", true, hclog.NewNullLogger())
		return err
	}
	format := func() any { return configReq(t, b, s, logical.ReadOperation, "status", nil).Data["storage_format"] }
	steps := []struct {
		name        string
		op          logical.Operation
		path        string
		data        map[string]any
		wantFormat  int
		oldRefuses  bool
		refusalSays string
	}{
		{"a signer without revocations", logical.UpdateOperation, "configure/signer/alice", map[string]any{"pgp_public_keys": key.PublicArmored(t)}, 1, false, ""},
		{"a signature rule", logical.UpdateOperation, "configure/signature_rule/prod", map[string]any{"paths": "prod/**", "required_signers": 1}, 2, true, "reads up to format 1"},
		{"a revoked key too", logical.UpdateOperation, "configure/signer/alice", map[string]any{"revoked_keys": key.Fingerprint()}, 2, true, "in format 2"},
		{"the rule deleted, the revocation left", logical.DeleteOperation, "configure/signature_rule/prod", nil, 2, true, "in format 2"},
		{"the revocation cleared", logical.UpdateOperation, "configure/signer/alice", map[string]any{"revoked_keys": []any{}}, 1, false, ""},
	}
	for _, st := range steps {
		resp := configReq(t, b, s, st.op, st.path, st.data)
		if resp != nil && resp.IsError() {
			t.Fatalf("%s: %v", st.name, resp.Error())
		}
		if got := format(); got != st.wantFormat {
			t.Errorf("%s: status storage_format = %v, want %d", st.name, got, st.wantFormat)
		}
		err := oldBuild()
		if st.oldRefuses != (err != nil) || (err != nil && !strings.Contains(err.Error(), st.refusalSays)) {
			t.Errorf("%s: a build reading only format 1 answered %v, want refused=%v saying %q", st.name, err, st.oldRefuses, st.refusalSays)
		}
	}
}
