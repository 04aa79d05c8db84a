package dockertest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
)

// TLSProxy puts mutual TLS in front of this machine's Docker engine, the way
// a remote engine started with --tlsverify is reached: it listens on
// 127.0.0.1, presents a server certificate for 127.0.0.1 and localhost, and
// accepts only client certificates signed by its own CA. Requests go on to
// the local engine (DOCKER_HOST or /var/run/docker.sock) through an HTTP
// reverse proxy, so log streaming and attach (HTTP 101 upgrades) work, and a
// test can make the proxy pretend to be another engine (SimulateOtherEngine).
//
// Each proxy has fresh certificates: CAPEM/ClientCertPEM/ClientKeyPEM are
// what a client needs; WrongCAPEM and WrongClientCertPEM/WrongClientKeyPEM
// come from another CA, for the negative cases.
type TLSProxy struct {
	// URL is the engine address, tcp://127.0.0.1:PORT.
	URL string
	// CAPEM signs the server and the accepted client certificate.
	CAPEM []byte
	// ClientCertPEM and ClientKeyPEM are a client certificate the proxy accepts.
	ClientCertPEM, ClientKeyPEM []byte
	// WrongCAPEM is another CA: it does not verify the proxy's certificate.
	WrongCAPEM []byte
	// WrongClientCertPEM and WrongClientKeyPEM are signed by WrongCAPEM: the
	// proxy refuses them.
	WrongClientCertPEM, WrongClientKeyPEM []byte

	srv      *http.Server
	ln       net.Listener
	upstream string // for messages

	mu sync.Mutex
	// identity is the engine id the proxy pretends to be; "" is the real one.
	identity string
	// owner maps a container created through the proxy (id and name) to the
	// identity it was created under.
	owner map[string]string
	// created lists the ids of containers created through the proxy.
	created []string
	// hijacked are upgraded connections (attach), which the server no
	// longer tracks; Close closes them.
	hijacked map[net.Conn]struct{}
	closed   bool
}

// NewTLSProxy starts a proxy in front of the machine's Docker engine and
// closes it when the test ends. It fails the test when the engine cannot be
// reached through it.
func NewTLSProxy(t testing.TB) *TLSProxy {
	t.Helper()
	p, err := newTLSProxy()
	if err != nil {
		t.Fatalf("starting the mTLS proxy in front of the Docker engine: %v", err)
	}
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := container.NewDocker(ctx, container.WithEngine(p.Engine()))
	if err != nil {
		t.Fatalf("these tests need the real Docker engine (%s) behind the mTLS proxy: %v", p.upstream, err)
	}
	_ = d.Close()
	return p
}

// Engine is the container.Engine a client uses to reach the proxy.
func (p *TLSProxy) Engine() container.Engine {
	return container.Engine{Host: p.URL, CACert: p.CAPEM, ClientCert: p.ClientCertPEM, ClientKey: p.ClientKeyPEM}
}

// SimulateOtherEngine makes the proxy pretend, from now on, to be a
// different Docker engine whose id is id ("" returns to the real engine):
//
//   - GET /info answers ID = id (docker info's ID, container.Docker.EngineID);
//   - GET /containers/json lists only the containers created through this
//     proxy while it pretended to be id;
//   - any other request about one container (inspect, logs, wait, attach,
//     kill, remove, archive, start, ...) answers 404 "No such container"
//     unless it was created through this proxy under id.
//
// Containers created while the proxy is the real engine (and containers not
// created through the proxy) belong to the real engine, and those created
// under id are hidden from the real engine in turn, so switching back and
// forth behaves like two engines that never see each other's containers.
// Images, pings and versions are the real engine's. A fencing test can thus
// show a node that cannot see the engine of the node that started a run.
func (p *TLSProxy) SimulateOtherEngine(id string) {
	p.mu.Lock()
	p.identity = id
	p.mu.Unlock()
}

// Created lists the ids of the containers created through the proxy so far,
// in order, other than the runner's init-volume helpers: a test can tell
// that a run went through it.
func (p *TLSProxy) Created() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.created...)
}

// Close stops the proxy and cuts every connection, upgraded ones included.
func (p *TLSProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	conns := make([]net.Conn, 0, len(p.hijacked))
	for c := range p.hijacked {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	_ = p.srv.Close()
	for _, c := range conns {
		_ = c.Close()
	}
}

func newTLSProxy() (*TLSProxy, error) {
	ca, err := newCA("flant_gitops test engine CA")
	if err != nil {
		return nil, err
	}
	wrongCA, err := newCA("flant_gitops test wrong CA")
	if err != nil {
		return nil, err
	}
	serverCert, serverKey, err := ca.issue("127.0.0.1", x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	clientCert, clientKey, err := ca.issue("flant_gitops test client", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	wrongCert, wrongKey, err := wrongCA.issue("flant_gitops wrong client", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	serverPair, err := tls.X509KeyPair(serverCert, serverKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)

	network, addr, err := upstreamEngine()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on 127.0.0.1: %w", err)
	}
	p := &TLSProxy{
		URL:                "tcp://" + ln.Addr().String(),
		CAPEM:              ca.certPEM,
		ClientCertPEM:      clientCert,
		ClientKeyPEM:       clientKey,
		WrongCAPEM:         wrongCA.certPEM,
		WrongClientCertPEM: wrongCert,
		WrongClientKeyPEM:  wrongKey,
		ln:                 ln,
		upstream:           network + "://" + addr,
		owner:              map[string]string{},
		hijacked:           map[net.Conn]struct{}{},
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker"
			r.Out.Host = "docker"
			if p.rewrites(r.Out) {
				// The answer is decoded and rewritten: keep it plain.
				r.Out.Header.Del("Accept-Encoding")
			}
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			DisableCompression: true,
		},
		// Logs, waits and events stream: pass every byte on at once.
		FlushInterval:  -1,
		ModifyResponse: p.modifyResponse,
	}
	p.srv = &http.Server{
		Handler: p.gate(rp),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{serverPair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			NextProtos:   []string{"http/1.1"}, // upgrades need HTTP/1.1
		},
		ReadHeaderTimeout: 30 * time.Second,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateHijacked {
				p.mu.Lock()
				p.hijacked[c] = struct{}{}
				p.mu.Unlock()
			}
		},
		// Refused handshakes are the point of the negative tests.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = p.srv.ServeTLS(ln, "", "") }()
	return p, nil
}

// upstreamEngine is where the local engine listens: DOCKER_HOST (unix:// or
// plain tcp://) or the default socket.
func upstreamEngine() (network, addr string, err error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		return "unix", "/var/run/docker.sock", nil
	}
	u, err := url.Parse(host)
	if err != nil {
		return "", "", fmt.Errorf("DOCKER_HOST %q: %w", host, err)
	}
	switch u.Scheme {
	case "unix":
		return "unix", u.Path, nil
	case "tcp":
		if os.Getenv("DOCKER_TLS_VERIFY") != "" {
			return "", "", fmt.Errorf("DOCKER_HOST %s uses TLS: the proxy forwards only to a local socket or plain tcp", host)
		}
		return "tcp", u.Host, nil
	}
	return "", "", fmt.Errorf("DOCKER_HOST %s: the proxy forwards only to unix:// or tcp://", host)
}

// apiPath splits a request path into the API path without its version
// prefix ("/v1.47/containers/json" -> "/containers/json").
var versionPrefix = regexp.MustCompile(`^/v[0-9]+(\.[0-9]+)?/`)

func apiPath(p string) string {
	if loc := versionPrefix.FindStringIndex(p); loc != nil {
		return "/" + p[loc[1]:]
	}
	return p
}

// containerRef is the container a request is about ("" for none): the
// segment after /containers/ unless it is a collection endpoint.
func containerRef(p string) string {
	rest, ok := strings.CutPrefix(apiPath(p), "/containers/")
	if !ok {
		return ""
	}
	ref, _, _ := strings.Cut(rest, "/")
	switch ref {
	case "", "json", "create", "prune":
		return ""
	}
	if u, err := url.PathUnescape(ref); err == nil {
		ref = u
	}
	return ref
}

// rewrites reports whether the answer to r is rewritten by modifyResponse.
func (p *TLSProxy) rewrites(r *http.Request) bool {
	switch path := apiPath(r.URL.Path); {
	case r.Method == http.MethodGet && (path == "/info" || path == "/containers/json"):
		return true
	case r.Method == http.MethodPost && path == "/containers/create":
		return true
	}
	return false
}

// gate answers 404 for a container of another engine than the one the
// proxy currently is.
func (p *TLSProxy) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ref := containerRef(r.URL.Path); ref != "" && !p.visible(ref) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]string{"message": "No such container: " + ref})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// visible reports whether container ref (an id, an id prefix or a name)
// belongs to the engine the proxy currently is.
func (p *TLSProxy) visible(ref string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ownerLocked(ref) == p.identity
}

func (p *TLSProxy) ownerLocked(ref string) string {
	ref = strings.TrimPrefix(ref, "/")
	if o, ok := p.owner[ref]; ok {
		return o
	}
	if len(ref) >= 12 {
		for k, o := range p.owner {
			if strings.HasPrefix(k, ref) {
				return o
			}
		}
	}
	return "" // not created through the proxy: the real engine's
}

func (p *TLSProxy) modifyResponse(resp *http.Response) error {
	req := resp.Request
	if !p.rewrites(req) || resp.StatusCode/100 != 2 {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the engine's answer: %w", err)
	}
	p.mu.Lock()
	identity := p.identity
	switch path := apiPath(req.URL.Path); path {
	case "/containers/create":
		var created struct{ Id string } //nolint:revive // the engine's field name
		if err := json.Unmarshal(body, &created); err == nil && created.Id != "" {
			p.owner[created.Id] = identity
			// The runner's helper that fills the init volume is no run.
			if name := req.URL.Query().Get("name"); !strings.HasPrefix(strings.TrimPrefix(name, "/"), container.InitHelperNamePrefix) {
				p.created = append(p.created, created.Id)
			}
			if name := req.URL.Query().Get("name"); name != "" {
				p.owner[strings.TrimPrefix(name, "/")] = identity
			}
		}
	case "/containers/json":
		var list []map[string]any
		if err := json.Unmarshal(body, &list); err == nil {
			kept := make([]map[string]any, 0, len(list))
			for _, c := range list {
				if id, _ := c["Id"].(string); p.ownerLocked(id) == identity {
					kept = append(kept, c)
				}
			}
			body, err = json.Marshal(kept)
			if err != nil {
				p.mu.Unlock()
				return err
			}
		}
	case "/info":
		if identity != "" {
			var info map[string]any
			if err := json.Unmarshal(body, &info); err != nil {
				p.mu.Unlock()
				return fmt.Errorf("decoding the engine's /info: %w", err)
			}
			info["ID"] = identity
			if body, err = json.Marshal(info); err != nil {
				p.mu.Unlock()
				return err
			}
		}
	}
	p.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	resp.Header.Del("Content-Encoding")
	return nil
}

// testCA is a throw-away certificate authority.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newCA(name string) (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating the test CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issue makes a leaf certificate for a server (127.0.0.1, ::1, localhost)
// or a client, and its PKCS#8 key, both PEM.
func (ca *testCA) issue(cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing %s: %w", cn, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
