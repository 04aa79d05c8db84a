package approle

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
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

// Target is configure_vault_access as the client needs it. Nothing else (no
// VAULT_* variable of the plugin process) shapes how the plugin talks to the
// target Vault.
type Target struct {
	Addr          string
	TLSServerName string
	// CACert is PEM; empty means the system roots.
	CACert     string
	MountPoint string
	RoleName   string
	RoleID     string
	SecretID   string
	// SecretIDTTL is zero when secret_ids do not expire (and are not
	// rotated); SecretIDIssuedAt is when SecretID was written.
	SecretIDTTL      time.Duration
	SecretIDIssuedAt time.Time
}

// identity changes whenever anything that decides which Vault we talk to, or
// as whom, changes; a token obtained under another identity is revoked.
func (t Target) identity() string {
	return fingerprint(t.Addr, t.TLSServerName, t.CACert, t.MountPoint, t.RoleID, t.SecretID)
}

// Key identifies where secret_ids of t are sent: the address, the TLS
// settings that decide which server is trusted there, and the AppRole mount.
// A secret_id rotation record is bound to it.
func (t Target) Key() string {
	return fingerprint(t.Addr, t.CACert, t.TLSServerName, t.MountPoint)
}

// fingerprint is the sha256 of the length-prefixed parts, so that no two
// different lists of parts hash alike.
func fingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (t Target) mount() string {
	m := strings.Trim(t.MountPoint, "/")
	if m == "" {
		m = "auth/approle"
	}
	return m
}

const (
	// ClientTimeout bounds every call to the target Vault; the raw calls of
	// a run's vault requests apply it themselves.
	ClientTimeout = 30 * time.Second
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
func newTargetClient(t Target) (*api.Client, error) {
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
		Timeout: ClientTimeout,
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

// Client is the plugin's session with the target Vault: one API client, the
// current AppRole token and the secret_id rotation (rotation.go). One lives
// in each backend; mu serialises every conversation with the target (login,
// renewal, rotation, the requests of a run), which are rare and short. The
// run calls WithTarget, the paths Reset and ForgetRotation, the periodic
// function PeriodicRotation; nothing else takes mu.
type Client struct {
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

// Config is what a Client is made from.
type Config struct {
	// Logger returns the backend's logger.
	Logger func() hclog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ConfigMu is the lock the backend holds while it writes
	// configure_vault_access.
	ConfigMu *sync.Mutex
}

// New returns a Client with no session; the first WithTarget logs in.
func New(cfg Config) *Client {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Client{logger: cfg.Logger, now: now, configMu: cfg.ConfigMu}
}

// Accessor is the accessor of the current token, "" when there is none. An
// accessor is no credential; tests use it to ask the target about the token.
func (a *Client) Accessor() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tok == nil {
		return ""
	}
	return a.tok.accessor
}

// As returns a shallow copy of the base client that sends token and, when
// wrapTTL is set, asks for a response-wrapped answer. The base client never
// holds a token, so a copy can not leak one into another request.
func As(c *api.Client, token, wrapTTL string) *api.Client {
	return c.WithRequestCallbacks(func(r *api.Request) {
		r.ClientToken = token
		r.WrapTTL = wrapTTL
	})
}

// clientLocked returns the base client for t, first dropping (and revoking
// the token of) a session made for another configuration. a.mu must be held.
func (a *Client) clientLocked(ctx context.Context, t Target) (*api.Client, error) {
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
func (a *Client) tokenLocked(ctx context.Context, t Target) (*api.Client, string, error) {
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

func (a *Client) renewLocked(ctx context.Context, c *api.Client) (*targetToken, error) {
	s, err := As(c, a.tok.token, "").Auth().Token().RenewSelfWithContext(ctx, int(a.tok.ttl/time.Second))
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
func (a *Client) replaceTokenLocked(ctx context.Context, fresh *targetToken) {
	old := a.tok
	a.tok = fresh
	if old != nil && old.token != fresh.token && a.client != nil {
		a.revoke(ctx, a.client, old)
	}
}

// revoke revokes tk with itself (auth/token/revoke-self needs no policy).
// Failure is logged, not returned: the token is TTL-bounded and the caller
// has already stopped using it.
func (a *Client) revoke(ctx context.Context, c *api.Client, tk *targetToken) {
	if tk == nil || tk.token == "" {
		return
	}
	if tk.ttl > 0 && !a.now().Before(tk.obtained.Add(tk.ttl)) {
		return // already expired on the target
	}
	if err := As(c, tk.token, "").Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		a.logger().Warn("revoking the replaced AppRole token on the target Vault failed; it expires with its TTL", "vault_addr", c.Address(), "ttl", tk.ttl.String(), "error", err)
	}
}

// resetLocked revokes the current token and forgets the session, for a
// deleted or changed configure_vault_access. a.mu must be held.
func (a *Client) resetLocked(ctx context.Context) {
	if a.client != nil && a.tok != nil {
		a.revoke(ctx, a.client, a.tok)
	}
	a.client, a.tok, a.identity = nil, nil, ""
}

// Reset revokes the current token and forgets the session, for the
// configure_vault_access handlers and the backend's Clean. An unreachable
// target delays them by at most resetTimeout.
func (a *Client) Reset(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, resetTimeout)
	defer cancel()
	a.resetLocked(ctx)
}

// approleLogin logs in with t's role_id and secret_id. The error carries the
// target's answer; it never contains the secret_id (the API client does not
// echo request bodies).
func approleLogin(ctx context.Context, c *api.Client, t Target, now func() time.Time) (*targetToken, error) {
	return approleLoginWith(ctx, c, t, t.SecretID, now)
}

func approleLoginWith(ctx context.Context, c *api.Client, t Target, secretID string, now func() time.Time) (*targetToken, error) {
	if t.RoleID == "" || secretID == "" {
		return nil, errors.New("configure_vault_access has no role_id or secret_id")
	}
	s, err := As(c, "", "").Logical().WriteWithContext(ctx, t.mount()+"/login", map[string]any{
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
