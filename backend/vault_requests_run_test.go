package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/approle"
	"github.com/flant/flant_gitops/backend/vaulttest"
)

func TestQueryValues(t *testing.T) {
	tests := []struct {
		name string
		opts map[string]any
		want string
	}{
		{"nil", nil, ""},
		{"string", map[string]any{"version": "2"}, "version=2"},
		{"number and bool", map[string]any{"n": float64(3), "b": true}, "b=true&n=3"},
		{"list repeats", map[string]any{"k": []any{"a", float64(1)}}, "k=a&k=1"},
		{"object as JSON", map[string]any{"o": map[string]any{"x": "y"}}, "o=%7B%22x%22%3A%22y%22%7D"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := queryValues(tt.opts).Encode(); got != tt.want {
				t.Fatalf("query = %q, want %q", got, tt.want)
			}
		})
	}
}

// --- real target Vault -----------------------------------------------------

const (
	targetRole   = "flant-gitops"
	targetSecret = "s3cr3t-value-for-the-commands"
)

// targetFixture is a target Vault with AppRole, a KV secret, a policy and a
// role whose tokens may rotate their own secret_id.
type targetFixture struct {
	tg       *vaulttest.Target
	roleID   string
	secretID string
}

func newTargetFixture(t testing.TB, roleSecretIDTTL string) *targetFixture {
	t.Helper()
	ctx := context.Background()
	tg := vaulttest.NewTarget(t)
	c := tg.Client
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("enable approle: %v", err)
	}
	if _, err := c.KVv2("secret").Put(ctx, "app", map[string]any{"password": targetSecret}); err != nil {
		t.Fatalf("write kv secret: %v", err)
	}
	policy := fmt.Sprintf(`
path "secret/data/app" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["list"] }
path "secret/data/scratch" { capabilities = ["delete"] }
path "auth/approle/role/%[1]s/secret-id" { capabilities = ["update"] }
path "auth/approle/role/%[1]s/secret-id/destroy" { capabilities = ["update"] }
path "auth/approle/role/%[1]s/secret-id-accessor/destroy" { capabilities = ["update"] }
`, targetRole)
	if err := c.Sys().PutPolicyWithContext(ctx, "flant-gitops", policy); err != nil {
		t.Fatalf("write policy: %v", err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+targetRole, map[string]any{
		"token_policies": "flant-gitops",
		"token_ttl":      "90s",
		"token_max_ttl":  "10m",
		"secret_id_ttl":  roleSecretIDTTL,
	}); err != nil {
		t.Fatalf("write role: %v", err)
	}
	s, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/"+targetRole+"/role-id")
	if err != nil {
		t.Fatalf("read role-id: %v", err)
	}
	roleID, _ := s.Data["role_id"].(string)
	return &targetFixture{tg: tg, roleID: roleID, secretID: newSecretID(t, tg)}
}

func newSecretID(t testing.TB, tg *vaulttest.Target) string {
	t.Helper()
	s, err := tg.Client.Logical().WriteWithContext(context.Background(), "auth/approle/role/"+targetRole+"/secret-id", nil)
	if err != nil {
		t.Fatalf("generate secret_id: %v", err)
	}
	id, _ := s.Data["secret_id"].(string)
	return id
}

// login logs in on the target with secretID the way an outsider would.
func (f *targetFixture) login(secretID string) error {
	c, err := f.tg.NewClient(f.tg.CACert, vaulttest.TargetServerName)
	if err != nil {
		return err
	}
	s, err := c.Logical().WriteWithContext(context.Background(), "auth/approle/login", map[string]any{"role_id": f.roleID, "secret_id": secretID})
	if err == nil {
		_ = approle.As(c, s.Auth.ClientToken, "").Auth().Token().RevokeSelfWithContext(context.Background(), "")
	}
	return err
}

// tokenAlive asks the target whether the token behind accessor still exists.
func (f *targetFixture) tokenAlive(accessor string) bool {
	_, err := f.tg.Client.Auth().Token().LookupAccessorWithContext(context.Background(), accessor)
	return err == nil
}

// accessFields are the configure_vault_access fields for the fixture.
func (f *targetFixture) accessFields(secretIDTTL string) map[string]any {
	return map[string]any{
		"vault_addr":            f.tg.Addr,
		"vault_tls_server_name": vaulttest.TargetServerName,
		"vault_cacert":          f.tg.CACert,
		"role_name":             targetRole,
		"role_id":               f.roleID,
		"secret_id":             f.secretID,
		"secret_id_ttl":         secretIDTTL,
	}
}

// testPlugin is the backend in process, on in-memory storage, with its log
// captured and a clock the test can move.
type testPlugin struct {
	b *backend
	// client is b's AppRole client, on the test's clock.
	client  *approle.Client
	s       logical.Storage
	log     *syncBuffer
	mu      sync.Mutex
	advance time.Duration
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func newTestPlugin(t testing.TB, s logical.Storage) *testPlugin {
	t.Helper()
	if s == nil {
		s = &logical.InmemStorage{}
	}
	p := &testPlugin{s: s, log: &syncBuffer{}}
	conf := logical.TestBackendConfig()
	conf.StorageView = s
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: p.log, Level: hclog.Trace})
	p.b = newBackend()
	if err := p.b.Setup(context.Background(), conf); err != nil {
		t.Fatalf("set up backend: %v", err)
	}
	p.client = p.b.newApproleClient(func() time.Time {
		p.mu.Lock()
		defer p.mu.Unlock()
		return time.Now().Add(p.advance)
	})
	p.b.approle = p.client
	t.Cleanup(func() { p.b.Cleanup(context.Background()) })
	return p
}

func (p *testPlugin) sleep(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance += d
}

func (p *testPlugin) request(t testing.TB, op logical.Operation, path string, data map[string]any) *logical.Response {
	t.Helper()
	resp, err := p.b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Storage: p.s, Data: data})
	if err != nil || resp.IsError() {
		t.Fatalf("%s %s: %v %v", op, path, err, resp.Error())
	}
	return resp
}

func (p *testPlugin) accessor() string { return p.client.Accessor() }

func (p *testPlugin) configuredSecretID(t testing.TB) string {
	t.Helper()
	e, err := getVaultAccess(context.Background(), p.s)
	if err != nil || e == nil {
		t.Fatalf("read vault access: %v", err)
	}
	return e.SecretID
}

// unwrap unwraps token on the target without any other credential.
func unwrap(t testing.TB, tg *vaulttest.Target, token string) *api.Secret {
	t.Helper()
	c, err := tg.NewClient(tg.CACert, vaulttest.TargetServerName)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Logical().UnwrapWithContext(context.Background(), token)
	if err != nil {
		t.Fatalf("unwrap: %v", err)
	}
	return s
}

func TestPrepareVaultRequestsNothingConfigured(t *testing.T) {
	// A listener that fails the test if anything connects to it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	connected := make(chan struct{}, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			connected <- struct{}{}
			c.Close()
		}
	}()

	p := newTestPlugin(t, nil)
	for _, step := range []string{"no access", "access without requests"} {
		if step == "access without requests" {
			p.request(t, logical.UpdateOperation, "configure_vault_access", map[string]any{
				"vault_addr": "http://" + l.Addr().String(), "role_name": "r", "role_id": "id", "secret_id": "sid", "secret_id_ttl": "1m",
			})
			p.sleep(time.Hour) // even a due rotation waits for a run that needs the target
		}
		env, files, err := p.b.prepareVaultRequests(context.Background(), p.s)
		if err != nil || len(env) != 0 || len(files) != 0 {
			t.Fatalf("%s: env=%v files=%v err=%v, want empty", step, env, files, err)
		}
	}
	select {
	case <-connected:
		t.Fatal("prepareVaultRequests contacted the target with no vault request configured")
	case <-time.After(100 * time.Millisecond):
	}
}

// fakeApprole stands in for the AppRole client where a test is about what
// the run makes of its answers, not about the target Vault.
type fakeApprole struct {
	approleClient
	err      error // from WithTarget itself, as a storage error
	target   *approle.Target
	loginErr error
}

func (f fakeApprole) WithTarget(_ context.Context, _ approle.Store, fn func(*approle.Target, approle.Login) error) error {
	if f.err != nil {
		return f.err
	}
	return fn(f.target, func() (*api.Client, string, error) { return nil, "", f.loginErr })
}

func (fakeApprole) Reset(context.Context) {}

// The run says which requests failed and why, and wraps only what the
// client's own storage reads failed with.
func TestPrepareVaultRequestsClientErrors(t *testing.T) {
	tests := []struct {
		name string
		fake fakeApprole
		want string
	}{
		{"storage", fakeApprole{err: errors.New("read \"config/vault_access\" from storage: disk gone")}, `vault requests: read "config/vault_access" from storage: disk gone`},
		{"not configured", fakeApprole{}, `vault requests "app" are configured but configure_vault_access is not: write flant_gitops/configure_vault_access or delete the requests`},
		{"login", fakeApprole{target: &approle.Target{Addr: "https://v:8200"}, loginErr: errors.New("AppRole login refused")}, `vault requests "app": AppRole login refused`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPlugin(t, nil)
			p.request(t, logical.UpdateOperation, "configure/vault_request/app", map[string]any{"path": "secret/data/app"})
			p.b.approle = tt.fake
			env, files, err := p.b.prepareVaultRequests(context.Background(), p.s)
			if err == nil || err.Error() != tt.want || env != nil || files != nil {
				t.Fatalf("prepare = %v, %v, %v; want error %q", env, files, err, tt.want)
			}
		})
	}
}

func TestPrepareVaultRequests(t *testing.T) {
	f := newTargetFixture(t, "1h")
	p := newTestPlugin(t, nil)
	p.request(t, logical.UpdateOperation, "configure_vault_access", f.accessFields("1h"))
	p.request(t, logical.UpdateOperation, "configure/vault_request/app-secret", map[string]any{"path": "secret/data/app"})
	p.request(t, logical.UpdateOperation, "configure/vault_request/kv.list", map[string]any{"path": "secret/metadata/", "method": "list", "wrap_ttl": "2m"})

	env, files, err := p.b.prepareVaultRequests(context.Background(), p.s)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	for k, want := range map[string]string{
		"VAULT_ADDR":            f.tg.Addr,
		"VAULT_CACERT":          containerVaultCACertPath,
		"VAULT_TLS_SERVER_NAME": vaulttest.TargetServerName,
	} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	if got := string(files[containerVaultCACertPath]); got != f.tg.CACert {
		t.Errorf("CA file = %q, want the configured CA", got)
	}
	kv := unwrap(t, f.tg, env["VAULT_REQUEST_TOKEN_APP_SECRET"])
	if got := kv.Data["data"].(map[string]any)["password"]; got != targetSecret {
		t.Errorf("unwrapped secret = %v", got)
	}
	list := unwrap(t, f.tg, env["VAULT_REQUEST_TOKEN_KV_LIST"])
	if keys := fmt.Sprint(list.Data["keys"]); keys != "[app]" {
		t.Errorf("unwrapped list = %s, want [app]", keys)
	}
	// Wrapping tokens are single use.
	c, _ := f.tg.NewClient(f.tg.CACert, vaulttest.TargetServerName)
	if _, err := c.Logical().UnwrapWithContext(context.Background(), env["VAULT_REQUEST_TOKEN_APP_SECRET"]); err == nil {
		t.Error("a wrapping token could be unwrapped twice")
	}

	// The AppRole token is reused while valid...
	first := p.accessor()
	if _, _, err := p.b.prepareVaultRequests(context.Background(), p.s); err != nil {
		t.Fatal(err)
	}
	if p.accessor() != first {
		t.Error("a second run logged in again instead of reusing a valid token")
	}
	// ...renewed when two thirds of its TTL are gone...
	p.sleep(70 * time.Second)
	if _, _, err := p.b.prepareVaultRequests(context.Background(), p.s); err != nil {
		t.Fatal(err)
	}
	if p.accessor() != first || !f.tokenAlive(first) {
		t.Error("a renewable token was replaced instead of renewed")
	}
	// ...and replaced, the old one revoked, when it can not be renewed.
	if err := f.tg.Client.Auth().Token().RevokeAccessorWithContext(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	p.sleep(70 * time.Second)
	if _, _, err := p.b.prepareVaultRequests(context.Background(), p.s); err != nil {
		t.Fatalf("prepare after the token was revoked on the target: %v", err)
	}
	second := p.accessor()
	if second == first || !f.tokenAlive(second) {
		t.Fatalf("token not replaced: %q -> %q", first, second)
	}

	// A changed configure_vault_access drops the token made with the old one.
	f.secretID = newSecretID(t, f.tg)
	p.request(t, logical.UpdateOperation, "configure_vault_access", map[string]any{"secret_id": f.secretID})
	if _, _, err := p.b.prepareVaultRequests(context.Background(), p.s); err != nil {
		t.Fatal(err)
	}
	if third := p.accessor(); third == second || f.tokenAlive(second) {
		t.Errorf("after a config change the old token is alive=%v (accessor %q -> %q)", f.tokenAlive(second), second, third)
	}
	// Deleting it revokes the token at once.
	third := p.accessor()
	p.request(t, logical.DeleteOperation, "configure_vault_access", nil)
	if f.tokenAlive(third) {
		t.Error("token still alive after configure_vault_access was deleted")
	}
	_, _, err = p.b.prepareVaultRequests(context.Background(), p.s)
	if err == nil || !strings.Contains(err.Error(), `vault requests "app-secret", "kv.list" are configured but configure_vault_access is not`) {
		t.Errorf("prepare without access: %v", err)
	}

	assertNoSecrets(t, f.tg, p.log.String())
}

func TestPrepareVaultRequestsFailures(t *testing.T) {
	f := newTargetFixture(t, "1h")
	other, _ := vaulttest.NewTestCA(t, "some other CA")
	tests := []struct {
		name    string
		access  map[string]any
		request map[string]any
		want    []string
	}{
		{
			name:    "denied by the target's policy",
			request: map[string]any{"path": "secret/data/other"},
			want:    []string{`vault request "req"`, "GET secret/data/other", "Code: 403", "permission denied"},
		},
		{
			name:    "nothing to wrap",
			request: map[string]any{"path": "secret/data/scratch", "method": "delete"},
			want:    []string{`vault request "req"`, "DELETE secret/data/scratch", "without a wrapped response"},
		},
		{
			name:    "wrong CA",
			access:  map[string]any{"vault_cacert": vaulttest.CACertPEM(other)},
			request: map[string]any{"path": "secret/data/app"},
			want:    []string{"tls: failed to verify certificate", "unknown authority"},
		},
		{
			name:    "server name not set",
			access:  map[string]any{"vault_tls_server_name": ""},
			request: map[string]any{"path": "secret/data/app"},
			want:    []string{"tls: failed to verify certificate", "127.0.0.1"},
		},
		{
			name:    "system roots only",
			access:  map[string]any{"vault_cacert": ""},
			request: map[string]any{"path": "secret/data/app"},
			want:    []string{"tls: failed to verify certificate"},
		},
		{
			name:    "wrong secret_id",
			access:  map[string]any{"secret_id": "00000000-0000-0000-0000-000000000000"},
			request: map[string]any{"path": "secret/data/app"},
			want:    []string{"AppRole login", "invalid"},
		},
	}
	// Were the plugin's environment consulted, it would make every TLS case
	// pass.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte(f.tg.CACert), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_CACERT", caFile)
	t.Setenv("VAULT_TLS_SERVER_NAME", vaulttest.TargetServerName)
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPlugin(t, nil)
			access := f.accessFields("1h")
			for k, v := range tt.access {
				access[k] = v
			}
			p.request(t, logical.UpdateOperation, "configure_vault_access", access)
			p.request(t, logical.UpdateOperation, "configure/vault_request/req", tt.request)
			env, files, err := p.b.prepareVaultRequests(context.Background(), p.s)
			if err == nil {
				t.Fatalf("prepare succeeded: %v", env)
			}
			if env != nil || files != nil {
				t.Errorf("a failed prepare returned env/files")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			assertNoSecrets(t, f.tg, err.Error()+p.log.String())
		})
	}
}

func TestSecretIDRotation(t *testing.T) {
	f := newTargetFixture(t, "10m")
	p := newTestPlugin(t, nil)
	p.request(t, logical.UpdateOperation, "configure_vault_access", f.accessFields("90s"))
	p.request(t, logical.UpdateOperation, "configure/vault_request/app", map[string]any{"path": "secret/data/app"})
	ctx := context.Background()

	if _, _, err := p.b.prepareVaultRequests(ctx, p.s); err != nil {
		t.Fatal(err)
	}
	oldToken := p.accessor()
	if err := p.client.RotateSecretID(ctx, approleStorage(p.s)); err != nil || p.configuredSecretID(t) != f.secretID {
		t.Fatalf("rotated before it was due: %v", err)
	}

	secretIDs := []string{f.secretID}
	for range 2 {
		p.sleep(61 * time.Second) // past two thirds of 90s
		if err := p.client.RotateSecretID(ctx, approleStorage(p.s)); err != nil {
			t.Fatalf("rotate: %v", err)
		}
		old, cur := secretIDs[len(secretIDs)-1], p.configuredSecretID(t)
		if cur == old {
			t.Fatal("secret_id not rotated when due")
		}
		secretIDs = append(secretIDs, cur)
		if err := f.login(old); err == nil {
			t.Error("the replaced secret_id still logs in on the target")
		}
		if err := f.login(cur); err != nil {
			t.Errorf("the new secret_id does not log in: %v", err)
		}
		if f.tokenAlive(oldToken) {
			t.Error("the token obtained with the replaced secret_id is alive")
		}
		oldToken = p.accessor()
		if rot, _ := getEntry[approle.Rotation](ctx, p.s, approle.RotationKey); rot != nil {
			t.Error("the write-ahead record is left after a complete rotation")
		}
	}

	// A new backend on the same storage (a plugin restart) uses the
	// rotated secret_id.
	p.b.Cleanup(ctx)
	if f.tokenAlive(oldToken) {
		t.Error("Clean left the token alive")
	}
	restarted := newTestPlugin(t, p.s)
	env, _, err := restarted.b.prepareVaultRequests(ctx, p.s)
	if err != nil {
		t.Fatalf("prepare after restart: %v", err)
	}
	unwrap(t, f.tg, env["VAULT_REQUEST_TOKEN_APP"])

	assertNoSecrets(t, f.tg, p.log.String()+restarted.log.String())
}

// A crash can stop a rotation after any step; the next call finishes or
// rolls it back and always leaves a configured secret_id that works.
func TestSecretIDRotationRecovery(t *testing.T) {
	f := newTargetFixture(t, "10m")
	ctx := context.Background()
	tests := []struct {
		name string
		// setup returns the rotation record left behind and the secret_id
		// configured at the crash.
		setup          func(t *testing.T) (rot approle.Rotation, configured string)
		wantConfigured func(rot approle.Rotation, configured string) string
		wantDestroyed  func(rot approle.Rotation, configured string) []string
		// wantErr: the rotation is reported failed though recovery succeeded.
		wantErr string
	}{
		{
			name: "crash after storing the new secret_id",
			setup: func(t *testing.T) (approle.Rotation, string) {
				old, nw := newSecretID(t, f.tg), newSecretID(t, f.tg)
				return approle.Rotation{OldSecretID: old, NewSecretID: nw}, old
			},
			wantConfigured: func(rot approle.Rotation, _ string) string { return rot.NewSecretID },
			wantDestroyed:  func(rot approle.Rotation, _ string) []string { return []string{rot.OldSecretID} },
		},
		{
			name: "crash after switching, before destroying the old one",
			setup: func(t *testing.T) (approle.Rotation, string) {
				old, nw := newSecretID(t, f.tg), newSecretID(t, f.tg)
				return approle.Rotation{OldSecretID: old, NewSecretID: nw}, nw
			},
			wantConfigured: func(rot approle.Rotation, _ string) string { return rot.NewSecretID },
			wantDestroyed:  func(rot approle.Rotation, _ string) []string { return []string{rot.OldSecretID} },
		},
		{
			name: "new secret_id unusable: roll back",
			setup: func(t *testing.T) (approle.Rotation, string) {
				old := newSecretID(t, f.tg)
				return approle.Rotation{OldSecretID: old, NewSecretID: "11111111-1111-1111-1111-111111111111"}, old
			},
			wantConfigured: func(rot approle.Rotation, _ string) string { return rot.OldSecretID },
			wantErr:        "invalid role or secret ID",
		},
		{
			name: "operator wrote another secret_id meanwhile",
			setup: func(t *testing.T) (approle.Rotation, string) {
				old, nw, operator := newSecretID(t, f.tg), newSecretID(t, f.tg), newSecretID(t, f.tg)
				return approle.Rotation{OldSecretID: old, NewSecretID: nw}, operator
			},
			wantConfigured: func(_ approle.Rotation, configured string) string { return configured },
			wantDestroyed:  func(rot approle.Rotation, _ string) []string { return []string{rot.NewSecretID} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rot, configured := tt.setup(t)
			p := newTestPlugin(t, nil)
			access := f.accessFields("10m")
			access["secret_id"] = configured
			p.request(t, logical.UpdateOperation, "configure_vault_access", access)
			if err := putEntry(ctx, p.s, approle.RotationKey, &rot); err != nil {
				t.Fatal(err)
			}

			// Simulate the restart: a fresh backend finds the record.
			restarted := newTestPlugin(t, p.s)
			err := restarted.client.RotateSecretID(ctx, approleStorage(p.s))
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("recover: error %v, want %q", err, tt.wantErr)
			}
			got := restarted.configuredSecretID(t)
			if want := tt.wantConfigured(rot, configured); got != want {
				t.Errorf("configured secret_id after recovery is not the expected one")
			}
			if err := f.login(got); err != nil {
				t.Errorf("configured secret_id does not log in after recovery: %v", err)
			}
			if tt.wantDestroyed != nil {
				for _, id := range tt.wantDestroyed(rot, configured) {
					if f.login(id) == nil {
						t.Error("a secret_id that should have been destroyed still logs in")
					}
				}
			}
			if r, _ := getEntry[approle.Rotation](ctx, p.s, approle.RotationKey); r != nil {
				t.Error("write-ahead record left after recovery")
			}
			assertNoSecrets(t, f.tg, p.log.String()+restarted.log.String())
		})
	}
}

// assertNoSecrets fails when text holds any token or secret_id the target
// ever handed out (learned from its raw audit log).
func assertNoSecrets(t testing.TB, tg *vaulttest.Target, text string) {
	t.Helper()
	secrets := targetSecrets(t, tg)
	if len(secrets) == 0 {
		t.Fatal("no secrets found in the target's audit log: the check would prove nothing")
	}
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("a token or secret_id of the target (%.6s…) appears in the checked text", s)
		}
	}
}

// targetSecrets extracts every client token, wrapping token and secret_id
// from the target's raw audit log.
func targetSecrets(t testing.TB, tg *vaulttest.Target) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	for _, line := range bytes.Split(tg.AuditLog(t), []byte("\n")) {
		for _, key := range []string{`"client_token":"`, `"token":"`, `"secret_id":"`} {
			rest := line
			for {
				i := bytes.Index(rest, []byte(key))
				if i < 0 {
					break
				}
				rest = rest[i+len(key):]
				j := bytes.IndexByte(rest, '"')
				if j < 0 {
					break
				}
				v := string(rest[:j])
				if len(v) >= 20 && v != tg.Token && !seen[v] {
					seen[v] = true
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// BenchmarkPrepareVaultRequests is the cost a run pays before its container
// starts for one wrapped request over TLS, with the AppRole token reused.
func BenchmarkPrepareVaultRequests(b *testing.B) {
	f := newTargetFixture(b, "1h")
	p := newTestPlugin(b, nil)
	p.request(b, logical.UpdateOperation, "configure_vault_access", f.accessFields("1h"))
	p.request(b, logical.UpdateOperation, "configure/vault_request/app", map[string]any{"path": "secret/data/app"})
	ctx := context.Background()
	if _, _, err := p.b.prepareVaultRequests(ctx, p.s); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := p.b.prepareVaultRequests(ctx, p.s); err != nil {
			b.Fatal(err)
		}
	}
}
