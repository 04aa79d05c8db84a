package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
)

// targetVault is the part of configure_vault_access the AppRole client is
// built from. Nothing else (no VAULT_* variable of the plugin process) shapes
// how the plugin talks to the target Vault.
type targetVault struct {
	Addr          string
	TLSServerName string
	// CACert is PEM; empty means the system roots.
	CACert      string
	MountPoint  string
	RoleName    string
	RoleID      string
	SecretID    string
	SecretIDTTL time.Duration
}

// identity changes whenever anything that decides which Vault we talk to, or
// as whom, changes; a token obtained under another identity is revoked.
func (t targetVault) identity() string {
	return identityHash(t.Addr, t.TLSServerName, t.CACert, t.MountPoint, t.RoleID, t.SecretID)
}

func (t targetVault) mount() string {
	m := strings.Trim(t.MountPoint, "/")
	if m == "" {
		m = "auth/approle"
	}
	return m
}

const (
	targetClientTimeout = 30 * time.Second
	// tokenRefreshFloor keeps a token from being used in its last seconds
	// even when its TTL is so short that a third of it is less.
	tokenRefreshFloor = 5 * time.Second
	resetTimeout      = 5 * time.Second
)

// newTargetClient builds an API client for the target Vault from t alone.
// The Config is assembled field by field instead of from api.DefaultConfig so
// that VAULT_ADDR, VAULT_SKIP_VERIFY, VAULT_CACERT, VAULT_WRAP_TTL, proxy
// variables and the like in the plugin's environment have no say; the token,
// namespace and headers api.NewClient picks up from the environment are
// cleared afterwards.
func newTargetClient(t targetVault) (*api.Client, error) {
	u, err := url.Parse(t.Addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("vault_addr %q is not an http(s) URL", t.Addr)
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	cfg := &api.Config{
		Address: t.Addr,
		HttpClient: &http.Client{
			Transport: transport,
			// The API client follows Vault's own standby redirects; plain
			// HTTP redirects elsewhere are not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Timeout: targetClientTimeout,
		// No automatic retries: a vault request may create something (a
		// token, database credentials) and a retried POST would create it
		// twice. A failed run is retried as a whole, with backoff.
		MaxRetries: 0,
	}
	tlsCfg := &api.TLSConfig{TLSServerName: t.TLSServerName}
	if t.CACert != "" {
		tlsCfg.CACertBytes = []byte(t.CACert)
	}
	if err := cfg.ConfigureTLS(tlsCfg); err != nil {
		return nil, fmt.Errorf("vault_cacert: %w", err)
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("create client for target Vault %s: %w", t.Addr, err)
	}
	c.ClearToken()
	c.ClearNamespace()
	c.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	// The default lookup honours VAULT_WRAP_TTL; only configured requests
	// are wrapped, and they set their TTL per request.
	c.SetWrappingLookupFunc(func(string, string) string { return "" })
	return c, nil
}

// targetToken is a token the plugin obtained by AppRole login. It lives in
// memory only: it is never stored, logged or returned.
type targetToken struct {
	token     string
	accessor  string
	obtained  time.Time
	ttl       time.Duration
	renewable bool
}

// usable says whether the token can still be handed out at now: it must have
// more than a third of its TTL (and at least tokenRefreshFloor) left, so that
// the wrapped requests of a run never race its expiry.
func (tk *targetToken) usable(now time.Time) bool {
	if tk == nil || tk.token == "" {
		return false
	}
	if tk.ttl <= 0 {
		return true // a token without TTL never expires
	}
	margin := max(tk.ttl/3, tokenRefreshFloor)
	return tk.obtained.Add(tk.ttl).Sub(now) > margin
}

func tokenFromAuth(s *api.Secret, now time.Time) (*targetToken, error) {
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, errors.New("target Vault answered the login without a token")
	}
	return &targetToken{
		token:     s.Auth.ClientToken,
		accessor:  s.Auth.Accessor,
		obtained:  now,
		ttl:       time.Duration(s.Auth.LeaseDuration) * time.Second,
		renewable: s.Auth.Renewable,
	}, nil
}

// approleClient is the plugin's session with the target Vault: one API
// client, the current AppRole token and the secret_id rotation
// (secret_id_rotation.go). One lives in each backend; mu serialises every
// conversation with the target (login, renewal, rotation, the requests of a
// run), which are rare and short. The run calls withTarget, the paths reset,
// the periodic function periodicSecretIDRotation; nothing else takes mu.
type approleClient struct {
	// logger is the backend's, which exists only once Vault set it up.
	logger func() hclog.Logger
	now    func() time.Time
	// configMu is the backend's: the rotation swaps the configured
	// secret_id without losing an operator's concurrent write.
	configMu *sync.Mutex

	mu       sync.Mutex
	identity string
	client   *api.Client
	tok      *targetToken
}

func newApproleClient(logger func() hclog.Logger, configMu *sync.Mutex) *approleClient {
	return &approleClient{logger: logger, now: time.Now, configMu: configMu}
}

// as returns a shallow copy of the base client that sends token and, when
// wrapTTL is set, asks for a response-wrapped answer. The base client never
// holds a token, so a copy can not leak one into another request.
func as(c *api.Client, token, wrapTTL string) *api.Client {
	return c.WithRequestCallbacks(func(r *api.Request) {
		r.ClientToken = token
		r.WrapTTL = wrapTTL
	})
}

// clientLocked returns the base client for t, first dropping (and revoking
// the token of) a session made for another configuration. a.mu must be held.
func (a *approleClient) clientLocked(ctx context.Context, t targetVault) (*api.Client, error) {
	id := t.identity()
	if a.client != nil && a.identity == id {
		return a.client, nil
	}
	a.resetLocked(ctx)
	c, err := newTargetClient(t)
	if err != nil {
		return nil, err
	}
	a.client, a.identity = c, id
	return c, nil
}

// tokenLocked returns a token for t that is good for at least a third of its
// TTL: the current one, the current one renewed, or a fresh login (the
// replaced token is revoked). a.mu must be held.
func (a *approleClient) tokenLocked(ctx context.Context, t targetVault) (*api.Client, string, error) {
	c, err := a.clientLocked(ctx, t)
	if err != nil {
		return nil, "", err
	}
	now := a.now()
	if a.tok.usable(now) {
		return c, a.tok.token, nil
	}
	if a.tok != nil && a.tok.renewable {
		if renewed, err := a.renewLocked(ctx, c); err == nil && renewed.usable(a.now()) {
			a.tok = renewed
			return c, a.tok.token, nil
		} else if err != nil {
			a.logger().Warn("renewing the AppRole token on the target Vault failed; logging in again", "vault_addr", t.Addr, "error", err)
		}
	}
	fresh, err := approleLogin(ctx, c, t, a.now)
	if err != nil {
		return nil, "", err
	}
	a.replaceTokenLocked(ctx, fresh)
	return c, a.tok.token, nil
}

func (a *approleClient) renewLocked(ctx context.Context, c *api.Client) (*targetToken, error) {
	s, err := as(c, a.tok.token, "").Auth().Token().RenewSelfWithContext(ctx, int(a.tok.ttl/time.Second))
	if err != nil {
		return nil, err
	}
	tk, err := tokenFromAuth(s, a.now())
	if err != nil {
		return nil, err
	}
	// renew-self answers without the token itself.
	tk.token, tk.accessor = a.tok.token, a.tok.accessor
	return tk, nil
}

// replaceTokenLocked installs fresh and revokes the token it replaces, so
// that at most one AppRole token of this plugin is alive on the target.
func (a *approleClient) replaceTokenLocked(ctx context.Context, fresh *targetToken) {
	old := a.tok
	a.tok = fresh
	if old != nil && old.token != fresh.token && a.client != nil {
		a.revoke(ctx, a.client, old)
	}
}

// revoke revokes tk with itself (auth/token/revoke-self needs no policy).
// Failure is logged, not returned: the token is TTL-bounded and the caller
// has already stopped using it.
func (a *approleClient) revoke(ctx context.Context, c *api.Client, tk *targetToken) {
	if tk == nil || tk.token == "" {
		return
	}
	if tk.ttl > 0 && !a.now().Before(tk.obtained.Add(tk.ttl)) {
		return // already expired on the target
	}
	if err := as(c, tk.token, "").Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		a.logger().Warn("revoking the replaced AppRole token on the target Vault failed; it expires with its TTL", "vault_addr", c.Address(), "ttl", tk.ttl.String(), "error", err)
	}
}

// resetLocked revokes the current token and forgets the session, for a
// deleted or changed configure_vault_access. a.mu must be held.
func (a *approleClient) resetLocked(ctx context.Context) {
	if a.client != nil && a.tok != nil {
		a.revoke(ctx, a.client, a.tok)
	}
	a.client, a.tok, a.identity = nil, nil, ""
}

// reset is resetLocked for callers outside the client: the
// configure_vault_access handlers and the backend's Clean. An unreachable
// target delays them by at most resetTimeout.
func (a *approleClient) reset(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, resetTimeout)
	defer cancel()
	a.resetLocked(ctx)
}

// approleLogin logs in with t's role_id and secret_id. The error carries the
// target's answer; it never contains the secret_id (the API client does not
// echo request bodies).
func approleLogin(ctx context.Context, c *api.Client, t targetVault, now func() time.Time) (*targetToken, error) {
	return approleLoginWith(ctx, c, t, t.SecretID, now)
}

func approleLoginWith(ctx context.Context, c *api.Client, t targetVault, secretID string, now func() time.Time) (*targetToken, error) {
	if t.RoleID == "" || secretID == "" {
		return nil, errors.New("configure_vault_access has no role_id or secret_id")
	}
	s, err := as(c, "", "").Logical().WriteWithContext(ctx, t.mount()+"/login", map[string]any{
		"role_id":   t.RoleID,
		"secret_id": secretID,
	})
	if err != nil {
		return nil, fmt.Errorf("AppRole login at %s/login on %s: %w", t.mount(), t.Addr, err)
	}
	tk, err := tokenFromAuth(s, now())
	if err != nil {
		return nil, fmt.Errorf("AppRole login at %s/login on %s: %w", t.mount(), t.Addr, err)
	}
	return tk, nil
}
