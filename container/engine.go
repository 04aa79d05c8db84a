package container

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"
)

// Engine names the Docker engine the runs go to and how it is reached. The
// zero Engine is the local default: DOCKER_HOST (with DOCKER_TLS_VERIFY and
// DOCKER_CERT_PATH) of the plugin's process, else the local socket.
//
// A tcp:// engine is always reached with mutual TLS: the engine proves itself
// with a certificate CACert verifies, and the plugin with ClientCert and
// ClientKey. A unix:// socket is protected by its file permissions and takes
// no TLS.
type Engine struct {
	// Host is "" (the local default), tcp://host:port or unix:///path.
	Host string
	// CACert holds the PEM CA certificate(s) that sign the engine's
	// certificate; only these are trusted, never the system roots.
	CACert []byte
	// ClientCert is the PEM client certificate (chain) the engine trusts.
	ClientCert []byte
	// ClientKey is its PEM private key: a secret.
	ClientKey []byte
	// ServerName is the name to check the engine's certificate against when
	// it is not the host of Host.
	ServerName string
}

// ErrInvalidEngine: the engine address or its TLS material cannot be used.
var ErrInvalidEngine = errors.New("invalid Docker engine settings")

// IsLocal reports whether e is the local default.
func (e Engine) IsLocal() bool { return e.Host == "" }

// Describe names the engine for an operator: its host, or "local".
func (e Engine) Describe() string {
	if e.IsLocal() {
		return "local"
	}
	return e.Host
}

// HostScheme is the scheme of a Docker host address in lower case ("tcp",
// "unix"), or "" when it has none. A URL scheme is case-insensitive (RFC
// 3986), so TCP:// is tcp://; every decision on the scheme (the mutual-TLS
// rule, the transport, the path's handling of TLS material) goes through
// here, so no two of them can disagree.
func HostScheme(host string) string {
	scheme, _, ok := strings.Cut(host, "://")
	if !ok {
		return ""
	}
	return strings.ToLower(scheme)
}

// usesTLS reports whether Host is a tcp:// address.
func (e Engine) usesTLS() bool { return HostScheme(e.Host) == "tcp" }

// clientHost is Host with its scheme in lower case, as the Docker client
// compares it.
func (e Engine) clientHost() string {
	scheme := HostScheme(e.Host)
	if scheme == "" {
		return e.Host
	}
	return scheme + e.Host[len(scheme):]
}

// Validate checks the operator's settings without contacting the engine and
// says what to fix. It never quotes key material.
func (e Engine) Validate(now time.Time) error {
	hasTLS := len(e.CACert) > 0 || len(e.ClientCert) > 0 || len(e.ClientKey) > 0 || e.ServerName != ""
	if e.Host == "" {
		if hasTLS {
			return fmt.Errorf("%w: ca_cert, client_cert, client_key and tls_server_name are for a tcp:// host; the local default takes DOCKER_HOST and DOCKER_CERT_PATH of the Vault process", ErrInvalidEngine)
		}
		return nil
	}
	u, err := url.Parse(e.Host)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("%w: host %q is not an address: give tcp://host:2376 (mutual TLS) or unix:///var/run/docker.sock", ErrInvalidEngine, e.Host)
	}
	switch HostScheme(e.Host) {
	case "unix":
		if hasTLS {
			return fmt.Errorf("%w: host %s is a unix socket, which its file permissions protect: remove ca_cert, client_cert, client_key and tls_server_name", ErrInvalidEngine, e.Host)
		}
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("%w: host %q is not a socket path: give unix:// and an absolute path, e.g. unix:///var/run/docker.sock", ErrInvalidEngine, e.Host)
		}
		return nil
	case "tcp":
	default:
		return fmt.Errorf("%w: host %q: the scheme %s:// is not supported: give tcp://host:2376 (mutual TLS) or unix:///path", ErrInvalidEngine, e.Host, u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%w: host %q: give tcp://host:port, e.g. tcp://docker.example.com:2376, with nothing after the port", ErrInvalidEngine, e.Host)
	}
	if len(e.CACert) == 0 || len(e.ClientCert) == 0 || len(e.ClientKey) == 0 {
		var missing []string
		for _, f := range []struct {
			name string
			v    []byte
		}{{"ca_cert", e.CACert}, {"client_cert", e.ClientCert}, {"client_key", e.ClientKey}} {
			if len(f.v) == 0 {
				missing = append(missing, f.name)
			}
		}
		// Whoever reaches a plain-TCP engine is root on its host, and the
		// runs' environment (wrapped tokens) would cross the network in clear.
		return fmt.Errorf("%w: host %s needs mutual TLS, missing %s: a Docker engine on plain TCP gives root on its host to anyone who can reach the port, and the runs' secrets would cross the network in clear; start the engine with --tlsverify and give ca_cert, client_cert and client_key",
			ErrInvalidEngine, e.Host, strings.Join(missing, ", "))
	}
	if e.ServerName != "" && (strings.ContainsAny(e.ServerName, "/: ") || strings.TrimSpace(e.ServerName) != e.ServerName) {
		return fmt.Errorf("%w: tls_server_name %q is not a host name: give only a name in the engine's certificate, e.g. docker.example.com", ErrInvalidEngine, e.ServerName)
	}
	if _, err := e.tlsConfig(now); err != nil {
		return err
	}
	return nil
}

// tlsConfig builds the client side of mutual TLS, checking each piece.
func (e Engine) tlsConfig(now time.Time) (*tls.Config, error) {
	pool := x509.NewCertPool()
	rest := e.CACert
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: ca_cert holds a PEM %q block: give only the CA certificate(s) that sign the engine's certificate", ErrInvalidEngine, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: ca_cert certificate %d cannot be parsed: %v", ErrInvalidEngine, n+1, err)
		}
		if now.After(c.NotAfter) {
			return nil, fmt.Errorf("%w: ca_cert certificate %q expired at %s: give the engine's current CA", ErrInvalidEngine, c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 || strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("%w: ca_cert is not PEM: give the CA certificate(s) in PEM form, e.g. ca_cert=@ca.pem", ErrInvalidEngine)
	}
	if kb, _ := pem.Decode(e.ClientKey); kb == nil {
		return nil, fmt.Errorf("%w: client_key is not a PEM private key: give the key of client_cert, e.g. client_key=@key.pem", ErrInvalidEngine)
	} else if strings.Contains(kb.Type, "ENCRYPTED") || kb.Headers["Proc-Type"] != "" {
		return nil, fmt.Errorf("%w: client_key is encrypted with a passphrase: give it decrypted (openssl pkey -in key.pem -out plain.pem)", ErrInvalidEngine)
	}
	if cb, _ := pem.Decode(e.ClientCert); cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: client_cert is not a PEM certificate: give the client certificate the engine trusts, e.g. client_cert=@cert.pem", ErrInvalidEngine)
	}
	pair, err := tls.X509KeyPair(e.ClientCert, e.ClientKey)
	if err != nil {
		// The error of X509KeyPair names the problem (mismatch, bad
		// encoding) and never the key's bytes.
		return nil, fmt.Errorf("%w: client_cert and client_key do not form a key pair: %v", ErrInvalidEngine, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: client_cert cannot be parsed: %v", ErrInvalidEngine, err)
		}
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: client_cert %q expired at %s: give a current client certificate", ErrInvalidEngine, leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(leaf.ExtKeyUsage) > 0 && !hasExtKeyUsage(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !hasExtKeyUsage(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil, fmt.Errorf("%w: client_cert %q is not for client authentication (its extended key usage lacks clientAuth), so the engine would refuse it: issue it with extendedKeyUsage=clientAuth", ErrInvalidEngine, leaf.Subject.String())
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      pool,
		Certificates: []tls.Certificate{pair},
		ServerName:   e.ServerName,
	}, nil
}

func hasExtKeyUsage(list []x509.ExtKeyUsage, u x509.ExtKeyUsage) bool {
	for _, x := range list {
		if x == u {
			return true
		}
	}
	return false
}

// WithEngine reaches the engine e instead of the environment's; the zero
// Engine keeps the environment's.
func WithEngine(e Engine) Option { return func(o *dockerOptions) { o.engine = e } }

// clientOptions turns the settings into options of the Docker client.
func (o *dockerOptions) clientOptions(now time.Time) ([]client.Opt, error) {
	e := o.engine
	if e.IsLocal() {
		return []client.Opt{client.FromEnv}, nil
	}
	if err := e.Validate(now); err != nil {
		return nil, err
	}
	// A configured engine ignores DOCKER_* of the environment: only what
	// the operator wrote decides where the runs go.
	copts := []client.Opt{client.WithHost(e.clientHost())}
	if !e.usesTLS() {
		return copts, nil
	}
	cfg, err := e.tlsConfig(now)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        6,
		IdleConnTimeout:     30 * time.Second,
		// No proxy from the environment: the engine is reached directly.
		Proxy: nil,
	}
	return append(copts, client.WithHTTPClient(&http.Client{Transport: tr, CheckRedirect: client.CheckRedirect})), nil
}

// EngineInfo is what an engine says about itself.
type EngineInfo struct {
	// ID identifies the engine (docker info's ID); two engines differ in it.
	ID            string
	Name          string
	ServerVersion string
}

// EngineInfo asks the engine who it is.
func (d *Docker) EngineInfo(ctx context.Context) (EngineInfo, error) {
	res, err := d.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return EngineInfo{}, d.explain(err)
	}
	return EngineInfo{ID: res.Info.ID, Name: res.Info.Name, ServerVersion: res.Info.ServerVersion}, nil
}

// EngineID is the engine's id (docker info's ID).
func (d *Docker) EngineID(ctx context.Context) (string, error) {
	info, err := d.EngineInfo(ctx)
	return info.ID, err
}

// explain turns a failure to reach the engine into what the operator must
// fix, keeping the cause wrapped.
func (d *Docker) explain(err error) error {
	return explainEngineError(d.engine, d.cli.DaemonHost(), err)
}

func explainEngineError(e Engine, host string, err error) error {
	var (
		opErr     *net.OpError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		recHeader tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%w at %s: certificate signed by unknown authority: ca_cert does not verify the engine's certificate (give the CA that signed the engine's --tlscert): %w", ErrDaemonUnreachable, host, err)
	case errors.As(err, &hostErr):
		return fmt.Errorf("%w at %s: the engine's certificate is not valid for %q: set tls_server_name to a name in it, or use that name in host: %w", ErrDaemonUnreachable, host, hostErr.Host, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w at %s: the engine's certificate is not acceptable (expired or not for a server?): %w", ErrDaemonUnreachable, host, err)
	case (errors.As(err, &opErr) && opErr.Op == "remote error") || strings.Contains(err.Error(), "remote error: tls:"):
		// The engine ended the handshake: it did not accept our client
		// certificate (bad_certificate, unknown_ca, certificate_required, ...).
		return fmt.Errorf("%w: the engine at %s refused our client certificate (give a client_cert signed by the CA of the engine's --tlscacert, with its client_key): %w", ErrDaemonUnreachable, host, err)
	case errors.As(err, &recHeader), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w at %s: the port does not speak TLS (2375 is Docker's plain port; start the engine with --tlsverify and use its TLS port, usually 2376): %w", ErrDaemonUnreachable, host, err)
	case e.IsLocal():
		return fmt.Errorf("%w at %s (is dockerd running, and do DOCKER_HOST and the socket permissions let this process in?): %w", ErrDaemonUnreachable, host, err)
	case client.IsErrConnectionFailed(err) || errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w at %s: nothing answers there (is dockerd running and listening on that address, and may this Vault node reach it?): %w", ErrDaemonUnreachable, host, err)
	default:
		return fmt.Errorf("%w at %s: %w", ErrDaemonUnreachable, host, err)
	}
}

// Ping checks that the engine still answers, explaining a failure.
func (d *Docker) Ping(ctx context.Context) error {
	if _, err := d.cli.Ping(ctx, client.PingOptions{}); err != nil {
		return d.explain(err)
	}
	return nil
}
